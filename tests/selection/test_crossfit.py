"""Cross-fitted choice of the synthetic share: folds, statistics, and the never-worse fallback."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from augment.config import (
    ClassicalConfig,
    CrossfitConfig,
    FilterConfig,
    GenerateConfig,
    TrainConfig,
)
from augment.errors import DataError
from augment.selection import crossfit
from augment.selection.crossfit import candidates, paired_gain, stratified_folds


def test_folds_are_stratified_and_cover_every_image_once():
    y = np.repeat(np.arange(4), [6, 7, 9, 3])
    folds = stratified_folds(y, 3, seed=0)
    assert folds.shape == y.shape and set(folds) == {0, 1, 2}
    for c in range(4):
        counts = np.bincount(folds[y == c], minlength=3)
        assert counts.max() - counts.min() <= 1  # each class spread evenly
    assert np.array_equal(folds, stratified_folds(y, 3, seed=0))  # seeded
    assert not np.array_equal(folds, stratified_folds(y, 3, seed=1))


def test_too_few_images_for_the_folds_is_a_clear_error():
    y = np.array([0, 0, 0, 1, 1])
    with pytest.raises(DataError, match=r"crossfit.folds = 3 .*class\(es\) \['b'\] have \[2\]"):
        stratified_folds(y, 3, seed=0, class_names=["a", "b"])


def test_candidates_always_try_real_only_first_and_once():
    cfg = CrossfitConfig(shares=[0.5, 0.0, 0.25, 0.0], fractions=[1.0, 0.5])
    pts = candidates(cfg)
    assert pts[0] == (0.0, 1.0)
    assert [p for p in pts if p[0] == 0.0] == [(0.0, 1.0)]
    assert (0.25, 0.5) in pts and (0.5, 1.0) in pts and len(pts) == 5


def test_resolution_is_the_median_interval_half_width_of_the_synthetic_candidates():
    rows = [{"accuracy_gain_ci_low": 0.0, "accuracy_gain_ci_high": 0.0}]  # real only: not a candidate
    assert crossfit.accuracy_resolution(rows) is None
    rows += [{"accuracy_gain_ci_low": -0.04, "accuracy_gain_ci_high": 0.02},
             {"accuracy_gain_ci_low": -0.05, "accuracy_gain_ci_high": 0.05},
             {"accuracy_gain_ci_low": -0.01, "accuracy_gain_ci_high": 0.01}]
    assert crossfit.accuracy_resolution(rows) == pytest.approx(0.03)
    rows.append({"accuracy_gain_ci_low": float("-inf"), "accuracy_gain_ci_high": float("inf")})  # one image
    assert crossfit.accuracy_resolution(rows) == pytest.approx(0.03)
    # a candidate that changed no out-of-fold prediction has a zero-width interval: it measures no
    # noise level, and alone it must not report "+/-0.0 points"
    assert crossfit.accuracy_resolution(rows + [{"accuracy_gain_ci_low": 0.0, "accuracy_gain_ci_high": 0.0}] * 5) \
        == pytest.approx(0.03)
    assert crossfit.accuracy_resolution(rows[:1] + [{"accuracy_gain_ci_low": 0.0, "accuracy_gain_ci_high": 0.0}]) is None


def test_auto_folds_are_five_or_the_smallest_class():
    """crossfit.folds null: 5 folds (each fold generator sees 4/5 of the data), fewer when a class
    has fewer labelled images, so a scarce class is not an error; an explicit value is kept."""
    from augment.errors import DataError

    ten = np.repeat([0, 1], 10)
    assert crossfit.resolve_folds(ten, None) == crossfit.AUTO_FOLDS == 5
    assert crossfit.resolve_folds(np.array([0] * 10 + [1] * 3), None) == 3
    assert crossfit.resolve_folds(ten, 3) == 3
    with pytest.raises(DataError, match=r"at least 2 labelled images in every class; class\(es\) \['b'\] have 1"):
        crossfit.resolve_folds(np.array([0] * 10 + [1]), None, ["a", "b"])


def test_paired_gain_bounds():
    rng = np.random.default_rng(0)
    clear = paired_gain(0.1 + 0.01 * rng.standard_normal(200), 0.95)
    assert clear["lower"] > 0.09 and clear["ci_low"] < clear["mean"] < clear["ci_high"]
    noise = paired_gain(rng.standard_normal(30), 0.95)
    assert noise["lower"] < 0 < noise["ci_high"]


def _structured(n_per: int, k: int = 3, size: int = 8, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 40, (k * n_per, size, size, 1), dtype=np.uint8)
    y = np.repeat(np.arange(k), n_per)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 2, :, 0] = 230
    return x, y


def _gains_with_t(x: np.ndarray, t: float) -> dict[int, float]:
    """Per-image log-loss gains keyed by the background pixel, whose mean / standard error is ``t``."""
    v = x[:, 7, 7, 0].astype(float)
    z = (v - v.mean()) / v.std(ddof=1)
    return {int(a): float(g) for a, g in zip(v, 0.1 * (z + t / np.sqrt(len(v))))}


def _confidence_only_classifier(gain_of: dict[int, float], sign: dict | None = None):
    """A fake out-of-fold classifier: always the true class, at a confidence that a synthetic share
    raises by ``gain_of`` (times ``sign[share]``, default 1): accuracy never moves, the log-loss does."""
    def fake(fx, fy, held_x, k, steps, seed, device, classical, syn_x, syn_y, share, model_name):
        true = np.array([int(np.argmax([img[2 * c:2 * c + 2, :, 0].mean() for c in range(k)])) for img in held_x])
        s = (sign or {}).get(share, (sign or {}).get("s", 1.0))
        g = s * np.array([gain_of[int(img[7, 7, 0])] for img in held_x]) if share else 0.0
        top = 0.6 * np.exp(g) * np.ones(len(held_x))
        prob = np.repeat(((1 - top) / (k - 1))[:, None], k, axis=1)
        prob[np.arange(len(held_x)), true] = top
        return prob
    return fake


def test_harmful_synthetic_data_is_not_merged(monkeypatch):
    """Synthetic samples carrying the WRONG class pattern: the out-of-fold score sees the harm and
    the choice falls back to real data only, saying why."""
    x, y = _structured(9)

    def fake_candidates(fx, fy, class_names, *args):
        wrong = (fy + 1) % 3  # images of class c+1 labelled c
        return fx, wrong, np.ones(len(fx))

    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.5], seeds=[0], steps=60, device="cpu", workers=1)  # in-process: the patch holds
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig())
    assert out["synthetic_share"] == 0.0 and out["no_synthetic"]
    assert "merging none" in out["reason"]
    # the report says how finely 27 images can see a gain, so "none" does not read as "harmful"
    res = out["accuracy_resolution"]
    row = out["table"][1]
    assert res == pytest.approx((row["accuracy_gain_ci_high"] - row["accuracy_gain_ci_low"]) / 2) and res > 0
    assert f"+/-{100 * res:.1f} points" in out["reason"] and "27 labelled images" in out["reason"]
    harmful = out["table"][1]
    assert harmful["oof_nll"] > out["table"][0]["oof_nll"]
    assert len(out["accepted_per_fold"]) == 3


def test_no_accepted_sample_is_reported_as_nothing_tested(monkeypatch):
    """When the fold filters accept nothing, the report blames the filters and claims no
    resolution: a +/-0.0-point interval would read as a sharp test that found no gain."""
    x, y = _structured(9)
    monkeypatch.setattr(crossfit, "fold_candidates",
                        lambda fx, fy, *args: (fx[:0], fy[:0], np.ones(0)))
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.5], seeds=[0], steps=20, device="cpu", workers=1)
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig())
    assert out["no_synthetic"] and out["accuracy_resolution"] is None
    assert "accepted no synthetic sample" in out["reason"] and "points (95 %)" not in out["reason"]


def test_no_changed_prediction_is_reported_as_such(monkeypatch):
    """When the synthetic candidates leave every out-of-fold prediction as real data alone made it,
    accuracy saw neither a gain nor a loss: the report says so instead of quoting a +/-0.0-point
    resolution, which would read as a sharp test that found no gain."""
    x, y = _structured(9)

    def fake_candidates(fx, fy, class_names, *args):
        return fx, fy, np.ones(len(fx))

    def same_classifier(fx, fy, held_x, k, steps, seed, device, classical, syn_x, syn_y, share, model_name):
        true = np.array([int(np.argmax([img[2 * c:2 * c + 2, :, 0].mean() for c in range(k)])) for img in held_x])
        prob = np.full((len(held_x), k), 0.1 / (k - 1))
        prob[np.arange(len(held_x)), true] = 0.9  # the same with or without synthetic images
        return prob

    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    monkeypatch.setattr(crossfit, "_fold_classifier", same_classifier)
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.5], seeds=[0], steps=10, device="cpu", workers=1)
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig())
    assert out["no_synthetic"] and out["accuracy_resolution"] is None
    assert sum(out["table"][1]["synthetic_per_fold"]) > 0  # samples were tested: not the filters' fault
    assert "No synthetic candidate changed any out-of-fold prediction" in out["reason"]
    assert "100.0 % correct out of fold" in out["reason"]
    assert "points (95 %)" not in out["reason"] and "accepted no synthetic sample" not in out["reason"]


def _faint(n_per: int, k: int = 3, size: int = 8, seed: int = 0):
    """Like :func:`_structured` but the class rows only 40 brighter than a 0-160 background:
    4 real images per class leave the classifier wrong on about a fifth of the held-out ones."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 160, (k * n_per, size, size, 1)).astype(np.int32)
    y = np.repeat(np.arange(k), n_per)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 2, :, 0] += 40
    return x.astype(np.uint8), y


