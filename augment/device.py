"""Device selection: CUDA when present, else CPU, with an explicit override."""

from __future__ import annotations

import torch

from augment.config import ConfigError


class DeviceError(ConfigError, RuntimeError):
    """The requested device does not exist here (a ConfigError, so the CLI reports it cleanly)."""


def resolve_device(spec: str = "auto") -> torch.device:
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(spec)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise DeviceError(f"device {spec!r} requested (train/generate/evaluate.device) but CUDA is not "
                          "available on this machine; set it to auto or cpu")
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise DeviceError(f"device {spec!r} requested but this machine has {torch.cuda.device_count()} "
                          "CUDA device(s); set the stage's device to auto, cpu or an existing cuda:N")
    return dev


def to_tensor(images_u8, device: torch.device) -> torch.Tensor:
    """``uint8 (N, H, W, C)`` numpy -> float ``(N, C, H, W)`` in [-1, 1]."""
    t = torch.from_numpy(images_u8).to(device)
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0).contiguous()


def to_uint8(x: torch.Tensor):
    """float ``(N, C, H, W)`` in [-1, 1] -> ``uint8 (N, H, W, C)`` numpy."""
    y = ((x.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return y.permute(0, 2, 3, 1).contiguous().cpu().numpy()
