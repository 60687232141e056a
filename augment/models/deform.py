"""Class-dependent learned deformations: ``generate.sampler: deform``.

Classical augmentation moves whole images (rotation, shift, scale). The shape variation within a
class -- a 4 open or closed, a 7 with a long or a short bar, a face turned or smiling -- it cannot
make. Following Hauberg et al. (AISTATS 2016, "Dreaming more data: class-dependent distributions
over diffeomorphisms for learned data augmentation"), that variation is learnt from the labelled
images themselves: every ordered pair ``(k, l)`` of training images of a class is registered by a
smooth displacement field that warps image ``k`` onto image ``l``; a sample of the class is a
training image ``i`` warped by the field of another pair of the class, scaled by a uniform draw in
``[0.3, 1] x deform_scale``. The samples keep the real images' sharpness (they are warps of them);
the generator is the class's collection of observed deformations.

The registration runs on the CPU on one thread (bit-reproducible for the same images and
parameters), when the generator is loaded: nothing is added to the checkpoint, which already
carries the training images (``anchor_images``, with ``anchor_labels``; a VAE's and a GAN's).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


#: the shortest a sample is moved along its field, as a fraction of the field
MIN_FRACTION = 0.3


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """A separable Gaussian blur of ``(N, C, H, W)`` (edges replicated): registration on blurred
    images sees a stroke a pixel away, where raw pixels would give no gradient."""
    if sigma <= 0:
        return x
    r = int(3 * sigma + 0.5)
    t = torch.arange(-r, r + 1, dtype=x.dtype, device=x.device)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    c = x.shape[1]
    x = F.conv2d(F.pad(x, (r, r, 0, 0), mode="replicate"), k.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    return F.conv2d(F.pad(x, (0, 0, r, r), mode="replicate"), k.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def warp(x: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``x`` (N, C, H, W) warped by coarse displacement fields ``v`` (N, 2, G, G) (normalised
    ``grid_sample`` coordinates, bicubic to full size); outside the image its border is repeated."""
    n, _, h, w = x.shape
    u = F.interpolate(v, size=(h, w), mode="bicubic", align_corners=True)
    theta = torch.eye(2, 3, dtype=x.dtype, device=x.device).unsqueeze(0).expand(n, 2, 3)
    base = F.affine_grid(theta, [n, x.shape[1], h, w], align_corners=False)
    return F.grid_sample(x, base + u.permute(0, 2, 3, 1), mode="bilinear", padding_mode="border",
                         align_corners=False)


def register(src: torch.Tensor, dst: torch.Tensor, grid: int, steps: int = 200, lam: float = 0.05,
             sigma: float = 1.0, lr: float = 0.05) -> torch.Tensor:
    """Fields ``v`` (N, 2, grid, grid) such that ``warp(src, v)`` is close to ``dst`` (mean squared
    error of the blurred images plus ``lam`` times the field's mean square; Adam from 0)."""
    sb, db = _blur(src, sigma), _blur(dst, sigma)
    v = torch.zeros(src.shape[0], 2, grid, grid, dtype=src.dtype, requires_grad=True)
    opt = torch.optim.Adam([v], lr=lr)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((warp(sb, v) - db) ** 2).mean(dim=(1, 2, 3)).sum() + lam * (v ** 2).mean(dim=(1, 2, 3)).sum()
        loss.backward()
        opt.step()
    return v.detach()


def class_pairs(labels: np.ndarray, num_classes: int, max_pairs: int, seed: int) -> np.ndarray:
    """Every ordered pair ``(k, l)``, ``k != l``, of same-class indices into ``labels``, at most
    ``max_pairs`` per class (a seeded draw when a class has more): ``(P, 2)`` int64, by class."""
    rng = np.random.default_rng(seed)
    out = []
    for c in range(num_classes):
        idx = np.flatnonzero(labels == c)
        pairs = np.array([(k, m) for k in idx for m in idx if k != m], dtype=np.int64).reshape(-1, 2)
        if len(pairs) > max_pairs:
            pairs = pairs[np.sort(rng.choice(len(pairs), max_pairs, replace=False))]
        out.append(pairs)
    return np.concatenate(out) if out else np.zeros((0, 2), np.int64)


