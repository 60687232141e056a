"""Parameter overrides from a calling flow: dotted keys, validated exactly like params.yaml."""

from __future__ import annotations

from pathlib import Path

import pytest

from augment.config import PipelineConfig, apply_overrides, load_config
from augment.errors import ConfigError
from tests.conftest import write_params


def test_override_changes_only_that_key(tmp_path: Path):
    params = write_params(tmp_path / "params.yaml")
    base = load_config(params)
    cfg = load_config(params, {"filter.top_fraction": 0.3, "evaluate.seeds": [4]})
    assert cfg.filter.top_fraction == 0.3 and cfg.evaluate.seeds == [4]
    assert cfg.train == base.train and cfg.filter.mode == base.filter.mode
    assert apply_overrides(base, None) is base and apply_overrides(base, {}) is base


def test_int_is_accepted_for_a_float_as_in_yaml():
    assert apply_overrides(PipelineConfig(), {"filter.top_fraction": 1}).filter.top_fraction == 1.0


@pytest.mark.parametrize("overrides, needle", [
    ({"filter.top_fractoin": 0.3}, "filter.top_fractoin"),   # unknown key, named
    ({"filtre.top_fraction": 0.3}, "filtre.top_fraction"),   # unknown group, named
    ({"top_fraction": 0.3}, "'top_fraction'"),               # not group.key
    ({"filter.top_fraction.x": 0.3}, "filter.top_fraction.x"),
    ({"filter.top_fraction": 1.5}, "filter.top_fraction = 1.5 is out of range"),  # validate()
    ({"filter.top_fraction": "big"}, "filter.top_fraction = 'big': expected a number"),  # from_dict
    ({"filter.mode": "best"}, "filter.mode = 'best'"),       # Literal
    ({"train.iterations": True}, "train.iterations = True: expected an integer"),
    ({"merge.tune_shares": [0.1, 2.0]}, "merge.tune_shares[1]"),
    # the checks across groups (check_cross_group), as params.yaml gets them: at load, not after training
    ({"merge.quota": "tuned", "prepare.val_fraction": 0.0}, "merge.quota = 'tuned' needs a val split"),
    ({"evaluate.model": "no_such_pkg.mod:fn"}, "evaluate.model"),
    ({"prepare.test_dir": None, "prepare.test_fraction": 0.0}, "prepare.test_fraction = 0 leaves no test split"),
])
def test_bad_override_is_a_config_error_naming_it(overrides, needle):
    with pytest.raises(ConfigError) as exc:
        apply_overrides(PipelineConfig(), overrides)
    assert needle in str(exc.value)


def test_flow_resolves_params_under_workdir_and_rejects_bad_override_before_work(tmp_path: Path, monkeypatch):
    """The flow body (``.fn``) with a bad override fails with ConfigError before taking the lock
    or writing anything; no Prefect server is needed for this path."""
    from augment.flows import augment_flow

    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path.parent)
    monkeypatch.setattr(augment_flow, "get_run_logger", lambda: pytest.fail("no logging before validation"))
    with pytest.raises(ConfigError, match="filter.nope"):
        augment_flow.augment_pipeline.fn(params_path="params.yaml", workdir=str(tmp_path),
                                         overrides={"filter.nope": 1})
    assert sorted(p.name for p in tmp_path.iterdir()) == ["params.yaml"]


def test_flow_script_reports_a_bad_override_in_one_line_before_any_server(tmp_path: Path, capsys):
    """`python flows/augment_flow.py -S ...` with a bad value: exit 2 and one `error:` line, as the
    augment CLI gives, not two tracebacks after a temporary server started."""
    from augment.flows import augment_flow

    write_params(tmp_path / "params.yaml")
    assert augment_flow.main(["--workdir", str(tmp_path), "-S", "filter.top_fraction=2"]) == 2
    err = capsys.readouterr().err
    assert "error: filter.top_fraction = 2.0 is out of range" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