def test_helpful_synthetic_data_is_merged(monkeypatch):
    """With four real images per class in each fit, many clean extra examples of the right class
    make the out-of-fold predictions right more often and lower the log-loss clearly, also at each
    candidate's best temperature: that share is chosen."""
    x, y = _faint(6)
    big_x, big_y = _faint(40, seed=1)

    def fake_candidates(fx, fy, class_names, *args):
        return big_x, big_y, np.ones(len(big_y))

    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    cfg = dataclasses.replace(CrossfitConfig(), folds=3, shares=[0.0, 0.5], seeds=[0, 1], steps=80, device="cpu",
                              workers=1, confidence=0.95, calibrated_gain=True)  # the strict rule: it passes that too
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig(rotate=0.0, translate=0.0, scale=0.0))
    row = out["table"][1]
    assert row["accuracy_gain"] > 0.05 and row["nll_gain_lower"] > 0.1 and row["scaled_nll_gain_lower"] > 0.1
    assert out["synthetic_share"] == 0.5 and not out["no_synthetic"]
    assert "at each candidate's best temperature" in out["reason"]


def test_the_calibrated_check_is_a_guard_at_its_own_level():
    """The raw bound carries the evidence at ``confidence``; the gain at the best temperatures only
    has to clear ``min_gain`` by its bound at ``calibrated_confidence``: a candidate whose
    calibrated gain is 1.5 standard errors above 0 passes it, not the stricter 95 % check
    (``calibrated_confidence: null``) -- and one that is only better calibration (mean 0) fails both."""
    real = {"synthetic_share": 0.0, "fraction": 1.0, "nll_gain": 0.0, "nll_gain_lower": 0.0,
            "scaled_nll_gain": 0.0, "scaled_nll_gain_lower": 0.0, "scaled_nll_gain_check": 0.0, "accuracy_gain": 0.0}
    se = 0.01
    row = {**real, "synthetic_share": 0.25, "nll_gain": 0.05, "nll_gain_lower": 0.03, "scaled_nll_gain": 1.5 * se,
           "scaled_nll_gain_lower": 1.5 * se - 1.66 * se, "scaled_nll_gain_check": 0.5 * se}
    assert crossfit.choose([real, row], 0.0, True) is row
    assert crossfit.choose([real, {**row, "scaled_nll_gain_check": row["scaled_nll_gain_lower"]}], 0.0, True) is real
    only_calibration = {**row, "scaled_nll_gain": 1e-9, "scaled_nll_gain_check": 1e-9 - se}
    assert crossfit.choose([real, only_calibration], 0.0, True) is real
    old = {k: v for k, v in row.items() if k != "scaled_nll_gain_check"}  # a table stored before the check
    assert crossfit.choose([real, old], 0.0, True) is real  # read as it was chosen then, at the raw level


