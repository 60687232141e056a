"""Tuning on VAL: share 0 is in the grid (fallback), and the TEST split never reaches the
calibrator, the filters or the tuner."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.conftest import write_params

from augment.cli import main
from augment.config import MergeConfig
from augment.core.files import atomic_save_npz, load_npz, read_csv
from augment.data.prepare import PreparedDataset
from augment.selection.tuning import tune_selection


def run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


def test_tuning_falls_back_to_no_synthetic_when_it_does_not_help():
    rng = np.random.default_rng(0)
    train_x = rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8)
    train_y = np.repeat([0, 1], 6)
    train_x[train_y == 0, :4] = 255  # class 0: bright top half, class 1: bright bottom half
    train_x[train_y == 1, 4:] = 255
    val_x, val_y = train_x[[0, 6]], train_y[[0, 6]]
    syn_x = rng.integers(0, 255, (20, 8, 8, 1), dtype=np.uint8)  # garbage with random labels
    syn_y = rng.integers(0, 2, 20)
    cfg = MergeConfig(quota="tuned", tune_fractions=[1.0, 0.5], tune_shares=[0.0, 0.5], tune_steps=20,
                      tune_seeds=[0], device="cpu")
    choice, curve = tune_selection(train_x, train_y, val_x, val_y, syn_x, syn_y, rng.random(20), 2, cfg)
    assert [(r["synthetic_share"], r["fraction"]) for r in curve] == [(0.0, 1.0), (0.5, 1.0), (0.5, 0.5)]
    assert curve[0]["synthetic"] == 0 and curve[2]["synthetic"] == 10
    best = max(round(r["val_accuracy"] * 2) for r in curve)
    assert round(choice["val_accuracy"] * 2) == best
    nll_choice, _ = tune_selection(train_x, train_y, val_x, val_y, syn_x, syn_y, rng.random(20), 2,
                                   MergeConfig(**{**cfg.__dict__, "tune_metric": "nll"}))
    assert nll_choice["val_nll"] == min(r["val_nll"] for r in curve) and nll_choice["metric"] == "nll"
    with pytest.raises(ValueError, match="validation split"):
        tune_selection(train_x, train_y, val_x[:0], val_y[:0], syn_x, syn_y, rng.random(20), 2, cfg)


@pytest.mark.slow
def test_test_split_never_reaches_filters_calibrator_or_tuner(workspace: Path, monkeypatch):
    write_params(workspace / "params.yaml", {
        "filter": {"filters": ["discriminator", "label", "memorisation"], "mode": "drs"},
        "merge": {"quota": "tuned", "tune_shares": [0.0, 0.5], "tune_fractions": [1.0, 0.5], "tune_steps": 8},
    })
    for stage in ("prepare", "train", "generate"):
        run(stage)

    # 1. The splits the filter and merge stages ask for: train and val, never test.
    asked: list[str] = []
    original = PreparedDataset.subset

    def spy(self, split):
        asked.append(split)
        return original(self, split)

    monkeypatch.setattr(PreparedDataset, "subset", spy)
    run("filter")
    run("merge")
    monkeypatch.setattr(PreparedDataset, "subset", original)
    assert "test" not in asked and {"train", "val"} <= set(asked)
    before = {"decisions": load_npz("data/filtered/decisions.npz"),
              "report": json.loads(Path("data/filtered/report.json").read_text()),
              "manifest": Path("data/augmented/manifest.csv").read_bytes(),
              "summary": Path("data/augmented/summary.json").read_bytes(),
              "curve": Path("metrics/tuning.csv").read_bytes()}
    assert len(read_csv("metrics/tuning.csv")) == 3

    # 2. Poison the test split (noise images, shuffled labels): filter and merge outputs are unchanged.
    z = load_npz("data/prepared/dataset.npz")
    test = z["split"] == 2
    assert test.any()
    rng = np.random.default_rng(123)
    z["images"][test] = rng.integers(0, 256, z["images"][test].shape, dtype=np.uint8)
    z["labels"][test] = rng.permutation(z["labels"][test])
    atomic_save_npz("data/prepared/dataset.npz", **z)
    run("filter")
    run("merge")
    after = load_npz("data/filtered/decisions.npz")
    assert set(after) == set(before["decisions"])
    assert all(np.array_equal(after[k], before["decisions"][k]) for k in after)
    assert json.loads(Path("data/filtered/report.json").read_text()) == before["report"]
    assert Path("data/augmented/manifest.csv").read_bytes() == before["manifest"]
    assert Path("data/augmented/summary.json").read_bytes() == before["summary"]
    assert Path("metrics/tuning.csv").read_bytes() == before["curve"]
