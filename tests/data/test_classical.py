"""The batched classical augmentation is albumentations' Affine + RandomBrightnessContrast: same
output for the same parameters, same parameter distributions, seeded."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from augment.config import ClassicalConfig
from augment.data.classical import (
    BatchedClassical,
    albumentations_pipeline,
    augment_batch,
    classical_augmentation,
    elastic_maps,
)

def _albumentations_with(params: dict[str, np.ndarray], i: int, img: np.ndarray, cfg: ClassicalConfig) -> np.ndarray:
    """Image ``i`` through albumentations' own transforms, given the batched engine's parameters."""
    import albumentations.augmentations.geometric.functional as fg

    affine, bc = albumentations_pipeline(cfg, 0).transforms
    shape = img.shape[:2]
    if params["affine"][i]:
        m = fg.create_affine_transformation_matrix(
            {"x": params["translate_x"][i], "y": params["translate_y"][i]},
            {"x": params["shear_x"][i], "y": params["shear_y"][i]},
            {"x": params["scale_x"][i], "y": params["scale_y"][i]}, params["rotate"][i], fg.center(shape))
        img = affine.apply(img, matrix=m, output_shape=shape)
    if params["brightness_contrast"][i]:
        img = bc.apply(img, alpha=float(params["alpha"][i]), beta=float(params["beta"][i]) * 255)
    return img.reshape(img.shape[:2] + (-1,))


@pytest.mark.parametrize("shape", [(8, 8, 1), (28, 28, 1), (25, 25, 1), (32, 32, 3), (16, 20, 6)])
def test_same_parameters_give_albumentations_output(shape):
    cfg = ClassicalConfig(rotate=15.0, translate=0.15, scale=0.2, border="zero")  # albumentations fills 0
    batch = np.random.default_rng(1).integers(0, 256, (64,) + shape, dtype=np.uint8)
    eng = BatchedClassical(cfg, seed=3)
    params = eng.draw(len(batch), shape[:2])
    assert 0 < params["affine"].sum() < len(batch) and 0 < params["brightness_contrast"].sum() < len(batch)
    ours = eng.apply(batch, params)
    ref = np.stack([_albumentations_with(params, i, batch[i], cfg) for i in range(len(batch))])
    # Identical on this project's machine. The matrices are products of the same factors in the same
    # order, but a stacked matmul and albumentations' 3x3 one may round differently on another CPU,
    # and OpenCV's fixed-point warp can then move a pixel by one grey level: allow that, no more.
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 0.001, (diff.max(), (diff > 0).mean())
    np.testing.assert_array_equal(batch, np.random.default_rng(1).integers(0, 256, (64,) + shape, dtype=np.uint8))


def _albumentations_draws(cfg: ClassicalConfig, shape: tuple[int, int], n: int) -> dict[str, np.ndarray]:
    """The parameters albumentations' Compose draws for ``n`` images (its own sampling code)."""
    aug = albumentations_pipeline(cfg, 0)
    affine, bc = aug.transforms
    img = np.zeros(shape + (1,), np.uint8)
    rows = {k: [] for k in ("rotate", "translate_x", "scale_x", "scale_y", "alpha", "beta")}
    for _ in range(n):
        p = affine.get_params_dependent_on_data({"shape": img.shape}, {"image": img})
        rows["rotate"].append(p["rotate"])
        rows["scale_x"].append(p["scale"]["x"])
        rows["scale_y"].append(p["scale"]["y"])
        rows["translate_x"].append(affine._get_translate_params(shape)["x"])
        q = bc.get_params_dependent_on_data({}, {"image": img})
        rows["alpha"].append(q["alpha"])
        rows["beta"].append(q["beta"] / 255)
    return {k: np.asarray(v) for k, v in rows.items()}