def test_the_calibrated_checks_level_is_the_raw_one_when_null(monkeypatch):
    x, y = _faint(6)
    big_x, big_y = _faint(40, seed=1)
    monkeypatch.setattr(crossfit, "fold_candidates", lambda fx, fy, class_names, *args: (big_x, big_y, np.ones(len(big_y))))
    cfg = dataclasses.replace(CrossfitConfig(), folds=3, shares=[0.0, 0.5], seeds=[0], steps=20, device="cpu", workers=1,
                              confidence=0.95, calibrated_gain=True)
    rest = (TrainConfig(device="cpu"), GenerateConfig(), FilterConfig(), ClassicalConfig(rotate=0.0, translate=0.0, scale=0.0))
    default = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, *rest)
    strict = crossfit.crossfit_select(x, y, ["a", "b", "c"], dataclasses.replace(cfg, calibrated_confidence=None), *rest)
    d, s = default["table"][1], strict["table"][1]
    assert default["calibrated_confidence"] == 0.7 and strict["calibrated_confidence"] == 0.95
    assert s["scaled_nll_gain_check"] == s["scaled_nll_gain_lower"] == d["scaled_nll_gain_lower"]
    assert d["scaled_nll_gain_lower"] < d["scaled_nll_gain_check"] < d["scaled_nll_gain"]


