"""Inference layouts for the batched CPU work of generate and filter, at 28x28.

Times, per image, the variants each inference copy could use, alternating in one process
(``--repeats`` rounds, order rotated; median):

* the filter's label classifier (``SmallCNN``, Conv+BN folded): contiguous vs channels-last
  memory layout, over chunk sizes (``predict_with_embedding`` runs chunks of
  ``CPU_INFERENCE_BATCH`` images on CPU);
* the default generator's image layer (``ConvTranspose2d`` 4x4 stride 2, 32 -> 1 channel) vs its
  sub-pixel rewrite (3x3 convolution + pixel shuffle, ``generate.SubPixelConv``);
* the generator's class batch norm vs its folded per-class affine map
  (``generate.FoldedClassBatchNorm``).

    OMP_NUM_THREADS=1 python benchmarks/bench_inference.py --threads 2 --markdown docs/performance.md \\
        --json benchmarks/results/inference28.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, write_section  # noqa: E402


def _per_image_us(fn, n_images: int, min_s: float = 0.3) -> float:
    fn()  # warm-up
    reps, t0 = 0, time.perf_counter()
    while True:
        fn()
        reps += 1
        el = time.perf_counter() - t0
        if el >= min_s:
            return el / reps / n_images * 1e6


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (generate/filter.threads null = one per CPU)")
    p.add_argument("--chunks", type=int, nargs="+", default=[128, 256, 512, 1024])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    args = p.parse_args(argv)

    import torch

    from augment.downstream.classifier import CPU_INFERENCE_BATCH, SmallCNN, for_inference
    from augment.generation.generate import FoldedClassBatchNorm, SubPixelConv
    from augment.models.gan import ClassBatchNorm

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cl = torch.channels_last
    clf = for_inference(SmallCNN(1, 10, 28, 32).eval())
    clf_cl = for_inference(SmallCNN(1, 10, 28, 32).eval()).to(memory_format=cl)
    cases: dict[str, tuple] = {}
    for b in args.chunks:
        x = torch.rand(b, 1, 28, 28)
        cases[f"classifier, contiguous, chunk {b}"] = (lambda m=clf, x=x: m.embed(x), b)
        cases[f"classifier, channels-last, chunk {b}"] = (
            lambda m=clf_cl, x=x.contiguous(memory_format=cl): m.embed(x), b)
    n = 512  # generate.batch_size default
    ct = torch.nn.ConvTranspose2d(32, 1, 4, 2, 1).eval().to(memory_format=cl)
    sp = SubPixelConv(ct).eval().to(memory_format=cl)
    h = torch.randn(n, 32, 14, 14).contiguous(memory_format=cl)
    cases["image layer 32->1, ConvTranspose2d"] = (lambda: ct(h), n)
    cases["image layer 32->1, sub-pixel conv"] = (lambda: sp(h), n)
    cbn = ClassBatchNorm(64, 10).eval()
    fcbn = FoldedClassBatchNorm(cbn)
    a, y = torch.randn(n, 64, 7, 7).contiguous(memory_format=cl), torch.arange(n) % 10
    cases["class batch norm 64 ch 7x7"] = (lambda: cbn(a, y), n)
    cases["class batch norm, folded"] = (lambda: fcbn(a, y), n)

    names = list(cases)
    times: dict[str, list[float]] = {k: [] for k in names}
    with torch.inference_mode():
        for r in range(args.repeats):
            for k in names[r % len(names):] + names[: r % len(names)]:
                fn, m = cases[k]
                times[k].append(_per_image_us(fn, m))
    rows = [{"case": k, "us_per_image": statistics.median(v), "all": v} for k, v in times.items()]
    summary = {"benchmark": "inference layouts 28x28", "threads": args.threads, "cpu_inference_batch": CPU_INFERENCE_BATCH,
               "machine": machine(), "command": " ".join([os.path.relpath(sys.argv[0])] + (argv or sys.argv[1:])),
               "results": rows}
    for r in rows:
        print(f"{r['case']:<45} {r['us_per_image']:8.2f} us/img", file=sys.stderr)
    if args.markdown:
        body = (f"torch threads {args.threads}; median us per image over {args.repeats} alternating rounds "
                f"(lower is faster). The pipeline uses channels-last chunks of {CPU_INFERENCE_BATCH} for the "
                "classifier on CPU, the sub-pixel image layer and the folded class batch norm.\n\n"
                "| case | us / image |\n|---|---|\n"
                + "\n".join(f"| {r['case']} | {r['us_per_image']:.1f} |" for r in rows))
        write_section(args.markdown, "inference-28", "Inference layouts at 28x28 (generate and filter)", summary, body)
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
