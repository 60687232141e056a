"""Networks and training budgets sized to the data, not to a benchmark of 50k images.

A conditional GAN for 100 images of 28x28 needs a fraction of the capacity (and of the compute)
of one for a large dataset: wide networks only memorise a scarce set faster and cost several
times more per step. ``train.g_channels`` / ``d_channels`` / ``iterations`` left at ``null``
are resolved here from the number of training images; explicit values are kept as given. The
resolved values are what the checkpoint records, so generation rebuilds exactly these networks.
"""

from __future__ import annotations

from dataclasses import replace

from augment.config import TrainConfig

SMALL_BELOW = 1000  # arch "auto": DCGAN-size networks below this many training images
# (fewer than this many training images, base width) per architecture
WIDTHS = {"small": ((300, 32),), "resnet": ((300, 16), (3000, 32))}
WIDE = {"small": 48, "resnet": 64}
ITERATIONS_PER_IMAGE = 10
MIN_ITERATIONS, MAX_ITERATIONS = 800, 6000


def arch_for(n_images: int) -> str:
    return "small" if n_images < SMALL_BELOW else "resnet"


def base_width(n_images: int, arch: str) -> int:
    for limit, width in WIDTHS[arch]:
        if n_images < limit:
            return width
    return WIDE[arch]


def auto_iterations(n_images: int) -> int:
    """About ten steps per training image (rounded to 100), within [800, 6000]."""
    its = int(round(ITERATIONS_PER_IMAGE * n_images, -2))
    return max(MIN_ITERATIONS, min(MAX_ITERATIONS, its))


def size_for_data(cfg: TrainConfig, n_images: int) -> TrainConfig:
    """``cfg`` with every auto (``None``) size resolved for ``n_images`` training images."""
    arch = cfg.arch if cfg.arch != "auto" else arch_for(n_images)
    width = base_width(n_images, arch)
    return replace(cfg, arch=arch,
                   g_channels=cfg.g_channels if cfg.g_channels is not None else width,
                   d_channels=cfg.d_channels if cfg.d_channels is not None else width,
                   iterations=cfg.iterations if cfg.iterations is not None else auto_iterations(n_images))
