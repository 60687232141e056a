"""Class-conditional VAE for small datasets (``train.family: vae``).

Encoder: convs over the image plus a learned class map, down to the generator's base grid, then
``mu, logvar``. Decoder: the GAN's generator network (class embedding + class-conditional batch
norm), so ``sample(labels, generator)`` draws ``z ~ N(0, I)`` exactly like a GAN sample.
Loss: Gaussian likelihood with the noise scale set to its optimum each batch (sigma-VAE, Rybkin
et al. 2021: ``D/2 * log MSE``), which balances reconstruction and KL without a hand-tuned
scale, plus ``beta * KL`` with a linear warm-up. A VAE covers every training image, so its
samples are diverse; the price is some blur.

The filter stage scores samples with a discriminator, so this family also trains the GAN's
class-conditional projection discriminator (hinge loss, DiffAugment with adaptive p) to tell real
images from the decoder's prior samples. By default D only judges; ``vae_adv_weight > 0`` feeds
its verdict back to the decoder (a VAE-GAN hybrid: sharper, less diverse).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.config import TrainConfig
from augment.diffaug import diff_augment
from augment.models.gan import (
    Discriminator,
    Generator,
    Precision,
    _channels,
    ada_update,
    discriminator_step,
    initial_aug_p,
    plan_resolution,
)


class EncBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return F.avg_pool2d(h + self.skip(x), 2)


class Encoder(nn.Module):
    """``q(z | x, y)``: returns ``(mu, logvar)``, each ``(B, z_dim)``."""

    def __init__(self, z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        bh, bw, n_down = plan_resolution(h, w)
        chs = list(reversed(_channels(channels, n_down)))
        self.class_map = nn.Embedding(num_classes, 4)  # 4 class channels appended to the image
        self.from_img = nn.Conv2d(c + 4, chs[0], 3, padding=1)
        self.blocks = nn.ModuleList(EncBlock(chs[i], chs[i + 1]) for i in range(n_down))
        self.head = nn.Linear(chs[-1] * bh * bw, 2 * z_dim)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        ymap = self.class_map(y)[:, :, None, None].expand(-1, -1, x.size(2), x.size(3))
        h = self.from_img(torch.cat([x, ymap], dim=1))
        for block in self.blocks:
            h = block(h)
        mu, logvar = self.head(F.leaky_relu(h, 0.2).flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


def vae_loss(x: torch.Tensor, recon: torch.Tensor, mu: torch.Tensor, logvar: torch.Tensor, beta: float) -> dict[str, torch.Tensor]:
    """Per-pixel sigma-VAE objective: ``0.5 log MSE + beta * KL / D`` (named terms)."""
    d = x[0].numel()
    mse = F.mse_loss(recon.float(), x.float())
    nll = 0.5 * torch.log(mse + 1e-6)  # optimal shared Gaussian sigma: sigma^2 = MSE
    kl = 0.5 * (mu.float().pow(2) + logvar.float().exp() - 1 - logvar.float()).sum(dim=1).mean()
    return {"loss": nll + beta * kl / d, "mse": mse, "kl": kl}


class VAETrainer:
    """One optimisation step of the conditional VAE and its filter discriminator."""

    family = "vae"

    def __init__(self, cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int, device: torch.device):
        self.cfg, self.device = cfg, device
        self.E = Encoder(cfg.z_dim, cfg.g_channels, image_shape, num_classes).to(device)
        self.G = Generator(cfg.z_dim, cfg.g_channels, image_shape, num_classes).to(device)  # decoder
        self.D = Discriminator(cfg.d_channels, image_shape, num_classes).to(device)
        self.prec = Precision(cfg, device)
        self.prec.prepare(self.E, self.G, self.D)
        params = list(self.E.parameters()) + list(self.G.parameters())
        self.opt_vae = torch.optim.Adam(params, lr=cfg.lr_g, betas=(0.9, cfg.beta2))
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
        self.aug_p = initial_aug_p(cfg)
        self.steps = 0

    def modules(self) -> dict[str, nn.Module]:
        return {"E": self.E, "G": self.G, "D": self.D}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        return {"opt_vae": self.opt_vae, "opt_d": self.opt_d}

    def extra_state(self) -> dict[str, float]:
        return {"aug_p": self.aug_p, "steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.aug_p = float(state.get("aug_p", self.aug_p))
        self.steps = int(state.get("steps", self.steps))

    def beta(self) -> float:
        warm = self.cfg.vae_kl_warmup
        return self.cfg.vae_beta * (1.0 if warm == 0 else min(1.0, (self.steps + 1) / warm))

    def step(self, real: torch.Tensor, labels: torch.Tensor, g: torch.Generator) -> dict[str, float]:
        cfg, prec = self.cfg, self.prec
        p = self.aug_p
        aug = lambda x: prec.input(diff_augment(x, cfg.diffaug, g, p))  # noqa: E731
        b = real.size(0)
        eps = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        z_prior = torch.randn(b, cfg.z_dim, generator=g, device=g.device).to(self.device)
        with prec.autocast():
            mu, logvar = self.E(prec.input(real), labels)
            z_post = mu + eps * torch.exp(0.5 * logvar)
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

    def sampler(self) -> nn.Module:
        return self.G

    def discriminator(self) -> nn.Module:
        return self.D
