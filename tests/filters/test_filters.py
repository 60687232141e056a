"""Filters: a copy of a training image and a wrong-class sample are rejected; calibration helps;
filters compose through the stage."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.cli import main
from augment.config import FilterConfig, from_dict
from augment.errors import ConfigError
from augment.filters.apply import (
    CoverageFilter,
    LabelFilter,
    MemorisationFilter,
    SharedClassifier,
    accept_by_confidence,
    decide,
    farthest_point_pick,
    train_label_classifier,
)
from augment.filters.calibration import (
    calibrate_logits,
    drs_accept_prob,
    expected_calibration_error,
    sigmoid,
)


def structured(num_classes: int, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Class c: bright row 2c and a column that varies per image, on dim noise (as conftest)."""
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for c in range(num_classes):
        for i in range(per_class):
            img = rng.integers(0, 60, size=(8, 8, 1), dtype=np.uint8)
            img[(c * 2) % 8] = 255
            img[:, (c * 3 + i) % 8] = 200
            xs.append(img)
            ys.append(c)
    return np.stack(xs), np.asarray(ys, np.int64)


def test_planted_exact_copy_of_a_training_image_is_rejected():
    train_x, train_y = structured(3, 16, seed=0)  # every (class, column) pattern twice
    new_x, new_y = structured(3, 6, seed=1)  # fresh images of the same classes
    syn_x = np.concatenate([new_x, train_x[4:5]])  # plant an exact copy of training image 4
    syn_y = np.r_[new_y, train_y[4]]
    for space in ("pixel", "feature", "both"):
        embed = lambda x: x.reshape(len(x), -1).astype(np.float32) * 0.5  # noqa: E731 (a stand-in feature map)
        f = MemorisationFilter(train_x, train_y, 3, percentile=5.0, scope="per_class", space=space, embed_fn=embed)
        scores = f.score(syn_x, syn_y)
        accepted = f.accept(scores, syn_y)
        assert not accepted[-1], space
        assert scores["memorisation"][-1] == 0.0
        assert accepted[:-1].mean() > 0.7, space  # fresh samples mostly pass


def test_memorisation_threshold_is_a_percentile_of_real_train_distances():
    train_x, train_y = structured(2, 12, seed=0)
    f = MemorisationFilter(train_x, train_y, 2, percentile=50.0, scope="global", space="pixel")
    # half the real training images are closer to another one than the median: the scale is real data's own
    scores = f.score(train_x + 0, train_y)  # queries equal to train images -> exact copies -> all rejected
    assert not f.accept(scores, train_y).any()
    assert f.thresholds["pixel"].shape == (2,) and f.thresholds["pixel"][0] == f.thresholds["pixel"][1]


@pytest.mark.slow
def test_planted_wrong_class_sample_is_rejected():
    torch.manual_seed(0)
    train_x, train_y = structured(3, 12, seed=0)
    cfg = FilterConfig(classifier_steps=120, label_min_confidence=0.5, device="cpu")
    model = train_label_classifier(train_x, train_y, 3, cfg, torch.device("cpu"))
    f = LabelFilter(SharedClassifier(model, torch.device("cpu")), cfg.label_min_confidence)
    held_x, held_y = structured(3, 4, seed=5)
    wrong_y = (held_y + 1) % 3  # every sample conditioned on the wrong class
    right = f.accept(f.score(held_x, held_y), held_y)
    wrong = f.accept(f.score(held_x, wrong_y), wrong_y)
    assert right.mean() >= 0.75
    assert not wrong.any()


def test_platt_calibration_reduces_expected_calibration_error():
    rng = np.random.default_rng(0)
    real = rng.normal(1.0, 1.0, 400) * 6.0  # an overconfident discriminator: logits far too large
    fake = rng.normal(-1.0, 1.0, 400) * 6.0
    cal = calibrate_logits(real, fake, "platt", seed=0)
    assert cal.ece_after < cal.ece_before
    assert 0 < cal.a < 1  # it shrinks the logits
    none = calibrate_logits(real, fake, "none")
    assert none.a == 1.0 and none.b == 0.0 and none.ece_after == none.ece_before
    target = np.r_[np.ones(400), np.zeros(400)]
    assert expected_calibration_error(np.full(800, 0.5), target) == pytest.approx(0.0)
    assert expected_calibration_error(sigmoid(np.r_[real, fake]), target) == pytest.approx(cal.ece_before)


def test_drs_acceptance_is_monotone_per_class_and_seeded():
    rng = np.random.default_rng(1)
    logit = rng.normal(size=200)
    labels = np.repeat([0, 1], 100)
    p = drs_accept_prob(logit, labels, percentile=50.0)
    for c in (0, 1):
        m = labels == c
        order = np.argsort(logit[m])
        assert np.all(np.diff(p[m][order]) >= -1e-12)
        assert 0.3 < (p[m] >= 0.5).mean() < 0.7  # gamma at the median: about half above 1/2
    cfg = FilterConfig(mode="drs", drs_percentile=50.0, seed=3)
    a = accept_by_confidence(sigmoid(logit), labels, cfg)
    b = accept_by_confidence(sigmoid(logit), labels, cfg)
    assert np.array_equal(a, b) and 0 < a.sum() < len(a)


