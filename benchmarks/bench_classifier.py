"""The downstream classifier's training speed (what crossfit, evaluate and the label filter run
many times): the classical augmentation engine (none / albumentations per image / batched,
``classical.engine``), the batch-prefetch thread on vs off (identical weights either way) and
torch threads.

Runs alternate (each configuration once per repeat, order rotated) in one process; reported are
steps/s (wall) and steps per CPU-second, median over repeats.

    OMP_NUM_THREADS=1 python benchmarks/bench_classifier.py --sizes 8 28 --steps 300 --repeats 3 \\
        --markdown docs/performance.md --json benchmarks/results/classifier.json
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, synthetic_images, write_section  # noqa: E402

ENGINES = ("none", "albumentations", "batched")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[8, 28])
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=60, help="train images per class (real + synthetic)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1])
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)

    import torch

    import augment.downstream.classifier as C
    from augment.config import ClassicalConfig
    from augment.data.classical import classical_augmentation

    spec = C.ClassifierSpec(steps=args.steps, batch_size=args.batch_size, width=args.width)
    real_prefetch, real_small = C._prefetch, C.SMALL_IMAGE_PIXELS
    configs = [(s, t, eng, pre) for s in args.sizes for t in args.threads for eng in ENGINES
               for pre in ((False, True) if eng != "none" else (False,))]
    data = {s: synthetic_images(args.classes, args.per_class, s, args.channels) for s in args.sizes}
    times: dict = {c: [] for c in configs}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for cfg in order:
            size, threads, engine, pre = cfg
            torch.set_num_threads(threads)
            # measure the thread count asked for (train_classifier itself uses 1 thread on small images)
            C.SMALL_IMAGE_PIXELS = real_small if threads == 1 else 0
            C._prefetch = real_prefetch if pre else (lambda items, depth=2: items)
            augment = (classical_augmentation(dataclasses.replace(ClassicalConfig(), engine=engine), seed=r)
                       if engine != "none" else None)
            x, y = data[size]
            t0, c0 = time.perf_counter(), time.process_time()
            C.train_classifier(x, y, args.classes, spec, seed=r, augment=augment)
            times[cfg].append((time.perf_counter() - t0, time.process_time() - c0))
    C._prefetch, C.SMALL_IMAGE_PIXELS = real_prefetch, real_small
    results = []
    for (size, threads, engine, pre), ts in times.items():
        results.append({"size": size, "threads": threads, "augmentation": engine, "prefetch": pre,
                        "steps_per_s": statistics.median(args.steps / w for w, _ in ts),
                        "steps_per_cpu_s": statistics.median(args.steps / c for _, c in ts)})
        print(f"{size}x{size} threads={threads} aug={engine:<14} prefetch={pre!s:<5} "
              f"{results[-1]['steps_per_s']:7.1f} steps/s ({results[-1]['steps_per_cpu_s']:.1f} steps/CPU-s)",
              file=sys.stderr)
    summary = {"benchmark": "classifier training", "channels": args.channels, "batch_size": args.batch_size,
               "machine": machine(), "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "total_s": time.perf_counter() - t_start, "results": results}
    if args.markdown:
        lines = [f"Downstream classifier training ({args.classes} classes x {args.per_class} images, batch "
                 f"{args.batch_size}, width {args.width}, {args.steps} steps), configurations alternating in one "
                 f"process, median of {args.repeats}. `classical.engine`: `batched` (default) draws albumentations' "
                 "parameter distributions for the whole batch and applies the same OpenCV warp and lookup table; "
                 "`albumentations` calls the Compose per image.", "",
                 "| size | torch threads | classical augmentation | prefetch thread | steps/s | steps/CPU-s |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['size']}x{r['size']} | {r['threads']} | {r['augmentation']} | {'on' if r['prefetch'] else 'off'} "
                  f"| {r['steps_per_s']:.1f} | {r['steps_per_cpu_s']:.1f} |" for r in results]
        write_section(args.markdown, "classifier", "Downstream classifier training: classical augmentation engines",
                      summary, "\n".join(lines))
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