@pytest.mark.parametrize("size", [8, 28])
def test_parameter_distributions_match_albumentations(size):
    from scipy import stats

    cfg = ClassicalConfig()
    ref = _albumentations_draws(cfg, (size, size), 3000)
    ours = BatchedClassical(cfg, seed=0).draw(3000, (size, size))
    for k, v in ref.items():
        assert stats.ks_2samp(v, ours[k]).pvalue > 1e-3, k
    # translate is whole pixels, truncated toward 0 as albumentations does (none at all at 8x8)
    np.testing.assert_array_equal(np.unique(ours["translate_x"]), np.unique(ref["translate_x"]))
    assert not np.array_equal(ours["scale_x"], ours["scale_y"])  # independent x / y scale (keep_ratio off)


def test_probabilities_of_applying_each_transform():
    p = BatchedClassical(ClassicalConfig(), seed=0).draw(20000, (8, 8))
    assert abs(p["affine"].mean() - 0.9) < 0.01 and abs(p["brightness_contrast"].mean() - 0.5) < 0.015


def test_seeded_reseedable_and_varied():
    cfg = ClassicalConfig()
    batch = np.random.default_rng(0).integers(0, 256, (32, 12, 12, 1), dtype=np.uint8)
    a, b = BatchedClassical(cfg, 5), BatchedClassical(cfg, 5)
    first = a(batch)
    np.testing.assert_array_equal(first, b(batch))
    assert not np.array_equal(first, a(batch))  # the stream moves on
    a.set_random_seed(5)
    np.testing.assert_array_equal(first, a(batch))
    assert not np.array_equal(first, BatchedClassical(cfg, 6)(batch))


def test_engine_switch_and_bad_input():
    cfg = ClassicalConfig()
    assert isinstance(classical_augmentation(cfg, 0), BatchedClassical)
    ref = classical_augmentation(dataclasses.replace(cfg, engine="albumentations"), 0)
    batch = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 1), dtype=np.uint8)
    assert augment_batch(ref, batch).shape == batch.shape
    with pytest.raises(TypeError, match="uint8"):
        BatchedClassical(cfg, 0)(batch.astype(np.float32))


def test_auto_border_fills_uncovered_corners_with_the_images_background_not_black():
    """Light-background images: a rotation must not paint a black frame that the generator would
    learn and every downstream classifier would see; black-background digits are unchanged."""
    light = np.full((16, 32, 32, 3), 200, np.uint8)
    light[:, 12:20, 12:20] = (10, 120, 240)  # an object in the middle
    auto, zero = ClassicalConfig(rotate=30.0), ClassicalConfig(rotate=30.0, border="zero")
    params = BatchedClassical(auto, seed=0).draw(len(light), (32, 32))
    params["affine"][:] = True
    params["brightness_contrast"][:] = False
    ours = BatchedClassical(auto, seed=0).apply(light, params)
    black = BatchedClassical(zero, seed=0).apply(light, params)
    corners = np.concatenate([ours[:, :3, :3], ours[:, -3:, -3:]], axis=1).reshape(-1, 3)
    assert (corners == 200).all()
    assert (black[:, :2, :2] < 100).any()  # what "zero" (albumentations' fill) gives
    dark = np.zeros((16, 8, 8, 1), np.uint8)
    dark[:, 2:6, 3:5] = 255  # a digit on black
    p8 = BatchedClassical(auto, seed=1).draw(len(dark), (8, 8))
    np.testing.assert_array_equal(BatchedClassical(auto, seed=1).apply(dark, p8),
                                  BatchedClassical(zero, seed=1).apply(dark, p8))


def test_auto_border_needs_the_batched_engine():
    from augment.errors import ConfigError

    with pytest.raises(ConfigError, match="classical.border: zero"):
        ClassicalConfig(engine="albumentations").validate()
    ClassicalConfig(engine="albumentations", border="zero").validate()


def test_elastic_off_by_default_draws_nothing_and_on_draws_its_field_after_the_earlier_stream():
    """At 0 (the default) no field is drawn, so runs made before the option keep their random
    stream; switched on, the affine and brightness draws stay the same and the field changes the output."""
    batch = np.random.default_rng(0).integers(0, 256, (16, 12, 12, 1), dtype=np.uint8)
    off = BatchedClassical(ClassicalConfig(), seed=3)
    assert "elastic" not in off.draw(4, (12, 12))
    on = BatchedClassical(ClassicalConfig(elastic=0.05), seed=3)
    p_off, p_on = BatchedClassical(ClassicalConfig(), seed=3).draw(16, (12, 12)), on.draw(16, (12, 12))
    for key in p_off:  # the same affine and brightness draws; the elastic field comes after them
        np.testing.assert_array_equal(p_off[key], p_on[key])
    assert p_on["elastic"].shape == (16, 2, 6, 6)
    assert not np.array_equal(BatchedClassical(ClassicalConfig(elastic=0.05), seed=3)(batch),
                              BatchedClassical(ClassicalConfig(), seed=3)(batch))