def test_a_gain_that_is_only_less_over_confidence_is_not_merged(monkeypatch):
    """Real only: the right class for 4 of 5 images at p = 0.99, the wrong one for the fifth, also
    at 0.99. With synthetic data: the same predictions at p = 0.7. Its log-loss is far lower, but
    accuracy cannot see the difference: at each candidate's best temperature the two are the same,
    so nothing is merged and the report says why. With crossfit.calibrated_gain off it is merged."""
    x, y = _structured(30)
    noise = x[:, 7, 7, 0].astype(int)  # the background pixel picks the misclassified images

    def fake_candidates(fx, fy, class_names, *args):
        return fx, fy, np.ones(len(fx))

    def fake_classifier(fx, fy, held_x, k, steps, seed, device, classical, syn_x, syn_y, share, model_name):
        true = np.array([int(np.argmax([img[2 * c:2 * c + 2, :, 0].mean() for c in range(k)])) for img in held_x])
        wrong = held_x[:, 7, 7, 0].astype(int) % 5 == 0
        pred = np.where(wrong, (true + 1) % k, true)
        top = 0.7 if share else 0.99
        prob = np.full((len(held_x), k), (1 - top) / (k - 1))
        prob[np.arange(len(held_x)), pred] = top
        return prob

    assert 0 < (noise % 5 == 0).sum() < len(y)
    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    monkeypatch.setattr(crossfit, "_fold_classifier", fake_classifier)
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.25], seeds=[0], steps=10, device="cpu", workers=1, calibrated_gain=True,
                         confidence=0.95)
    args = (x, y, ["a", "b", "c"])
    rest = (TrainConfig(device="cpu"), GenerateConfig(), FilterConfig(), ClassicalConfig())
    out = crossfit.crossfit_select(*args, cfg, *rest)
    row = out["table"][1]
    assert row["nll_gain_lower"] > 0 and row["accuracy_gain"] == 0.0  # raw log-loss: a clear "gain"
    assert row["scaled_nll_gain"] == pytest.approx(0.0, abs=1e-6) and row["scaled_nll_gain_lower"] <= 0
    assert out["table"][0]["temperature"] > 1 > row["temperature"] * 0.99  # real only is over-confident
    assert out["no_synthetic"] and out["calibrated_gain"]
    assert "how confident the classifier is, which accuracy does not see" in out["reason"]
    loose = crossfit.crossfit_select(*args, dataclasses.replace(cfg, calibrated_gain=False), *rest)
    assert loose["synthetic_share"] == 0.25 and "best temperature" not in loose["reason"]


