"""Datasets: the bundled default dataset, image-folder scanning, and the ``prepare`` stage.

A user's dataset is ``<raw_dir>/<class_name>/*.png|jpg|...``. ``prepare`` reads it (never
modifying it), validates every file, resizes to one shape read off the data, splits it
stratified into train/val/test with a fixed seed, and flags exact and near duplicates across
splits (a leak between train and test would inflate every number we report).
"""

from __future__ import annotations

import os
import stat
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from augment.config import PrepareConfig
from augment.core.files import (
    atomic_directory,
    atomic_save_npz,
    atomic_write_csv,
    atomic_write_json,
    load_npz,
    sha256_bytes,
)
from augment.core.images import decode_image, is_grey_rgb, resize_array
from augment.data.folder import scan_image_folder
from augment.errors import DataError

SPLITS = ("train", "val", "test")


SPLIT_CODE = {name: i for i, name in enumerate(SPLITS)}
MIN_SIDE = 4  # the smallest image side the generators' 4x4 stride-2 convolutions accept


@dataclass
class PreparedDataset:
    """The prepared dataset in memory. ``images`` is ``uint8 (N, H, W, C)``."""

    images: np.ndarray
    labels: np.ndarray  # int64 (N,)
    split: np.ndarray  # int8 (N,), codes of SPLITS
    class_names: list[str]
    files: list[str]
    hashes: list[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        mask = self.split == SPLIT_CODE[split]
        return self.images[mask], self.labels[mask]

    def fingerprint(self) -> str:
        """sha256 of the labelled (non-test) images with their labels and splits, and the class
        names: what every later stage records it was made from, so a stage run by hand after
        ``prepare`` re-ran (another split, other images) refuses the stale checkpoint, samples or
        selection instead of trusting them -- a generator trained before the split changed may have
        learnt today's test images. The test images stay out of it: nothing before evaluate may
        depend on them, not even a digest."""
        import hashlib
        import json

        if "_fingerprint" in self.__dict__:  # merge checks two inputs and records it: hash once
            return self.__dict__["_fingerprint"]
        keep = self.split != SPLIT_CODE["test"]
        h = hashlib.sha256(json.dumps([self.class_names, list(self.images.shape[1:])]).encode())
        for a in (self.images[keep], self.labels[keep].astype(np.int64), self.split[keep].astype(np.int8)):
            h.update(np.ascontiguousarray(a).tobytes())
        self.__dict__["_fingerprint"] = h.hexdigest()
        return self.__dict__["_fingerprint"]


def read_regular_file(path: Path) -> bytes:
    """The bytes of ``path`` if it is a regular file; a FIFO, device or socket is never read (opened
    non-blocking, checked with fstat: a FIFO swapped in after the scan cannot block us either)."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DataError(f"{path}: not a regular file (FIFO, device or socket); never read")
        with os.fdopen(fd, "rb", closefd=False) as fh:
            return fh.read()
    finally:
        os.close(fd)


def _load_files(files: list[Path], cfg: PrepareConfig, skipped: list[dict[str, str]],
                notes: list[dict[str, str]] | None = None):
    arrays, keep, hashes = [], [], []
    for i, p in enumerate(files):
        try:
            data = read_regular_file(p)
            found: list[str] = []
            arrays.append(decode_image(data, str(p), cfg.max_image_pixels, notes=found, keep_high_bit=True))
            if notes is not None:
                notes.extend({"file": str(p), "note": n} for n in found)
        except (DataError, OSError) as exc:
            if cfg.on_bad_file == "skip":
                skipped.append({"file": str(p), "reason": str(exc)})
                continue
            raise DataError(f"{exc} (set prepare.on_bad_file: skip to skip and report such files)") from None
        keep.append(i)
        hashes.append(sha256_bytes(data))
    return arrays, keep, hashes


def _to_8_bits(arrays: list[np.ndarray], files: list[str], test_arrays: list[np.ndarray], test_files: list[str],
               notes: list[dict[str, str]]) -> None:
    """16-bit (and 32-bit / float) images -> 8 bits, in place, all by ONE mapping: the range of the
    raw folder's high-bit images (of the test folder's only when the raw folder has none), so an
    image's absolute intensity -- a dark defect, a sensor's exposure -- stays comparable across
    images; a per-image stretch would erase it. Test images never set the range when raw ones can."""
    from augment.core.images import scale_high_bit

    high = [a for a in arrays if a.dtype != np.uint8] or [a for a in test_arrays if a.dtype != np.uint8]
    if not high:
        return
    lo, hi = min(float(a.min()) for a in high), max(float(a.max()) for a in high)
    for group, names in ((arrays, files), (test_arrays, test_files)):
        for i, a in enumerate(group):
            if a.dtype != np.uint8:
                group[i] = scale_high_bit(a, lo, hi)
                notes.append({"file": names[i], "note": f"high-bit-depth image mapped to 8 bits by the dataset's "
                                                        f"range {lo:g}..{hi:g} (one mapping for every such image)"})


def _target_shape(arrays: list[np.ndarray], colour: list[bool], channels: str = "auto") -> tuple[int, int, int]:
    """The most common (H, W); channels by ``prepare.channels``: 3 with "rgb", 1 with "grey",
    with "auto" 3 if any image has colour (``colour``: per image), else 1. The caller passes the
    raw (labelled) images only: test images never decide what the generator is built for."""
    sizes = Counter(a.shape[:2] for a in arrays)
    (h, w), _ = max(sizes.items(), key=lambda kv: (kv[1], kv[0]))
    c = {"rgb": 3, "grey": 1}.get(channels, 3 if any(colour) else 1)
    return h, w, c


def _to_shape(a: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    a = resize_array(a, shape[:2])
    if a.shape[2] != shape[2]:
        if shape[2] == 3:
            a = np.repeat(a, 3, axis=2)
        else:  # luminance, PIL's convert("L") to the bit (exact for grey saved as RGB)
            b = a.astype(np.uint32)
            a = ((19595 * b[..., 0] + 38470 * b[..., 1] + 7471 * b[..., 2] + 32768) >> 16).astype(np.uint8)[..., None]
    return a


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> np.ndarray:
    """Per class: shuffle with ``seed``, take test, then val, rest train. Train never empty."""
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.int8)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n = len(idx)
        n_test = int(round(n * test_fraction)) if n >= 3 else 0
        n_val = int(round(n * val_fraction)) if n >= 3 else 0
        if test_fraction > 0 and n >= 3:
            n_test = max(1, n_test)
        if val_fraction > 0 and n >= 3:
            n_val = max(1, n_val)
        while n - n_test - n_val < 1:  # keep at least one training image per class
            if n_val >= n_test and n_val > 0:
                n_val -= 1
            else:
                n_test -= 1
        split[idx[:n_test]] = SPLIT_CODE["test"]
        split[idx[n_test : n_test + n_val]] = SPLIT_CODE["val"]
    return split


def find_duplicates(
    images: np.ndarray, hashes: list[str], split: np.ndarray, tolerance: float
) -> list[dict[str, Any]]:
    """Exact (same file bytes or pixels) and near (mean |diff| <= tolerance) duplicates across splits."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    out: list[dict[str, Any]] = []
    n = len(images)
    for i in range(n):
        d = np.abs(flat[i + 1 :] - flat[i]).mean(axis=1) if i + 1 < n else np.empty(0)
        for off in np.flatnonzero(d <= tolerance):
            j = i + 1 + int(off)
            exact = hashes[i] == hashes[j] or d[off] == 0
            out.append(
                {
                    "a": i,
                    "b": j,
                    "kind": "exact" if exact else "near",
                    "mean_abs_diff": float(d[off]),
                    "cross_split": bool(split[i] != split[j]),
                }
            )
    return out


