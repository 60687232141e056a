"""The ``filter`` stage: accept generated samples by discriminator confidence for their class.

The discriminator's logit for (image, class) is stored by ``generate``; confidence is its
sigmoid. Acceptance is per class: a fixed threshold, or the top fraction of that class (robust
to an uncalibrated D whose logits drift between runs). Only decisions are written (index,
label, score, accepted) -- images stay in the generate shards, so memory stays flat.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from augment.config import FilterConfig
from augment.generate import iter_shards
from augment.io import atomic_directory, atomic_save_npz, atomic_write_json, load_npz


def confidence(logits: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-logits.astype(np.float64)))


def accept_by_confidence(conf: np.ndarray, labels: np.ndarray, cfg: FilterConfig) -> np.ndarray:
    """Boolean mask of accepted samples, decided per class."""
    if cfg.mode == "none":
        return np.ones(len(conf), dtype=bool)
    if cfg.mode == "threshold":
        return conf >= cfg.threshold
    accepted = np.zeros(len(conf), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(len(idx) * cfg.top_fraction)))
        # stable sort on -conf: ties broken by sample index, so decisions are deterministic
        order = idx[np.argsort(-conf[idx], kind="stable")]
        accepted[order[:k]] = True
    return accepted


def filter_samples(gen_dir: str | Path, cfg: FilterConfig) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Score every generated sample and decide acceptance. Returns decisions and a report."""
    meta = json.loads((Path(gen_dir) / "generate.json").read_text())
    class_names = meta["class_names"]
    idx, labels, scores = [], [], []
    for shard in iter_shards(gen_dir, keys=("labels", "scores", "index")):
        idx.append(shard["index"])
        labels.append(shard["labels"])
        scores.append(shard["scores"])
    index = np.concatenate(idx)
    label = np.concatenate(labels)
    logit = np.concatenate(scores)
    conf = confidence(logit)
    accepted = accept_by_confidence(conf, label, cfg)
    per_class = {}
    for c, name in enumerate(class_names):
        m = label == c
        per_class[name] = {
            "generated": int(m.sum()),
            "accepted": int((m & accepted).sum()),
            "rejected": int((m & ~accepted).sum()),
            "mean_confidence": float(conf[m].mean()) if m.any() else None,
        }
    report = {
        "mode": cfg.mode,
        "threshold": cfg.threshold,
        "top_fraction": cfg.top_fraction,
        "generated": int(len(index)),
        "accepted": int(accepted.sum()),
        "acceptance_rate": float(accepted.mean()) if len(index) else 0.0,
        "per_class": per_class,
    }
    decisions = {"index": index, "labels": label, "logit": logit.astype(np.float32),
                 "confidence": conf.astype(np.float32), "accepted": accepted}
    return decisions, report


def save_filter_output(decisions: dict[str, np.ndarray], report: dict[str, Any], out_dir: str | Path, class_names: list[str]) -> None:
    from augment.plots import score_histogram

    with atomic_directory(out_dir) as tmp:
        atomic_save_npz(tmp / "decisions.npz", **decisions)
        atomic_write_json(tmp / "report.json", report)
        score_histogram(decisions["confidence"], decisions["labels"], decisions["accepted"], class_names,
                        tmp / "score_histogram.png")


def load_decisions(filter_dir: str | Path) -> dict[str, np.ndarray]:
    return load_npz(Path(filter_dir) / "decisions.npz")
