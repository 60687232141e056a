"""Each stage on tiny data, end to end through the CLI, and reproducibility."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augment.cli import main
from augment.core.files import read_csv, sha256_file
from augment.data.prepare import load_prepared
from augment.generation.shards import iter_shards
from tests.conftest import write_params


def run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


def test_every_stage_writes_its_outputs(workspace: Path):
    raw_before = {p: sha256_file(p) for p in sorted((workspace / "data/raw").rglob("*.png"))}
    run("prepare")
    ds = load_prepared("data/prepared")
    assert ds.images.shape[1:] == (8, 8, 1) and ds.num_classes == 3
    assert set(np.unique(ds.split)) == {0, 1, 2}
    manifest = read_csv("data/prepared/manifest.csv")
    assert {r["split"] for r in manifest} == {"train", "val", "test"}
    assert all(len(r["sha256"]) == 64 for r in manifest)

    run("train")
    assert Path("models/generator.safetensors").is_file()
    assert Path("models/sample_grid.png").is_file() and Path("models/loss_curves.png").is_file()
    log = read_csv("metrics/train_log.csv")
    assert log and {"iteration", "loss_d", "loss_g", "loss_generator"} <= set(log[0])
    assert [r["loss_generator"] for r in log] == [r["loss_g"] for r in log]  # the column dvc.yaml plots
    assert not Path("runs/resume/train_state.safetensors").exists()  # cleaned after success

    run("generate")
    shards = list(iter_shards("data/generated"))
    assert len(shards) == 4  # 3 classes x 10 = 30 samples in shards of 8
    labels = np.concatenate([s["labels"] for s in shards])
    assert np.bincount(labels).tolist() == [10, 10, 10]
    assert all(s["images"].dtype == np.uint8 and s["images"].shape[1:] == (8, 8, 1) for s in shards)

    run("filter")
    report = json.loads(Path("data/filtered/report.json").read_text())
    assert report["accepted"] == 15  # top half of each class
    assert all(v["accepted"] == 5 for v in report["per_class"].values())
    assert Path("data/filtered/score_histogram.png").is_file()

    run("merge")
    rows = read_csv("data/augmented/manifest.csv")
    real = [r for r in rows if r["source"] == "real"]
    syn = [r for r in rows if r["source"] == "synthetic"]
    assert len(real) == int((ds.split == 0).sum()) and len(syn) == 15
    assert all((Path("data/augmented") / r["file"]).is_file() for r in rows)
    assert all(r["checkpoint_sha256"] == sha256_file("models/generator.safetensors") for r in syn)
    # Only train images are merged: no val/test file appears as a real image.
    heldout = {f for f, s in zip(ds.files, ds.split) if s != 0}
    assert not heldout & {r["origin"] for r in real}

    run("evaluate")
    metrics = json.loads(Path("metrics/evaluate_detail.json").read_text())
    assert set(metrics["variants"]) == {"real", "classical", "synthetic", "combined"}
    for v in metrics["variants"].values():
        assert 0.0 <= v["mean"] <= 1.0 and len(v["per_seed"]) == 2
        assert set(v["per_class"]) == {"class_0", "class_1", "class_2"}
    assert "(d) real + classical + synthetic" in Path("metrics/evaluate.md").read_text()

    raw_after = {p: sha256_file(p) for p in sorted((workspace / "data/raw").rglob("*.png"))}
    assert raw_before == raw_after  # the raw dataset is never modified


def test_same_seed_gives_identical_synthetic_outputs(workspace: Path):
    run("prepare")
    run("train")
    run("generate")
    first_ckpt = sha256_file("models/generator.safetensors")
    first = [s for s in iter_shards("data/generated")]
    run("train")
    run("generate")
    assert sha256_file("models/generator.safetensors") == first_ckpt
    again = list(iter_shards("data/generated"))
    assert first and len(again) == len(first)
    for a, b in zip(first, again):
        for k in a:
            np.testing.assert_array_equal(a[k], b[k])


def test_different_generate_seed_changes_samples(workspace: Path):
    from tests.conftest import write_params

    run("prepare")
    run("train")
    run("generate")
    first = next(iter_shards("data/generated"))["images"]
    write_params(workspace / "params.yaml", {"generate": {"seed": 99}})
    run("generate")
    assert not np.array_equal(first, next(iter_shards("data/generated"))["images"])


def test_stage_before_its_input_exists_fails_clearly(workspace: Path, capsys):
    assert main(["generate", "--quiet"]) == 2
    assert "run the train stage first" in capsys.readouterr().err
    assert main(["train", "--quiet"]) == 2
    assert "run the prepare stage first" in capsys.readouterr().err


def test_crossfit_quota_end_to_end(workspace: Path, monkeypatch, capsys):
    """The default quota through the stages: crossfit writes its table (with the synthetic images
    each candidate added per fold) and its choice, and merge.realise = count realises the chosen
    share by count, so the merged folder read uniformly is that share synthetic (every manifest
    weight equal). Which share wins on tiny data is chance; the rule is tested on its own
    (tests/selection/test_crossfit.py), so here it is made to pick share 0.5."""
    import augment.selection.crossfit as crossfit

    write_params(workspace / "params.yaml", {
        "prepare": {"val_fraction": 0.0}, "merge": {"quota": "crossfit", "realise": "count"},
        "filter": {"top_fraction": 1.0},  # keep every sample: share 0.5 needs one per real image
        "crossfit": {"folds": 2, "shares": [0.0, 0.5], "seeds": [0], "steps": 10, "device": "cpu", "workers": 1}})
    monkeypatch.setattr(crossfit, "choose", lambda table, *rule: table[1])
    for stage in ("prepare", "train", "generate", "filter"):
        run(stage)
    capsys.readouterr()
    run("crossfit")
    out = capsys.readouterr().out  # the longest stage says how far it is, also under --quiet (dvc.yaml)
    assert "crossfit fold 1/2: generator trained" in out and "crossfit fold 2/2: generator trained" in out
    run("merge")
    table = read_csv("data/crossfit/table.csv")
    assert [r["synthetic_share"] for r in table] == ["0.0", "0.5"]
    assert table[0]["synthetic_per_fold"] == "0 0" and len(table[1]["synthetic_per_fold"].split()) == 2
    assert float(table[1]["temperature"]) > 0 and float(table[1]["scaled_nll_gain_lower"]) <= float(table[1]["scaled_nll_gain"])
    # at the default crossfit.confidence (0.5) the bound is the estimate; the calibrated check, at its
    # own level (0.7), lies below it
    assert float(table[1]["scaled_nll_gain_lower"]) == pytest.approx(float(table[1]["scaled_nll_gain"]))
    assert float(table[1]["scaled_nll_gain_check"]) <= float(table[1]["scaled_nll_gain"])
    assert json.loads(Path("data/crossfit/selection.json").read_text())["synthetic_share"] == 0.5
    summary = json.loads(Path("data/augmented/summary.json").read_text())
    rows = read_csv("data/augmented/manifest.csv")
    assert len({r["weight"] for r in rows}) == 1  # uniform: the count realises the share
    assert summary["tuning"]["synthetic_share"] == 0.5 and summary["synthetic"] > 0
    assert summary["synthetic"] == sum(r["source"] == "synthetic" for r in rows)
    assert summary["synthetic_share"] == pytest.approx(summary["synthetic"] / (summary["real"] + summary["synthetic"]))
    for v in summary["per_class"].values():
        assert v["synthetic"] <= v["real"]  # share 0.5: at most one per real image


@pytest.mark.slow
def test_a_replicated_share_holds_read_as_is_and_by_weight(workspace: Path, capsys):
    """merge.realise = replicate (the default) at share 0.25: every accepted sample is merged and
    each real image written k times, so a consumer that reads the folder as is (ImageFolder, no
    weights) trains at close to the share the pipeline tested, and one that samples by the
    manifest's weights at exactly it. The copies are the real images, byte for byte; evaluate
    reads the merged set. With realise = weights (no copies) the folder read as is would be
    mostly synthetic."""
    from augment.data.torch_dataset import AugmentedDataset
    from augment.selection.quota import realised_share

    write_params(workspace / "params.yaml", {"generate": {"n_per_class": 40},
                                             "merge": {"quota": "all", "synthetic_share": 0.25},
                                             "evaluate": {"seeds": [0], "steps": 5, "ablation": False,
                                                          "quality": False}})
    for stage in ("prepare", "train", "generate", "filter", "merge", "evaluate"):
        run(stage)
    summary = json.loads(Path("data/augmented/summary.json").read_text())
    n_real, n_syn, k = summary["real"], summary["synthetic"], summary["real_copies"]
    assert n_syn > 3 * n_real  # enough accepted samples that the copies matter
    assert k == round(n_syn * 0.75 / (0.25 * n_real)) >= 2
    ds = AugmentedDataset("data/augmented", return_meta=True)
    uniform = float(ds.is_synthetic.mean())
    assert uniform == pytest.approx(summary["uniform_share"]) and abs(uniform - 0.25) < 0.25 / k
    assert ds.weights[ds.is_synthetic].sum() / ds.weights.sum() == pytest.approx(0.25)
    assert realised_share(n_real, n_syn) > 0.5  # what realise = weights would leave read as is
    real_rows = [i for i, r in enumerate(ds.rows) if r["source"] == "real"]
    assert len(real_rows) == n_real * k
    by_origin: dict[str, list[int]] = {}
    for i in real_rows:
        by_origin.setdefault(ds.rows[i]["origin"], []).append(i)
    assert len(by_origin) == n_real and {len(v) for v in by_origin.values()} == {k}
    for rows in list(by_origin.values())[:5]:
        first = ds[rows[0]][0]
        assert all(torch_equal(ds[i][0], first) for i in rows[1:])
    assert json.loads(Path("metrics/evaluate.json").read_text())["share"] == 0.25
    # a summary that does not match the folder (copies) is detected, never trusted
    for bad, says in ((k + 1, "real rows"), (0, "real_copies = 0 is not a whole number")):
        Path("data/augmented/summary.json").write_text(json.dumps({**summary, "real_copies": bad}))
        assert main(["evaluate", "--quiet"]) == 2
        assert says in capsys.readouterr().err


def torch_equal(a, b) -> bool:
    return bool((a == b).all())
