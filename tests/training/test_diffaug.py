"""DiffAugment (augment/training/diffaug.py): every op is the identity at p = 0, follows its
``torch.Generator`` (same seed, same output; another seed, another output) and lets gradients
through to its input -- the generator learns through the augmentation."""

from __future__ import annotations

import pytest
import torch

from augment.training.diffaug import POLICIES, diff_augment, parse_policy

OPS = [op for ops in POLICIES.values() for op in ops]
IDS = [op.__name__ for op in OPS]
ALL = ",".join(POLICIES)


def images(seed: int = 0) -> torch.Tensor:
    """(B, C, H, W) in [-1, 1]; three channels so saturation is not skipped."""
    return torch.rand(8, 3, 8, 8, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_p_zero_is_the_identity(op):
    x = images()
    assert torch.equal(op(x, gen(0), 0.0), x)


def test_whole_policy_at_p_zero_is_the_identity():
    x = images()
    assert torch.equal(diff_augment(x, ALL, gen(0), p=0.0), x)


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_same_seed_same_output_other_seed_other_output(op, p):
    x = images()
    a, b, c = op(x, gen(1), p), op(x, gen(1), p), op(x, gen(2), p)
    assert a.shape == x.shape and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, x)  # it did augment


def test_whole_policy_is_seeded():
    x = images()
    a, b, c = (diff_augment(x, ALL, gen(s), p=1.0) for s in (3, 3, 4))
    assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("p", [1.0, 0.5])
@pytest.mark.parametrize("op", OPS, ids=IDS)
def test_gradients_flow_through_every_op(op, p):
    x = images().requires_grad_(True)
    w = torch.randn(x.shape, generator=gen(9))  # a loss that depends on every output pixel
    (op(x, gen(1), p) * w).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert (x.grad != 0).float().mean() > 0.3  # cutout zeroes a square; the rest passes through


def test_gradients_flow_through_the_whole_policy():
    x = images().requires_grad_(True)
    diff_augment(x, ALL, gen(1), p=1.0).square().sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_unknown_op_is_refused():
    assert parse_policy(" color , cutout ") == ["color", "cutout"]
    with pytest.raises(ValueError, match="unknown DiffAugment op"):
        parse_policy("color,blur")
