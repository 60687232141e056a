"""Classical (albumentations 2.x) augmentation: the baseline every synthetic result is compared
against, the augmentation of every downstream classifier the pipeline trains, and optionally of
the real images a generator is trained on (``train.real_augment: classical``)."""

from __future__ import annotations

import numpy as np

from augment.config import ClassicalConfig


def classical_augmentation(cfg: ClassicalConfig, seed: int):
    """A seeded albumentations pipeline of the ``classical`` params' strength."""
    import albumentations as A

    return A.Compose(
        [
            A.Affine(rotate=(-cfg.rotate, cfg.rotate), translate_percent=(-cfg.translate, cfg.translate),
                     scale=(1 - cfg.scale, 1 + cfg.scale), shear=(-5, 5), border_mode=0, fill=0, p=0.9),
            A.RandomBrightnessContrast(brightness_limit=0.15, contrast_limit=0.15, p=0.5),
        ],
        seed=seed,
        strict=True,
    )


def augment_batch(aug, batch: np.ndarray) -> np.ndarray:
    """Apply ``aug`` to every uint8 ``(H, W, C)`` image of ``batch`` (shapes kept)."""
    out = np.empty_like(batch)
    for i, img in enumerate(batch):
        out[i] = aug(image=img)["image"].reshape(img.shape)
    return out
