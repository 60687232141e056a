"""``AugmentedDataset``: the merged dataset (PNG ImageFolder or npz shards) as a torch Dataset.

It follows torchvision's ``ImageFolder`` conventions (``classes``, ``class_to_idx``, ``targets``,
``samples``, ``transform``, ``target_transform``) and takes an albumentations pipeline as its
``transform`` directly::

    import albumentations as A
    import torch
    from torch.utils.data import DataLoader, WeightedRandomSampler
    from augment.data.torch_dataset import AugmentedDataset

    aug = A.Compose([A.HorizontalFlip(p=0.5), A.Normalize(mean=0.5, std=0.5), A.ToTensorV2()])
    ds = AugmentedDataset("data/augmented", transform=aug)     # either merge.format
    ds.classes, ds.class_to_idx, ds.targets[:5]                # as ImageFolder
    ds.is_synthetic, ds.weights                                # per-sample flag and draw weight

    # Draw synthetic images at the share the merge stage chose (the manifest's weights). With
    # merge.realise: replicate (the default) the real images are copied so that a plain shuffle
    # (DataLoader(ds, shuffle=True), or torchvision's ImageFolder) gives close to that share too:
    sampler = WeightedRandomSampler(torch.as_tensor(ds.weights), num_samples=len(ds), replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    loader = DataLoader(ds, batch_size=64, sampler=sampler, num_workers=2)
    for x, y in loader:
        ...

Without a ``transform`` items are float tensors ``(C, H, W)`` in [-1, 1]. A plain callable gets the
uint8 ``(H, W, C)`` array; an albumentations ``Compose`` or single transform is called as
``aug(image=array)["image"]``. Whatever the transform returns is the item (add ``ToTensorV2`` or
convert yourself; the default collate turns numpy arrays into tensors). With a seeded
``Compose(seed=...)`` and ``num_workers > 0``, reseed it per worker in ``worker_init_fn``, or every
worker draws the same augmentations.

The manifest is checked when the dataset is opened, each problem naming its ``manifest.csv``
line: image paths must stay inside the dataset folder (absolute paths and ``..`` are refused),
labels must be integers in ``[0, len(classes))`` and weights finite and ``>= 0``. Every item's
provenance is in ``ds.rows`` (the manifest).
"""

from __future__ import annotations

import json
import math
import sys
from collections import OrderedDict
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any, Callable

import numpy as np
from torch.utils.data import Dataset

from augment.core.files import load_npz, read_csv
from augment.core.images import decode_image
from augment.core.pixels import image_to_tensor
from augment.errors import DataError


def is_albumentations(transform: Any) -> bool:
    """True for an albumentations ``Compose`` (any ``BaseCompose``) or single transform.

    Checked without importing albumentations (a 2 s import): a user who built one has imported it.
    """
    if "albumentations" not in sys.modules:
        return False
    from albumentations.core.composition import BaseCompose
    from albumentations.core.transforms_interface import BasicTransform

    return isinstance(transform, (BaseCompose, BasicTransform))


def _safe_relpath(value: str, where: str) -> str:
    """``value`` if it is a relative path that stays inside the dataset folder, else DataError."""
    if PurePosixPath(value).is_absolute() or PureWindowsPath(value).is_absolute() or PureWindowsPath(value).drive:
        raise DataError(f"{where}: absolute path {value!r} refused; paths must be relative to the dataset folder")
    parts = PureWindowsPath(value).parts  # splits on both / and \
    if ".." in parts:
        raise DataError(f"{where}: path {value!r} leaves the dataset folder ('..' refused)")
    return value


