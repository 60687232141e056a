"""Synthetic-quality metrics: FD, precision/recall/density/coverage, diversity ratio, CAS."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augment.downstream.classifier import ClassifierSpec
from augment.evaluation.quality import (
    format_quality,
    frechet_distance,
    mean_pairwise_distance,
    nearest_train_distances,
    prdc,
    quality_report,
)


def gauss(n: int, d: int = 8, seed: int = 0, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, d)) + shift


def test_identical_distributions_score_as_published():
    m = prdc(gauss(1500, seed=0), gauss(1500, seed=1), k=5)
    # Naeem et al. 2020: identical distributions give density ~1 and coverage ~0.97 at k = 5.
    assert m["density"] == pytest.approx(1.0, abs=0.1)
    assert m["coverage"] == pytest.approx(0.97, abs=0.03)
    assert m["precision"] > 0.8 and m["recall"] > 0.8


def test_collapsed_samples_lose_coverage_and_diversity_but_not_precision():
    real = gauss(500, seed=0)
    collapsed = real[:1] + 0.01 * gauss(500, seed=2)  # 500 near-copies of one real point
    m = prdc(real, collapsed, k=5)
    assert m["coverage"] < 0.05 and m["recall"] < 0.05
    assert m["precision"] > 0.9  # realistic, but useless: why diversity is reported too
    assert mean_pairwise_distance(collapsed) / mean_pairwise_distance(real) < 0.05


def test_frechet_distance_is_zero_for_the_same_set_and_grows_with_a_shift():
    a = gauss(400, seed=0)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    # mean shift of 1 in each of 8 dims adds 8 to the distance
    assert frechet_distance(a, a + 1.0) == pytest.approx(8.0, rel=1e-3)
    assert frechet_distance(a, gauss(400, seed=1, shift=2.0)) > frechet_distance(a, gauss(400, seed=1))


def test_prdc_needs_more_points_than_k():
    assert prdc(gauss(5), gauss(50), k=5) is None


def _digits_like(n_per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, size=(3 * n_per_class, 8, 8, 1), dtype=np.uint8)
    y = np.repeat(np.arange(3), n_per_class)
    for i, c in enumerate(y):
        x[i, 2 * c : 2 * c + 2, :, 0] = 255
        x[i, :, rng.integers(0, 8), 0] = 160
    return x, y


def test_quality_report_scores_good_samples_above_collapsed_ones():
    train_x, train_y = _digits_like(10, 0)
    test_x, test_y = _digits_like(20, 1)
    good_x, good_y = _digits_like(30, 2)  # same process as the real data
    collapsed_x = np.repeat(good_x[::30], 30, axis=0)  # one image per class, repeated
    spec = ClassifierSpec(steps=40, batch_size=16, width=4)
    rep = quality_report(train_x, train_y, test_x, test_y, {"good": (good_x, good_y), "collapsed": (collapsed_x, good_y)},
                         ["a", "b", "c"], spec, seed=0)
    good, bad = rep["sets"]["good"], rep["sets"]["collapsed"]
    assert good["diversity_ratio_min"] > 0.5 and bad["diversity_ratio_mean"] < 0.01
    assert good["prdc"]["coverage"] > bad["prdc"]["coverage"]
    assert 0.0 <= good["cas_ratio"] <= 2.0
    assert set(good["per_class"]) == {"a", "b", "c"}
    json.dumps(rep)  # goes into metrics/evaluate.json as-is
    table = format_quality(rep)
    assert "CAS/real" in table and "collapsed" in table
    # the collapsed set is 3 images repeated, none of them a train image: no copies reported
    assert bad["nearest_train"]["exact_copies"] == 0.0 and "copies" in table


def test_nearest_train_distances_tell_copies_and_slight_edits_from_new_images():
    """A user asks 'are these memorised copies of my images?': copies are counted as copies,
    barely edited copies as closer than real images are to each other, fresh draws as neither."""
    train_x, train_y = _digits_like(10, 0)
    fresh_x, fresh_y = _digits_like(10, 5)
    edited = (train_x.astype(np.int16) + 3).clip(0, 255).astype(np.uint8)  # 3 grey levels brighter
    names = ["a", "b", "c"]
    copies = nearest_train_distances(train_x, train_y, train_x, train_y, names)
    near = nearest_train_distances(edited, train_y, train_x, train_y, names)
    fresh = nearest_train_distances(fresh_x, fresh_y, train_x, train_y, names)
    assert copies["exact_copies"] == 1.0 and copies["distance_ratio_median"] == 0.0
    assert near["exact_copies"] == 0.0 and near["closer_than_real"] == 1.0
    assert near["distance_ratio_median"] < 0.5
    assert fresh["exact_copies"] == 0.0 and fresh["closer_than_real"] < 0.3
    assert fresh["distance_ratio_median"] > 0.5
    assert set(fresh["per_class"]) == set(names)
    # a class the filters or the merge left without samples is reported as such, not an error
    some = nearest_train_distances(fresh_x[fresh_y != 1], fresh_y[fresh_y != 1], train_x, train_y, names)
    assert some["per_class"]["b"] is None and some["n"] == 20


def test_evaluate_stage_reports_quality(workspace: Path):
    from augment.cli import main

    for stage in ("prepare", "train", "generate", "filter", "merge", "evaluate"):
        assert main([stage, "--quiet"]) == 0
    metrics = json.loads(Path("metrics/evaluate_detail.json").read_text())
    q = metrics["quality"]
    assert set(q["sets"]) == {"merged", "generated"}  # the merged set and every generated sample
    assert q["sets"]["merged"]["n_synthetic"] == metrics["synthetic_images"]
    assert "Synthetic quality" in Path("metrics/evaluate.md").read_text()


def test_quality_table_says_when_the_merge_stage_chose_no_sample():
    from augment.evaluation.quality import format_quality

    report = {"feature_model": "f", "reference": "test split", "k": 5, "real_only_accuracy": 0.9,
              "sets": {"merged": None, "generated": None}}
    lines = format_quality(report).splitlines()
    assert any(line.startswith("merged") and "the merge stage chose none" in line for line in lines)
    assert any(line.startswith("generated") and line.endswith("(no samples)") for line in lines)


def test_copy_distances_are_exact_not_left_to_float_cancellation():
    """The copy check measures the nearest neighbour by differences: an image's distance to its
    copy is 0 exactly and a 3-grey-level edit is 3/255 per pixel (the expansion |a|^2+|b|^2-2ab
    left ~0.004 for a copy on one CPU, as large as the edit); ``same`` skips the row itself."""
    from augment.evaluation.quality import _nearest_distances

    rng = np.random.default_rng(0)
    a = rng.random((7, 64)).astype(np.float32)
    b = np.concatenate([a[:3], a[3:5] + np.float32(3 / 255)])
    d = _nearest_distances(a, b)
    assert (d[:3] == 0.0).all()
    assert np.allclose(d[3:5] / 8.0, 3 / 255, rtol=1e-5)  # RMS over 64 pixels
    full = np.sqrt(((a[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1))
    assert np.allclose(d, full.min(1))
    own = _nearest_distances(b, b, same=True)
    pairs = np.sqrt(((b[:, None, :].astype(np.float64) - b[None]) ** 2).sum(-1))
    np.fill_diagonal(pairs, np.inf)
    assert np.allclose(own, pairs.min(1)) and (own > 0).all()
