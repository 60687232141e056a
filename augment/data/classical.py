"""Classical augmentation: the baseline every synthetic result is compared against, the
augmentation of every downstream classifier the pipeline trains, and optionally of the real
images a generator is trained on (``train.real_augment: classical``).

The transform is albumentations 2.x ``Affine`` (rotate, translate, scale, shear; constant 0
border; p 0.9) then ``RandomBrightnessContrast`` (+-0.15; p 0.5) -- :func:`albumentations_pipeline`
builds exactly that ``Compose``. ``classical.border: auto`` (default, batched engine) fills the
uncovered corners with each image's background instead of 0 (:func:`border_fill`); 0 on
black-background data, where the output is albumentations' own. ``classical.elastic`` (off at 0, the
default; batched engine only) adds an elastic distortion after the affine warp (:func:`elastic_maps`).
Two engines apply it (``classical.engine``):

* ``batched`` (default): :class:`BatchedClassical` draws the same parameter distributions as that
  ``Compose`` for a whole batch at once (numpy), builds the affine matrices with albumentations'
  formula vectorised, warps each image with the same OpenCV call albumentations makes and applies
  brightness/contrast with albumentations' lookup table. Given the same parameters its output is
  albumentations' output (tests/data/test_classical.py); only the random stream differs.
  albumentations' per-image Python overhead (~100 us per image at 8x8 on this project's 2-core
  machine, against ~5 us for the warp itself) was a third of every small classifier's training step.
* ``albumentations``: the ``Compose`` itself, called per image -- the random stream of runs
  made before the batched engine existed.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np

from augment.config import ClassicalConfig

SHEAR_DEGREES = 5.0
BRIGHTNESS_LIMIT = 0.15
CONTRAST_LIMIT = 0.15
P_AFFINE = 0.9
P_BRIGHTNESS_CONTRAST = 0.5
#: control points per side of ``classical.elastic``'s random field (as ``generate.deform_grid``'s default)
ELASTIC_LATTICE = 6


def albumentations_pipeline(cfg: ClassicalConfig, seed: int):
    """The seeded albumentations ``Compose`` of the ``classical`` params' strength (the reference)."""
    import albumentations as A

    return A.Compose(
        [
            A.Affine(rotate=(-cfg.rotate, cfg.rotate), translate_percent=(-cfg.translate, cfg.translate),
                     scale=(1 - cfg.scale, 1 + cfg.scale), shear=(-SHEAR_DEGREES, SHEAR_DEGREES),
                     border_mode=0, fill=0, p=P_AFFINE),
            A.RandomBrightnessContrast(brightness_limit=BRIGHTNESS_LIMIT, contrast_limit=CONTRAST_LIMIT,
                                       p=P_BRIGHTNESS_CONTRAST),
        ],
        seed=seed,
        strict=True,
    )


def affine_matrices(translate_x: np.ndarray, translate_y: np.ndarray, shear_x: np.ndarray, shear_y: np.ndarray,
                    scale_x: np.ndarray, scale_y: np.ndarray, rotate: np.ndarray,
                    shape: tuple[int, int]) -> np.ndarray:
    """``(N, 3, 3)`` forward matrices: albumentations' ``create_affine_transformation_matrix``
    (shift to the top-left, scale, rotate, shear, translate, shift back; angles in degrees) for N
    parameter sets at once, about the centre albumentations uses for an image of ``shape`` (H, W)."""
    n = len(rotate)
    cx, cy = shape[1] / 2 - 0.5, shape[0] / 2 - 0.5

    def stack(rows: list[list[Any]]) -> np.ndarray:
        m = np.zeros((n, 3, 3))
        for i, row in enumerate(rows):
            for j, v in enumerate(row):
                m[:, i, j] = v
        return m

    rad = np.deg2rad(np.mod(rotate, 360))
    cos, sin = np.cos(rad), np.sin(rad)
    m_topleft = stack([[1, 0, -cx], [0, 1, -cy], [0, 0, 1]])
    m_scale = stack([[scale_x, 0, 0], [0, scale_y, 0], [0, 0, 1]])
    m_rotate = stack([[cos, sin, 0], [-sin, cos, 0], [0, 0, 1]])
    m_shear = stack([[1, np.tan(np.deg2rad(shear_x)), 0], [np.tan(np.deg2rad(shear_y)), 1, 0], [0, 0, 1]])
    m_translate = stack([[1, 0, translate_x], [0, 1, translate_y], [0, 0, 1]])
    m_centre = stack([[1, 0, cx], [0, 1, cy], [0, 0, 1]])
    m = m_centre @ m_translate @ m_shear @ m_rotate @ m_scale @ m_topleft
    m[:, 2] = (0.0, 0.0, 1.0)
    return m