def test_confidence_holds_over_all_candidates(monkeypatch):
    """A gain whose t statistic is 1.8 over 90 images passes a one-sided 95 % bound (t > 1.66)
    but not 97.5 % (t > 1.99). Under ``multiple_testing: bonferroni`` it is merged when tried
    alone, not beside a second, equally good share: with two candidates each is tested at 97.5 %.
    Under the fixed sequence (the default) the first share is tested at 95 % and merged; a share
    after one that fails is never merged, however good: either way the chance of merging data
    that does not help stays at 5 % however long the grid of shares is."""
    assert crossfit.candidate_confidence(0.95, 1) == pytest.approx(0.95)
    assert crossfit.candidate_confidence(0.95, 2) == pytest.approx(0.975)
    assert crossfit.candidate_confidence(0.9, 4) == pytest.approx(0.975)
    x, y = _structured(30)
    gain_of = _gains_with_t(x, 1.8)  # the background pixel sets each image's log-loss gain: t = 1.8 exactly
    gain = np.array([gain_of[int(a)] for a in x[:, 7, 7, 0]])

    def fake_candidates(fx, fy, class_names, *args):
        return fx, fy, np.ones(len(fx))

    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    monkeypatch.setattr(crossfit, "_fold_classifier", _confidence_only_classifier(gain_of))
    rest = (TrainConfig(device="cpu"), GenerateConfig(), FilterConfig(), ClassicalConfig())
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.25], seeds=[0], steps=10, device="cpu", workers=1,
                         calibrated_gain=False, multiple_testing="bonferroni", confidence=0.95)
    alone = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, *rest)
    assert alone["table"][1]["nll_gain"] == pytest.approx(gain.mean())
    assert alone["candidate_confidence"] == pytest.approx(0.95) and alone["synthetic_share"] == 0.25
    assert "one-sided 95% bound" in alone["reason"]
    two = crossfit.crossfit_select(x, y, ["a", "b", "c"], dataclasses.replace(cfg, shares=[0.0, 0.25, 0.5]), *rest)
    assert two["candidate_confidence"] == pytest.approx(0.975)
    assert [r["nll_gain"] for r in two["table"][1:]] == pytest.approx([gain.mean()] * 2)
    assert all(r["nll_gain_lower"] < 0 for r in two["table"][1:])
    assert two["no_synthetic"] and "merging none" in two["reason"]
    gain_of.update({a: g + 0.03 for a, g in gain_of.items()})  # t = 4.6: clear at any level here
    clear = crossfit.crossfit_select(x, y, ["a", "b", "c"], dataclasses.replace(cfg, shares=[0.0, 0.25, 0.5]), *rest)
    assert clear["synthetic_share"] == 0.25  # equal gains: the smaller share
    assert "one-sided 97.5% (= 95% over all candidates) bound" in clear["reason"]
    gain_of.update({a: g - 0.03 for a, g in gain_of.items()})  # back to t = 1.8
    seq = dataclasses.replace(cfg, shares=[0.0, 0.25, 0.5], multiple_testing="sequence")
    first = crossfit.crossfit_select(x, y, ["a", "b", "c"], seq, *rest)
    assert first["candidate_confidence"] == pytest.approx(0.95) and first["multiple_testing"] == "sequence"
    assert first["synthetic_share"] == 0.25 and "tested in order, smallest share first" in first["reason"]
    sign = {0.25: -1.0, 0.5: 1.0}  # the first share hurts, the second helps as before

    def fake_classifier_by_share(fx, fy, held_x, k, steps, seed, device, classical, syn_x, syn_y, share, model_name):
        true = np.array([int(np.argmax([img[2 * c:2 * c + 2, :, 0].mean() for c in range(k)])) for img in held_x])
        g = sign[share] * np.array([gain_of[int(img[7, 7, 0])] for img in held_x]) if share else 0.0
        top = 0.6 * np.exp(g) * np.ones(len(held_x))
        prob = np.repeat(((1 - top) / (k - 1))[:, None], k, axis=1)
        prob[np.arange(len(held_x)), true] = top
        return prob

    monkeypatch.setattr(crossfit, "_fold_classifier", fake_classifier_by_share)
    stopped = crossfit.crossfit_select(x, y, ["a", "b", "c"], seq, *rest)
    assert stopped["table"][2]["nll_gain_lower"] > 0 > stopped["table"][1]["nll_gain_lower"]
    assert stopped["no_synthetic"] and "testing stopped at the first that failed" in stopped["reason"]


def test_worker_processes_give_the_same_choice_as_one_process():
    """The fold generators and models are independent seeded jobs: run over two processes, the
    out-of-fold table is the one a single process computes (one torch thread per job in both),
    with the stages' default thread counts (null: one per CPU) and the label filter training its
    classifier at a size where the thread count changes the weights (above 16x16)."""
    import torch

    x, y = _structured(4, size=20)
    train = TrainConfig(device="cpu", iterations=30, batch_size=16, g_channels=8, d_channels=8, z_dim=8,
                        checkpoint_every=1000, sample_every=1000, log_every=1000)
    gen = GenerateConfig(n_per_class=12, device="cpu")
    filt = FilterConfig(filters=["label"], label_min_confidence=0.0, classifier_steps=20, device="cpu")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as under OMP_NUM_THREADS=1; two workers then get one thread each
    try:
        out = {}
        for workers in (1, 2):
            cfg = CrossfitConfig(folds=2, shares=[0.0, 0.5], seeds=[0], steps=20, device="cpu", workers=workers)
            out[workers] = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, train, gen, filt, ClassicalConfig())
    finally:
        torch.set_num_threads(before)
    assert "workers" not in out[1]  # nothing in the choice depends on the machine's CPU count
    assert out[1]["accepted_per_fold"] == out[2]["accepted_per_fold"]
    for a, b in zip(out[1]["table"], out[2]["table"]):
        assert a.pop("synthetic_per_fold") == b.pop("synthetic_per_fold")
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12)


