"""The one place pixels cross between uint8 images and float tensors in [-1, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(images_u8: np.ndarray, device: torch.device) -> torch.Tensor:
    """``uint8 (N, H, W, C)`` numpy -> float ``(N, C, H, W)`` in [-1, 1]."""
    if not images_u8.flags.writeable:  # e.g. a decoded image or a memory-mapped shard: torch warns on these
        images_u8 = images_u8.copy()
    t = torch.from_numpy(images_u8).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def image_to_tensor(image_u8: np.ndarray) -> torch.Tensor:
    """One ``uint8 (H, W, C)`` image -> float ``(C, H, W)`` in [-1, 1] (a Dataset item)."""
    return to_tensor(np.ascontiguousarray(image_u8)[None], torch.device("cpu"))[0]


def to_uint8_tensor(x: torch.Tensor) -> torch.Tensor:
    """float ``(N, C, H, W)`` in [-1, 1] -> ``uint8 (N, H, W, C)`` on the same device."""
    return ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1)


def to_uint8(x: torch.Tensor) -> np.ndarray:
    """float ``(N, C, H, W)`` in [-1, 1] -> ``uint8 (N, H, W, C)`` numpy."""
    return to_uint8_tensor(x).contiguous().cpu().numpy()
