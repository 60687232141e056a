"""The evaluate stage's four variants: independent models, the same numbers over worker processes."""

from __future__ import annotations

import numpy as np
import torch

from augment.config import ClassicalConfig, EvaluateConfig
from augment.data.prepare import SPLIT_CODE, PreparedDataset
from augment.evaluation.evaluate import evaluate_variants


def _dataset(per_class: int = 6, test_per_class: int = 5, seed: int = 0) -> PreparedDataset:
    rng = np.random.default_rng(seed)
    n = 3 * (per_class + test_per_class)
    y = np.tile(np.arange(3), n // 3)
    x = rng.integers(0, 40, size=(n, 8, 8, 1)).astype(np.uint8)
    for i, c in enumerate(y):
        x[i, 2 * c:2 * c + 2, :, 0] = 230
    split = np.where(np.arange(n) < 3 * per_class, SPLIT_CODE["train"], SPLIT_CODE["test"]).astype(np.int8)
    files = [f"f{i}.png" for i in range(n)]
    return PreparedDataset(x, y.astype(np.int64), split, ["a", "b", "c"], files, files)


def test_worker_processes_give_the_same_accuracies_as_one_process():
    ds = _dataset()
    syn_x, syn_y = ds.subset("train")
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # as under OMP_NUM_THREADS=1: each worker also trains with one thread
    try:
        out = {w: evaluate_variants(ds, syn_x, syn_y, EvaluateConfig(seeds=[0, 1], steps=15, batch_size=8, width=4,
                                                                     device="cpu", workers=w),
                                    progress=False, classical=ClassicalConfig())
               for w in (1, 2)}
    finally:
        torch.set_num_threads(before)
    for name in ("real", "classical", "synthetic", "combined"):
        assert out[1]["variants"][name]["per_seed"] == out[2]["variants"][name]["per_seed"]
        assert out[1]["variants"][name]["per_class"] == out[2]["variants"][name]["per_class"]


def test_without_synthetic_images_c_and_d_are_a_and_b():
    ds = _dataset()
    out = evaluate_variants(ds, ds.images[:0], ds.labels[:0], EvaluateConfig(seeds=[0], steps=10, batch_size=8,
                                                                             width=4, device="cpu", workers=1),
                            progress=False)
    v = out["variants"]
    assert v["synthetic"]["same_as"] == "real" and v["combined"]["same_as"] == "classical"
    assert v["combined"]["per_seed"] == v["classical"]["per_seed"]
    # the paired (d) - (b) over test images: exactly zero, with a zero-width interval, overall and per class
    paired = out["combined_vs_classical_paired"]
    assert set(paired) == {"all", "a", "b", "c"}
    assert all((r["mean"], r["ci_low"], r["ci_high"]) == (0.0, 0.0, 0.0) for r in paired.values())
    assert paired["all"]["images"] == 15 and paired["a"]["images"] == 5
    # ... which is no measurement: the table says n/a, not a sharp-looking [+0.000, +0.000]
    from augment.evaluation.evaluate import format_table

    table = format_table(out)
    assert "(d) - (b): n/a (no synthetic image was merged" in table and "[+0.000, +0.000]" not in table


def test_paired_difference_matches_the_accuracies_and_covers_the_test_images():
    """The paired (d) - (b) mean is the accuracy difference; its interval is over test images."""
    from augment.evaluation.evaluate import paired_interval

    ds = _dataset()
    syn_x, syn_y = ds.subset("train")
    out = evaluate_variants(ds, syn_x, syn_y, EvaluateConfig(seeds=[0, 1], steps=15, batch_size=8, width=4,
                                                             device="cpu", workers=1), progress=False)
    v, paired = out["variants"], out["combined_vs_classical_paired"]
    assert abs(paired["all"]["mean"] - (v["combined"]["mean"] - v["classical"]["mean"])) < 1e-9
    r = paired_interval(np.array([1.0, 0.0, 0.0, -1.0, 1.0, 1.0]))
    assert r["ci_low"] < r["mean"] < r["ci_high"] and abs(r["mean"] - 1 / 3) < 1e-12 and r["images"] == 6
    assert paired_interval(np.array([0.5]))["ci_low"] is None
    from augment.evaluation.evaluate import format_table

    unchanged = {**out, "combined_vs_classical_paired": {k: {**r, "mean": 0.0, "ci_low": 0.0, "ci_high": 0.0}
                                                         for k, r in paired.items()}}
    assert "+0.000 (no test image scored differently)" in format_table(unchanged)


def test_the_table_shows_no_spread_for_one_seed_and_full_class_names():
    from augment.evaluation.evaluate import VARIANTS, format_table

    per_class = {"scratch_left": 0.9, "scratch_right": 0.8}
    metrics = {"variants": {k: {"mean": 0.85, "std": 0.0, "per_class": per_class} for k in VARIANTS},
               "test_images": 20, "seeds": [0], "train_real_images": 10, "synthetic_images": 0}
    table = format_table(metrics)
    assert "± n/a" in table and "± 0.0000" not in table and "one seed" in table
    assert "scratch_left " in table and "scratch_right " in table  # not both cut to "scratch_"