def test_filters_compose_by_and():
    class Fake:
        def __init__(self, name, mask):
            self.name, self.mask = name, mask

        def accept(self, scores, labels):
            return self.mask

    scores = {"labels": np.zeros(4, np.int64), "index": np.arange(4), "discriminator": np.array([.9, .8, .7, .6])}
    out = decide([Fake("discriminator", np.array([1, 1, 0, 1], bool)), Fake("label", np.array([1, 0, 1, 1], bool))],
                 scores)
    assert out["accepted"].tolist() == [True, False, False, True]
    assert out["accept_label"].tolist() == [True, False, True, True]
    assert np.allclose(out["confidence"], scores["discriminator"])  # merge ranks by calibrated D


def test_farthest_point_pick_covers_what_the_real_points_leave_open():
    covered = np.array([[0.0, 0.0], [0.1, 0.0]])
    # a clump next to the real points, one far point, one clump of three far away
    cand = np.array([[0.05, 0.0], [0.0, 0.1], [5.0, 0.0], [9.0, 9.0], [9.0, 9.1], [9.1, 9.0]])
    first = farthest_point_pick(cand, covered, 2)
    assert first.tolist() == [4, 2]  # the farthest clump once, then the far point, not its neighbours
    assert set(farthest_point_pick(cand, covered, 6).tolist()) == set(range(6))  # every row once
    assert farthest_point_pick(cand, covered, 0).size == 0
    assert farthest_point_pick(cand, covered[:0], 1).tolist() == [0]  # nothing covered: first row


def test_coverage_keeps_samples_inside_the_real_manifold_that_fill_its_gaps():
    # features = the "images" themselves (2-d points); class 0: a unit square of train points
    # (k = 1: every radius is 1), class 1: one train point far away (its radius: the median, 1)
    train_x = np.array([[0, 0], [1, 0], [0, 1], [1, 1], [10, 10]], np.float32)
    train_y = np.array([0, 0, 0, 0, 1])
    syn_x = np.array([[0.5, 0.5], [0.1, 0], [5, 5], [1.5, 1], [0.5, 0], [0.9, 0],   # class 0
                      [10.5, 10], [10, 10.2], [0, 0]], np.float32)                      # class 1
    syn_y = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    f = CoverageFilter(train_x, train_y, 2, fraction=0.4, k=1, embed_fn=lambda a: np.asarray(a, np.float32))
    scores = {"labels": syn_y, "index": np.arange(len(syn_y))}
    for s in (slice(0, 4), slice(4, 9)):  # two shards
        for key, v in f.score(syn_x[s], syn_y[s]).items():
            scores[key] = np.r_[scores.get(key, np.zeros(0, np.float32)), v]
    assert np.allclose(scores["coverage"], [0.5 ** 0.5, 0.1, 32 ** 0.5, 0.5, 0.5, 0.1, 0.5, 0.2, 200 ** 0.5])
    prior = np.array([1, 1, 1, 1, 1, 0, 1, 1, 1], bool)  # an earlier filter rejected sample 5

    class Earlier:
        name = "label"

        def accept(self, scores, labels):
            return prior

    out = decide([Earlier(), f], scores)
    # class 0: 5 passed the earlier filter -> keep round(0.4 x 5) = 2 of the 4 inside: the gap
    # filler (0.5, 0.5) first, then the farther of the rest ((1.5, 1) and (0.5, 0) tie: the lower
    # index); never the outlier (5, 5) nor the rejected (0.9, 0). Class 1 (radius: the class-0
    # median, 1): round(0.4 x 3) = 1 of the 2 inside, the farther from (10, 10); never (0, 0).
    assert np.flatnonzero(out["accept_coverage"]).tolist() == [0, 3, 6]
    assert out["accepted"].tolist() == (out["accept_coverage"] & prior).tolist()


def test_coverage_with_one_train_image_per_class_takes_its_scale_from_all_train_images():
    # no class has a k-NN radius of its own: the radius is the distance between the two images
    f = CoverageFilter(np.array([[0, 0], [2, 0]], np.float32), np.array([0, 1]), 2, fraction=1.0, k=3,
                       embed_fn=lambda a: np.asarray(a, np.float32))
    syn_y = np.array([0, 0, 1])
    scores = {"labels": syn_y, **f.score(np.array([[1, 0], [5, 0], [2.5, 0]], np.float32), syn_y)}
    assert np.allclose(scores["coverage"], [0.5, 2.5, 0.25])
    assert f.accept(scores, syn_y).tolist() == [True, False, True]  # not only exact copies


def test_coverage_must_come_last():
    with pytest.raises(ConfigError, match="'coverage' must come last"):
        from_dict(FilterConfig, {"filters": ["coverage", "label"]}, "filter").validate()
    from_dict(FilterConfig, {"filters": ["label", "memorisation", "coverage"]}, "filter").validate()


