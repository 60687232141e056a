"""Merge: quotas, both output formats, the AugmentedDataset reader, weights, determinism."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.cli import main
from augment.config import MergeConfig
from augment.core.files import read_csv
from augment.data.torch_dataset import AugmentedDataset
from augment.selection.merge import draw_weights
from augment.selection.quota import quota_counts, select_per_class
from tests.conftest import write_params


def run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


def test_quota_modes():
    accepted = np.array([100, 100, 5])
    real = np.array([10, 20, 4])
    assert quota_counts(accepted, real, MergeConfig(quota="all")).tolist() == [100, 100, 5]
    assert quota_counts(accepted, real, MergeConfig(quota="per_real", synthetic_per_real=2.0)).tolist() == [20, 40, 5]
    assert quota_counts(accepted, real, MergeConfig(quota="per_real")).tolist() == [100, 100, 5]  # null = all
    assert quota_counts(accepted, real, MergeConfig(quota="count", synthetic_count=30)).tolist() == [30, 30, 5]
    # balanced: every class topped up to 1.5 x the largest class (30); capped by what was accepted
    assert quota_counts(accepted, real, MergeConfig(quota="balanced", balance_factor=1.5)).tolist() == [20, 10, 5]


def test_selection_takes_the_most_trusted_first_and_is_deterministic():
    labels = np.array([0, 0, 0, 1, 1, 1])
    accepted = np.array([1, 1, 1, 1, 0, 1], bool)
    rank = np.array([0.1, 0.9, 0.5, 0.3, 0.99, 0.3])
    assert select_per_class(labels, accepted, rank, np.array([2, 5])).tolist() == [1, 2, 3, 5]
    assert select_per_class(labels, accepted, rank, np.array([9, 9]), fraction=0.5).tolist() == [1, 2, 3]


def test_draw_weights_realise_the_share():
    syn = np.r_[np.zeros(10, bool), np.ones(90, bool)]
    w = draw_weights(syn, 0.25)
    assert w[syn].sum() / w.sum() == pytest.approx(0.25)
    assert np.allclose(draw_weights(syn, None), 1 / 100)


@pytest.mark.slow
def test_png_and_npz_formats_hold_the_same_dataset(workspace: Path):
    write_params(workspace / "params.yaml", {"merge": {"quota": "per_real", "synthetic_per_real": 1.0}})
    for stage in ("prepare", "train", "generate", "filter", "merge"):
        run(stage)
    png = AugmentedDataset("data/augmented", return_meta=True)
    summary = json.loads(Path("data/augmented/summary.json").read_text())
    assert summary["synthetic"] == int(png.is_synthetic.sum()) > 0
    for c, v in summary["per_class"].items():
        assert v["synthetic"] <= v["real"]  # at most 1x the real count
    x, y, is_syn, w = png[len(png) - 1]
    assert isinstance(x, torch.Tensor) and x.shape == (1, 8, 8) and is_syn and w > 0
    rows = read_csv("data/augmented/manifest.csv")
    syn_rows = [r for r in rows if r["source"] == "synthetic"]
    assert all(r["score_discriminator"] and r["checkpoint_sha256"] and r["generate_seed"] for r in syn_rows)
    first = Path("data/augmented/manifest.csv").read_bytes()
    a_img, a_lab, a_syn, a_w = png.arrays()
    run("merge")
    assert Path("data/augmented/manifest.csv").read_bytes() == first  # deterministic

    write_params(workspace / "params.yaml", {"merge": {"quota": "per_real", "synthetic_per_real": 1.0,
                                                       "format": "npz", "shard_size": 7}})
    run("merge")
    assert sorted(p.name for p in Path("data/augmented").glob("shard_*.npz"))[0] == "shard_00000.npz"
    assert not any(Path("data/augmented").glob("*/*.png"))
    npz = AugmentedDataset("data/augmented")
    b_img, b_lab, b_syn, b_w = npz.arrays()
    assert np.array_equal(a_img, b_img) and np.array_equal(a_lab, b_lab) and np.array_equal(a_syn, b_syn)
    assert np.allclose(a_w, b_w)
    from augment.data.torch_dataset import load_augmented

    images, labels, synthetic, _ = load_augmented("data/augmented")
    assert np.array_equal(images, a_img)
    loader = torch.utils.data.DataLoader(npz, batch_size=5)
    xb, yb = next(iter(loader))
    assert xb.shape == (5, 1, 8, 8) and yb.shape == (5,)


@pytest.mark.slow
def test_refit_with_val_merges_val_but_never_test(workspace: Path):
    from augment.data.prepare import load_prepared

    write_params(workspace / "params.yaml", {"merge": {"quota": "tuned", "tune_shares": [0.0, 0.5],
                                                       "tune_fractions": [1.0], "tune_steps": 5,
                                                       "refit_with_val": True}})
    for stage in ("prepare", "train", "generate", "filter", "merge", "evaluate"):
        run(stage)
    ds = load_prepared("data/prepared")
    summary = json.loads(Path("data/augmented/summary.json").read_text())
    assert summary["real_splits"] == ["train", "val"] and summary["real"] == int((ds.split < 2).sum())
    origins = {r["origin"] for r in read_csv("data/augmented/manifest.csv") if r["source"] == "real"}
    assert origins == {f for f, s in zip(ds.files, ds.split) if s < 2}  # train + val, no test image
    metrics = json.loads(Path("metrics/evaluate_detail.json").read_text())
    assert metrics["train_real_images"] == summary["real"]


def test_a_cross_fitted_share_is_realised_by_count_or_by_weights():
    """merge.realise = count, share 0.5 with 4 and 6 real images: 4 and 6 synthetic images (the most
    trusted of each class), so the folder read uniformly is half synthetic and every draw weight is
    equal. weights: every accepted sample, the share in the weights. A selection cross-fitted for
    the other realisation is refused."""
    from augment.data.prepare import PreparedDataset
    from augment.selection.merge import choose_synthetic

    labels = np.repeat([0, 1], [4, 6])
    ds = PreparedDataset(np.zeros((10, 8, 8, 1), np.uint8), labels, np.zeros(10, np.int8), ["a", "b"],
                         [f"f{i}" for i in range(10)], [str(i) for i in range(10)])
    syn_labels = np.repeat([0, 1], 20)
    decisions = {"labels": syn_labels, "accepted": np.ones(40, bool), "confidence": np.arange(40.0),
                 "index": np.arange(40)}
    selection = {"synthetic_share": 0.5, "fraction": 1.0, "used": True, "realise": "count"}
    count = MergeConfig(quota="crossfit", realise="count")
    pick, share, choice, _ = choose_synthetic(ds, "unused", decisions, count, selection=selection)
    assert np.bincount(syn_labels[pick]).tolist() == [4, 6]
    assert pick.tolist() == list(range(16, 20)) + list(range(34, 40))  # top-ranked per class
    assert share == pytest.approx(0.5) and choice["synthetic_share"] == 0.5
    w = draw_weights(np.r_[np.zeros(10, bool), np.ones(len(pick), bool)], share)
    assert np.allclose(w, w[0])  # the realised share needs no weights
    few = {**decisions, "accepted": np.r_[np.ones(2, bool), np.zeros(18, bool), np.ones(20, bool)]}
    pick, share, _, _ = choose_synthetic(ds, "unused", few, count, selection=selection)
    assert np.bincount(syn_labels[pick]).tolist() == [2, 6] and share == pytest.approx(8 / 18)
    weights = MergeConfig(quota="crossfit", realise="weights")
    pick, share, _, _ = choose_synthetic(ds, "unused", decisions, weights, selection={**selection, "realise": "weights"})
    assert len(pick) == 40 and share == 0.5
    from augment.errors import DataError

    with pytest.raises(DataError, match="merge.realise = count.*re-run the crossfit stage"):
        choose_synthetic(ds, "unused", decisions, weights, selection=selection)


def test_replicate_factor_makes_the_folder_read_as_is_the_share():
    """merge.realise = replicate: k copies of every real image so that a uniform draw over the
    folder is close to the share; the weights still give it exactly."""
    from augment.selection.quota import realised_share, replicate_factor

    for n_real, n_syn, share in [(100, 850, 0.25), (100, 840, 0.5), (3000, 2000, 0.25), (40, 7, 0.5)]:
        k = replicate_factor(n_real, n_syn, share)
        assert k >= 1
        best = min(range(1, 200), key=lambda j: abs(realised_share(j * n_real, n_syn) - share))
        assert k == best  # the whole number of copies that comes closest to the share
    assert replicate_factor(100, 850, 0.25) == 26 and abs(realised_share(2600, 850) - 0.25) < 0.01
    assert replicate_factor(100, 0, 0.5) == replicate_factor(100, 50, None) == replicate_factor(100, 50, 0.0) == 1
    with pytest.raises(ValueError, match="not in"):
        replicate_factor(10, 10, 1.0)


def test_a_replicated_share_uses_a_selection_cross_fitted_by_weights():
    """replicate trains as weights does (the copies only repeat the reals): a selection made for
    either serves the other; one made for count does not."""
    from augment.data.prepare import PreparedDataset
    from augment.errors import DataError
    from augment.selection.merge import choose_synthetic

    ds = PreparedDataset(np.zeros((10, 8, 8, 1), np.uint8), np.repeat([0, 1], [4, 6]), np.zeros(10, np.int8),
                         ["a", "b"], [f"f{i}" for i in range(10)], [str(i) for i in range(10)])
    decisions = {"labels": np.repeat([0, 1], 20), "accepted": np.ones(40, bool), "confidence": np.arange(40.0),
                 "index": np.arange(40)}
    cfg = MergeConfig(quota="crossfit", realise="replicate")
    for tested in ("weights", "replicate"):
        pick, share, _, _ = choose_synthetic(ds, "unused", decisions, cfg,
                                             selection={"synthetic_share": 0.25, "fraction": 1.0, "realise": tested})
        assert len(pick) == 40 and share == 0.25
    with pytest.raises(DataError, match="merge.realise = count"):
        choose_synthetic(ds, "unused", decisions, cfg, selection={"synthetic_share": 0.25, "fraction": 1.0,
                                                                  "realise": "count"})


def test_merge_warns_when_the_folder_read_as_is_is_not_the_chosen_share():
    """realise = weights leaves a folder that is mostly synthetic when read uniformly: the merge
    stage says so and names the fix; a replicated folder close to the share gets no warning."""
    from augment.pipeline.stages import _merge_warnings

    per_class = {"a": {"synthetic": 400}, "b": {"synthetic": 450}}
    weights = _merge_warnings({"synthetic": 850, "synthetic_share": 0.25, "uniform_share": 850 / 950,
                               "per_class": per_class})
    assert len(weights) == 1 and "89% synthetic" in weights[0] and "merge.realise: replicate" in weights[0]
    assert _merge_warnings({"synthetic": 850, "synthetic_share": 0.25, "uniform_share": 850 / 3450,
                            "per_class": per_class}) == []
    # replicate already in effect, but too few samples accepted for the share: the advice is the weights
    (few,) = _merge_warnings({"synthetic": 15, "synthetic_share": 0.5, "uniform_share": 15 / 59,
                              "realise": "replicate", "per_class": {"a": {"synthetic": 8}, "b": {"synthetic": 7}}})
    assert "only 15 synthetic images" in few and "weight column" in few and "set merge.realise" not in few


def test_merge_notes_classes_the_global_share_draws_far_more_or_less_often():
    """The share is global: a class with no sample is drawn at (1 - share) of its real frequency,
    a small class with many samples far more often; the merge stage names both."""
    from augment.pipeline.stages import _merge_warnings

    per_class = {"good": {"real": 20, "synthetic": 10}, "scratch": {"real": 20, "synthetic": 0},
                 "rare": {"real": 4, "synthetic": 5}}
    lines = _merge_warnings({"synthetic": 15, "synthetic_share": 0.5, "uniform_share": 0.5, "per_class": per_class})
    (note,) = [line for line in lines if line.startswith("note:")]
    assert "scratch x0.50" in note and "rare x2.33" in note and "good" not in note
    even = {c: {"real": 20, "synthetic": 10} for c in ("a", "b")}
    assert _merge_warnings({"synthetic": 20, "synthetic_share": 0.5, "uniform_share": 0.5, "per_class": even}) == []


def test_merge_warning_for_no_synthetic_names_how_the_share_was_chosen():
    """A run that merged nothing says whether cross-fitting or a val split chose share 0."""
    from augment.pipeline.stages import _merge_warnings

    none = {"synthetic": 0, "tuning": {"synthetic_share": 0.0}, "per_class": {}}
    assert "cross-fitted over every labelled image" in _merge_warnings({**none, "quota": "crossfit"})[0]
    assert "tuned on val" in _merge_warnings({**none, "quota": "tuned"})[0]
