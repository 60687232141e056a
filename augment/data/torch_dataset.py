"""``AugmentedDataset``: the merged dataset (PNG ImageFolder or npz shards) as a torch Dataset.

    from augment.data.torch_dataset import AugmentedDataset
    ds = AugmentedDataset("data/augmented")              # either merge.format
    x, y = ds[0]                                         # float (C, H, W) in [-1, 1], int label
    ds.is_synthetic, ds.weights                          # per-sample flag and draw weight
    sampler = torch.utils.data.WeightedRandomSampler(ds.weights, len(ds))   # the merged share

Every item's provenance is in ``ds.rows`` (the manifest).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from augment.core.files import load_npz, read_csv
from augment.core.images import decode_image
from augment.core.pixels import image_to_tensor
from augment.errors import DataError


class AugmentedDataset(Dataset):
    """Reads ``manifest.csv`` of a merge output; images are decoded lazily (one npz shard cached).

    ``transform`` (optional) maps a uint8 ``(H, W, C)`` array to whatever the model wants; by
    default items are float tensors ``(C, H, W)`` in [-1, 1]. With ``return_meta=True`` items are
    ``(x, label, is_synthetic, weight)``.
    """

    def __init__(self, root: str | Path, transform: Callable[[np.ndarray], Any] | None = None,
                 return_meta: bool = False):
        self.root = Path(root)
        manifest = self.root / "manifest.csv"
        if not manifest.is_file():
            raise DataError(f"{manifest} not found: run the merge stage first (augment merge)")
        self.rows = read_csv(manifest)
        self.transform, self.return_meta = transform, return_meta
        self.labels = np.asarray([int(r["label"]) for r in self.rows], dtype=np.int64)
        self.is_synthetic = np.asarray([r["source"] == "synthetic" for r in self.rows], dtype=bool)
        w = [float(r["weight"]) if r.get("weight") else 1.0 for r in self.rows]
        self.weights = np.asarray(w, dtype=np.float64)
        self._cache: tuple[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> np.ndarray:
        r = self.rows[i]
        if r.get("shard"):
            if self._cache is None or self._cache[0] != r["shard"]:
                self._cache = (r["shard"], load_npz(self.root / r["shard"])["images"])
            return self._cache[1][int(r["offset"])]
        path = self.root / r["file"]
        if not path.is_file():
            raise DataError(f"{path} (listed in {self.root}/manifest.csv) does not exist")
        return decode_image(path.read_bytes(), str(path))

    def __getitem__(self, i: int):
        img = self.image(i)
        x = self.transform(img) if self.transform else image_to_tensor(img)
        if self.return_meta:
            return x, int(self.labels[i]), bool(self.is_synthetic[i]), float(self.weights[i])
        return x, int(self.labels[i])

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Everything in memory: images (N,H,W,C) uint8, labels, is_synthetic, weights."""
        if not self.rows:
            return np.zeros((0, 1, 1, 1), np.uint8), self.labels, self.is_synthetic, self.weights
        return np.stack([self.image(i) for i in range(len(self))]), self.labels, self.is_synthetic, self.weights






def load_augmented(aug_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Read a merged dataset (either format): images (N,H,W,C) uint8, labels, is_synthetic, manifest rows."""
    from augment.data.torch_dataset import AugmentedDataset

    d = AugmentedDataset(aug_dir)
    images, labels, synthetic, _ = d.arrays()
    return images, labels, synthetic, d.rows
