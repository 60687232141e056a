"""Image decoding, PNG encoding and resizing, and sample grids (PIL + numpy)."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from augment.errors import DataError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def decode_image(data: bytes, name: str, max_pixels: int = 50_000_000, notes: list[str] | None = None,
                 keep_high_bit: bool = False) -> np.ndarray:
    """Decode image bytes into ``uint8 (H, W, C)`` with C = 1 (grey) or 3 (RGB).

    Every mode PIL reads is normalised: ``I;16``/``I``/``F`` are rescaled to 8 bits by the image's
    own range (with ``keep_high_bit``: returned as ``float64 (H, W, 1)`` unscaled, for the caller to
    map every such image of a dataset the same way, :func:`scale_high_bit`), palette and
    alpha images are converted (alpha composited on black). The EXIF orientation is applied (a
    photo stored sideways is turned upright, as a viewer shows it). Raises :class:`DataError` naming
    ``name`` for anything unreadable, truncated, suspiciously large (decompression bomb) or with
    NaN/infinite pixels. Changes worth knowing are appended to ``notes`` (the first frame of a
    multi-frame image used, the EXIF rotation applied).
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
            frames = int(getattr(img, "n_frames", 1) or 1)
            img.seek(0)
            img.load()
            orientation = img.getexif().get(0x0112, 1) if hasattr(img, "getexif") else 1
            if orientation not in (None, 1):
                img = ImageOps.exif_transpose(img)
                w, h = img.size
                if w * h > max_pixels:  # pragma: no cover - a transpose keeps the pixel count
                    raise DataError(f"{name}: {w}x{h} pixels exceeds prepare.max_image_pixels={max_pixels}")
    except DataError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"{name}: refused as a possible decompression bomb ({exc})") from None
    except Image.UnidentifiedImageError:  # its message names an in-memory buffer, not the file
        raise DataError(f"{name}: not a readable image (PIL does not recognise the file: not an image, or "
                        "a format it does not read)") from None
    except Exception as exc:  # PIL raises many types for corrupt data
        raise DataError(f"{name}: not a readable image ({type(exc).__name__}: {exc})") from None
    if img.width < 1 or img.height < 1:
        raise DataError(f"{name}: image has zero size")
    if notes is not None:
        if frames > 1:
            notes.append(f"multi-frame image ({frames} frames): only the first frame is used")
        if orientation not in (None, 1):
            notes.append(f"EXIF orientation {orientation} applied (image turned upright)")
    if img.mode == "F":
        bad = int((~np.isfinite(np.asarray(img, dtype=np.float64))).sum())
        if bad:
            raise DataError(f"{name}: {bad} pixel(s) are NaN or infinite (floating-point image); fix or remove it")
    return pil_to_array(img, keep_high_bit)


HIGH_BIT_MODES = ("I;16", "I;16B", "I;16L", "I", "F")


def scale_high_bit(arr: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """High-bit-depth values -> ``uint8``, ``lo`` to 0 and ``hi`` to 255 (clipped outside)."""
    scale = 255.0 / (hi - lo) if hi > lo else 0.0
    return ((arr - lo) * scale).round().clip(0, 255).astype(np.uint8)


def pil_to_array(img: Image.Image, keep_high_bit: bool = False) -> np.ndarray:
    mode = img.mode
    if mode in HIGH_BIT_MODES:
        arr = np.asarray(img, dtype=np.float64)[..., None]
        if keep_high_bit:
            return arr
        return scale_high_bit(arr, float(arr.min()), float(arr.max()))
    if mode in ("1", "L"):
        return np.asarray(img.convert("L"), dtype=np.uint8)[..., None]
    if mode == "LA" or mode == "RGBA" or (mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        rgb = Image.alpha_composite(background, rgba).convert("RGB")
        arr = np.asarray(rgb, dtype=np.uint8)
    else:
        arr = np.asarray(img.convert("RGB"), dtype=np.uint8)
    if mode in ("LA", "P") and is_grey_rgb(arr, tolerance=0):
        return arr[..., :1].copy()
    return arr


GREY_RGB_TOLERANCE = 2  # levels of 255: a grey image saved as RGB (JPEG rounding included)


def is_grey_rgb(a: np.ndarray, tolerance: int = GREY_RGB_TOLERANCE) -> bool:
    """An RGB image whose three channels agree within ``tolerance`` levels at every pixel: grey
    pixels stored as colour, which carry no colour to learn."""
    if a.ndim != 3 or a.shape[2] != 3:
        return False
    b = a.astype(np.int16)
    return bool((b.max(axis=2) - b.min(axis=2)).max() <= tolerance)


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

    def abort(self) -> None:
        """Cancel queued writes and wait for running ones, without raising: called before the
        folder being built is removed, so no write lands after the removal."""
        self._pool.shutdown(wait=True, cancel_futures=True)
        self._pending = []

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


def image_grid(images: np.ndarray, nrow: int, pad: int = 1, scale: int = 1,
               row_labels: list[str] | None = None) -> np.ndarray:
    """Tile ``(N, H, W, C)`` uint8 images into one ``(H', W', C)`` grid, ``nrow`` per row.

    ``row_labels`` (one per row, e.g. the class names of a grid with one class per row) are written
    in a strip left of the images, so a reader can tell which row shows which class.
    """
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
    if row_labels is not None:
        if len(row_labels) != rows:
            raise ValueError(f"image_grid: {len(row_labels)} row labels for {rows} rows")
        centres = [(pad + r * (h + pad)) * scale + h * scale // 2 for r in range(rows)]
        grid = np.concatenate([_label_strip(row_labels, centres, grid.shape[0], c), grid], axis=1)
    return grid


def shorten(text: str, max_chars: int = 14) -> str:
    """``text`` cut to ``max_chars`` characters, ending in ``..`` when cut (for a grid's row label)."""
    return text if len(text) <= max_chars else text[: max_chars - 2] + ".."


def _label_strip(labels: list[str], centres: list[int], height: int, channels: int) -> np.ndarray:
    """A black ``(height, width, channels)`` strip with each label in white, centred on its row."""
    from PIL import ImageDraw, ImageFont

    font = ImageFont.load_default()
    texts = [shorten(str(t), 22) for t in labels]
    boxes = [font.getbbox(t) for t in texts]
    width = max(b[2] for b in boxes) + 6
    strip = Image.new("L", (width, height), 0)
    draw = ImageDraw.Draw(strip)
    for text, box, y in zip(texts, boxes, centres, strict=True):
        draw.text((3, y - (box[1] + box[3]) // 2), text, fill=255, font=font)
    arr = np.asarray(strip, dtype=np.uint8)[..., None]
    return np.repeat(arr, channels, axis=2)