class AugmentedDataset(Dataset):
    """Reads ``manifest.csv`` of a merge output; images are decoded lazily (one npz shard cached).

    Args:
        root: the merge stage's output folder (``data/augmented``).
        transform: ``None`` (float tensor in [-1, 1]), a callable on the uint8 ``(H, W, C)`` array,
            or an albumentations ``Compose`` / transform (called as ``aug(image=arr)["image"]``).
        target_transform: a callable on the integer label.
        return_meta: items are ``(x, label, is_synthetic, weight)`` instead of ``(x, label)``.

    Attributes (as torchvision's ``ImageFolder``): ``classes`` (index -> name), ``class_to_idx``,
    ``targets`` (label per item), ``samples`` (``(path, label)`` per item; for npz shards the path
    is ``<shard>#<offset>``); plus ``labels`` (int64 array), ``is_synthetic``, ``weights``, ``rows``.
    """

    def __init__(self, root: str | Path, transform: Callable[..., Any] | None = None,
                 target_transform: Callable[[int], Any] | None = None, return_meta: bool = False,
                 shard_cache_bytes: int = 256 * 2**20):
        self.root = Path(root)
        manifest = self.root / "manifest.csv"
        if not manifest.is_file():
            raise DataError(f"{manifest} not found: run the merge stage first (augment merge)")
        self.rows = read_csv(manifest)
        self.transform, self.target_transform, self.return_meta = transform, target_transform, return_meta
        self._albumentations = is_albumentations(transform)
        self.classes: list[str] = self._read_classes()
        self.class_to_idx: dict[str, int] = {name: i for i, name in enumerate(self.classes)}
        labels, weights, samples = [], [], []
        for i, r in enumerate(self.rows):
            where = f"{manifest} line {i + 2}"  # line 1 is the header
            labels.append(self._label(r, where))
            weights.append(self._weight(r, where))
            if r.get("shard"):
                shard = _safe_relpath(r["shard"], where)
                try:
                    offset = int(r.get("offset", ""))
                except ValueError:
                    raise DataError(f"{where}: offset {r.get('offset')!r} is not an integer") from None
                if offset < 0:
                    raise DataError(f"{where}: offset {offset} is negative")
                samples.append((f"{self.root / shard}#{offset}", labels[-1]))
            elif r.get("file"):
                samples.append((str(self.root / _safe_relpath(r["file"], where)), labels[-1]))
            else:
                raise DataError(f"{where}: neither a file nor a shard is given")
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets: list[int] = labels
        self.samples: list[tuple[str, int]] = samples
        self.is_synthetic = np.asarray([r.get("source") == "synthetic" for r in self.rows], dtype=bool)
        self.weights = np.asarray(weights, dtype=np.float64)
        # npz shards decoded so far, least recently used first, up to shard_cache_bytes (the shard in
        # use is always kept): a shuffled or weighted sampler reads random items, and re-reading a
        # whole shard per item would cost ~30x a sequential pass. Each DataLoader worker has its own.
        self._shards: OrderedDict[str, np.ndarray] = OrderedDict()
        self._shard_cache_bytes = int(shard_cache_bytes)

    # ---------------------------------------------------------------------------- manifest checks

    def _read_classes(self) -> list[str]:
        """Class names from ``summary.json`` (written by merge), else from the manifest rows."""
        summary = self.root / "summary.json"
        if summary.is_file():
            try:
                names = json.loads(summary.read_text(encoding="utf-8")).get("class_names")
            except ValueError:
                raise DataError(f"{summary} is not valid JSON; re-run the merge stage") from None
            if isinstance(names, list) and all(isinstance(n, str) for n in names):
                return list(names)
        by_label: dict[int, str] = {}
        for r in self.rows:
            try:
                by_label.setdefault(int(r["label"]), r.get("class") or str(r["label"]))
            except (KeyError, ValueError):
                continue  # reported with its line by _label
        k = max(by_label) + 1 if by_label else 0
        return [by_label.get(c, str(c)) for c in range(k)]

    def _label(self, r: dict[str, str], where: str) -> int:
        raw = r.get("label", "")
        try:
            label = int(raw)
        except (TypeError, ValueError):
            raise DataError(f"{where}: label {raw!r} is not an integer") from None
        if not 0 <= label < len(self.classes):
            raise DataError(f"{where}: label {label} is out of range [0, {len(self.classes)}) "
                            f"({len(self.classes)} classes)")
        if r.get("class") and r["class"] != self.classes[label]:
            raise DataError(f"{where}: class {r['class']!r} does not match label {label} "
                            f"({self.classes[label]!r})")
        return label

    @staticmethod
    def _weight(r: dict[str, str], where: str) -> float:
        raw = r.get("weight")
        if not raw:
            return 1.0
        try:
            w = float(raw)
        except ValueError:
            raise DataError(f"{where}: weight {raw!r} is not a number") from None
        if not math.isfinite(w) or w < 0:
            raise DataError(f"{where}: weight {raw!r} must be finite and >= 0")
        return w

    # ----------------------------------------------------------------------------------- items

    def __len__(self) -> int:
        return len(self.rows)

    def image(self, i: int) -> np.ndarray:
        """The uint8 ``(H, W, C)`` image of item ``i`` (no transform)."""
        r = self.rows[i]
        if r.get("shard"):
            images = self._shards.get(r["shard"])
            if images is None:
                images = load_npz(self.root / r["shard"])["images"]
                self._shards[r["shard"]] = images
                while len(self._shards) > 1 and sum(a.nbytes for a in self._shards.values()) > self._shard_cache_bytes:
                    self._shards.popitem(last=False)
            self._shards.move_to_end(r["shard"])
            return images[int(r["offset"])]
        path = Path(self.samples[i][0])
        if not path.is_file():
            raise DataError(f"{path} (listed in {self.root}/manifest.csv) does not exist")
        return decode_image(path.read_bytes(), str(path))

    def __getitem__(self, i: int):
        img = self.image(i)
        if self.transform is None:
            x = image_to_tensor(img)
        elif self._albumentations:
            x = self.transform(image=img)["image"]
        else:
            x = self.transform(img)
        y: Any = int(self.labels[i])
        if self.target_transform is not None:
            y = self.target_transform(y)
        if self.return_meta:
            return x, y, bool(self.is_synthetic[i]), float(self.weights[i])
        return x, y

    def arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Everything in memory: images (N,H,W,C) uint8, labels, is_synthetic, weights."""
        if not self.rows:
            return np.zeros((0, 1, 1, 1), np.uint8), self.labels, self.is_synthetic, self.weights
        return np.stack([self.image(i) for i in range(len(self))]), self.labels, self.is_synthetic, self.weights


def load_augmented(aug_dir: str | Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, str]]]:
    """Read a merged dataset (either format): images (N,H,W,C) uint8, labels, is_synthetic, manifest rows."""
    d = AugmentedDataset(aug_dir)
    images, labels, synthetic, _ = d.arrays()
    return images, labels, synthetic, d.rows
