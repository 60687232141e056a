import pytest

from augment.config import PipelineConfig, from_dict, load_params
from augment.errors import ConfigError


def test_repository_params_load_and_validate():
    from tests.conftest import ROOT

    cfg = load_params(ROOT / "params.yaml")
    assert cfg.train.family in ("gan", "vae")
    assert cfg.prepare.raw_dir == "data/raw"


@pytest.mark.parametrize(
    "raw, needle",
    [
        ({"train": {"iterationz": 5}}, "train.iterationz"),
        ({"train": {"iterations": "many"}}, "train.iterations"),
        ({"train": {"iterations": 1.5}}, "train.iterations"),
        ({"train": {"iterations": 0}}, "train.iterations"),
        ({"train": {"family": "diffusion"}}, "train.family"),
        ({"train": {"diffaug": "translation,blur"}}, "train.diffaug"),
        ({"train": {"device": "tpu"}}, "train.device"),
        ({"filter": {"top_fraction": 1.5}}, "filter.top_fraction"),
        ({"filter": {"mode": "best"}}, "filter.mode"),
        ({"evaluate": {"seeds": []}}, "evaluate.seeds"),
        ({"evaluate": {"seeds": [0, "x"]}}, "evaluate.seeds[1]"),
        ({"prepare": {"val_fraction": 0.6, "test_fraction": 0.5}}, "prepare.val_fraction"),
        ({"generate": {"threads": 0}}, "generate.threads"),
        ({"filter": {"threads": -2}}, "filter.threads"),
        ({"filter": {"precision": "fp16"}}, "filter.precision"),
        ({"merge": {"realise": "both"}}, "merge.realise"),
        ({"classical": {"engine": "torch"}}, "classical.engine"),
        ({"bogus": {}}, "bogus"),
        ({"train": [1, 2]}, "train"),
    ],
)
def test_bad_params_name_the_key(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace("[", r"\[").replace("]", r"\]")):
        cfg = from_dict(PipelineConfig, raw)
        cfg.validate()


def test_load_params_missing_and_invalid_yaml(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_ints_accepted_for_floats_and_null_for_optional():
    cfg = from_dict(PipelineConfig, {"train": {"lr_g": 1}, "prepare": {"test_dir": None}})
    assert cfg.train.lr_g == 1.0 and isinstance(cfg.train.lr_g, float)
    assert cfg.prepare.test_dir is None
