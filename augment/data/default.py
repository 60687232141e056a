"""The bundled default dataset: scikit-learn's handwritten digits, no network needed."""

from __future__ import annotations

import contextlib
from pathlib import Path

import numpy as np

from augment.core.files import atomic_directory
from augment.core.images import png_bytes
from augment.errors import DataError


def write_default_dataset(
    raw_dir: str | Path, test_dir: str | Path | None = None, per_class: int = 20, seed: int = 0,
    force: bool = False,
) -> dict[str, int]:
    """Materialise the default dataset from scikit-learn's bundled handwritten digits.

    ``per_class`` images of each digit go to ``raw_dir`` (the scarce labelled set a user would
    have). If ``test_dir`` is given, every *other* digit image goes there as a fixed held-out
    test set, so the default evaluation is not decided by a handful of test images. No network
    is used. Output bytes are deterministic for a seed, so DVC hashes stay stable.

    A folder that exists and is not empty is refused (it may be the user's own data) unless
    ``force``; then it is replaced whole, atomically.
    """
    from sklearn.datasets import load_digits

    for root in [raw_dir] + ([test_dir] if test_dir else []):
        root = Path(root)
        if root.is_symlink() or (root.exists() and not root.is_dir()):
            raise DataError(f"{root} exists and is not a folder; choose another path")
        blocking = next((a for a in root.parents if a.exists() and not a.is_dir()), None)
        if blocking is not None:
            raise DataError(f"{root}: {blocking} is a file, not a folder; choose another path")
        if root.is_dir() and any(root.iterdir()) and not force:
            raise DataError(f"{root} already exists and is not empty; refusing to replace it "
                            "(pass --force to overwrite it with the default dataset)")
    if test_dir:
        raw, test = Path(raw_dir).resolve(), Path(test_dir).resolve()
        if raw == test:
            raise DataError(f"--raw-dir and --test-dir are the same folder ({raw_dir})")
        if raw in test.parents or test in raw.parents:  # swapping one folder in would discard the other
            raise DataError(f"--raw-dir {raw_dir} and --test-dir {test_dir} lie one inside the other; "
                            "choose two separate folders")

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    labels = digits.target
    most = int(np.bincount(labels).min()) - (1 if test_dir else 0)  # a test image of every digit left
    # prepare needs 2 images a class beside a test folder (train and validation), else 3 (and test)
    fewest = 2 if test_dir else 3
    if not fewest <= per_class <= most:
        raise DataError(f"--per-class = {per_class}: choose {fewest} to {most} labelled images per digit ("
                        + ("prepare needs 2 per class beside a test folder; " if test_dir else
                           "prepare needs 3 per class to hold out validation and test images; ")
                        + f"the bundled set has {most + (1 if test_dir else 0)} of its rarest digit"
                        + (", and the test folder needs at least one of each)" if test_dir else ")"))
    rng = np.random.default_rng(seed)
    counts = {"raw": 0, "test": 0}
    targets = [(Path(raw_dir), "raw")] + ([(Path(test_dir), "test")] if test_dir else [])
    chosen: dict[int, np.ndarray] = {}
    for c in range(10):
        idx = np.flatnonzero(labels == c)
        chosen[c] = np.sort(rng.permutation(idx)[:per_class])
    # Both folders are built aside and swapped in only when both are complete: a failure (a full
    # disk) leaves each as it was.
    with contextlib.ExitStack() as stack:
        for root, kind in targets:
            tmp = stack.enter_context(atomic_directory(root))
            for c in range(10):
                idx = np.flatnonzero(labels == c)
                pick = chosen[c] if kind == "raw" else np.setdiff1d(idx, chosen[c])
                (tmp / str(c)).mkdir()
                for i in pick:
                    (tmp / str(c) / f"digit_{i:04d}.png").write_bytes(png_bytes(images[i][..., None]))
                    counts[kind] += 1
    return counts