def border_fill(batch: np.ndarray) -> np.ndarray:
    """``(N, C)``: each image's background, the per-channel median of its outermost pixel ring
    (``classical.border: auto``); 0 where most of the ring is 0, as on digits."""
    ring = np.concatenate([batch[:, 0], batch[:, -1], batch[:, 1:-1, 0], batch[:, 1:-1, -1]], axis=1)
    return np.median(ring, axis=1)


def _per_channel_chunk(image: np.ndarray, fill: np.ndarray | None, fn) -> np.ndarray:
    """``fn(chunk, border_value)`` on a ``(H, W, C)`` image the way albucore's
    ``maybe_process_in_chunks`` splits it for OpenCV: up to 4 channels at once; more in chunks of 4,
    a 2-channel remainder one channel at a time. ``fill`` is the border value per channel (None = 0)."""
    h, w, c = image.shape
    values = np.zeros(c) if fill is None else np.asarray(fill, dtype=float)

    def one(img: np.ndarray, i: int) -> np.ndarray:
        value = tuple(float(v) for v in values[i:i + img.shape[2]]) + (0.0,) * (4 - img.shape[2])
        return fn(np.ascontiguousarray(img), value).reshape(h, w, -1)

    if c <= 4:
        return one(image, 0)
    chunks = []
    for i in range(0, c, 4):
        if c - i == 2:
            chunks += [one(image[:, :, i:i + 1], i), one(image[:, :, i + 1:i + 2], i + 1)]
        else:
            chunks.append(one(image[:, :, i:i + 4], i))
    return np.concatenate(chunks, axis=2)


