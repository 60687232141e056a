"""Training throughput of our loop against a plain PyTorch loop of the same networks.

"ours": ``augment.training.loop.train_generator`` with the GAN trainer (class-balanced batches, loss
logging, sample grids, a resumable checkpoint, EMA) -- configured for the plain algorithm
(hinge + DiffAugment, ``ms_weight: 0``, fixed augmentation strength ``ada_target: null``) so
both loops do the same maths.
"plain": the same ``Generator``/``Discriminator`` modules (``build_gan``), the same hinge +
DiffAugment step and EMA, written inline, without any bookkeeping.

Repeats alternate (plain, ours, plain, ours, ...) in one process so machine noise hits both;
reported are images/s per repeat, the median per-pair ratio ours/plain of wall time and of
process CPU time (CPU time is robust to other jobs on a shared machine).

    OMP_NUM_THREADS=2 python benchmarks/bench_train.py --size 8 --iterations 250 --repeats 5 --threads 1 2
"""

from __future__ import annotations

import argparse
import copy
import os
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, synthetic_images  # noqa: E402


def config(args):
    from augment.config import TrainConfig

    cfg = replace(TrainConfig(), iterations=args.iterations, batch_size=args.batch_size, z_dim=64,
                  g_channels=args.width, d_channels=args.width, device="cpu", seed=0,
                  # the params.yaml cadence; one resumable checkpoint per repeat
                  log_every=50, sample_every=500, checkpoint_every=max(1, args.iterations // 2))
    fields = {f for f in TrainConfig.__dataclass_fields__}
    if "ms_weight" in fields:
        cfg = replace(cfg, ms_weight=0.0)
    if "ada_target" in fields:
        cfg = replace(cfg, ada_target=None)
    return cfg


def run_ours(x, y, names, cfg, scratch: Path) -> None:
    from augment.training.loop import train_generator

    resume = scratch / "resume.safetensors"
    resume.unlink(missing_ok=True)
    train_generator(x, y, names, cfg, resume_path=resume, progress=False)


def run_plain(x, y, names, cfg) -> None:
    """The same networks and step, inline: no logging, grids, checkpoints or balanced sampling."""
    import torch
    import torch.nn.functional as F

    from augment.core.pixels import to_tensor
    from augment.models.gan import build_gan
    from augment.training.diffaug import diff_augment

    torch.manual_seed(cfg.seed)
    m = build_gan(cfg, tuple(x.shape[1:]), len(names))
    G, D = m.G, m.D
    G_ema = copy.deepcopy(G).eval()
    opt_g = torch.optim.Adam(G.parameters(), lr=cfg.lr_g, betas=(cfg.beta1, cfg.beta2))
    opt_d = torch.optim.Adam(D.parameters(), lr=cfg.lr_d, betas=(cfg.beta1, cfg.beta2))
    g = torch.Generator().manual_seed(cfg.seed + 1)
    images, labels = to_tensor(x, torch.device("cpu")), torch.from_numpy(y)
    aug = lambda t: diff_augment(t, cfg.diffaug, g, 1.0)  # noqa: E731
    for _ in range(cfg.iterations):
        idx = torch.randint(0, len(images), (cfg.batch_size,), generator=g)
        real, lab = images[idx], labels[idx]
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=g)
        with torch.no_grad():
            fake = G(z, lab)
        loss_d = F.relu(1 - D(aug(real), lab)).mean() + F.relu(1 + D(aug(fake), lab)).mean()
        opt_d.zero_grad(set_to_none=True)
        loss_d.backward()
        opt_d.step()
        z = torch.randn(cfg.batch_size, cfg.z_dim, generator=g)
        loss_g = -D(aug(G(z, lab)), lab).mean()
        opt_g.zero_grad(set_to_none=True)
        loss_g.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, p in zip(G_ema.parameters(), G.parameters()):
                pe.lerp_(p, 1 - cfg.ema_decay)
            for be, b in zip(G_ema.buffers(), G.buffers()):
                be.copy_(b)


def bench(args, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    x, y = synthetic_images(args.classes, args.per_class, args.size, args.channels)
    names = [f"c{i}" for i in range(args.classes)]
    cfg = config(args)
    scratch = Path(tempfile.mkdtemp(prefix="bench_train_"))
    n_img = cfg.iterations * cfg.batch_size
    rows = []
    run_plain(x, y, names, replace(cfg, iterations=3))  # warm-up (allocator, oneDNN primitives)
    for r in range(args.repeats):
        pair = {}
        order = ("plain", "ours") if r % 2 == 0 else ("ours", "plain")
        for which in order:
            t0, c0 = time.perf_counter(), time.process_time()
            if which == "plain":
                run_plain(x, y, names, cfg)
            else:
                run_ours(x, y, names, cfg, scratch)
            pair[which] = (time.perf_counter() - t0, time.process_time() - c0)
        rows.append(pair)
        print(f"threads={threads} repeat {r}: plain {n_img / pair['plain'][0]:.0f} img/s, "
              f"ours {n_img / pair['ours'][0]:.0f} img/s, ratio {pair['ours'][0] / pair['plain'][0]:.3f} "
              f"(CPU-time ratio {pair['ours'][1] / pair['plain'][1]:.3f})", file=sys.stderr, flush=True)
    shutil.rmtree(scratch, ignore_errors=True)
    wall = [p["ours"][0] / p["plain"][0] for p in rows]
    cpu = [p["ours"][1] / p["plain"][1] for p in rows]
    return {
        "threads": threads,
        "iterations_per_repeat": cfg.iterations, "batch_size": cfg.batch_size, "repeats": args.repeats,
        "plain_images_per_s_median": statistics.median(n_img / p["plain"][0] for p in rows),
        "ours_images_per_s_median": statistics.median(n_img / p["ours"][0] for p in rows),
        "plain_images_per_cpu_s_median": statistics.median(n_img / p["plain"][1] for p in rows),
        "ours_images_per_cpu_s_median": statistics.median(n_img / p["ours"][1] for p in rows),
        "ratio_wall_median": statistics.median(wall), "ratio_wall_all": wall,
        "ratio_cpu_median": statistics.median(cpu), "ratio_cpu_all": cpu,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=15, help="real train images per class")
    p.add_argument("--width", type=int, default=32, help="g/d channels (params.yaml default: 32)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--iterations", type=int, default=250, help="iterations per repeat")
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    results = [bench(args, t) for t in args.threads]
    summary = {"benchmark": "train loop vs plain PyTorch", "image_shape": [args.size, args.size, args.channels],
               "classes": args.classes, "width": args.width, "machine": machine(),
               "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "total_s": time.perf_counter() - t0, "results": results}
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
