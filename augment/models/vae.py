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

import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.models.gan import _channels, plan_resolution


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
