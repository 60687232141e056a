"""Turning filter decisions into the synthetic samples to merge: per-class quotas in rank order."""

from __future__ import annotations

import math
from typing import Literal

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


def share_counts(real_counts: np.ndarray, share: float) -> np.ndarray:
    """Synthetic images per class that make ``share`` of the class's images in a *uniform* draw:
    ``round(n_real x share / (1 - share))`` -- 1 per real image at 0.5, 1 per 3 at 0.25
    (``merge.realise: count``: a user who trains on the folder as it is gets the tested share)."""
    if not 0.0 <= share < 1.0:
        raise ValueError(f"synthetic share {share!r} is not in [0, 1)")
    return np.round(np.asarray(real_counts, np.float64) * share / (1.0 - share)).astype(np.int64)


Realise = Literal["replicate", "weights", "count"]


def scored_as(realise: str) -> str:
    """The training distribution a realisation gives a consumer that samples by the manifest's
    weights: ``replicate`` only adds copies of the real images, so it trains as ``weights`` does
    (a selection cross-fitted under one is valid for the other)."""
    return "count" if realise == "count" else "weights"


def select_for_share(labels: np.ndarray, accepted: np.ndarray, rank: np.ndarray, real_counts: np.ndarray,
                     share: float, fraction: float = 1.0, realise: Realise = "replicate"
                     ) -> tuple[np.ndarray, float | None]:
    """Decision rows for a chosen ``share`` and the draw share to train them at.

    ``realise = "count"``: per class the top-ranked accepted samples, at most :func:`share_counts`
    of them, drawn uniformly with the reals (share None). ``"weights"`` and ``"replicate"``: every
    accepted sample (x ``fraction``, most trusted first), drawn at ``share`` by per-image weights
    (``replicate`` also copies the real images in the merged folder, :func:`replicate_factor`)."""
    if share <= 0.0:
        return np.zeros(0, np.int64), 0.0
    if realise == "count":
        return select_per_class(labels, accepted, rank, share_counts(real_counts, share), fraction), None
    counts = np.bincount(labels[accepted], minlength=len(real_counts))
    return select_per_class(labels, accepted, rank, counts, fraction), share


def replicate_factor(n_real: int, n_synthetic: int, share: float | None) -> int:
    """Copies of every real image that make a *uniform* draw over the merged folder closest to
    ``share`` synthetic: one of the whole numbers either side of ``n_syn x (1 - share) / (share x
    n_real)``, at least 1 (``merge.realise: replicate``). 1 when nothing synthetic is merged or the
    share is unset."""
    if share is None or share <= 0.0 or n_synthetic <= 0 or n_real <= 0:
        return 1
    if not share < 1.0:
        raise ValueError(f"synthetic share {share!r} is not in [0, 1)")
    exact = n_synthetic * (1.0 - share) / (share * n_real)
    options = {max(1, math.floor(exact)), max(1, math.ceil(exact))}
    return min(sorted(options), key=lambda k: abs(realised_share(k * n_real, n_synthetic) - share))


def realised_share(n_real: int, n_synthetic: int) -> float:
    """The synthetic fraction of a uniform draw over the merged images."""
    total = n_real + n_synthetic
    return float(n_synthetic / total) if total else 0.0