def test_a_fold_job_in_this_process_uses_a_pool_workers_threads(monkeypatch):
    """With one worker the fold jobs run in this process; they must generate and filter (the label
    filter trains a classifier, whose weights depend on the thread count above 16x16) on the
    threads a pool worker gets, not the stages' default of one per CPU -- else crossfit.workers
    would change the choice."""
    import torch

    import augment.core.parallel as parallel
    import augment.filters.apply as apply

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 4)  # a machine with more CPUs than threads
    seen = []
    real_build = apply.build_filters

    def build(ctx, cfg):
        seen.append(torch.get_num_threads())
        return real_build(ctx, cfg)

    monkeypatch.setattr(apply, "build_filters", build)
    x, y = _structured(4, size=20)
    train = TrainConfig(device="cpu", iterations=4, batch_size=8, g_channels=4, d_channels=4, z_dim=4,
                        checkpoint_every=1000, sample_every=1000, log_every=1000)
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as under OMP_NUM_THREADS=1
    try:
        crossfit.crossfit_select(x, y, ["a", "b", "c"],
                                 CrossfitConfig(folds=2, shares=[0.0, 0.5], seeds=[0], steps=2, device="cpu", workers=1),
                                 train, GenerateConfig(n_per_class=4, device="cpu"),
                                 FilterConfig(filters=["label"], classifier_steps=2, device="cpu"), ClassicalConfig())
    finally:
        torch.set_num_threads(before)
    assert seen == [1, 1]  # one per fold; not usable_cpus() = 4


def test_a_share_is_tested_as_merge_will_realise_it(monkeypatch):
    """merge.realise = count: the candidate share 0.5 adds one top-ranked synthetic image per real
    image of each class to the fit folds, drawn uniformly (what a classifier reading the merged
    folder as it is gets); weights: every accepted sample, drawn at the share by weight."""
    x, y = _structured(6)  # 3 folds: 4 real images per class in each fit
    big_x, big_y = _structured(40, seed=1)
    seen = []

    def fake_candidates(fx, fy, class_names, *args):
        return big_x, big_y, np.arange(len(big_y), dtype=np.float64)  # rank: later rows first

    def fake_classifier(fx, fy, held_x, k, steps, seed, device, classical, syn_x, syn_y, share, model_name):
        assert model_name == "smallcnn"  # crossfit.model's default reaches the worker job
        seen.append((np.bincount(syn_y, minlength=3).tolist(), share, syn_x.copy()))
        return np.full((len(held_x), k), 1.0 / k)

    monkeypatch.setattr(crossfit, "fold_candidates", fake_candidates)
    monkeypatch.setattr(crossfit, "_fold_classifier", fake_classifier)
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.25, 0.5], seeds=[0], steps=10, device="cpu", workers=1)
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig(), realise="count")
    assert out["realise"] == "count"
    counts = sorted({tuple(c) for c, _, _ in seen})
    assert counts == [(0, 0, 0), (1, 1, 1), (4, 4, 4)]  # share 0, 0.25 (round(4/3)), 0.5 (4 per 4 reals)
    assert all(share is None for c, share, _ in seen if sum(c))  # drawn uniformly with the reals
    top = [s for c, _, s in seen if c == [4, 4, 4]][0]
    assert np.array_equal(top[:4], big_x[36:40])  # the best-ranked of class 0
    assert [r["synthetic_per_fold"] for r in out["table"]] == [[0, 0, 0], [3, 3, 3], [12, 12, 12]]

    seen.clear()
    out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                   FilterConfig(), ClassicalConfig(), realise="weights")
    assert sorted({(tuple(c), share) for c, share, _ in seen}) == [((0, 0, 0), 0.0), ((40, 40, 40), 0.25),
                                                                    ((40, 40, 40), 0.5)]


