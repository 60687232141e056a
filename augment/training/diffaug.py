"""Differentiable augmentation (DiffAugment, Zhao et al. 2020) with explicit generators.

Pure tensor -> tensor functions and one registry mapping a policy name to its ops. The same
augmentation is applied to real and fake images in both the D and the G step, so D never
sees un-augmented reals it could memorise. Each op takes a ``torch.Generator`` so training is
reproducible; ``p`` (0..1) scales how often each op is applied (the adaptive-strength hook).
"""

from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from augment.config import DIFFAUG_OPS

Op = Callable[[torch.Tensor, torch.Generator, float], torch.Tensor]


def _rand(x: torch.Tensor, g: torch.Generator, *shape: int) -> torch.Tensor:
    return torch.rand(*shape, generator=g, device=g.device).to(x.device, x.dtype)


def _apply_mask(x: torch.Tensor, y: torch.Tensor, g: torch.Generator, p: float) -> torch.Tensor:
    if p >= 1.0:
        return y
    keep = (_rand(x, g, x.size(0), 1, 1, 1) < p).to(x.dtype)
    return keep * y + (1 - keep) * x


def brightness(x: torch.Tensor, g: torch.Generator, p: float = 1.0) -> torch.Tensor:
    return _apply_mask(x, x + (_rand(x, g, x.size(0), 1, 1, 1) - 0.5), g, p)


def saturation(x: torch.Tensor, g: torch.Generator, p: float = 1.0) -> torch.Tensor:
    if x.size(1) == 1:
        return x
    mean = x.mean(dim=1, keepdim=True)
    return _apply_mask(x, (x - mean) * (_rand(x, g, x.size(0), 1, 1, 1) * 2) + mean, g, p)


def contrast(x: torch.Tensor, g: torch.Generator, p: float = 1.0) -> torch.Tensor:
    mean = x.mean(dim=[1, 2, 3], keepdim=True)
    return _apply_mask(x, (x - mean) * (_rand(x, g, x.size(0), 1, 1, 1) + 0.5) + mean, g, p)


def translation(x: torch.Tensor, g: torch.Generator, p: float = 1.0, ratio: float = 0.125) -> torch.Tensor:
    """Shift by up to ``ratio`` of the size (at least one pixel), zero padding."""
    b, _, h, w = x.shape
    sh, sw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    tx = torch.randint(-sh, sh + 1, (b, 1, 1), generator=g, device=g.device).to(x.device)
    ty = torch.randint(-sw, sw + 1, (b, 1, 1), generator=g, device=g.device).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(h, device=x.device),
        torch.arange(w, device=x.device), indexing="ij",
    )
    gx = torch.clamp(gx + tx + 1, 0, h + 1)
    gy = torch.clamp(gy + ty + 1, 0, w + 1)
    padded = F.pad(x, [1, 1, 1, 1])
    y = padded.permute(0, 2, 3, 1).contiguous()[gb, gx, gy].permute(0, 3, 1, 2)
    return _apply_mask(x, y, g, p)


def cutout(x: torch.Tensor, g: torch.Generator, p: float = 1.0, ratio: float = 0.5) -> torch.Tensor:
    """Zero a random square of ``ratio`` times the image size (per sample)."""
    b, _, h, w = x.shape
    ch, cw = max(1, int(h * ratio + 0.5)), max(1, int(w * ratio + 0.5))
    ox = torch.randint(0, h + (1 - ch % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    oy = torch.randint(0, w + (1 - cw % 2), (b, 1, 1), generator=g, device=g.device).to(x.device)
    gb, gx, gy = torch.meshgrid(
        torch.arange(b, device=x.device), torch.arange(ch, device=x.device),
        torch.arange(cw, device=x.device), indexing="ij",
    )
    gx = torch.clamp(gx + ox - ch // 2, 0, h - 1)
    gy = torch.clamp(gy + oy - cw // 2, 0, w - 1)
    mask = torch.ones(b, h, w, dtype=x.dtype, device=x.device)
    mask[gb, gx, gy] = 0
    return _apply_mask(x, x * mask.unsqueeze(1), g, p)


POLICIES: dict[str, list[Op]] = {
    "color": [brightness, saturation, contrast],
    "translation": [translation],
    "cutout": [cutout],
}


assert set(POLICIES) == set(DIFFAUG_OPS), "augment.config.DIFFAUG_OPS must name every policy"


def parse_policy(policy: str) -> list[str]:
    names = [p.strip() for p in policy.split(",") if p.strip()]
    bad = [n for n in names if n not in POLICIES]
    if bad:
        raise ValueError(f"unknown DiffAugment op(s) {bad}; known: {sorted(POLICIES)}")
    return names


def diff_augment(x: torch.Tensor, policy: str, g: torch.Generator, p: float = 1.0) -> torch.Tensor:
    """Apply every op of ``policy`` (comma-separated names) to ``x`` in [-1, 1], ``(B, C, H, W)``."""
    for name in parse_policy(policy):
        for op in POLICIES[name]:
            x = op(x, g, p)
    return x