def _shift_params(aug: BatchedClassical, n: int, shape: tuple[int, int], dx: float, dy: float) -> dict:
    """Parameters with no affine, no brightness change and a uniform field of (dx, dy) fractions."""
    params = aug.draw(n, shape)
    params["affine"][:] = False
    params["brightness_contrast"][:] = False
    params["elastic"][:] = 0.0
    params["elastic"][:, 0], params["elastic"][:, 1] = dx, dy
    return params


def test_elastic_field_moves_pixels_by_its_displacement_in_fractions_of_each_side():
    """A zero field leaves the image as it is. On a non-square RGB image a uniform field of 3/24 of
    the width in x and 2/16 of the height in y samples 3 pixels right and 2 down (content moves up
    and left); the uncovered border takes the affine's fill: 0, or each channel's background."""
    img = np.random.default_rng(1).integers(1, 256, (2, 16, 24, 3), dtype=np.uint8)
    aug = BatchedClassical(ClassicalConfig(elastic=0.05, border="zero"), seed=0)
    np.testing.assert_array_equal(aug.apply(img, _shift_params(aug, 2, (16, 24), 0.0, 0.0)), img)
    moved = aug.apply(img, _shift_params(aug, 2, (16, 24), 3 / 24, 2 / 16))
    np.testing.assert_array_equal(moved[:, :14, :21], img[:, 2:, 3:])
    assert (moved[:, 14:] == 0).all() and (moved[:, :, 21:] == 0).all()
    light = np.empty((2, 16, 24, 3), np.uint8)
    light[...] = (200, 90, 30)  # a coloured background
    light[:, 5:11, 8:16] = (10, 250, 120)  # an object
    auto = BatchedClassical(ClassicalConfig(elastic=0.05), seed=0)
    moved = auto.apply(light, _shift_params(auto, 2, (16, 24), 3 / 24, 2 / 16))
    np.testing.assert_array_equal(moved[:, :14, :21], light[:, 2:, 3:])
    assert (moved[:, 14:].reshape(-1, 3) == (200, 90, 30)).all()
    assert (moved[:, :, 21:].reshape(-1, 3) == (200, 90, 30)).all()


@pytest.mark.parametrize("shape", [(16, 24), (25, 25), (28, 9)])
def test_elastic_maps_are_the_bicubic_resize_of_each_lattice_component(shape):
    """The separable matrix form equals OpenCV's own bicubic resize of a non-uniform lattice, x
    scaled by the width and y by the height (an axis swap or a wrong matrix would show)."""
    h, w = shape
    lattices = np.random.default_rng(2).normal(0.0, 0.05, (3, 2, 6, 6)).astype(np.float32)
    map_x, map_y = elastic_maps(lattices, shape)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for i, lat in enumerate(lattices):
        dx = cv2.resize(lat[0], (w, h), interpolation=cv2.INTER_CUBIC)
        dy = cv2.resize(lat[1], (w, h), interpolation=cv2.INTER_CUBIC)
        np.testing.assert_allclose(map_x[i], xs + dx * w, atol=1e-3)
        np.testing.assert_allclose(map_y[i], ys + dy * h, atol=1e-3)


def test_elastic_needs_the_batched_engine_and_a_sane_size():
    from augment.errors import ConfigError

    with pytest.raises(ConfigError, match="classical.elastic"):
        ClassicalConfig(engine="albumentations", border="zero", elastic=0.05).validate()
    with pytest.raises(ConfigError, match="classical.elastic"):
        ClassicalConfig(elastic=0.5).validate()
    ClassicalConfig(elastic=0.05).validate()