def warp(image: np.ndarray, matrix: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """One ``(H, W, C)`` uint8 image through a forward affine matrix, as albumentations' Affine
    warps it: bilinear, constant border (``fill`` per channel; None = 0, albumentations' fill),
    channels chunked as albucore does (:func:`_per_channel_chunk`)."""
    import cv2

    h, w, _ = image.shape
    return _per_channel_chunk(image, fill, lambda img, value: cv2.warpAffine(
        img, matrix[:2], (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=value))


@functools.lru_cache(maxsize=16)
def _cubic_upsampling(points: int, size: int) -> np.ndarray:
    """``(size, points)``: OpenCV's bicubic resize of ``points`` values to ``size`` as a matrix (its
    columns are the resized unit vectors; the 2-D resize is separable, so a lattice ``L`` upsamples
    to ``R_h @ L @ R_w.T``)."""
    import cv2

    eye = np.eye(points, dtype=np.float32)
    return np.stack([cv2.resize(eye[j][None, :], (size, 1), interpolation=cv2.INTER_CUBIC)[0]
                     for j in range(points)], axis=1)


def elastic_maps(lattices: np.ndarray, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """OpenCV ``remap`` coordinates ``(N, H, W)`` x and y of ``(N, 2, G, G)`` lattices of
    displacements (x then y, fractions of the image side): each component upsampled bicubically to
    ``shape`` (H, W) and added, in pixels, to the identity. The output pixel at ``(x, y)`` samples
    the input at ``(x + dx, y + dy)``."""
    h, w = shape
    g = lattices.shape[-1]
    rh, rw = _cubic_upsampling(g, h), _cubic_upsampling(g, w)
    dense = np.einsum("hg,ncgk,wk->nchw", rh, lattices.astype(np.float32), rw, optimize=True)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    return xs + dense[:, 0] * w, ys + dense[:, 1] * h


def elastic(image: np.ndarray, map_x: np.ndarray, map_y: np.ndarray, fill: np.ndarray | None = None) -> np.ndarray:
    """One ``(H, W, C)`` uint8 image remapped by :func:`elastic_maps` coordinates: bilinear,
    constant border (``fill`` per channel; None = 0)."""
    import cv2

    return _per_channel_chunk(image, fill, lambda img, value: cv2.remap(
        img, map_x, map_y, interpolation=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=value))


def brightness_contrast_luts(alpha: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """``(N, 256)`` uint8 lookup tables: albumentations' (albucore ``multiply_add_lut``) uint8
    ``clip(v * alpha + beta * 255)`` in float32, truncated to uint8."""
    v = np.arange(256, dtype=np.float32)[None, :]
    lut = v * alpha.astype(np.float32)[:, None] + (beta * 255.0).astype(np.float32)[:, None]
    return np.clip(lut, 0, 255).astype(np.uint8)


class BatchedClassical:
    """The classical transform for a batch at once (module docstring): the parameter distributions
    of :func:`albumentations_pipeline`, drawn from a numpy generator seeded by ``seed``."""

    def __init__(self, cfg: ClassicalConfig, seed: int) -> None:
        self.cfg = cfg
        self.set_random_seed(seed)

    def set_random_seed(self, seed: int) -> None:
        """Restart the random stream (as albumentations' ``Compose.set_random_seed``)."""
        self.rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA1B]))

    def draw(self, n: int, shape: tuple[int, int]) -> dict[str, np.ndarray]:
        """Parameters for ``n`` images of ``shape`` (H, W), as albumentations draws them."""
        cfg, r = self.cfg, self.rng
        h, w = shape
        u = lambda lim: r.uniform(-lim, lim, n)  # noqa: E731
        return {
            "affine": r.random(n) < P_AFFINE,
            # albumentations: int(fraction * size), truncated toward 0 (no shift at all below 1 px)
            "translate_x": np.trunc(u(cfg.translate) * w), "translate_y": np.trunc(u(cfg.translate) * h),
            "shear_x": -u(SHEAR_DEGREES), "shear_y": -u(SHEAR_DEGREES),
            # scale: x and y drawn independently (albumentations' keep_ratio=False)
            "scale_x": r.uniform(1 - cfg.scale, 1 + cfg.scale, n), "scale_y": r.uniform(1 - cfg.scale, 1 + cfg.scale, n),
            "rotate": u(cfg.rotate),
            "brightness_contrast": r.random(n) < P_BRIGHTNESS_CONTRAST,
            "alpha": 1.0 + u(CONTRAST_LIMIT), "beta": u(BRIGHTNESS_LIMIT),
            # drawn only when on: at 0 the random stream is the one of runs made before the option
            **({"elastic": r.normal(0.0, cfg.elastic, (n, 2, ELASTIC_LATTICE, ELASTIC_LATTICE))}
               if cfg.elastic > 0 else {}),
        }

    def apply(self, batch: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
        """``batch`` (N, H, W, C) uint8 through given parameters (:meth:`draw`)."""
        out = batch.copy()
        keys = ("translate_x", "translate_y", "shear_x", "shear_y", "scale_x", "scale_y", "rotate")
        mats = affine_matrices(*(params[k] for k in keys), shape=batch.shape[1:3])
        # albumentations returns the input of an identity warp unchanged (np.allclose to the identity)
        identity = np.isclose(mats, np.eye(3), rtol=1e-5, atol=1e-8).all(axis=(1, 2))
        moved = np.flatnonzero(params["affine"] & ~identity)
        warped = np.arange(len(batch)) if "elastic" in params else moved  # the images that need a fill
        fills = dict(zip(warped, border_fill(batch[warped]) if self.cfg.border == "auto" else [None] * len(warped)))
        for i in moved:
            out[i] = warp(batch[i], mats[i], fills[i])
        if "elastic" in params:  # every image, after the affine warp, the same border fill
            map_x, map_y = elastic_maps(params["elastic"], batch.shape[1:3])
            for i in warped:
                out[i] = elastic(out[i], map_x[i], map_y[i], fills[i])
        sel = np.flatnonzero(params["brightness_contrast"])
        if len(sel):
            luts = brightness_contrast_luts(params["alpha"][sel], params["beta"][sel])
            warped = out[sel]  # one gather, not three
            out[sel] = np.take_along_axis(luts, warped.reshape(len(sel), -1).astype(np.intp), axis=1
                                          ).reshape(warped.shape)
        return out

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        if batch.dtype != np.uint8 or batch.ndim != 4:
            raise TypeError(f"classical augmentation takes a uint8 (N, H, W, C) batch, got {batch.dtype} {batch.shape}")
        return self.apply(batch, self.draw(len(batch), batch.shape[1:3]))


def classical_augmentation(cfg: ClassicalConfig, seed: int):
    """The seeded classical transform of the ``classical`` params (engine ``cfg.engine``)."""
    if cfg.engine == "albumentations":
        return albumentations_pipeline(cfg, seed)
    return BatchedClassical(cfg, seed)


def augment_batch(aug, batch: np.ndarray) -> np.ndarray:
    """Apply ``aug`` (:func:`classical_augmentation`) to every uint8 ``(H, W, C)`` image of ``batch``."""
    if isinstance(aug, BatchedClassical):
        return aug(batch)
    out = np.empty_like(batch)
    for i, img in enumerate(batch):
        out[i] = aug(image=img)["image"].reshape(img.shape)
    return out