@pytest.mark.parametrize("bad, key", [({"filters": ["discriminator", "vibes"]}, "filter.filters[1]"),
                                      ({"memorisation_percentile": 120.0}, "filter.memorisation_percentile"),
                                      ({"mode": "best"}, "filter.mode"),
                                      ({"coverage_fraction": 0.0}, "filter.coverage_fraction"),
                                      ({"coverage_k": 0}, "filter.coverage_k")])
def test_bad_filter_params_name_the_key(bad, key):
    with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
        from_dict(FilterConfig, bad, "filter").validate()


def _run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


@pytest.mark.slow
def test_filter_stage_with_every_filter(workspace: Path):
    from conftest import write_params

    from augment.filters.apply import load_decisions

    # trained long enough that the label classifier recognises some samples (12 iterations: none)
    train = {"iterations": 300, "checkpoint_every": 1000, "sample_every": 300, "log_every": 100}
    write_params(workspace / "params.yaml", {"train": train,
                                             "filter": {"filters": ["discriminator", "label", "memorisation"],
                                                        "mode": "threshold", "threshold": 0.0, "classifier_steps": 100}})
    for stage in ("prepare", "train", "generate", "filter"):
        _run(stage)
    report = json.loads(Path("data/filtered/report.json").read_text())
    assert set(report["per_filter"]) == {"discriminator", "label", "memorisation"}
    cal = report["per_filter"]["discriminator"]["calibration"]
    assert cal["method"] == "platt" and cal["ece_before"] is not None and cal["ece_after"] is not None
    assert "dcr" in report["per_filter"]["memorisation"]
    assert all("accepted_by_label" in v for v in report["per_class"].values())
    d = load_decisions("data/filtered")
    both = d["accept_discriminator"] & d["accept_label"] & d["accept_memorisation"]
    assert np.array_equal(d["accepted"], both) and d["accept_discriminator"].all()  # threshold 0 keeps all
    assert both.any() and not both.all()  # the AND is tested on samples some filter rejects, others pass
    assert Path("data/filtered/accepted_grid.png").is_file() or Path("data/filtered/rejected_grid.png").is_file()
    first = {k: v.copy() for k, v in d.items()}
    _run("filter")  # same seed, same decisions
    again = load_decisions("data/filtered")
    assert all(np.array_equal(first[k], again[k]) for k in first)

    # coverage last: it keeps at most half of each class's survivors, all inside the real manifold
    write_params(workspace / "params.yaml", {"train": train,
                                             "filter": {"filters": ["discriminator", "label", "memorisation",
                                                                    "coverage"],
                                                        "mode": "threshold", "threshold": 0.0, "classifier_steps": 100,
                                                        "coverage_fraction": 0.5}})
    _run("filter")
    cov = load_decisions("data/filtered")
    assert np.array_equal(cov["accept_label"], d["accept_label"])  # the earlier filters did not change
    assert np.array_equal(cov["accepted"], both & cov["accept_coverage"])
    # These GAN samples lie outside every train image's k-NN radius, so coverage keeps none of the
    # survivors here; which ones it keeps is tested on samples placed by hand
    # (test_coverage_keeps_samples_inside_the_real_manifold_that_fill_its_gaps). Here: it only ever removes.
    assert both.any() and not (cov["accepted"] & ~both).any()
    assert np.isfinite(cov["coverage"]).all() and (cov["coverage"][cov["accepted"]] <= 1.0).all()
    for c in np.unique(cov["labels"]):
        m = cov["labels"] == c
        assert (cov["accepted"] & m).sum() <= max(1, round(0.5 * (both & m).sum()))
    assert json.loads(Path("data/filtered/report.json").read_text())["per_filter"]["coverage"]["fraction"] == 0.5


def test_nearest_distance_matches_brute_force_across_blocks():
    """The memorisation filter's search (torch, in blocks) finds each query's nearest reference and
    its exact distance, leaving an image itself out when asked."""
    from augment.filters.apply import nearest_distance

    rng = np.random.default_rng(0)
    q, r = rng.random((70, 16)).astype(np.float32), rng.random((9, 16)).astype(np.float32)
    full = np.sqrt(((q[:, None, :].astype(np.float64) - r[None].astype(np.float64)) ** 2).sum(2))
    dist, arg = nearest_distance(q, r, block=32)  # three blocks, the last one partial
    assert np.array_equal(arg, full.argmin(1)) and np.allclose(dist, full.min(1), atol=1e-12)
    d_self, a_self = nearest_distance(r, r, exclude_self=True, block=4)
    rr = np.sqrt(((r[:, None, :].astype(np.float64) - r[None].astype(np.float64)) ** 2).sum(2))
    np.fill_diagonal(rr, np.inf)
    assert np.array_equal(a_self, rr.argmin(1)) and np.allclose(d_self, rr.min(1), atol=1e-12)