def test_the_stage_summary_states_the_resolution_once():
    from augment.pipeline.stages import _crossfit_summary

    base = {"used": True, "folds": 3, "images": 100, "accuracy_resolution": 0.031}
    chosen = _crossfit_summary({**base, "reason": "share 0.25 lowers out-of-fold log-loss"})
    assert "100 labelled images, accuracy gain seen to +/-3.1 points" in chosen
    none = _crossfit_summary({**base, "no_synthetic": True, "reason": "merging none. ... +/-3.1 points (95 %): a smaller gain or loss "
                                                "cannot be told from noise here"})
    assert none.count("+/-3.1 points") == 1
    assert "seen to" not in _crossfit_summary({**base, "accuracy_resolution": None, "reason": "x"})


def test_a_killed_runs_scratch_is_removed_and_a_live_runs_kept(tmp_path):
    """Fold generators write a checkpoint and samples to a scratch folder named by their process
    id; a run killed with SIGKILL leaves it behind. The next run removes only folders whose
    process is gone: a concurrent run's scratch, and anything not named so, stays."""
    import os
    import subprocess
    import sys

    from augment.selection.crossfit import _scratch_prefix, remove_stale_scratch

    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead = int(done.stdout)
    killed = _scratch_prefix(dead) + "k1ll3d"
    kept = [_scratch_prefix() + "l1ve",  # this (live) process's
            f"augment-crossfit-otherhost-{dead}-x",  # a dead pid, but on another machine sharing the folder
            "augment-crossfit-oldstyle", "someone-else-123-x"]
    for name in [killed, *kept]:
        (tmp_path / name).mkdir()
        (tmp_path / name / "generator.safetensors").write_bytes(b"x")
    removed = remove_stale_scratch(tmp_path)
    assert removed == [str(tmp_path / killed)]
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_hosts_whose_names_differ_only_in_punctuation_do_not_share_scratch_names(monkeypatch):
    """Otherwise one would take the other's live fold folders for a killed run's and delete them."""
    import platform

    from augment.selection.crossfit import _scratch_prefix

    names = {}
    for node in ("ip-172-31-2-210", "ip-172-31-22-10"):
        monkeypatch.setattr(platform, "node", lambda node=node: node)
        names[node] = _scratch_prefix(1234)
    assert len(set(names.values())) == 2


def test_the_accuracy_guard_allows_a_loss_only_within_its_noise():
    """By default (``no_significant_loss``) a candidate whose out-of-fold accuracy is lower by what
    its interval calls noise still passes on its log-loss; one whose whole interval is below 0
    never does. ``not_lower`` (the rule before) refuses any lower mean."""
    real = {"synthetic_share": 0.0, "fraction": 1.0, "nll_gain": 0.0, "nll_gain_lower": 0.0, "accuracy_gain": 0.0,
            "accuracy_gain_ci_low": 0.0, "accuracy_gain_ci_high": 0.0}
    noisy = {**real, "synthetic_share": 0.25, "nll_gain": 0.02, "nll_gain_lower": 0.02, "accuracy_gain": -0.02,
             "accuracy_gain_ci_low": -0.06, "accuracy_gain_ci_high": 0.02}
    harmful = {**noisy, "accuracy_gain_ci_low": -0.03, "accuracy_gain_ci_high": -0.005}
    assert CrossfitConfig().accuracy_guard == "no_significant_loss"
    assert crossfit.choose([real, noisy], 0.0, False, True, "no_significant_loss") is noisy
    assert crossfit.choose([real, noisy], 0.0, False, True, "not_lower") is real
    assert crossfit.choose([real, harmful], 0.0, False, True, "no_significant_loss") is real
    better_acc_worse_nll = {**noisy, "nll_gain": -0.01, "nll_gain_lower": -0.01, "accuracy_gain": 0.02}
    assert crossfit.choose([real, better_acc_worse_nll], 0.0, False, True, "no_significant_loss") is real
    # a table stored without an accuracy interval is read as before: a lower mean fails
    old = {k: v for k, v in noisy.items() if not k.startswith("accuracy_gain_ci")}
    assert crossfit.choose([real, old], 0.0, False, True, "no_significant_loss") is real


