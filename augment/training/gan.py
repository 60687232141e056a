"""One optimisation step of the class-conditional GAN (networks in :mod:`augment.models.gan`)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn as nn

from augment.config import TrainConfig
from augment.models.gan import build_gan
from augment.training.common import (
    Precision,
    ResumableCounters,
    ada_update,
    discriminator_step,
    initial_aug_p,
    mode_seeking_loss,
    paired_labels,
)
from augment.training.diffaug import diff_augment


class GANTrainer(ResumableCounters):
    """One optimisation step of the conditional GAN; the loop lives in :mod:`augment.training.loop`."""

    family = "gan"

    def __init__(self, cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int, device: torch.device):
        self.cfg, self.device = cfg, device
        m = build_gan(cfg, image_shape, num_classes)
        self.G, self.D, self.G_ema = m.G.to(device), m.D.to(device), m.G_ema.to(device)
        self.prec = Precision(cfg, device)
        self.prec.prepare(self.G, self.D, self.G_ema)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.aug_p = initial_aug_p(cfg)
        self.steps = 0  # optimisation steps taken (EMA ramp-up); saved in the resume state

    def modules(self) -> dict[str, nn.Module]:
        return {"G": self.G, "D": self.D, "G_ema": self.G_ema}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_g": self.opt_g, "opt_d": self.opt_d}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the trained networks (e.g. in DDP); the EMA copy is only averaged, never trained."""
        self.G, self.D = wrap(self.G), wrap(self.D)

    def step(self, real: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        cfg, prec = self.cfg, self.prec
        p = self.aug_p
        aug = lambda x: prec.input(diff_augment(x, cfg.diffaug, g, p))  # noqa: E731
        b = real.size(0)
        # --- D step: hinge loss on augmented real and augmented fake
        z = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        with torch.no_grad(), prec.autocast():
            fake = self.G(z, labels)
        out = discriminator_step(self.D, self.opt_d, real, fake, labels, aug, prec)
        # --- G step: the same augmentation on fakes; pairs of one class for the mode-seeking term
        y = paired_labels(labels) if cfg.ms_weight > 0 else labels
        z = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        with prec.autocast():
            fake = self.G(z, y)
            loss_adv = -self.D(aug(fake), y).float().mean()
            loss_ms = mode_seeking_loss(fake.float(), z) if cfg.ms_weight > 0 else torch.zeros(())
            loss_g = loss_adv + cfg.ms_weight * loss_ms
        prec.backward_step(loss_g, self.opt_g)
        self._update_ema()
        self.aug_p = ada_update(p, out["r_t"], cfg)
        return {**out, "loss_g": float(loss_adv.detach()), "loss_ms": float(loss_ms.detach()), "aug_p": p}

    @torch.no_grad()
    def _update_ema(self) -> None:
        # Ramp-up (as in StyleGAN): early on the EMA follows G closely instead of dragging the
        # random initial weights along for thousands of iterations.
        self.steps += 1
        decay = min(self.cfg.ema_decay, (1 + self.steps) / (10 + self.steps))
        for pe, p in zip(self.G_ema.parameters(), self.G.parameters()):
            pe.lerp_(p, 1 - decay)
        for be, b in zip(self.G_ema.buffers(), self.G.buffers()):
            be.copy_(b)

    def sampler_tensors(self, images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
        """Saved with the checkpoint: the training images (uint8 N,H,W,C) and their labels, which
        ``generate.sampler: deform`` warps by the deformations registered between them."""
        return {"anchor_labels": torch.as_tensor(np.asarray(labels, np.int64)).cpu(),
                "anchor_images": torch.from_numpy(np.ascontiguousarray(images).astype(np.uint8, copy=True))}

    def sampler(self) -> nn.Module:
        return self.G_ema

    def discriminator(self) -> nn.Module:
        return self.D
