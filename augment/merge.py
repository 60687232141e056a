"""The ``merge`` stage: real TRAIN images + accepted synthetic ones -> an augmented image folder.

Output: ``<out>/<class>/real_*.png`` and ``<out>/<class>/syn_*.png`` plus ``manifest.csv`` with
provenance for every file (real or synthetic, class, discriminator score, source checkpoint,
generation seed, original file). Val and test images never enter the merged set. The folder is
built aside and swapped in whole; the raw dataset is only ever read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from augment.config import MergeConfig
from augment.data import PreparedDataset
from augment.generate import iter_shards
from augment.io import atomic_directory, atomic_write_csv, atomic_write_json, png_bytes, read_csv

MANIFEST_FIELDS = ["file", "class", "label", "source", "score", "confidence", "checkpoint_sha256",
                   "generate_seed", "sample_index", "origin"]


def select_synthetic(decisions: dict[str, np.ndarray], real_counts: np.ndarray, cfg: MergeConfig) -> np.ndarray:
    """Indices (into ``decisions``) of the synthetic samples to merge, most confident first per class."""
    chosen = []
    for c in range(len(real_counts)):
        idx = np.flatnonzero((decisions["labels"] == c) & decisions["accepted"])
        idx = idx[np.argsort(-decisions["confidence"][idx], kind="stable")]
        if cfg.synthetic_per_real is not None:
            idx = idx[: int(round(cfg.synthetic_per_real * real_counts[c]))]
        chosen.append(np.sort(idx))
    return np.concatenate(chosen) if chosen else np.zeros(0, dtype=np.int64)


def merge_dataset(ds: PreparedDataset, gen_dir: str | Path, decisions: dict[str, np.ndarray],
                  out_dir: str | Path, cfg: MergeConfig) -> dict[str, Any]:
    gen_meta = json.loads((Path(gen_dir) / "generate.json").read_text())
    train_x, train_y = ds.subset("train")
    train_files = [f for f, s in zip(ds.files, ds.split) if s == 0]
    real_counts = np.bincount(train_y, minlength=ds.num_classes)
    pick = select_synthetic(decisions, real_counts, cfg)
    wanted = {int(decisions["index"][i]): i for i in pick}  # global sample index -> decision row
    rows: list[dict[str, Any]] = []
    with atomic_directory(out_dir) as tmp:
        for name in ds.class_names:
            (tmp / name).mkdir(parents=True, exist_ok=True)
        for i, (img, y, origin) in enumerate(zip(train_x, train_y, train_files)):
            rel = f"{ds.class_names[y]}/real_{i:05d}_{Path(origin).stem[:40]}.png"
            (tmp / rel).write_bytes(png_bytes(img))
            rows.append({"file": rel, "class": ds.class_names[y], "label": int(y), "source": "real",
                         "score": "", "confidence": "", "checkpoint_sha256": "", "generate_seed": "",
                         "sample_index": "", "origin": origin})
        for shard in iter_shards(gen_dir, keys=("images", "index")):
            for j, gidx in enumerate(shard["index"]):
                r = wanted.get(int(gidx))
                if r is None:
                    continue
                y = int(decisions["labels"][r])
                rel = f"{ds.class_names[y]}/syn_{int(gidx):08d}.png"
                (tmp / rel).write_bytes(png_bytes(shard["images"][j]))
                rows.append({"file": rel, "class": ds.class_names[y], "label": y, "source": "synthetic",
                             "score": f"{float(decisions['logit'][r]):.6f}",
                             "confidence": f"{float(decisions['confidence'][r]):.6f}",
                             "checkpoint_sha256": gen_meta["checkpoint_sha256"],
                             "generate_seed": gen_meta["seed"], "sample_index": int(gidx), "origin": ""})
        atomic_write_csv(tmp / "manifest.csv", rows, MANIFEST_FIELDS)
        summary = {
            "real": int(len(train_x)),
            "synthetic": int(len(pick)),
            "per_class": {
                name: {"real": int(real_counts[c]),
                       "synthetic": int(sum(1 for r in rows if r["label"] == c and r["source"] == "synthetic"))}
                for c, name in enumerate(ds.class_names)
            },
            "class_names": ds.class_names,
            "image_shape": list(ds.image_shape),
        }
        atomic_write_json(tmp / "summary.json", summary)
    return summary


def load_augmented(aug_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Read a merged folder: images (N,H,W,C) uint8, labels, is_synthetic, manifest rows."""
    from augment.io import DataError, decode_image

    aug_dir = Path(aug_dir)
    if not (aug_dir / "manifest.csv").is_file():
        raise DataError(f"{aug_dir}/manifest.csv not found: run the merge stage first (augment merge)")
    rows = read_csv(aug_dir / "manifest.csv")
    images = np.stack([decode_image((aug_dir / r["file"]).read_bytes(), str(aug_dir / r["file"])) for r in rows])
    labels = np.asarray([int(r["label"]) for r in rows], dtype=np.int64)
    synthetic = np.asarray([r["source"] == "synthetic" for r in rows], dtype=bool)
    return images, labels, synthetic, rows
