"""Class-conditional VAE for small datasets (``train.family: vae``).

Encoder: convs over the image plus a learned class map, down to the generator's base grid, then
``mu, logvar``. Decoder: the GAN's generator network of ``train.arch`` (class embedding +
class-conditional batch norm; ``auto`` = residual, ``small`` = DCGAN-size with
:class:`SmallEncoder`). Sampling (:class:`VAESampler`, same ``sample(labels, generator)`` as a GAN generator)
draws codes from :class:`ClassPrior`, a per-class Gaussian fit to the encoder's aggregate
posterior, not from ``N(0, I)``: with few images the posteriors shrink and ``N(0, I)`` codes
fall between them (texture instead of digits at 28x28).
Loss: Gaussian likelihood with the noise scale set to its optimum each batch (sigma-VAE, Rybkin
et al. 2021: ``D/2 * log MSE``), which balances reconstruction and KL without a hand-tuned
scale, plus ``beta * KL`` with a linear warm-up. A VAE covers every training image, so its
samples are diverse; the price is some blur.

The filter stage scores samples with a discriminator, so this family also trains the GAN's
class-conditional projection discriminator (hinge loss, DiffAugment with adaptive p) to tell real
images from the decoder's samples (codes from the class prior). By default D only judges;
``vae_adv_weight > 0`` feeds its verdict back to the decoder (a VAE-GAN hybrid: sharper, less
diverse).
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.models.gan import _channels, plan_resolution, plan_small


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


class SmallEncoder(nn.Module):
    """DCGAN-size ``q(z | x, y)`` (``train.arch: small``, the decoder is the small generator):
    4x4 stride-2 convolutions over the image plus a learned class map, then ``mu, logvar``."""

    def __init__(self, z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int):
        super().__init__()
        h, w, c = image_shape
        _, _, n_down = plan_small(h, w)
        chs = [c + 4] + [channels * 2**i for i in range(n_down)]
        self.class_map = nn.Embedding(num_classes, 4)
        self.convs = nn.ModuleList(nn.Conv2d(chs[i], chs[i + 1], 4, 2, 1) for i in range(n_down))
        self.head = nn.Linear(chs[-1] * (h >> n_down) * (w >> n_down), 2 * z_dim)  # k4 s2 p1: size // 2

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = torch.cat([x, self.class_map(y)[:, :, None, None].expand(-1, -1, x.size(2), x.size(3))], dim=1)
        for conv in self.convs:
            h = F.leaky_relu(conv(h), 0.2)
        mu, logvar = self.head(h.flatten(1)).chunk(2, dim=1)
        return mu, logvar.clamp(-10.0, 10.0)


def make_encoder(z_dim: int, channels: int, image_shape: tuple[int, int, int], num_classes: int,
                 arch: str) -> nn.Module:
    """The encoder matching the decoder of ``arch`` (resolved: ``small`` or ``resnet``)."""
    cls = SmallEncoder if arch == "small" else Encoder
    return cls(z_dim, channels, image_shape, num_classes)


class ClassPrior(nn.Module):
    """Per-class Gaussian fit to the encoder's aggregate posterior: the VAE's sampling prior.

    With ~10 images per class the sigma-VAE's noise scale (sigma^2 = MSE) falls as the decoder
    fits the images, so the KL term weakens and the posteriors shrink to tight clusters inside
    ``N(0, I)`` (measured at 28x28, 100 digits: MSE 0.001, KL 211 nats per image): codes drawn
    from the standard normal land in the "holes" between them, which the decoder never saw and
    turns into blobby texture. Sampling from a Gaussian moment-matched to the class's aggregate
    posterior ``q(z | c) = E_x q(z | x, c)`` (mean ``E[mu]``, covariance ``Cov(mu) + diag E[sigma^2]``)
    keeps the codes where the decoder was trained: with few images per class the full covariance
    spans the class's own codes, so samples are blends of them rather than points off in all 64
    directions. The moments are running averages updated every training step, like batch-norm
    statistics, and saved with the weights. Before any update it is ``N(0, I)``.
    """

    def __init__(self, z_dim: int, num_classes: int, momentum: float = 0.02):
        super().__init__()
        self.momentum = momentum
        self.register_buffer("mean", torch.zeros(num_classes, z_dim))
        self.register_buffer("cov", torch.eye(z_dim).repeat(num_classes, 1, 1))

    @torch.no_grad()
    def update(self, mu: torch.Tensor, logvar: torch.Tensor, y: torch.Tensor) -> None:
        """Move each class's moments towards this batch's (classes with < 2 images keep theirs).

        Vectorised over classes (no host sync on CUDA)."""
        mu, var_post = mu.detach().float(), logvar.detach().float().exp()
        k, zd = self.mean.shape
        n = torch.bincount(y, minlength=k).to(mu.dtype)
        n1 = n.clamp_min(1)[:, None]
        mean_b = torch.zeros_like(self.mean).index_add_(0, y, mu) / n1
        d = mu - mean_b[y]
        scatter = torch.zeros_like(self.cov).index_add_(0, y, d[:, :, None] * d[:, None, :])
        var_b = torch.zeros_like(self.mean).index_add_(0, y, var_post) / n1
        cov_b = scatter / (n - 1).clamp_min(1)[:, None, None] + torch.diag_embed(var_b)
        m = self.momentum * (n >= 2).to(mu.dtype)
        self.mean.lerp_(mean_b, m[:, None])
        self.cov.lerp_(cov_b, m[:, None, None])

    def sample(self, labels: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """``z = mean_c + L_c eps`` (``L_c L_c^T = cov_c``) for standard-normal ``eps`` (B, z_dim)."""
        eye = torch.eye(self.cov.size(1), device=self.cov.device)
        chol = torch.linalg.cholesky(self.cov + 1e-5 * eye)
        return self.mean[labels] + (chol[labels] @ eps.float().unsqueeze(-1)).squeeze(-1)


class VAESampler(nn.Module):
    """The VAE's generator for sampling: codes from :class:`ClassPrior`, images from the decoder.

    Same interface as the GAN generator: ``sample(labels, generator)`` draws the noise from
    ``generator`` (on its device) and moves it to the labels' device.
    """

    def __init__(self, decoder: nn.Module, prior: ClassPrior):
        super().__init__()
        self.decoder, self.prior = decoder, prior

    @property
    def z_dim(self) -> int:  # as a GAN generator's: the size of the code ``forward`` decodes
        return int(self.prior.mean.size(1))

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(z, y)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        eps = torch.randn(labels.size(0), self.prior.mean.size(1), generator=generator, device=generator.device)
        return self.decoder(self.prior.sample(labels, eps.to(labels.device)), labels)


@torch.no_grad()
def encode_anchors(encoder: nn.Module, images: torch.Tensor, labels: torch.Tensor, batch: int = 256) -> torch.Tensor:
    """Posterior means ``mu(x, y)`` of the training images (float ``(N, C, H, W)`` in [-1, 1]),
    the codes :class:`InterpolatingSampler` blends. The encoder is put in eval mode and restored."""
    was = encoder.training
    encoder.eval()
    try:
        return torch.cat([encoder(images[i : i + batch], labels[i : i + batch])[0].float()
                          for i in range(0, len(images), batch)]) if len(images) else images.new_zeros(0)
    finally:
        encoder.train(was)


class InterpolatingSampler(VAESampler):
    """``generate.sampler: interpolate``: decode blends of two training images of the class.

    For a sample of class ``c``: two different training images ``i, j`` of ``c`` (uniformly; the
    same one when ``c`` has only one), ``lambda ~ U(0, 1)``, ``z = mu_i + lambda (mu_j - mu_i)``.
    The codes stay on the segments between codes the decoder reconstructs, where the Gaussian
    prior's draws also go off in directions no training image took. A class with no anchor falls
    back to the class prior. ``anchors`` / ``anchor_labels`` are the posterior means and labels
    of the training images (saved with the checkpoint, :func:`encode_anchors`)."""

    def __init__(self, decoder: nn.Module, prior: ClassPrior, anchors: torch.Tensor, anchor_labels: torch.Tensor):
        super().__init__(decoder, prior)
        k = prior.mean.size(0)
        order = torch.argsort(anchor_labels, stable=True)
        counts = torch.bincount(anchor_labels, minlength=k)
        self.register_buffer("anchors", anchors.float()[order].contiguous())
        self.register_buffer("counts", counts)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = labels.size(0)
        u = torch.rand(b, 3, generator=generator, device=generator.device).to(labels.device)
        eps = torch.randn(b, self.prior.mean.size(1), generator=generator, device=generator.device).to(labels.device)
        z = self.prior.sample(labels, eps)  # classes without an anchor keep their prior code
        if len(self.anchors):
            n = self.counts[labels]
            m = n.clamp_min(1)
            i = (u[:, 0] * m).long().clamp_max(m - 1)
            # j != i: an offset in [1, n - 1] (the same image when the class has only one)
            j = (i + 1 + (u[:, 1] * (m - 1)).long().clamp_max((m - 2).clamp_min(0))) % m
            base, last = self.starts[labels], len(self.anchors) - 1
            zi, zj = self.anchors[(base + i).clamp_max(last)], self.anchors[(base + j).clamp_max(last)]
            z = torch.where((n > 0)[:, None], zi + u[:, 2:3] * (zj - zi), z)
        return self.decoder(z, labels)


class ResidualSampler(VAESampler):
    """``generate.sampler: residual``: edits of the training images (DAGAN-style, Antoniou et al. 2017).

    For a sample of class ``c``: a training image ``x_i`` of ``c`` (uniformly) with code ``z_i``,
    ``eps ~ N(0, I)`` and ``z = z_i + s L_c eps`` (``L_c L_c^T`` the class prior's covariance, ``s``
    = ``generate.residual_scale``); the sample is ``x_i + D(z) - D(z_i)``, clipped to the pixel
    range. The image keeps its own detail (the decoder's blur cancels in the difference) and gets
    the decoder's change for a nearby code: a new stroke width, slant or pose. ``s = 0`` gives the
    training image back. The reconstructions' residuals ``x_i - D(z_i)`` are computed once, here,
    with the decoder as it is (put it in eval mode first). A class with no training image falls
    back to the class prior. ``anchor_images`` are the training images (float ``(N, C, H, W)`` in
    [-1, 1]) in the order of their codes ``anchors`` and labels ``anchor_labels``."""

    def __init__(self, decoder: nn.Module, prior: ClassPrior, anchors: torch.Tensor, anchor_labels: torch.Tensor,
                 anchor_images: torch.Tensor, scale: float = 1.0, batch: int = 256):
        super().__init__(decoder, prior)
        k = prior.mean.size(0)
        order = torch.argsort(anchor_labels, stable=True)
        counts = torch.bincount(anchor_labels, minlength=k)
        z, y = anchors.float()[order].contiguous(), anchor_labels[order]
        with torch.no_grad():
            rec = [decoder(z[i : i + batch], y[i : i + batch]).float() for i in range(0, len(z), batch)]
            residual = anchor_images.float()[order] - torch.cat(rec) if rec else anchor_images.float()
        self.scale = float(scale)
        self.register_buffer("anchors", z)
        self.register_buffer("residuals", residual.contiguous())
        self.register_buffer("counts", counts)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = labels.size(0)
        u = torch.rand(b, generator=generator, device=generator.device).to(labels.device)
        eps = torch.randn(b, self.prior.mean.size(1), generator=generator, device=generator.device).to(labels.device)
        z = self.prior.sample(labels, eps)  # classes without a training image keep their prior code
        if not len(self.anchors):
            return self.decoder(z, labels)
        n = self.counts[labels]
        m = n.clamp_min(1)
        idx = (self.starts[labels] + (u * m).long().clamp_max(m - 1)).clamp_max(len(self.anchors) - 1)
        has = n > 0
        z = torch.where(has[:, None], self.anchors[idx] + self.scale * (z - self.prior.mean[labels]), z)
        x = self.decoder(z, labels)
        edited = (x.float() + self.residuals[idx]).clamp(-1.0, 1.0)
        return torch.where(has[:, None, None, None], edited, x.float())
