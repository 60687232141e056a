"""Model families read their shapes from the data; a checkpoint alone rebuilds the generator."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.config import TrainConfig
from augment.generation.generate import load_generator
from augment.models.checkpoint import save_checkpoint
from augment.training.families import FAMILIES
from augment.training.loop import train_generator

TINY = TrainConfig(iterations=2, batch_size=8, z_dim=8, g_channels=8, d_channels=8, checkpoint_every=4,
                   sample_every=5, log_every=1, device="cpu", ada_rate=0.05, vae_kl_warmup=5)


@pytest.mark.parametrize("num_classes", [2, 12])
def test_class_count_is_read_from_data(num_classes: int):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (3 * num_classes, 8, 8, 1), dtype=np.uint8)
    y = np.repeat(np.arange(num_classes), 3)
    for family in FAMILIES:
        cfg = dataclasses.replace(TINY, family=family, iterations=2)
        trainer = train_generator(x, y, [str(c) for c in range(num_classes)], cfg, progress=False).trainer
        out = trainer.sampler().eval().sample(torch.arange(num_classes), torch.Generator().manual_seed(0))
        assert out.shape == (num_classes, 1, 8, 8)
        assert trainer.discriminator()(out, torch.arange(num_classes)).shape == (num_classes,)


def test_generator_rebuilds_from_checkpoint_alone(tmp_path: Path):
    x = np.random.default_rng(0).integers(0, 255, (6, 8, 8, 3), dtype=np.uint8)
    y = np.array([0, 0, 0, 1, 1, 1])
    cfg = dataclasses.replace(TINY, family="vae", iterations=2)
    r = train_generator(x, y, ["a", "b"], cfg, progress=False)
    save_checkpoint(tmp_path / "g.safetensors", r.trainer.modules(), r.cfg, (8, 8, 3), ["a", "b"])
    gen = load_generator(tmp_path / "g.safetensors", "cpu")
    labels = torch.tensor([0, 1])
    a = gen.sampler.sample(labels, torch.Generator().manual_seed(5))
    b = r.trainer.sampler().eval().sample(labels, torch.Generator().manual_seed(5))
    # Different code paths (the loaded sampler runs channels-last; thread counts differ between
    # machines): equal to float32 rounding, not bit for bit.
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
