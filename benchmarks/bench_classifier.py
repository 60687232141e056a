"""The downstream classifier's training speed (what evaluate, the label filter and tuning run
many times): torch threads 1 vs 2, and the batch-prefetch thread on vs off (off = the previous
serial loop; both give identical weights).

Runs alternate (each configuration once per repeat, order rotated) in one process; reported are
steps/s (wall) and steps per CPU-second, median over repeats.

    python benchmarks/bench_classifier.py --size 8 --steps 300 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, synthetic_images  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=8)
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--per-class", type=int, default=60, help="train images per class (real + synthetic)")
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import augment.downstream.classifier as C
    import torch

    x, y = synthetic_images(args.classes, args.per_class, args.size, args.channels)
    spec = C.ClassifierSpec(steps=args.steps, batch_size=args.batch_size, width=args.width)
    real_prefetch, real_small = C._prefetch, C.SMALL_IMAGE_PIXELS
    configs = [(t, aug, pre) for t in args.threads for aug in (False, True) for pre in ((False, True) if aug else (False,))]
    times: dict = {c: [] for c in configs}
    t_start = time.perf_counter()
    for r in range(args.repeats):
        order = configs[r % len(configs):] + configs[: r % len(configs)]
        for cfg in order:
            threads, aug, pre = cfg
            torch.set_num_threads(threads)
            # measure the thread count asked for (train_classifier itself uses 1 thread on small images)
            C.SMALL_IMAGE_PIXELS = real_small if threads == 1 else 0
            C._prefetch = real_prefetch if pre else (lambda items, depth=2: items)
            augment = C.classical_augmentation(10.0, 0.1, 0.1, seed=r) if aug else None
            t0, c0 = time.perf_counter(), time.process_time()
            C.train_classifier(x, y, args.classes, spec, seed=r, augment=augment)
            times[cfg].append((time.perf_counter() - t0, time.process_time() - c0))
    C._prefetch, C.SMALL_IMAGE_PIXELS = real_prefetch, real_small
    results = []
    for (threads, aug, pre), ts in times.items():
        results.append({"threads": threads, "classical_augmentation": aug, "prefetch": pre,
                        "steps_per_s": statistics.median(args.steps / w for w, _ in ts),
                        "steps_per_cpu_s": statistics.median(args.steps / c for _, c in ts)})
        print(f"threads={threads} aug={aug!s:<5} prefetch={pre!s:<5} {results[-1]['steps_per_s']:7.1f} steps/s "
              f"({results[-1]['steps_per_cpu_s']:.1f} steps/CPU-s)", file=sys.stderr)
    summary = {"benchmark": "classifier training", "image_shape": [args.size, args.size, args.channels],
               "machine": machine(), "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
               "total_s": time.perf_counter() - t_start, "results": results}
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
