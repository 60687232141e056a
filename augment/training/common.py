"""Training pieces every family that trains a discriminator shares (GAN, and the VAE's filter critic)."""

from __future__ import annotations

import contextlib
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.config import TrainConfig


def ada_update(p: float, r_t: float, cfg: TrainConfig) -> float:
    """ADA heuristic: raise p while D is overconfident on reals (r_t > target), else lower it."""
    if cfg.ada_target is None:
        return p
    step = cfg.ada_rate if r_t >= cfg.ada_target else -cfg.ada_rate
    return round(min(1.0, max(0.0, p + step)), 6)  # rounded: identical after a resume


def initial_aug_p(cfg: TrainConfig) -> float:
    return 1.0 if cfg.ada_target is None else 0.0


class Precision:
    """Autocast + (fp16) loss scaling on CUDA only; a no-op on CPU, so the CPU path is unchanged."""

    def __init__(self, cfg: TrainConfig, device: torch.device):
        self.dtype: torch.dtype | None = None
        if device.type == "cuda" and cfg.amp != "off":
            bf16 = cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported())
            self.dtype = torch.bfloat16 if bf16 else torch.float16
        self.scaler = torch.amp.GradScaler("cuda") if self.dtype == torch.float16 else None
        self.channels_last = device.type == "cuda" and cfg.channels_last

    def autocast(self):
        if self.dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.dtype)

    def backward_step(self, loss: torch.Tensor, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad(set_to_none=True)
        if self.scaler is None:
            loss.backward()
            opt.step()
        else:
            self.scaler.scale(loss).backward()
            self.scaler.step(opt)
            self.scaler.update()

    def prepare(self, *modules: nn.Module) -> None:
        if self.channels_last:
            for m in modules:
                m.to(memory_format=torch.channels_last)

    def input(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def discriminator_step(
    D: nn.Module, opt_d: torch.optim.Optimizer, real: torch.Tensor, fake: torch.Tensor, labels: torch.Tensor,
    aug: Callable[[torch.Tensor], torch.Tensor], prec: Precision,
) -> dict[str, Any]:
    """One hinge-loss step of D on augmented real vs augmented (detached) fake images."""
    with prec.autocast():
        d_real = D(aug(real), labels).float()
        d_fake = D(aug(fake.detach()), labels).float()
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    prec.backward_step(loss_d, opt_d)
    return {
        "loss_d": float(loss_d.detach()),
        "d_real": float(d_real.detach().mean()),
        "d_fake": float(d_fake.detach().mean()),
        "r_t": float(torch.sign(d_real.detach()).mean()),
    }


def mode_seeking_loss(fake: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """MSGAN (Mao et al. 2019): first half vs second half of the batch share labels;
    ``1 / (mean|G(z1)-G(z2)| / mean|z1-z2|)`` is large when distinct z give the same image."""
    half = fake.size(0) // 2
    d_img = (fake[:half] - fake[half : 2 * half]).abs().mean(dim=[1, 2, 3])
    d_z = (z[:half] - z[half : 2 * half]).abs().mean(dim=1)
    return 1.0 / ((d_img / d_z).mean() + 1e-5)


def paired_labels(labels: torch.Tensor) -> torch.Tensor:
    """Labels whose second half repeats the first half (pairs for the mode-seeking term)."""
    half = labels.size(0) // 2
    return torch.cat([labels[:half], labels[:half], labels[2 * half :]])


class ResumableCounters:
    """The small non-tensor state every trainer resumes: ADA strength ``aug_p`` and the number of
    optimisation steps taken (EMA / KL warm-up ramps). Mixed into the family trainers."""

    aug_p: float
    steps: int

    def extra_state(self) -> dict[str, float]:
        return {"aug_p": self.aug_p, "steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.aug_p = float(state.get("aug_p", self.aug_p))
        self.steps = int(state.get("steps", self.steps))
