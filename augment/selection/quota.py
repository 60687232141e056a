"""Turning filter decisions into the synthetic samples to merge: per-class quotas in rank order."""

from __future__ import annotations

import numpy as np

from augment.config import MergeConfig


def quota_counts(accepted_counts: np.ndarray, real_counts: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Synthetic samples wanted per class for a fixed quota (before capping at what was accepted)."""
    k = len(real_counts)
    if cfg.quota in ("all", "tuned", "crossfit") or (cfg.quota == "per_real" and cfg.synthetic_per_real is None):
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
