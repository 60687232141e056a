"""File I/O shared by every stage: safe image decoding, atomic writes, hashing, safe arrays.

Outputs are never half-written: files go to a temporary sibling and are renamed into place;
directories are built next to their destination and swapped in with one rename.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
from PIL import Image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


class DataError(ValueError):
    """Bad input data. The message names the file or folder and what to do about it."""


# ------------------------------------------------------------------------------------ hashing


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


# ------------------------------------------------------------------------------------ images


def decode_image(data: bytes, name: str, max_pixels: int = 50_000_000) -> np.ndarray:
    """Decode image bytes into ``uint8 (H, W, C)`` with C = 1 (grey) or 3 (RGB).

    Every mode PIL reads is normalised: ``I;16``/``I``/``F`` are rescaled to 8 bits, palette and
    alpha images are converted (alpha composited on black). Raises :class:`DataError` naming
    ``name`` for anything unreadable, truncated or suspiciously large (decompression bomb).
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as probe:
                w, h = probe.size
                if w * h > max_pixels:
                    raise DataError(
                        f"{name}: {w}x{h} pixels exceeds prepare.max_image_pixels={max_pixels} "
                        "(possible decompression bomb); raise the limit if the image is genuine"
                    )
                probe.verify()
            img = Image.open(io.BytesIO(data))
            img.load()
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise DataError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{name}: image has zero size")
    return pil_to_array(img)


def pil_to_array(img: Image.Image) -> np.ndarray:
    mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        lo, hi = float(arr.min()), float(arr.max())
        scale = 255.0 / (hi - lo) if hi > lo else 0.0
        return ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)[..., None]
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None]
    if mode == "LA" or mode == "RGBA" or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        arr = np.asarray(rgb, dtype=np.uint8)
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode in ("LA", "P") and np.array_equal(arr[..., 0], arr[..., 1]) and np.array_equal(
        arr[..., 1], arr[..., 2]
    ):
        return arr[..., :1].copy()
    return arr


def array_to_pil(arr: np.ndarray) -> Image.Image:
    """``uint8 (H, W, C)`` -> PIL image (mode L for C=1, RGB for C=3)."""
    if arr.ndim == 3 and arr.shape[2] == 1:
        return Image.fromarray(arr[..., 0], mode="L")
    return Image.fromarray(arr, mode="RGB")


def png_bytes(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    array_to_pil(arr).save(buf, format="PNG", optimize=False, compress_level=6)
    return buf.getvalue()


class PngWriter:
    """Encode and write PNG files on a small thread pool, in the background.

    PNG encoding (zlib) and file writes release the GIL, so a few threads turn a merge of many
    small images from I/O-bound to several times faster (benchmarks/RESULTS.md). At most
    ``max_pending`` images are queued (memory stays bounded). ``close()`` waits for every write
    and re-raises the first error. For files inside a folder built with :func:`atomic_directory`.
    """

    def __init__(self, workers: int | None = None, max_pending: int = 512):
        from concurrent.futures import ThreadPoolExecutor

        self._pool = ThreadPoolExecutor(max_workers=workers or min(8, 2 * (os.cpu_count() or 1)),
                                        thread_name_prefix="png")
        self._pending: list = []
        self._max = max_pending

    @staticmethod
    def _write(path: Path, arr: np.ndarray) -> None:
        Path(path).write_bytes(png_bytes(arr))

    def write(self, path: str | Path, arr: np.ndarray) -> None:
        self._pending.append(self._pool.submit(self._write, Path(path), arr))
        if len(self._pending) >= self._max:
            self._drain(keep=self._max // 2)

    def _drain(self, keep: int = 0) -> None:
        done, self._pending = self._pending[: len(self._pending) - keep], self._pending[len(self._pending) - keep :]
        for fut in done:
            fut.result()

    def close(self) -> None:
        try:
            self._drain()
        finally:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self) -> "PngWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def resize_array(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize ``(H, W, C)`` to ``size = (H, W)`` with area-averaging (Lanczos when upsampling)."""
    h, w = size
    if arr.shape[:2] == (h, w):
        return arr
    img = array_to_pil(arr)
    down = img.width >= w and img.height >= h
    out = img.resize((w, h), Image.Resampling.BOX if down else Image.Resampling.LANCZOS)
    res = np.asarray(out, dtype=np.uint8)
    return res[..., None] if res.ndim == 2 else res


def image_grid(images: np.ndarray, nrow: int, pad: int = 1, scale: int = 1) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one ``(H', W', C)`` grid, ``nrow`` per row."""
    n, h, w, c = images.shape
    ncol = nrow
    rows = max(1, -(-n // ncol))
    grid = np.zeros((rows * (h + pad) + pad, ncol * (w + pad) + pad, c), dtype=np.uint8)
    for i in range(n):
        r, k = divmod(i, ncol)
        y, x = pad + r * (h + pad), pad + k * (w + pad)
        grid[y : y + h, x : x + w] = images[i]
    if scale > 1:
        grid = grid.repeat(scale, axis=0).repeat(scale, axis=1)
    return grid


# ------------------------------------------------------------------------------ atomic writes


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # Name the file (ENOSPC from write/fsync carries none); the destination is untouched.
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def load_npz(path: str | Path) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without ever unpickling (object arrays are refused)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except ValueError as exc:
        raise DataError(f"{path}: refused to load ({exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: corrupt or truncated array file ({type(exc).__name__}: {exc})") from None


def load_npz_keys(path: str | Path, keys: Sequence[str]) -> dict[str, np.ndarray]:
    """Load only ``keys`` of an ``.npz`` (the other arrays are never read: a shard's images stay
    on disk when only its scores are wanted). Never unpickles; a missing key is a DataError."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} does not exist")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing}; it holds {sorted(z.files)}")
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except ValueError as exc:
        raise DataError(f"{path}: refused to load ({exc})") from None
    except Exception as exc:
        raise DataError(f"{path}: corrupt or truncated array file ({type(exc).__name__}: {exc})") from None


def _remove(p: Path) -> None:
    """Delete a directory tree, or just the link when ``p`` is a symlink (never what it points to)."""
    if p.is_symlink():
        with contextlib.suppress(OSError):
            p.unlink()
    else:
        shutil.rmtree(p, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with Linux ``renameat2(RENAME_EXCHANGE)``.

    Returns False where that is unavailable (the caller falls back to two renames)."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory next to ``path`` and swap it into place only on success.

    A consumer sees either the previous complete directory or the new complete one, never a
    half-written one. On failure the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (path.exists() or path.is_symlink()) and _exchange(tmp, path):
        # One atomic rename: ``path`` is never missing, not even for an instant; the previous
        # directory now sits at ``tmp``.
        _remove(tmp)  # the previous directory (or the symlink that stood at ``path``)
    else:
        old = None
        if path.exists() or path.is_symlink():
            # Fallback without renameat2 (non-Linux, old kernels, some file systems): two renames,
            # so a reader can find ``path`` missing between them (never half-written).
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    # Stale temporaries from earlier killed runs are swept away once we succeed.
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        _remove(stale)
