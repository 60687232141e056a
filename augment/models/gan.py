"""Class-conditional GAN for small datasets.

Generator: class-conditional batch norm, nearest-neighbour upsampling from a small base grid to
the data's resolution. Discriminator: spectral-normalised convs, minibatch standard deviation
(a diversity signal against mode collapse), and a projection head (Miyato & Koyama 2018) so the
logit reads as "real image of class c". Hinge loss; DiffAugment on real and fake in both steps
with an adaptive strength ``p`` (ADA heuristic); mode-seeking regularisation (MSGAN) against
intra-class collapse; EMA of the generator weights (with a ramp-up) for sampling.

Two architectures, chosen by ``train.arch`` (``auto``: by the number of training images,
:mod:`augment.training.sizing`):

* ``small`` -- DCGAN-size, for scarce data (the default below 1,000 images): G = linear to a
  small grid, then one 4x4 transposed convolution per doubling with class-conditional BN;
  D = one 4x4 stride-2 convolution per halving, a minibatch-stddev feature and the projection
  head. Several times cheaper per step than ``resnet`` and enough capacity for a few hundred
  images.
* ``resnet`` -- residual blocks (two 3x3 convolutions each, D downsampling first), for larger sets.

Shapes come from the data: any H, W from 8 to 128 px, 1 or 3 channels, any class count.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

from augment.config import TrainConfig


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
    """Residual block that downsamples FIRST, so its (wider) convolutions run at the lower
    resolution: 4x fewer multiply-adds than convolving at full resolution and pooling after."""

    def __init__(self, cin: int, cout: int, down: bool):
        super().__init__()
        self.conv1 = spectral_norm(nn.Conv2d(cin, cout, 3, padding=1))
        self.conv2 = spectral_norm(nn.Conv2d(cout, cout, 3, padding=1))
        self.skip = spectral_norm(nn.Conv2d(cin, cout, 1))
        self.down = down

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.down:
            x = F.avg_pool2d(x, 2)
        h = self.conv2(F.leaky_relu(self.conv1(F.leaky_relu(x, 0.2)), 0.2))
        return h + self.skip(x)


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


def plan_small(h: int, w: int) -> tuple[int, int, int]:
    """``(base_h, base_w, n_up)`` for the small networks: ``n_up`` (>= 2) doublings from a base
    grid of about 2-7 px reach at least ``(h, w)``; the generator resizes its output when it overshoots
    (25x25: 7 -> 14 -> 28, then area-resized to 25)."""
    # at least two layers each way (one transposed conv from a 4x4 grid is too shallow even for 8x8)
    n_up = max(2, math.ceil(math.log2(max(min(h, w), 8) / 7)))
    return math.ceil(h / 2**n_up), math.ceil(w / 2**n_up), n_up


class SmallGenerator(nn.Module):
    """DCGAN-size conditional generator: linear -> (base grid) -> 4x4 transposed convs."""

    def __init__(self, z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        self.z_dim, self.num_classes, self.image_shape = z_dim, num_classes, image_shape
        self.bh, self.bw, n_up = plan_small(h, w)
        chs = [channels * 2 ** (n_up - 1 - i) for i in range(n_up)]  # e.g. [64, 32] for n_up=2, width 32
        self.embed = nn.Embedding(num_classes, z_dim)
        self.fc = nn.Linear(2 * z_dim, chs[0] * self.bh * self.bw)
        self.bns = nn.ModuleList(ClassBatchNorm(ch, num_classes) for ch in chs)
        self.ups = nn.ModuleList(nn.ConvTranspose2d(chs[i], chs[i + 1] if i + 1 < n_up else c, 4, 2, 1)
                                 for i in range(n_up))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.embed(y)], dim=1)).view(z.size(0), -1, self.bh, self.bw)
        for bn, up in zip(self.bns, self.ups):
            h = up(F.relu(bn(h, y)))
        out_h, out_w, _ = self.image_shape
        if h.shape[2:] != (out_h, out_w):
            h = F.interpolate(h, size=(out_h, out_w), mode="area")
        return torch.tanh(h)  # (B, C, H, W) in [-1, 1]

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        z = torch.randn(labels.size(0), self.z_dim, generator=generator, device=generator.device)
        return self(z.to(labels.device), labels)


class SmallDiscriminator(nn.Module):
    """DCGAN-size projection discriminator: 4x4 stride-2 convs (spectral norm), then the whole
    feature map flattened (it keeps WHERE strokes are; sum pooling at this depth only sees
    texture) plus a minibatch standard-deviation feature, ``logit = psi(phi) + <embed(y), phi>``."""

    def __init__(self, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        _, _, n_down = plan_small(h, w)
        chs = [c] + [channels * 2**i for i in range(n_down)]
        self.convs = nn.ModuleList(spectral_norm(nn.Conv2d(chs[i], chs[i + 1], 4, 2, 1)) for i in range(n_down))
        for _ in range(n_down):  # a 4x4, stride-2, padding-1 convolution halves (floor) each side
            h, w = h // 2, w // 2
        top = chs[-1] * h * w + 1  # flattened map + minibatch std
        self.linear = spectral_norm(nn.Linear(top, 1))
        self.embed = spectral_norm(nn.Embedding(num_classes, top))

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        return torch.cat([h.flatten(1), minibatch_std(h)[:, None]], dim=1)  # (B, top)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        phi = self.features(x)
        return self.linear(phi).squeeze(1) + (self.embed(y) * phi).sum(dim=1)  # (B,)


def minibatch_std(h: torch.Tensor) -> torch.Tensor:
    """Per-sample mean feature standard deviation within groups of up to 4 (B,): lets D see a
    collapsed batch."""
    b = h.size(0)
    group = min(4, b)
    while b % group:
        group -= 1
    hg = h.reshape(group, -1, *h.shape[1:])
    # the population std over the group, written out: Tensor.std over the leading dim was a third of
    # generation's CPU time in a profile; + 1e-8 keeps the gradient finite on a collapsed batch
    std = ((hg - hg.mean(dim=0)).square().mean(dim=0) + 1e-8).sqrt().mean(dim=list(range(1, h.dim())))
    return std.repeat(group)


def make_generator(cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    """The generator of ``cfg.arch`` (resolved: ``small`` or ``resnet``)."""
    cls = SmallGenerator if cfg.arch == "small" else Generator
    return cls(cfg.z_dim, cfg.g_channels, image_shape, num_classes)


def make_discriminator(cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> nn.Module:
    cls = SmallDiscriminator if cfg.arch == "small" else Discriminator
    return cls(cfg.d_channels, image_shape, num_classes)


@dataclass
class GANModels:
    G: nn.Module
    D: nn.Module
    G_ema: nn.Module


def build_gan(cfg: TrainConfig, image_shape: tuple[int, int, int], num_classes: int) -> GANModels:
    G = make_generator(cfg, image_shape, num_classes)
    D = make_discriminator(cfg, image_shape, num_classes)
    G_ema = copy.deepcopy(G).eval()
    for p in G_ema.parameters():
        p.requires_grad_(False)
    return GANModels(G, D, G_ema)
