"""The ``evaluate`` stage: does the synthetic data make a downstream classifier better?

One small CNN is trained four ways, over several seeds, for the same number of steps:

  (a) real          -- real train images only
  (b) classical     -- real + classical (albumentations) augmentation
  (c) synthetic     -- real + accepted synthetic images (the merged set)
  (d) combined      -- real + classical + synthetic

and scored on the TEST split -- the only place the test split is ever used. Reported: test
accuracy mean +- std per variant, per class, and the deltas against (a) and (b).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from augment.config import ClassicalConfig, EvaluateConfig
from augment.core.device import resolve_device
from augment.core.parallel import job_threads, process_pool, resolve_workers
from augment.data.prepare import PreparedDataset
from augment.downstream.classifier import (
    ClassifierSpec,
    per_class_accuracy,
    predict_proba,
    train_downstream,
)
from augment.downstream.models import check_model_builds, resolve_model, user_model_errors

VARIANTS = {
    "real": ("(a)", "real only", False, False),
    "classical": ("(b)", "real + classical aug", True, False),
    "synthetic": ("(c)", "real + synthetic", False, True),
    "combined": ("(d)", "real + classical + synthetic", True, True),
}


def classifier_spec(cfg: EvaluateConfig) -> ClassifierSpec:
    """The downstream classifier recipe of the evaluate params (every variant, quality, benchmarks)."""
    return ClassifierSpec(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width)


def train_variant(
    variant: str, real_x: np.ndarray, real_y: np.ndarray, syn_x: np.ndarray, syn_y: np.ndarray,
    num_classes: int, cfg: EvaluateConfig, seed: int, classical: ClassicalConfig = ClassicalConfig(),
):
    """Variant (a)-(d) of :data:`VARIANTS` through the one downstream-training function, with the
    classifier ``evaluate.model`` names."""
    _, _, use_classical, synthetic = VARIANTS[variant]
    with user_model_errors(cfg.model, "evaluate.model"):
        return train_downstream(real_x, real_y, num_classes, classifier_spec(cfg), seed, resolve_device(cfg.device),
                                classical if use_classical else None,
                                syn_x if synthetic else None, syn_y if synthetic else None, cfg.synthetic_share,
                                resolve_model(cfg.model, "evaluate.model"))


def _predict_variant(variant: str, real_x: np.ndarray, real_y: np.ndarray, syn_x: np.ndarray, syn_y: np.ndarray,
                     num_classes: int, cfg: EvaluateConfig, seed: int, classical: ClassicalConfig,
                     test_x: np.ndarray) -> np.ndarray:
    """Predicted test labels of one variant x seed model (a worker job)."""
    model = train_variant(variant, real_x, real_y, syn_x, syn_y, num_classes, cfg, seed, classical)
    with user_model_errors(cfg.model, "evaluate.model"):
        return predict_proba(model, test_x, resolve_device(cfg.device)).argmax(1)


def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def evaluate_variants(ds: PreparedDataset, syn_x: np.ndarray, syn_y: np.ndarray, cfg: EvaluateConfig,
                      progress: bool = True, real: tuple[np.ndarray, np.ndarray] | None = None,
                      classical: ClassicalConfig = ClassicalConfig()) -> dict[str, Any]:
    """Train every variant for every seed; score on the test split (its only use).

    ``real``: the real training images of every variant (default: the train split; the merged
    set's real images when merge.refit_with_val added the val split)."""
    from tqdm.auto import tqdm

    real_x, real_y = real if real is not None else ds.subset("train")
    test_x, test_y = ds.subset("test")  # test split: used here, for final scoring only
    if len(test_x) == 0:
        raise ValueError("the prepared dataset has no test images (prepare.test_fraction or prepare.test_dir)")
    device = resolve_device(cfg.device)
    k = ds.num_classes
    check_model_builds(cfg.model, "evaluate.model", real_x.shape[3], k, min(real_x.shape[1:3]),
                       *real_x.shape[1:3])  # before training, on the images' real shape
    results: dict[str, Any] = {}
    correct: dict[str, np.ndarray] = {}  # per variant: each test image's accuracy, averaged over the seeds
    bar = tqdm(total=len(VARIANTS) * len(cfg.seeds), desc="evaluate", unit="model", disable=not progress)
    no_synthetic = len(syn_x) == 0 or cfg.synthetic_share == 0.0
    # Nothing synthetic to add: (c) and (d) would train exactly the models of (a) and (b) (same
    # data, seeds and steps), so their results are those, not a second noisy draw.
    trained = [n for n in VARIANTS if not (no_synthetic and VARIANTS[n][3])]
    n_jobs = len(trained) * len(cfg.seeds)
    workers = resolve_workers(cfg.workers, n_jobs, device)
    # each model on the same threads whatever evaluate.workers is: the numbers do not depend on it
    with process_pool(workers, job_threads(n_jobs, device)) as pool:  # independent models: over the CPUs (augment/core/parallel.py)
        jobs = {(n, seed): pool.submit(_predict_variant, n, real_x, real_y, syn_x, syn_y, k, cfg, seed, classical, test_x)
                for n in trained for seed in cfg.seeds}
        for name in VARIANTS:
            if name not in trained:
                twin = "real" if name == "synthetic" else "classical"
                results[name] = {**results[twin], "same_as": twin}
                correct[name] = correct[twin]
                bar.update(len(cfg.seeds))
                continue
            accs, per_class, hits = [], [], []
            for seed in cfg.seeds:
                pred = jobs[name, seed].result()
                hits.append(pred == test_y)
                accs.append(float((pred == test_y).mean()))
                per_class.append(per_class_accuracy(pred, test_y, k))
                bar.update(1)
            correct[name] = np.mean(hits, axis=0)
            pc = np.asarray(per_class, dtype=np.float64)
            results[name] = {
                **summarise(accs),
                "ci95": ci95(accs),
                "per_seed": accs,
                "per_class": {ds.class_names[c]: float(np.nanmean(pc[:, c])) for c in range(k)},
            }
    bar.close()
    deltas = {
        "synthetic_vs_real": results["synthetic"]["mean"] - results["real"]["mean"],
        "combined_vs_real": results["combined"]["mean"] - results["real"]["mean"],
        "combined_vs_classical": results["combined"]["mean"] - results["classical"]["mean"],
    }
    per_class_delta = {
        n: results["combined"]["per_class"][n] - results["classical"]["per_class"][n] for n in ds.class_names
    }
    # (d) - (b) paired over the test images (each image's accuracy averaged over the seeds): this
    # interval also covers which test images were drawn, which the spread over seeds does not.
    diff = correct["combined"] - correct["classical"]
    paired = {"all": paired_interval(diff),
              **{n: paired_interval(diff[test_y == c]) for c, n in enumerate(ds.class_names)}}
    return {
        "test_images": int(len(test_x)),
        "train_real_images": int(len(real_x)),
        "synthetic_images": int(len(syn_x)),
        "seeds": list(cfg.seeds),
        "model": cfg.model,
        "variants": results,
        "delta": deltas,
        "per_class_delta_combined_vs_classical": per_class_delta,
        "combined_vs_classical_paired": paired,
    }


def paired_interval(diff: np.ndarray) -> dict[str, float | int | None]:
    """Mean of per-image differences and its 95 % Student-t interval (None below two images)."""
    d = np.asarray(diff, dtype=np.float64)
    if len(d) == 0:
        return {"mean": None, "ci_low": None, "ci_high": None, "images": 0}
    half = ci95(d.tolist())
    mean = float(d.mean())
    return {"mean": mean, "ci_low": None if half is None else mean - half,
            "ci_high": None if half is None else mean + half, "images": int(len(d))}


def format_table(metrics: dict[str, Any]) -> str:
    """The evaluation table a user reads: accuracy mean +- std and deltas against (a) and (b)."""
    v = metrics["variants"]
    lines = [
        f"Downstream test accuracy of the {metrics.get('model', 'smallcnn')} classifier "
        f"({metrics['test_images']} test images, {len(metrics['seeds'])} seeds; "
        f"{metrics['train_real_images']} real train + {metrics['synthetic_images']} synthetic images)",
        f"{'variant':<34} {'accuracy':>16} {'Δ vs (a)':>10} {'Δ vs (b)':>10}",
    ]
    for name, (tag, label, _, _) in VARIANTS.items():
        r = v[name]
        da = r["mean"] - v["real"]["mean"]
        db = r["mean"] - v["classical"]["mean"]
        # One seed gives no spread: "n/a", not a "± 0.0000" that reads as an exact number.
        spread = f"± {r['std']:.4f}" if len(metrics["seeds"]) > 1 else "± n/a   "
        lines.append(f"{tag + ' ' + label:<34} {r['mean']:.4f} {spread} {da:>+10.4f} {db:>+10.4f}")
    if len(metrics["seeds"]) < 2:
        lines.append("(one seed: no spread over seeds; set evaluate.seeds to several before reading a difference)")
    paired = metrics.get("combined_vs_classical_paired", {})
    # No synthetic image merged: (d) trains exactly as (b) does, so their difference is no
    # measurement; a "+0.000 [+0.000, +0.000]" would read as a sharp test that found no effect.
    merged_none = not metrics.get("synthetic_images")

    def interval(r: dict | None) -> str:
        if not r or r.get("mean") is None or merged_none:
            return "n/a"
        if r.get("ci_low") is None:
            return f"{r['mean']:+.3f}"
        if r["ci_low"] == r["ci_high"]:
            return f"{r['mean']:+.3f} (no test image scored differently)"
        return f"{r['mean']:+.3f} [{r['ci_low']:+.3f}, {r['ci_high']:+.3f}]"

    if paired.get("all") and merged_none:
        lines.append("(d) - (b): n/a (no synthetic image was merged, so (d) trains as (b) does)")
    elif paired.get("all"):
        lines.append(f"(d) - (b) paired over the {paired['all']['images']} test images (seeds averaged): "
                     f"{interval(paired['all'])} (95 %; unlike the ± above, this covers which test images were drawn)")
    # One row per class, its full name (classes like defect_01 .. defect_12 stay apart).
    names = list(v["real"]["per_class"])
    width = max([9] + [len(n) for n in names])
    lines.append("")
    lines.append(f"{'per class':<{width}} " + " ".join(f"{tag:>8}" for tag, *_ in VARIANTS.values())
                 + ("  (d) - (b) 95 %" if paired else ""))
    for n in names:
        lines.append(f"{n:<{width}} " + " ".join(f"{v[name]['per_class'][n]:>8.3f}" for name in VARIANTS)
                     + (f"  {interval(paired.get(n))}" if paired else ""))
    return "\n".join(lines)


# Headline metrics (metrics/evaluate.json): what `dvc metrics show` / `dvc exp show` display, one
# short column each, so `dvc exp show --only-changed` stays readable in 120 columns. The full
# detail (per seed, per class, deltas, quality, ablation) goes to metrics/evaluate_detail.json.
HEADLINE_KEYS = {"real": "real", "classical": "classic", "synthetic": "syn", "combined": "comb"}
HEADLINE_DOC = {
    "real / classic / syn / comb": "test accuracy, mean over evaluate.seeds, of variants (a) real only, "
                                   "(b) real + classical aug, (c) real + synthetic, (d) real + classical + synthetic",
    "<variant>_ci": "half-width of its 95% confidence interval over the seeds (Student t; null with one seed)",
    "share": "synthetic share of each training batch in (c)/(d) (chosen by merge when tuned)",
    "accepted": "synthetic samples the filter accepted",
    "merged": "synthetic samples in the merged training set",
    "no_syn": "classes left with no synthetic sample in the merged set (0 = every class has some)",
}


def ci95(values: list[float]) -> float | None:
    """Half-width of the 95% confidence interval of the mean (Student t), ``None`` for one value."""
    a = np.asarray(values, dtype=np.float64)
    if len(a) < 2:
        return None
    from scipy import stats

    return float(stats.t.ppf(0.975, len(a) - 1) * a.std(ddof=1) / np.sqrt(len(a)))


def classes_without_synthetic(syn_y: np.ndarray, class_names: list[str]) -> list[str]:
    """Names of the classes with no synthetic sample in ``syn_y``."""
    counts = np.bincount(np.asarray(syn_y, dtype=np.int64), minlength=len(class_names))
    return [name for c, name in enumerate(class_names) if counts[c] == 0]


def headline_metrics(detail: dict[str, Any], accepted: int | None) -> dict[str, Any]:
    """The small headline dict (see :data:`HEADLINE_DOC`) from the detail of :func:`evaluate_variants`
    (with ``synthetic_share`` and ``classes_without_synthetic`` added by the stage)."""
    out: dict[str, Any] = {}
    for name, key in HEADLINE_KEYS.items():
        v = detail["variants"][name]
        ci = ci95(v["per_seed"])
        out[key] = round(v["mean"], 4)
        out[f"{key}_ci"] = None if ci is None else round(ci, 4)
    share = detail.get("synthetic_share")
    out["share"] = None if share is None else round(float(share), 4)
    out["accepted"] = None if accepted is None else int(accepted)
    out["merged"] = int(detail["synthetic_images"])
    out["no_syn"] = len(detail.get("classes_without_synthetic", []))
    return out
