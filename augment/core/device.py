"""Device selection: CUDA when present, else CPU, with an explicit override."""

from __future__ import annotations

import torch

from augment.errors import DeviceError


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
