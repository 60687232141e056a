"""How much synthetic data, and which: quotas, and tuning on the VAL split.

``select_per_class`` turns filter decisions into the synthetic samples to merge: accepted samples
of each class in rank order (calibrated discriminator confidence, most trusted first), cut to a
per-class quota. ``tune_selection`` chooses the kept fraction and the synthetic share by
the downstream classifier's accuracy on the VAL split, over a small grid that includes share 0
("no synthetic"), so tuning can fall back to real data only. A share is realised as merge will
realise it (``merge.realise``, :func:`augment.selection.quota.select_for_share`).

The test split never reaches this module: the stage adapter passes train and val arrays only
(``tests/pipeline/test_security.py`` poisons the test images and checks nothing before
evaluate changes).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from augment.config import ClassicalConfig, MergeConfig
from augment.downstream.classifier import ClassifierSpec, train_downstream
from augment.selection.quota import select_for_share


def _val_scores(model, val_x, val_y, device) -> tuple[float, float]:
    from augment.downstream.classifier import predict_proba

    p = predict_proba(model, val_x, device)
    acc = float((p.argmax(1) == val_y).mean())
    nll = float(-np.log(np.clip(p[np.arange(len(val_y)), val_y], 1e-12, 1.0)).mean())
    return acc, nll


def tune_selection(train_x: np.ndarray, train_y: np.ndarray, val_x: np.ndarray, val_y: np.ndarray,
                   syn_x: np.ndarray, syn_y: np.ndarray, syn_rank: np.ndarray, num_classes: int,
                   cfg: MergeConfig, classical: ClassicalConfig = ClassicalConfig(),
                   progress: bool = False) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Grid over (fraction kept, synthetic share) scored on VAL; returns the choice and the curve.
    The classifier trained at each point is ``cfg.tune_model`` (the SmallCNN by default).

    ``syn_*`` are the accepted synthetic candidates (all classes). Only TRAIN (to fit) and VAL (to
    score) real images are passed in -- never test.
    """
    from augment.core.device import resolve_device
    from augment.downstream.models import check_model_builds, user_model_errors

    if len(val_x) == 0:
        raise ValueError("merge.quota = tuned needs a validation split (prepare.val_fraction > 0)")
    device = resolve_device(cfg.device)
    make_model = check_model_builds(cfg.tune_model, "merge.tune_model", train_x.shape[3], num_classes,
                                    min(train_x.shape[1:3]), *train_x.shape[1:3])  # checked before any training
    everything = np.ones(len(syn_y), bool)
    real_counts = np.bincount(train_y, minlength=num_classes)
    points = []
    for share in sorted(set(cfg.tune_shares)):
        for frac in (sorted(set(cfg.tune_fractions), reverse=True) if share > 0 else [1.0]):
            points.append((float(share), float(frac)))
    rows = []
    for i, (share, frac) in enumerate(points):
        pick, draw = select_for_share(syn_y, everything, syn_rank, real_counts, share, frac, cfg.realise)
        accs, nlls = [], []
        for seed in cfg.tune_seeds:
            with user_model_errors(cfg.tune_model, "merge.tune_model"):
                model = train_downstream(train_x, train_y, num_classes, ClassifierSpec(steps=cfg.tune_steps), seed,
                                         device, classical, syn_x[pick], syn_y[pick], draw,  # as merged
                                         make_model)
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
              "model": cfg.tune_model, "no_synthetic": best["synthetic_share"] == 0.0}
    return choice, rows