def _cross_split_drops(dups: list[dict[str, Any]], split: np.ndarray) -> np.ndarray:
    """Indices to drop so no exact duplicate spans two splits.

    Images linked by exact duplicates form groups; in a group that spans splits the test copies
    are kept (the test set stays fixed), else the train copies, and every other copy is dropped.
    """
    parent = list(range(len(split)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for d in dups:
        if d["kind"] == "exact":
            parent[find(d["a"])] = find(d["b"])
    groups: dict[int, list[int]] = {}
    for d in dups:
        if d["kind"] == "exact":
            for i in (d["a"], d["b"]):
                groups.setdefault(find(i), [])
                if i not in groups[find(i)]:
                    groups[find(i)].append(i)
    drop: list[int] = []
    for members in groups.values():
        splits = {int(split[i]) for i in members}
        if len(splits) < 2:
            continue
        keep_split = SPLIT_CODE["test"] if SPLIT_CODE["test"] in splits else SPLIT_CODE["train"]
        drop += [i for i in members if split[i] != keep_split]
    return np.asarray(sorted(drop), dtype=np.int64)


def prepare_dataset(cfg: PrepareConfig) -> tuple[PreparedDataset, dict[str, Any]]:
    """Load, validate, resize and split. Returns the dataset and a JSON-able report."""
    if cfg.test_dir:
        raw, test = Path(cfg.raw_dir).resolve(), Path(cfg.test_dir).resolve()
        if raw != test and (test.is_relative_to(raw) or raw.is_relative_to(test)):
            inner, outer = ("test_dir", "raw_dir") if test.is_relative_to(raw) else ("raw_dir", "test_dir")
            raise DataError(f"prepare.{inner} = {getattr(cfg, inner)} lies inside prepare.{outer} = "
                            f"{getattr(cfg, outer)}: its folder would be read as a class of the other; keep the "
                            "labelled images and the test set in two separate folders")
    scan = scan_image_folder(cfg.raw_dir)
    skipped = list(scan.skipped)
    notes: list[dict[str, str]] = []  # images used, but altered on the way (listed in the report)
    arrays, keep, hashes = _load_files(scan.files, cfg, skipped, notes)
    files = [str(scan.files[i]) for i in keep]
    labels = np.asarray([scan.labels[i] for i in keep], dtype=np.int64)
    test_arrays: list[np.ndarray] = []
    test_files: list[str] = []
    test_hashes: list[str] = []
    test_labels = np.zeros(0, dtype=np.int64)
    if cfg.test_dir:
        tscan = scan_image_folder(cfg.test_dir, scan.class_names)
        skipped += tscan.skipped
        test_arrays, tkeep, test_hashes = _load_files(tscan.files, cfg, skipped, notes)
        test_files = [str(tscan.files[i]) for i in tkeep]
        test_labels = np.asarray([tscan.labels[i] for i in tkeep], dtype=np.int64)
        if not test_files:
            raise DataError(f"test folder {cfg.test_dir} contains no readable images")
        tcounts = np.bincount(test_labels, minlength=len(scan.class_names))
        untested = [scan.class_names[c] for c in np.flatnonzero(tcounts == 0)]
        if untested:  # evaluate would have no test image to score these classes on
            raise DataError(f"prepare.test_dir = {cfg.test_dir}: no readable test image for class(es) {untested} "
                            f"of {cfg.raw_dir}; add a folder of test images for each, or set prepare.test_dir: null "
                            "to hold out part of each class instead")
    if not arrays:
        raise DataError(f"dataset folder {cfg.raw_dir} contains no readable images")
    counts = np.bincount(labels, minlength=len(scan.class_names))
    empty = [scan.class_names[c] for c in np.flatnonzero(counts == 0)]
    if empty:
        unread = {name: [s for s in skipped if Path(s["file"]).parent == Path(cfg.raw_dir) / name] for name in empty}
        why = "; ".join(f"{n}: {len(k)} file(s) skipped, e.g. {k[0]['reason']}" for n, k in unread.items() if k)
        raise DataError(
            f"{cfg.raw_dir}: class folder(s) {empty} contain no readable images"
            + (f" ({why})" if why else "") + "; add images or remove the folder"
        )
    if len(scan.class_names) < 2:
        raise DataError(f"{cfg.raw_dir}: found one class ({scan.class_names[0]!r}); need at least 2 class folders")
    min_needed = 2 if cfg.test_dir else 3
    small = [scan.class_names[c] for c in np.flatnonzero(counts < min_needed)]
    if small:
        raise DataError(
            f"{cfg.raw_dir}: class(es) {small} have fewer than {min_needed} images; each class needs "
            f"at least {min_needed} to give every split an image"
        )
    _to_8_bits(arrays, files, test_arrays, test_files, notes)
    rgb = [a.shape[2] == 3 for a in arrays + test_arrays]
    colour = [c and not is_grey_rgb(a) for c, a in zip(rgb, arrays + test_arrays)]
    shape = _target_shape(arrays, colour[:len(arrays)], cfg.channels)  # test images follow, never decide
    if min(shape[:2]) < MIN_SIDE:
        raise DataError(f"{cfg.raw_dir}: the images are {shape[0]}x{shape[1]} px (the most common size), too small "
                        f"for the generators' 4x4 convolutions: they need at least {MIN_SIDE} px a side (8 to 128 px "
                        "is what augment is built for); upsample the images first")
    images = np.stack([_to_shape(a, shape) for a in arrays + test_arrays])
    if cfg.test_dir:
        split = stratified_split(labels, cfg.val_fraction, 0.0, cfg.seed)
        split = np.concatenate([split, np.full(len(test_files), SPLIT_CODE["test"], dtype=np.int8)])
        labels = np.concatenate([labels, test_labels])
    else:
        split = stratified_split(labels, cfg.val_fraction, cfg.test_fraction, cfg.seed)
    all_files = files + test_files
    all_hashes = hashes + test_hashes
    # What the common shape changed, by file (the report lists them; the summary notes them).
    resized_files = [{"file": all_files[i], "from": list(a.shape[:2])}
                     for i, a in enumerate(arrays + test_arrays) if a.shape[:2] != shape[:2]]
    colour_files = [all_files[i] for i, c in enumerate(colour) if c]
    grey_files = [all_files[i] for i, c in enumerate(colour) if not c]
    grey_rgb_files = [all_files[i] for i, (r, c) in enumerate(zip(rgb, colour)) if r and not c]
    dups = find_duplicates(images, all_hashes, split, cfg.near_duplicate_tolerance)
    # The same image under two class labels: one of the labels is wrong (reported, not guessed).
    conflicts = [{"a": all_files[d["a"]], "class_a": scan.class_names[labels[d["a"]]],
                  "b": all_files[d["b"]], "class_b": scan.class_names[labels[d["b"]]]}
                 for d in dups if d["kind"] == "exact" and labels[d["a"]] != labels[d["b"]]]
    dropped: list[dict[str, str]] = []
    exact_cross = [d for d in dups if d["cross_split"] and d["kind"] == "exact"]
    if exact_cross and cfg.on_cross_split_duplicate == "error":
        shown = "; ".join(f"{all_files[d['a']]} ({SPLITS[split[d['a']]]}) = {all_files[d['b']]} "
                          f"({SPLITS[split[d['b']]]})" for d in exact_cross[:5])
        raise DataError(
            f"{len(exact_cross)} identical image pair(s) across splits would leak into evaluation: {shown}; "
            "remove the copies or set prepare.on_cross_split_duplicate: drop"
        )
    if exact_cross and cfg.on_cross_split_duplicate == "drop":
        drop = _cross_split_drops(dups, split)
        keep = np.setdiff1d(np.arange(len(images)), drop)
        twin = {}
        for d in exact_cross:  # the copy that stays, named beside the one dropped
            for i, j in ((d["a"], d["b"]), (d["b"], d["a"])):
                if i in drop and j not in drop:
                    twin.setdefault(int(i), all_files[j])
        dropped = [{"file": all_files[i], "split": SPLITS[split[i]], "identical_to": twin.get(int(i)),
                    "reason": "identical to an image in another split (prepare.on_cross_split_duplicate: drop)"}
                   for i in drop]
        images, labels, split = images[keep], labels[keep], split[keep]
        all_files = [all_files[i] for i in keep]
        all_hashes = [all_hashes[i] for i in keep]
        no_train = [scan.class_names[c] for c in range(len(scan.class_names))
                    if not ((labels == c) & (split == SPLIT_CODE["train"])).any()]
        if no_train:
            raise DataError(f"{cfg.raw_dir}: class(es) {no_train} have no training image left after dropping "
                            "copies of test/val images; add images or fix the duplicates")
        dups = find_duplicates(images, all_hashes, split, cfg.near_duplicate_tolerance)
    kept_files = set(all_files)
    colour_files = [f for f in colour_files if f in kept_files]  # counted over the images used
    grey_rgb_files = [f for f in grey_rgb_files if f in kept_files]
    grey_files = [f for f in grey_files if f in kept_files]
    ds = PreparedDataset(images, labels, split, scan.class_names, all_files, all_hashes)
    cross = [d for d in dups if d["cross_split"]]
    report = {
        "image_shape": list(shape),
        "num_classes": ds.num_classes,
        "class_names": ds.class_names,
        "counts": {
            s: {name: int(((split == SPLIT_CODE[s]) & (labels == c)).sum()) for c, name in enumerate(ds.class_names)}
            for s in SPLITS
        },
        "resized": len(resized_files),
        "resized_files": resized_files,  # file and its original [height, width], resized to image_shape
        "channels": cfg.channels,  # the param; image_shape[2] is what it resolved to
        "colour_images": len(colour_files),  # with channels auto, any colour image makes every image RGB
        "colour_example": colour_files[0] if colour_files else None,
        "grey_example": grey_files[0] if grey_files else None,  # grey pixels; copied to RGB when any is colour
        "grey_rgb_images": len(grey_rgb_files),  # RGB files with grey pixels (R = G = B within 2 levels)
        "grey_rgb_example": grey_rgb_files[0] if grey_rgb_files else None,
        "images_read": len(all_files),
        "skipped": skipped,
        "altered": notes,
        "label_conflicts": conflicts,
        "duplicates": {
            "exact_cross_split": sum(d["kind"] == "exact" for d in cross),
            "near_cross_split": sum(d["kind"] == "near" for d in cross),
            "within_split": len(dups) - len(cross),
            "policy": cfg.on_cross_split_duplicate,
            "dropped": dropped,
            "pairs": [
                {**d, "a": all_files[d["a"]], "b": all_files[d["b"]],
                 "split_a": SPLITS[split[d["a"]]], "split_b": SPLITS[split[d["b"]]]}
                for d in dups[:200]
            ],
        },
    }
    return ds, report


def recorded_under(ds: PreparedDataset, report: dict[str, Any], workspace: str | Path
                   ) -> tuple[PreparedDataset, dict[str, Any]]:
    """``ds`` and ``report`` with every image path they record (``manifest.csv``'s ``file``, the
    report's skipped, altered, resized, conflicting, dropped and duplicate files and its examples)
    relative to ``workspace`` when inside it (:func:`augment.core.files.workspace_relative`): the
    prepared bytes, and so every later stage's inputs and cache keys, are the same whether the run
    was given ``.`` or the workspace's absolute path."""
    import dataclasses

    from augment.core.files import workspace_relative

    def shown(f: str) -> str:
        return workspace_relative(f, workspace)

    def entry(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
        out = dict(d)
        for k in keys:
            if isinstance(out.get(k), str):
                new = shown(out[k])
                if isinstance(out.get("reason"), str):  # the reason often starts with the file's name
                    out["reason"] = out["reason"].replace(out[k], new)
                out[k] = new
        return out

    rep = dict(report)
    rep["skipped"] = [entry(d, ("file",)) for d in report.get("skipped", [])]
    rep["altered"] = [entry(d, ("file",)) for d in report.get("altered", [])]
    rep["label_conflicts"] = [entry(d, ("a", "b")) for d in report.get("label_conflicts", [])]
    dup = dict(report.get("duplicates", {}))
    dup["dropped"] = [entry(d, ("file",)) for d in dup.get("dropped", [])]
    dup["pairs"] = [entry(d, ("a", "b")) for d in dup.get("pairs", [])]
    rep["duplicates"] = dup
    rep["resized_files"] = [entry(d, ("file",)) for d in report.get("resized_files", [])]
    for k in ("colour_example", "grey_example", "grey_rgb_example"):
        if isinstance(report.get(k), str):
            rep[k] = shown(report[k])
    return dataclasses.replace(ds, files=[shown(f) for f in ds.files]), rep


def save_prepared(ds: PreparedDataset, report: dict[str, Any], out_dir: str | Path) -> None:
    """Write ``dataset.npz``, ``manifest.csv`` and ``report.json`` atomically as one directory."""
    with atomic_directory(out_dir) as tmp:
        atomic_save_npz(
            tmp / "dataset.npz", images=ds.images, labels=ds.labels, split=ds.split,
            class_names=np.asarray(ds.class_names, dtype=np.str_),
        )
        rows = [
            {"file": f, "class": ds.class_names[int(y)], "label": int(y), "split": SPLITS[int(s)], "sha256": h}
            for f, y, s, h in zip(ds.files, ds.labels, ds.split, ds.hashes)
        ]
        atomic_write_csv(tmp / "manifest.csv", rows, ["file", "class", "label", "split", "sha256"])
        atomic_write_json(tmp / "report.json", report)


def load_prepared(prepared_dir: str | Path) -> PreparedDataset:
    """``dataset.npz`` + ``manifest.csv`` of the prepare stage, schema checked (arrays, dtypes,
    shapes, one length, labels and split codes in range, class names safe, manifest rows)."""
    from augment.core.files import check_arrays, read_csv_checked

    prepared_dir = Path(prepared_dir)
    npz = prepared_dir / "dataset.npz"
    if not npz.is_file():
        raise DataError(f"{npz} not found: run the prepare stage first (augment prepare)")
    rerun = "; re-run the prepare stage (augment prepare)"
    z = load_npz(npz, producer="prepare")
    n = check_arrays(npz, z, {"images": ("uint8", 4), "labels": ("int", 1), "split": ("int", 1),
                              "class_names": ("str", 1)}, "prepare", same_length=("images", "labels", "split"))
    h, w, c = z["images"].shape[1:]
    if n == 0 or h < 1 or w < 1 or c not in (1, 3):
        raise DataError(f"{npz}: images of shape {list(z['images'].shape)}: expected (N>0, H, W, 1 or 3){rerun}")
    class_names = [str(c) for c in z["class_names"]]
    for name in class_names:
        # Class names become folder names in merge: refuse any that could leave the output folder.
        if not name or name in (".", "..") or "/" in name or "\x00" in name:
            raise DataError(f"{npz}: class name {name!r} is not a safe folder name (tampered file?); "
                            "re-run the prepare stage")
    if len(set(class_names)) != len(class_names) or len(class_names) < 2:
        raise DataError(f"{npz}: class names {class_names!r:.80} are not at least two distinct names{rerun}")
    labels = z["labels"].astype(np.int64)
    if (labels < 0).any() or (labels >= len(class_names)).any():
        raise DataError(f"{npz}: labels outside [0, {len(class_names)}){rerun}")
    if not np.isin(z["split"], list(SPLIT_CODE.values())).all():
        raise DataError(f"{npz}: split codes other than {sorted(SPLIT_CODE.values())}{rerun}")
    manifest_path = prepared_dir / "manifest.csv"
    manifest = read_csv_checked(manifest_path, ["file", "sha256"], producer="prepare")
    if len(manifest) != n:
        raise DataError(f"{manifest_path}: {len(manifest)} rows, but {npz} holds {n} images{rerun}")
    return PreparedDataset(
        images=z["images"], labels=labels, split=z["split"].astype(np.int8),
        class_names=class_names,
        files=[r["file"] for r in manifest], hashes=[r["sha256"] for r in manifest],
    )