def test_the_default_merges_on_the_estimate_the_strict_rule_on_evidence(monkeypatch):
    """A log-loss gain of half a standard error (t = 0.5 over 90 images), accuracy unchanged: the
    default (``confidence: 0.5``, plain cross-validated selection) merges it and says it went by the
    estimate; ``confidence: 0.95`` wants a one-sided 95 % bound above 0 and merges none. A loss of
    the same size is merged by neither. The accuracy interval is at ``accuracy_confidence``."""
    x, y = _structured(30)
    sign = {"s": 1.0}
    monkeypatch.setattr(crossfit, "fold_candidates", lambda fx, fy, class_names, *args: (fx, fy, np.ones(len(fx))))
    monkeypatch.setattr(crossfit, "_fold_classifier", _confidence_only_classifier(_gains_with_t(x, 0.5), sign))
    rest = (TrainConfig(device="cpu"), GenerateConfig(), FilterConfig(), ClassicalConfig())
    cfg = CrossfitConfig(folds=3, shares=[0.0, 0.25], seeds=[0], steps=10, device="cpu", workers=1)
    est = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, *rest)
    row = est["table"][1]
    assert 0 < row["nll_gain"] == pytest.approx(row["nll_gain_lower"])  # at 0.5 the bound is the estimate
    assert est["synthetic_share"] == 0.25 and "the out-of-fold estimate itself" in est["reason"]
    assert est["accuracy_guard"] == "no_significant_loss" and est["accuracy_confidence"] == 0.95
    strict = crossfit.crossfit_select(x, y, ["a", "b", "c"], dataclasses.replace(cfg, confidence=0.95), *rest)
    assert strict["table"][1]["nll_gain_lower"] < 0 and strict["no_synthetic"]
    sign["s"] = -1.0
    loss = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, *rest)
    assert loss["table"][1]["nll_gain"] < 0 and loss["no_synthetic"] and "merging none" in loss["reason"]
    sign.update({0.25: -1.0, 0.5: 1.0})  # the smaller share loses, the larger would gain: the sequence stops
    seq = crossfit.crossfit_select(x, y, ["a", "b", "c"], dataclasses.replace(cfg, shares=[0.0, 0.25, 0.5]), *rest)
    assert seq["table"][2]["nll_gain"] > 0 > seq["table"][1]["nll_gain"] and seq["no_synthetic"]
    assert "merged only when every smaller one also beat real only" in seq["reason"]


def test_the_reason_says_when_a_merged_share_had_lower_accuracy(monkeypatch):
    """A merged share whose out-of-fold accuracy is lower, within its noise, is reported as such;
    one whose accuracy is not lower is reported as not lower."""
    real = {"synthetic_share": 0.0, "fraction": 1.0, "nll_gain": 0.0, "nll_gain_lower": 0.0, "accuracy_gain": 0.0,
            "accuracy_gain_ci_low": 0.0, "accuracy_gain_ci_high": 0.0, "synthetic_per_fold": [0, 0, 0],
            "scaled_nll_gain_check": 0.0}
    for acc, words in ((-0.02, "lower, but not significantly"), (0.01, "(not lower)")):
        row = {**real, "synthetic_share": 0.25, "nll_gain": 0.02, "nll_gain_lower": 0.02, "accuracy_gain": acc,
               "accuracy_gain_ci_low": acc - 0.04, "accuracy_gain_ci_high": acc + 0.04}
        monkeypatch.setattr(crossfit, "choose", lambda table, *a, _row=row: _row)
        x, y = _structured(6)
        monkeypatch.setattr(crossfit, "fold_candidates", lambda fx, fy, class_names, *args: (fx, fy, np.ones(len(fx))))
        cfg = CrossfitConfig(folds=3, shares=[0.0, 0.25], seeds=[0], steps=5, device="cpu", workers=1)
        out = crossfit.crossfit_select(x, y, ["a", "b", "c"], cfg, TrainConfig(device="cpu"), GenerateConfig(),
                                       FilterConfig(), ClassicalConfig())
        assert words in out["reason"] and f"{acc:+.4f}" in out["reason"]


def test_a_bad_accuracy_guard_or_level_names_the_param():
    from augment.config import ConfigError, from_dict

    with pytest.raises(ConfigError, match=r"crossfit\.accuracy_guard = 'loose': expected one of"):
        from_dict(CrossfitConfig, {"accuracy_guard": "loose"}, "crossfit")
    with pytest.raises(ConfigError, match=r"crossfit\.accuracy_confidence"):
        from_dict(CrossfitConfig, {"accuracy_confidence": 1.0}, "crossfit").validate()
    assert from_dict(CrossfitConfig, {"accuracy_guard": "not_lower"}, "crossfit").accuracy_guard == "not_lower"
