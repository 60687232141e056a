"""One generator training step at 28x28: our data-sized networks vs a plain DCGAN-size pair.

"ours": :class:`augment.training.gan.GANTrainer` with the networks ``train.g_channels/d_channels:
null`` resolve to for 100 training images (:mod:`augment.training.sizing`), hinge + DiffAugment
(``translation,cutout``), mode-seeking term, ADA, EMA; "vae_small" / "vae_resnet":
:class:`augment.training.vae.VAETrainer` (the default family; encoder + decoder on posterior and
prior codes + its filter critic) with ``arch`` small (the default below 1,000 images) / resnet.
"dcgan": a plain conditional DCGAN of the size a 100-image set needs: G = linear -> 7x7 -> two
4x4 transposed convolutions; D = two 4x4 stride-2 convolutions (spectral norm) + a projection
head; the same DiffAugment and hinge loss, one D and one G step, no extras.

Steps alternate (dcgan, ours, ..., dcgan, ours, ...) in one process so machine noise hits all;
reported: median seconds per step of each, and their ratio (wall time and process CPU time).

    OMP_NUM_THREADS=2 python benchmarks/bench_step.py --steps 30 --repeats 5 --markdown docs/performance.md
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.nn.utils.parametrizations import spectral_norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, step_benchmark_inputs, write_section  # noqa: E402


class DCGenerator(nn.Module):
    def __init__(self, nc: int, z: int = 64, w: int = 32):
        super().__init__()
        self.z, self.w = z, w
        self.embed = nn.Embedding(nc, z)
        self.fc = nn.Linear(2 * z, 2 * w * 7 * 7)
        self.net = nn.Sequential(nn.BatchNorm2d(2 * w), nn.ReLU(), nn.ConvTranspose2d(2 * w, w, 4, 2, 1),
                                 nn.BatchNorm2d(w), nn.ReLU(), nn.ConvTranspose2d(w, 1, 4, 2, 1), nn.Tanh())

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.net(self.fc(torch.cat([z, self.embed(y)], 1)).view(-1, 2 * self.w, 7, 7))


class DCDiscriminator(nn.Module):
    def __init__(self, nc: int, w: int = 32):
        super().__init__()
        self.net = nn.Sequential(spectral_norm(nn.Conv2d(1, w, 4, 2, 1)), nn.LeakyReLU(0.2),
                                 spectral_norm(nn.Conv2d(w, 2 * w, 4, 2, 1)), nn.LeakyReLU(0.2))
        self.linear = spectral_norm(nn.Linear(2 * w * 49, 1))
        self.embed = spectral_norm(nn.Embedding(nc, 2 * w * 49))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.net(x).flatten(1)
        return self.linear(h).squeeze(1) + (self.embed(y) * h).sum(1)


def dcgan_step(G, D, og, od, real, labels, g):
    from augment.training.diffaug import diff_augment

    z = torch.randn(real.size(0), G.z, generator=g)
    with torch.no_grad():
        fake = G(z, labels)
    ld = F.relu(1 - D(diff_augment(real, "translation,cutout", g), labels)).mean() + \
        F.relu(1 + D(diff_augment(fake, "translation,cutout", g), labels)).mean()
    od.zero_grad(set_to_none=True)
    ld.backward()
    od.step()
    fake = G(torch.randn(real.size(0), G.z, generator=g), labels)
    lg = -D(diff_augment(fake, "translation,cutout", g), labels).mean()
    og.zero_grad(set_to_none=True)
    lg.backward()
    og.step()


def main(argv: list[str] | None = None) -> int:
    from augment.config import TrainConfig
    from augment.training.gan import GANTrainer
    from augment.training.sizing import size_for_data

    a, real, labels = step_benchmark_inputs(__doc__, argv, steps=30)
    # the GAN as it was run (z_dim 64, no real_augment); the VAE rows below use the default family
    cfg = size_for_data(TrainConfig(device="cpu", family="gan", z_dim=64, real_augment="none"), a.images)
    torch.manual_seed(0)
    ours = GANTrainer(cfg, (28, 28, 1), 10, torch.device("cpu"))
    # the previous default for comparison: residual networks of width 32 whatever the data size
    old_cfg = size_for_data(TrainConfig(device="cpu", arch="resnet", g_channels=32, d_channels=32), a.images)
    old = GANTrainer(old_cfg, (28, 28, 1), 10, torch.device("cpu"))
    from augment.training.vae import VAETrainer

    vae = {arch: VAETrainer(size_for_data(TrainConfig(device="cpu", family="vae", arch=arch, z_dim=16), a.images),
                            (28, 28, 1), 10, torch.device("cpu")) for arch in ("resnet", "small")}
    G, D = DCGenerator(10), DCDiscriminator(10)
    og = torch.optim.Adam(G.parameters(), 2e-4, betas=(0.0, 0.99))
    od = torch.optim.Adam(D.parameters(), 2e-4, betas=(0.0, 0.99))
    g = torch.Generator().manual_seed(0)
    bs = cfg.batch_size

    def batch():
        idx = torch.randint(0, len(real), (bs,), generator=g)
        return real[idx], labels[idx]

    def timed(fn) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(a.steps):
            fn(*batch())
        return (time.perf_counter() - t0) / a.steps, (time.process_time() - c0) / a.steps

    timed(lambda r, lab: ours.step(r, lab, g))  # warm-up both
    timed(lambda r, lab: dcgan_step(G, D, og, od, r, lab, g))
    timed(lambda r, lab: old.step(r, lab, g))
    for t in vae.values():
        timed(lambda r, lab, t=t: t.step(r, lab, g))
    rows = []
    for _ in range(a.repeats):
        d_wall, d_cpu = timed(lambda r, lab: dcgan_step(G, D, og, od, r, lab, g))
        o_wall, o_cpu = timed(lambda r, lab: ours.step(r, lab, g))
        r_wall, r_cpu = timed(lambda r, lab: old.step(r, lab, g))
        row = {"dcgan_wall": d_wall, "ours_wall": o_wall, "dcgan_cpu": d_cpu, "ours_cpu": o_cpu,
               "resnet32_wall": r_wall, "resnet32_cpu": r_cpu}
        for arch, t in vae.items():
            row[f"vae_{arch}_wall"], row[f"vae_{arch}_cpu"] = timed(lambda r, lab, t=t: t.step(r, lab, g))
        rows.append(row)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    ratio_wall = statistics.median(r["ours_wall"] / r["dcgan_wall"] for r in rows)
    ratio_cpu = statistics.median(r["ours_cpu"] / r["dcgan_cpu"] for r in rows)
    summary = {"benchmark": "generator training step at 28x28 (GAN, VAE) vs DCGAN-size", "machine": machine(),
               "command": " ".join(["python", "benchmarks/bench_step.py"] + (argv if argv is not None else sys.argv[1:])),
               "ours_config": {"g_channels": cfg.g_channels, "d_channels": cfg.d_channels, "batch_size": bs,
                               "iterations_for_data": cfg.iterations},
               "median_s_per_step": {k: round(v, 5) for k, v in med.items()},
               "ratio_ours_over_dcgan_wall": round(ratio_wall, 3), "ratio_ours_over_dcgan_cpu": round(ratio_cpu, 3),
               "repeats": rows}
    if a.markdown:
        names = [("dcgan", "plain DCGAN-size conditional pair (reference)"),
                 ("vae_small", "**VAE, `params.yaml` default** (`family: vae`, auto = small, z_dim 16)"),
                 ("ours", f"GAN, auto = small (g/d width {cfg.g_channels}/{cfg.d_channels})"),
                 ("vae_resnet", "VAE with `arch: resnet` (residual decoder)"),
                 ("resnet32", "GAN, previous default (resnet, width 32)")]
        ratio = {k: statistics.median(r[f"{k}_cpu"] / r["dcgan_cpu"] for r in rows) for k, _ in names}
        summary["ratio_cpu_over_dcgan"] = {k: round(v, 3) for k, v in ratio.items()}
        body = (f"One optimisation step (D and G/VAE updates) for {a.images} training images, batch {bs}, "
                f"same DiffAugment + hinge for every critic; the variants alternate in one process, "
                f"{a.repeats} repeats x {a.steps} steps; median per step.\n\n"
                "| networks | wall s/step | CPU s/step | CPU ratio to DCGAN-size |\n|---|---|---|---|\n"
                + "\n".join(f"| {label} | {med[k + '_wall']:.4f} | {med[k + '_cpu']:.4f} | {ratio[k]:.2f} |"
                             for k, label in names))
        write_section(a.markdown, "step-28", "One training step at 28x28", summary, body)
    return emit(summary, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
