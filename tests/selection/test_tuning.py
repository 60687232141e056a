"""Tuning on VAL: share 0 is in the grid (fallback); the metric and an empty VAL split are handled.
That the TEST split never reaches the filters or the tuner: tests/pipeline/test_security.py."""

from __future__ import annotations

import numpy as np
import pytest

from augment.config import MergeConfig
from augment.selection.tuning import tune_selection


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
    rank = rng.random(20)
    choice, curve = tune_selection(train_x, train_y, val_x, val_y, syn_x, syn_y, rank, 2, cfg)
    assert [(r["synthetic_share"], r["fraction"]) for r in curve] == [(0.0, 1.0), (0.5, 1.0), (0.5, 0.5)]
    assert curve[0]["synthetic"] == 0 and curve[2]["synthetic"] == 10
    # real only classifies both VAL images; garbage cannot beat that, and a tie keeps share 0
    assert curve[0]["val_accuracy"] == 1.0
    assert choice["synthetic_share"] == 0.0 and choice["no_synthetic"] is True
    nll_choice, nll_curve = tune_selection(train_x, train_y, val_x, val_y, syn_x, syn_y, rank, 2,
                                           MergeConfig(**{**cfg.__dict__, "tune_metric": "nll"}))
    assert nll_choice["val_nll"] == min(r["val_nll"] for r in nll_curve) and nll_choice["metric"] == "nll"
    with pytest.raises(ValueError, match="validation split"):
        tune_selection(train_x, train_y, val_x[:0], val_y[:0], syn_x, syn_y, rng.random(20), 2, cfg)
