"""How much synthetic data, and which: quotas, and tuning on the VAL split.

``select_per_class`` turns filter decisions into the synthetic samples to merge: accepted samples
of each class in rank order (calibrated discriminator confidence, most trusted first), cut to a
per-class quota. ``tune_selection`` chooses the kept fraction and the synthetic batch share by
the downstream classifier's accuracy on the VAL split, over a small grid that includes share 0
("no synthetic"), so tuning can fall back to real data only.

The test split never reaches this module: the stage adapter passes train and val arrays only
(``tests/test_tuning.py`` poisons the test images and checks nothing changes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from augment.config import MergeConfig


def quota_counts(accepted_counts: np.ndarray, real_counts: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Synthetic samples wanted per class for a fixed quota (before capping at what was accepted)."""
    k = len(real_counts)
    if cfg.quota in ("all", "tuned") or (cfg.quota == "per_real" and cfg.synthetic_per_real is None):
        want = accepted_counts.astype(np.int64)
    elif cfg.quota == "per_real":
        want = np.round(cfg.synthetic_per_real * real_counts).astype(np.int64)
    elif cfg.quota == "count":
        want = np.full(k, cfg.synthetic_count, np.int64)
    elif cfg.quota == "balanced":
        target = int(round(real_counts.max() * cfg.balance_factor))
        want = np.maximum(target - real_counts, 0).astype(np.int64)
    else:  # pragma: no cover - validated by the config
        raise ValueError(f"merge.quota = {cfg.quota!r}")
    return np.minimum(want, accepted_counts)


def select_per_class(labels: np.ndarray, accepted: np.ndarray, rank: np.ndarray, counts: np.ndarray,
                     fraction: float = 1.0) -> np.ndarray:
    """Decision rows to merge: per class the top ``min(count, fraction x accepted)`` by rank.

    Sorted by row (= generation order); ties in rank are broken by row, so it is deterministic.
    """
    chosen = []
    for c in range(len(counts)):
        idx = np.flatnonzero((labels == c) & accepted)
        idx = idx[np.argsort(-rank[idx], kind="stable")]
        n = min(int(counts[c]), int(round(len(idx) * fraction)) if fraction < 1.0 else len(idx))
        chosen.append(np.sort(idx[:n]))
    return np.concatenate(chosen).astype(np.int64) if chosen else np.zeros(0, np.int64)


def _val_scores(model, val_x, val_y, device) -> tuple[float, float]:
    from augment.classifier import predict_proba

    p = predict_proba(model, val_x, device)
    acc = float((p.argmax(1) == val_y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(val_y)), val_y], 1e-12, 1.0)).mean())
    return acc, nll


def train_mixed(real_x, real_y, syn_x, syn_y, num_classes: int, share: float | None, steps: int, seed: int,
                device, classical: bool = True, batch_size: int = 64, lr: float = 2e-3, width: int = 32):
    """The downstream model of variant (d): real + classical augmentation + synthetic at ``share``."""
    from augment.classifier import ClassifierSpec, classical_augmentation, train_classifier
    from augment.evaluate import mixing_weights

    x, y, w = real_x, real_y, None
    if len(syn_x) and (share is None or share > 0):
        x = np.concatenate([real_x, syn_x])
        y = np.concatenate([real_y, syn_y])
        w = mixing_weights(np.r_[np.zeros(len(real_x), bool), np.ones(len(syn_x), bool)], share)
    # Classical strength: the evaluate stage's defaults (the baseline every result is compared to).
    aug = classical_augmentation(10.0, 0.1, 0.1, seed) if classical else None
    spec = ClassifierSpec(steps=steps, batch_size=batch_size, lr=lr, width=width)
    return train_classifier(x, y, num_classes, spec, seed, augment=aug, device=device, sample_weights=w)


def tune_selection(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                   syn_x: np.ndarray, syn_y: np.ndarray, syn_rank: np.ndarray, num_classes: int,
                   cfg: MergeConfig, progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid over (fraction kept, synthetic share) scored on VAL; returns the choice and the curve.

    ``syn_*`` are the accepted synthetic candidates (all classes). Only TRAIN (to fit) and VAL (to
    score) real images are passed in -- never test.
    """
    from augment.device import resolve_device

    if len(val_x) == 0:
        raise ValueError("merge.quota = tuned needs a validation split (prepare.val_fraction > 0)")
    device = resolve_device(cfg.device)
    everything = np.ones(len(syn_y), bool)
    counts = np.bincount(syn_y, minlength=num_classes)
    points = []
    for share in sorted(set(cfg.tune_shares)):
        for frac in (sorted(set(cfg.tune_fractions), reverse=True) if share > 0 else [1.0]):
            points.append((float(share), float(frac)))
    rows = []
    for i, (share, frac) in enumerate(points):
        pick = select_per_class(syn_y, everything, syn_rank, counts, frac) if share > 0 else np.zeros(0, np.int64)
        accs, nlls = [], []
        for seed in cfg.tune_seeds:
            model = train_mixed(train_x, train_y, syn_x[pick], syn_y[pick], num_classes, share,
                                cfg.tune_steps, seed, device)
            a, n = _val_scores(model, val_x, val_y, device)
            accs.append(a)
            nlls.append(n)
        rows.append({"point": i, "synthetic_share": share, "fraction": frac, "synthetic": int(len(pick)),
                     "val_accuracy": float(np.mean(accs)), "val_nll": float(np.mean(nlls))})
        if progress:
            print(f"tune share={share} fraction={frac}: val acc {rows[-1]['val_accuracy']:.4f} nll {rows[-1]['val_nll']:.4f}")
    # Best val accuracy (in whole val images); ties -> lower val NLL -> less synthetic.
    n_val = len(val_y)
    if cfg.tune_metric == "nll":
        best = max(rows, key=lambda r: (-round(r["val_nll"], 6), -r["synthetic_share"], r["fraction"]))
    else:
        best = max(rows, key=lambda r: (round(r["val_accuracy"] * n_val), -round(r["val_nll"], 6),
                                        -r["synthetic_share"], r["fraction"]))
    choice = {"synthetic_share": best["synthetic_share"], "fraction": best["fraction"],
              "val_accuracy": best["val_accuracy"], "val_nll": best["val_nll"],
              "val_images": int(n_val), "metric": cfg.tune_metric, "seeds": list(cfg.tune_seeds), "steps": cfg.tune_steps,
              "no_synthetic": best["synthetic_share"] == 0.0}
    return choice, rows
