"""Class-conditional GAN for small datasets.

Generator: class-conditional batch norm, nearest-neighbour upsampling from a small base grid to
the data's resolution. Discriminator: spectral-normalised convs, minibatch standard deviation
(a diversity signal against mode collapse), and a projection head (Miyato & Koyama 2018) so the
logit reads as "real image of class c". Hinge loss; DiffAugment on real and fake in both steps
with an adaptive strength ``p`` (ADA heuristic); mode-seeking regularisation (MSGAN) against
intra-class collapse; EMA of the generator weights (with a ramp-up) for sampling.

Shapes come from the data: any H, W from 8 to 128 px, 1 or 3 channels, any class count.
"""

from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from augment.config import TrainConfig
from augment.diffaug import diff_augment


def plan_resolution(h: int, w: int) -> tuple[int, int, int]:
    """Return ``(base_h, base_w, n_up)``: halve while both sides stay even and above 7."""
    n_up = 0
    while h % 2 == 0 and w % 2 == 0 and min(h, w) > 7:
        h, w, n_up = h // 2, w // 2, n_up + 1
    return h, w, n_up


def _channels(base: int, n_up: int) -> list[int]:
    return [min(base * 2 ** (n_up - i), base * 8) for i in range(n_up + 1)]


class ClassBatchNorm(nn.Module):
    """BatchNorm whose gain and bias are looked up per class."""

    def __init__(self, channels: int, num_classes: int):
        super().__init__()
        self.bn = nn.BatchNorm2d(channels, affine=False)
        self.gain = nn.Embedding(num_classes, channels)
        self.bias = nn.Embedding(num_classes, channels)
        nn.init.ones_(self.gain.weight)
        nn.init.zeros_(self.bias.weight)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.bn(x) * self.gain(y)[:, :, None, None] + self.bias(y)[:, :, None, None]


class GenBlock(nn.Module):
    def __init__(self, cin: int, cout: int, num_classes: int):
        super().__init__()
        self.bn1 = ClassBatchNorm(cin, num_classes)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.bn2 = ClassBatchNorm(cout, num_classes)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.bn1(x, y)), scale_factor=2, mode="nearest")
        h = self.conv2(F.relu(self.bn2(self.conv1(h), y)))
        return h + self.skip(F.interpolate(x, scale_factor=2, mode="nearest"))


class Generator(nn.Module):
    def __init__(self, z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        self.z_dim, self.num_classes, self.image_shape = z_dim, num_classes, image_shape
        self.bh, self.bw, n_up = plan_resolution(h, w)
        chs = _channels(channels, n_up)
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, chs[0] * self.bh * self.bw)
        self.blocks = nn.ModuleList(GenBlock(chs[i], chs[i + 1], num_classes) for i in range(n_up))
        if n_up == 0:  # tiny or odd sizes: one refinement block at the base resolution
            self.refine = nn.Sequential(nn.Conv2d(chs[0], chs[0], 3, padding=1), nn.ReLU())
        else:
            self.refine = nn.Identity()
        self.bn_out = nn.BatchNorm2d(chs[-1])
        self.to_img = nn.Conv2d(chs[-1], c, 3, padding=1)

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(z.size(0), -1, self.bh, self.bw)
        h = self.refine(h)
        for block in self.blocks:
            h = block(h, y)
        return torch.tanh(self.to_img(F.relu(self.bn_out(h))))  # (B, C, H, W) in [-1, 1]

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(labels.size(0), self.z_dim, generator=generator, device=generator.device)
        return self(z.to(labels.device), labels)


class DiscBlock(nn.Module):
    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        s = self.skip(x)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class Discriminator(nn.Module):
    """Projection discriminator: ``logit = psi(phi(x)) + <embed(y), phi(x)>``."""

    def __init__(self, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        _, _, n_down = plan_resolution(h, w)
        chs = list(reversed(_channels(channels, n_down)))
        self.from_img = spectral_norm(nn.Conv2d(c, chs[0], 3, padding=1))
        self.blocks = nn.ModuleList(DiscBlock(chs[i], chs[i + 1], True) for i in range(n_down))
        top = chs[-1]
        self.final = spectral_norm(nn.Conv2d(top + 1, top, 3, padding=1))  # +1: minibatch std
        self.linear = spectral_norm(nn.Linear(top, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, top))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = self.from_img(x)
        for block in self.blocks:
            h = block(h)
        h = F.leaky_relu(h, 0.2)
        # Minibatch standard deviation (groups of up to 4): lets D see a collapsed batch.
        b = h.size(0)
        group = min(4, b)
        while b % group:
            group -= 1
        std = h.view(group, -1, *h.shape[1:]).std(dim=0, unbiased=False).mean(dim=[1, 2, 3])
        std = std.repeat(group)[:, None, None, None].expand(b, 1, h.size(2), h.size(3))
        h = F.leaky_relu(self.final(torch.cat([h, std], dim=1)), 0.2)
        return h.sum(dim=[2, 3])  # (B, top)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        return self.linear(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)  # (B,)


@dataclass
class GANModels:
    G: Generator
    D: Discriminator
    G_ema: Generator


def build_gan(cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> GANModels:
    G = Generator(cfg.z_dim, cfg.g_channels, image_shape, num_classes)
    D = Discriminator(cfg.d_channels, image_shape, num_classes)
    G_ema = copy.deepcopy(G).eval()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    return GANModels(G, D, G_ema)


# ---------------------------------------------------------------------------------------------
# Pieces shared by every family that trains a discriminator (GAN, and the VAE's filter critic).
# ---------------------------------------------------------------------------------------------


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


class GANTrainer:
    """One optimisation step of the conditional GAN; the loop lives in :mod:`augment.train`."""

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

    def extra_state(self) -> dict[str, float]:
        return {"aug_p": self.aug_p, "steps": self.steps}

    def load_extra_state(self, state: dict[str, Any]) -> None:
        self.aug_p = float(state.get("aug_p", self.aug_p))
        self.steps = int(state.get("steps", self.steps))

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

    def sampler(self) -> nn.Module:
        return self.G_ema

    def discriminator(self) -> nn.Module:
        return self.D
