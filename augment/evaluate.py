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

from augment.classifier import (
    ClassifierSpec,
    classical_augmentation,
    per_class_accuracy,
    predict_proba,
    train_classifier,
)
from augment.config import EvaluateConfig
from augment.data import PreparedDataset
from augment.device import resolve_device

VARIANTS = {
    "real": ("(a)", "real only", False, False),
    "classical": ("(b)", "real + classical aug", True, False),
    "synthetic": ("(c)", "real + synthetic", False, True),
    "combined": ("(d)", "real + classical + synthetic", True, True),
}


def _spec(cfg: EvaluateConfig) -> ClassifierSpec:
    return ClassifierSpec(steps=cfg.steps, batch_size=cfg.batch_size, lr=cfg.lr, width=cfg.width)


def mixing_weights(is_synthetic: np.ndarray, share: float | None) -> np.ndarray | None:
    """Per-image draw weights so that synthetic images make up ``share`` of each batch."""
    if share is None or not is_synthetic.any() or is_synthetic.all():
        return None
    n_syn, n_real = int(is_synthetic.sum()), int((~is_synthetic).sum())
    return np.where(is_synthetic, share / n_syn, (1 - share) / n_real)


def train_variant(
    variant: str, real_x: np.ndarray, real_y: np.ndarray, syn_x: np.ndarray, syn_y: np.ndarray,
    num_classes: int, cfg: EvaluateConfig, seed: int,
):
    _, _, classical, synthetic = VARIANTS[variant]
    device = resolve_device(cfg.device)
    x, y, weights = real_x, real_y, None
    if synthetic and len(syn_x):
        x = np.concatenate([real_x, syn_x])
        y = np.concatenate([real_y, syn_y])
        weights = mixing_weights(np.r_[np.zeros(len(real_x), bool), np.ones(len(syn_x), bool)], cfg.synthetic_share)
    aug = classical_augmentation(cfg.classical_rotate, cfg.classical_translate, cfg.classical_scale, seed) if classical else None
    return train_classifier(x, y, num_classes, _spec(cfg), seed, augment=aug, device=device, sample_weights=weights)


def summarise(values: list[float]) -> dict[str, float]:
    a = np.asarray(values, dtype=np.float64)
    return {"mean": float(a.mean()), "std": float(a.std(ddof=1)) if len(a) > 1 else 0.0}


def evaluate_variants(ds: PreparedDataset, syn_x: np.ndarray, syn_y: np.ndarray, cfg: EvaluateConfig,
                      progress: bool = True, real: tuple[np.ndarray, np.ndarray] | None = None) -> dict[str, Any]:
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
    results: dict[str, Any] = {}
    bar = tqdm(total=len(VARIANTS) * len(cfg.seeds), desc="evaluate", unit="model", disable=not progress)
    for name in VARIANTS:
        accs, per_class = [], []
        for seed in cfg.seeds:
            model = train_variant(name, real_x, real_y, syn_x, syn_y, k, cfg, seed)
            pred = predict_proba(model, test_x, device).argmax(1)
            accs.append(float((pred == test_y).mean()))
            per_class.append(per_class_accuracy(pred, test_y, k))
            bar.update(1)
        pc = np.asarray(per_class, dtype=np.float64)
        results[name] = {
            **summarise(accs),
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
    return {
        "test_images": int(len(test_x)),
        "train_real_images": int(len(real_x)),
        "synthetic_images": int(len(syn_x)),
        "seeds": list(cfg.seeds),
        "variants": results,
        "delta": deltas,
        "per_class_delta_combined_vs_classical": per_class_delta,
    }


def format_table(metrics: dict[str, Any]) -> str:
    """The evaluation table a user reads: accuracy mean +- std and deltas against (a) and (b)."""
    v = metrics["variants"]
    lines = [
        f"Downstream test accuracy ({metrics['test_images']} test images, {len(metrics['seeds'])} seeds; "
        f"{metrics['train_real_images']} real train + {metrics['synthetic_images']} synthetic images)",
        f"{'variant':<34} {'accuracy':>16} {'Δ vs (a)':>10} {'Δ vs (b)':>10}",
    ]
    for name, (tag, label, _, _) in VARIANTS.items():
        r = v[name]
        da = r["mean"] - v["real"]["mean"]
        db = r["mean"] - v["classical"]["mean"]
        lines.append(f"{tag + ' ' + label:<34} {r['mean']:.4f} ± {r['std']:.4f} {da:>+10.4f} {db:>+10.4f}")
    names = list(v["real"]["per_class"])
    lines.append("")
    lines.append("per class " + " ".join(f"{n[:8]:>8}" for n in names))
    for name, (tag, _, _, _) in VARIANTS.items():
        lines.append(f"{tag:<9} " + " ".join(f"{v[name]['per_class'][n]:>8.3f}" for n in names))
    return "\n".join(lines)