def fit_fields(images: torch.Tensor, labels: torch.Tensor, num_classes: int, grid: int, max_pairs: int,
               seed: int, chunk: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    """The pairs (:func:`class_pairs`) and their fields ``(P, 2, grid, grid)``, registered on the
    CPU on one thread in chunks of ``chunk`` pairs (the same floats on every machine with the same
    torch build, whatever its thread count)."""
    pairs = torch.from_numpy(class_pairs(labels.cpu().numpy(), num_classes, max_pairs, seed))
    x = images.detach().float().cpu()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.enable_grad(), torch.inference_mode(False):
            fields = [register(x[pairs[i : i + chunk, 0]], x[pairs[i : i + chunk, 1]], grid)
                      for i in range(0, len(pairs), chunk)]
    finally:
        torch.set_num_threads(threads)
    v = torch.cat(fields) if fields else torch.zeros(0, 2, grid, grid)
    return pairs, v


class DeformSampler(nn.Module):
    """``generate.sampler: deform``: training images warped by the deformations observed between
    other training images of their class (module docstring). For a sample of class ``c``: a training
    image ``i`` of ``c`` and a pair ``(k, l)`` of ``c`` with ``i`` not in it (redrawn up to 8 times;
    a class of two images has none, and uses one of its own), both uniformly; the sample is
    ``warp(x_i, t * v_kl)``, ``t ~ U(0.3, 1) x scale``. A class with fewer than two training images
    has no field and falls back to ``fallback`` -- the trained generator's own sampler (a VAE's
    class prior and decoder, a GAN's generator), anything with ``sample(labels, generator)``.
    ``images`` are float ``(N, C, H, W)`` in [-1, 1] with ``labels`` ``(N,)``; ``pairs`` /
    ``fields`` from :func:`fit_fields`; ``num_classes``: the checkpoint's class count.
    ``random``: the fraction of samples (each one's own draw) whose field is not an observed one but
    random -- every control point's displacement ``N(0, s_c^2)``, ``s_c`` the root mean square of
    class ``c``'s fields (an elastic distortion of the learnt fields' size), moved the same
    ``U(0.3, 1) x scale`` along it; at 0 (the default) nothing more is drawn, so the samples are
    those of a sampler without the option."""

    def __init__(self, fallback: nn.Module, images: torch.Tensor, labels: torch.Tensor, pairs: torch.Tensor,
                 fields: torch.Tensor, num_classes: int, scale: float = 1.0, random: float = 0.0):
        super().__init__()
        self.fallback = fallback
        k = int(num_classes)
        pair_class = labels[pairs[:, 0]] if len(pairs) else labels.new_zeros(0)
        order = torch.argsort(pair_class, stable=True)
        counts = torch.bincount(labels, minlength=k)
        pcounts = torch.bincount(pair_class, minlength=k)
        iorder = torch.argsort(labels, stable=True)
        self.scale = float(scale)
        self.random = float(random)
        # per class the fields' root mean square (on the fields' device: a GPU run builds this there)
        sq = torch.zeros(k, dtype=torch.float32, device=fields.device).index_add_(
            0, pair_class.long(), fields.float().pow(2).flatten(1).mean(1))
        self.register_buffer("field_rms", (sq / pcounts.clamp_min(1)).sqrt())
        self.register_buffer("images", images.float()[iorder].contiguous())
        self.register_buffer("image_index", iorder)  # position in ``images`` -> index in the input order
        self.register_buffer("counts", counts)
        self.register_buffer("starts", torch.cumsum(counts, 0) - counts)
        self.register_buffer("pairs", pairs[order].contiguous())
        self.register_buffer("fields", fields.float()[order].contiguous())
        self.register_buffer("pair_counts", pcounts)
        self.register_buffer("pair_starts", torch.cumsum(pcounts, 0) - pcounts)

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        b = labels.size(0)
        tries = 8
        u = torch.rand(b, 2 + tries, generator=generator, device=generator.device).to(labels.device)
        # the fallback's draw (a VAE: one normal code per sample) is taken for every sample, so
        # that a sample's noise does not depend on which classes have fields
        x = self.fallback.sample(labels, generator).float()
        has = self.pair_counts[labels] > 0
        if not bool(has.any()):
            return x
        n = self.counts[labels].clamp_min(1)
        pos = (self.starts[labels] + (u[:, 0] * n).long().clamp_max(n - 1)).clamp_max(len(self.images) - 1)
        src = self.image_index[pos]
        m = self.pair_counts[labels].clamp_min(1)
        last = max(len(self.pairs) - 1, 0)
        pick = (self.pair_starts[labels] + (u[:, 2] * m).long().clamp_max(m - 1)).clamp_max(last)
        for t in range(3, 2 + tries):  # redraw a pair that contains the image itself
            bad = (self.pairs[pick] == src[:, None]).any(1)
            if not bool(bad.any()):
                break
            alt = (self.pair_starts[labels] + (u[:, t] * m).long().clamp_max(m - 1)).clamp_max(last)
            pick = torch.where(bad, alt, pick)
        frac = (MIN_FRACTION + (1 - MIN_FRACTION) * u[:, 1]) * self.scale
        v = self.fields[pick]
        if self.random > 0:  # drawn only then: at 0 the random stream is the option-less sampler's
            which = torch.rand(b, generator=generator, device=generator.device).to(labels.device) < self.random
            noise = torch.randn(b, *v.shape[1:], generator=generator, device=generator.device).to(v.device)
            v = torch.where(which[:, None, None, None], noise * self.field_rms[labels][:, None, None, None], v)
        warped = warp(self.images[pos], v * frac[:, None, None, None]).clamp(-1.0, 1.0)
        return torch.where(has[:, None, None, None], warped, x)
