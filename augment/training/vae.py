"""One optimisation step of the class-conditional VAE and its filter critic (networks in :mod:`augment.models.vae`)."""

from __future__ import annotations

import math
from typing import Callable

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.config import TrainConfig
from augment.core.pixels import to_tensor
from augment.models.gan import make_discriminator, make_generator
from augment.models.vae import ClassPrior, VAESampler, encode_anchors, make_encoder
from augment.training.common import (
    Precision,
    ResumableCounters,
    ada_update,
    discriminator_step,
    initial_aug_p,
)
from augment.training.diffaug import diff_augment


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per-pixel sigma-VAE objective: ``0.5 log MSE + beta * KL / D`` (named terms)."""
    d = x[0].numel()
    mse = F.mse_loss(recon.float(), x.float())
    nll = 0.5 * torch.log(mse + 1e-6)  # optimal shared Gaussian sigma: sigma^2 = MSE
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(dim=1).mean()
    return {"loss": nll + beta * kl / d, "mse": mse, "kl": kl}


class VAETrainer(ResumableCounters):
    """One optimisation step of the conditional VAE and its filter discriminator."""

    family = "vae"

    def __init__(self, cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int, device: torch.device):
        self.cfg, self.device = cfg, device
        self.E = make_encoder(cfg.z_dim, cfg.g_channels, image_shape, num_classes, cfg.arch).to(device)
        self.G = make_generator(cfg, image_shape, num_classes).to(device)  # decoder
        self.D = make_discriminator(cfg, image_shape, num_classes).to(device)
        self.prior = ClassPrior(cfg.z_dim, num_classes).to(device)  # sampling prior (see ClassPrior)
        self.prec = Precision(cfg, device)
        self.prec.prepare(self.E, self.G, self.D)
        params = list(self.E.parameters()) + list(self.G.parameters())
        self.opt_vae = torch.optim.Adam(params, lr=cfg.lr_g, betas=(0.9, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.aug_p = initial_aug_p(cfg)
        self.steps = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"E": self.E, "G": self.G, "D": self.D, "prior": self.prior}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_vae": self.opt_vae, "opt_d": self.opt_d}

    def distribute(self, wrap: Callable[[nn.Module], nn.Module]) -> None:
        """Wrap the trained networks (e.g. in DDP)."""
        self.E, self.G, self.D = wrap(self.E), wrap(self.G), wrap(self.D)

    def beta(self) -> float:
        warm = self.cfg.vae_kl_warmup
        return self.cfg.vae_beta * (1.0 if warm == 0 else min(1.0, (self.steps + 1) / warm))

    def step(self, real: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        cfg, prec = self.cfg, self.prec
        p = self.aug_p
        aug = lambda x: prec.input(diff_augment(x, cfg.diffaug, g, p))  # noqa: E731
        b = real.size(0)
        eps = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        eps_prior = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        with prec.autocast():
            mu, logvar = self.E(prec.input(real), labels)
            z_post = mu + eps * torch.exp(0.5 * logvar)
            # Prior codes come from the class prior fit to the aggregate posterior -- the codes
            # sampling will use -- not from N(0, I), whose samples fall in the posterior's holes.
            self.prior.update(mu, logvar, labels)
            z_prior = self.prior.sample(labels, eps_prior).to(z_post.dtype)
            # One decoder pass for posterior and prior codes: batch-norm statistics then match
            # what the decoder sees at sampling time (prior codes) as well as in training.
            out = self.G(torch.cat([z_post, z_prior]), torch.cat([labels, labels]))
            recon, prior = out[:b], out[b:]
        # --- D step (filter critic): real vs the decoder's prior samples
        d = discriminator_step(self.D, self.opt_d, real, prior, labels, aug, prec)
        # --- VAE step (+ optional adversarial term from the updated D)
        beta = self.beta()
        with prec.autocast():
            terms = vae_loss(real, recon, mu, logvar, beta)
            loss = terms["loss"]
            if cfg.vae_adv_weight > 0:
                loss = loss - cfg.vae_adv_weight * self.D(aug(prior), labels).float().mean() / math.sqrt(real[0].numel())
        prec.backward_step(loss, self.opt_vae)
        self.steps += 1
        self.aug_p = ada_update(p, d["r_t"], cfg)
        return {**d, "loss_vae": float(terms["loss"].detach()), "mse": float(terms["mse"].detach()),
                "kl": float(terms["kl"].detach()), "beta": beta, "aug_p": p}

    def sampler_tensors(self, images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
        """Saved with the checkpoint: the posterior means of the training images (uint8 N,H,W,C)
        and their labels, the anchors of ``generate.sampler: interpolate``, and the images
        themselves (uint8), which ``generate.sampler: residual`` edits."""
        E = getattr(self.E, "module", self.E)
        images = np.ascontiguousarray(images)
        x = to_tensor(images, self.device)
        y = torch.as_tensor(np.asarray(labels, np.int64), device=self.device)
        return {"anchors": encode_anchors(E, x, y).cpu(), "anchor_labels": y.cpu(),
                "anchor_images": torch.from_numpy(images.astype(np.uint8, copy=True))}

    def sampler(self) -> nn.Module:
        G = getattr(self.G, "module", self.G)  # DDP-wrapped after distribute()
        return VAESampler(G, self.prior).train(G.training)

    def discriminator(self) -> nn.Module:
        return self.D
