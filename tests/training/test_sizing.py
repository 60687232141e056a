"""Networks and budgets sized to the data; the small (DCGAN-size) architecture at odd sizes."""

from __future__ import annotations

import pytest
import torch

from augment.config import TrainConfig
from augment.models.gan import (
    SmallDiscriminator,
    SmallGenerator,
    make_generator,
    plan_small,
)
from augment.training.sizing import auto_iterations, size_for_data


def test_auto_sizes_follow_the_number_of_images():
    small = size_for_data(TrainConfig(), 100)
    large = size_for_data(TrainConfig(), 20_000)
    assert small.arch == "small" and large.arch == "resnet"
    assert small.g_channels <= large.g_channels
    assert small.iterations == auto_iterations(100) == 1000
    assert auto_iterations(10) == 800 and auto_iterations(10**6) == 6000


def test_explicit_values_are_kept():
    cfg = size_for_data(TrainConfig(arch="resnet", g_channels=12, d_channels=20, iterations=7), 100)
    assert (cfg.arch, cfg.g_channels, cfg.d_channels, cfg.iterations) == ("resnet", 12, 20, 7)


@pytest.mark.parametrize("shape", [(8, 8, 1), (25, 25, 1), (28, 28, 1), (32, 32, 3), (13, 21, 3)])
def test_small_networks_produce_and_score_the_data_shape(shape):
    g = SmallGenerator(16, 8, shape, 4)
    d = SmallDiscriminator(8, shape, 4)
    y = torch.tensor([0, 1, 2, 3])
    x = g.sample(y, torch.Generator().manual_seed(0))
    assert x.shape == (4, shape[2], shape[0], shape[1])
    assert x.abs().max() <= 1.0
    logit = d(x, y)
    assert logit.shape == (4,) and torch.isfinite(logit).all()
    logit.sum().backward()


def test_plan_small_reaches_the_size():
    for h in (8, 16, 25, 28, 32, 64):
        bh, _, n_up = plan_small(h, h)
        assert bh * 2**n_up >= h and 2 <= bh <= 8 and n_up >= 2


def test_make_generator_follows_arch():
    cfg = size_for_data(TrainConfig(), 100)
    assert isinstance(make_generator(cfg, (28, 28, 1), 10), SmallGenerator)


def test_minibatch_std_is_the_group_std_and_trains_on_a_collapsed_batch():
    """The discriminator's minibatch-std feature: per group of 4 samples, the mean population std
    of the features; finite gradients even when the generator collapsed (all samples equal)."""
    import torch

    from augment.models.gan import minibatch_std

    h = torch.randn(8, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    want = h.reshape(4, 2, 3, 5, 5).std(dim=0, unbiased=False).mean(dim=(1, 2, 3)).repeat(4)
    assert torch.allclose(minibatch_std(h), want, atol=1e-6)
    same = torch.ones(8, 3, 5, 5, requires_grad=True)
    minibatch_std(same).sum().backward()
    assert torch.isfinite(same.grad).all()
