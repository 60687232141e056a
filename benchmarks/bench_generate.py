"""Generation + filtering throughput and peak memory as the sample count grows.

Each size runs in its own child process (so peak RSS is that size's alone): ``generate`` writes
shards to a temporary folder, ``filter`` decides acceptance from the shards' scores, and the
child reports wall time per stage and peak RSS (``resource.getrusage``). Memory must stay flat
as the count grows: samples are streamed shard by shard, never all held.

It also times the raw networks (G + D forward on the same batches, no shards, no I/O) in the
same child -- the ceiling our stage can reach on this machine.

    OMP_NUM_THREADS=2 python benchmarks/bench_generate.py --sizes 10000 100000 1000000 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import PY, emit, machine, make_checkpoint, run_json, write_section  # noqa: E402


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def run_filter_stage(gen_dir: Path, checkpoint: str, num_classes: int, filters: str | None,
                     image_shape: tuple[int, int, int], device: str = "cpu", precision: str = "auto"):
    """The filter stage's library call, with a small real TRAIN/VAL set of the same shape (the
    filters calibrate on VAL and compare against TRAIN). ``filters``: comma list, None = default;
    ``precision``: filter.precision where this version has it."""
    import dataclasses
    import inspect

    from augment.config import FilterConfig
    from augment.filters.apply import filter_samples
    from benchmarks.common import synthetic_images

    cfg = FilterConfig(device=device) if "device" in {f.name for f in dataclasses.fields(FilterConfig)} else FilterConfig()
    if "precision" in {f.name for f in dataclasses.fields(FilterConfig)}:
        cfg = dataclasses.replace(cfg, precision=precision)
    if filters is not None and "filters" in {f.name for f in dataclasses.fields(FilterConfig)}:
        cfg = dataclasses.replace(cfg, filters=[f for f in filters.split(",") if f])
    if "ctx" not in inspect.signature(filter_samples).parameters:
        return filter_samples(gen_dir, cfg)
    from augment.filters.apply import FilterContext

    h, w, c = image_shape
    tx, ty = synthetic_images(num_classes, 20, h, c, seed=1)
    vx, vy = synthetic_images(num_classes, 5, h, c, seed=2)
    return filter_samples(gen_dir, cfg, FilterContext(tx, ty, vx, vy, num_classes, str(checkpoint)))


def child(args: argparse.Namespace) -> dict:
    import numpy as np
    import torch

    from augment.config import GenerateConfig
    from augment.filters.apply import save_filter_output
    from augment.generation.generate import generate_samples, load_generator

    if args.threads:
        torch.set_num_threads(args.threads)
    out = Path(args.workdir)
    k = args.classes
    cfg = GenerateConfig(n_per_class=max(1, args.n // k), batch_size=args.batch_size, shard_size=args.shard_size,
                         seed=1, device=args.device, precision=args.precision,
                         sampler="prior")  # the networks' throughput (deform warps registered on the CPU)
    n = cfg.n_per_class * k
    rss_start = _rss_mb()  # after imports
    res: dict = {"n": n, "threads": torch.get_num_threads(), "device": args.device, "precision": args.precision,
                 "batch_size": args.batch_size, "shard_size": args.shard_size}
    if args.raw:
        # The same networks, no shards, no I/O: the ceiling.
        gen = load_generator(args.checkpoint, args.device, args.precision)
        g = torch.Generator().manual_seed(0)
        y = torch.arange(args.batch_size, device=gen.device) % k
        reps = max(1, min(n, 20000) // args.batch_size)
        with torch.inference_mode():
            gen.discriminator(gen.sampler.sample(y, g), y)  # warm-up
            if gen.device.type == "cuda":
                torch.cuda.synchronize()
            t0, c_raw = time.perf_counter(), time.process_time()
            for _ in range(reps):
                x = gen.sampler.sample(y, g)
                s = gen.discriminator(x, y)
            float(s.sum())
            res["raw_cpu_s"] = time.process_time() - c_raw
            res["raw_images_per_cpu_s"] = reps * args.batch_size / res["raw_cpu_s"]
            res["raw_images_per_s"] = reps * args.batch_size / (time.perf_counter() - t0)
    c0 = time.process_time()
    t0 = time.perf_counter()
    generate_samples(args.checkpoint, out / "generated", cfg, progress=False)
    t1 = time.perf_counter()
    c1 = time.process_time()
    rss_gen = _rss_mb()
    decisions, report = run_filter_stage(out / "generated", args.checkpoint, k, args.filters, args.image_shape,
                                         precision=args.precision)
    save_filter_output(decisions, report, out / "filtered", [f"c{i}" for i in range(k)])
    t2 = time.perf_counter()
    c2 = time.process_time()
    shard_bytes = sum(f.stat().st_size for f in (out / "generated").glob("shard_*.npz"))
    res.update({
        "generate_s": t1 - t0, "filter_s": t2 - t1,
        "generate_images_per_s": n / (t1 - t0),
        "generate_filter_images_per_s": n / (t2 - t0),
        # CPU seconds of this process (all threads): robust to other jobs sharing the machine.
        "generate_cpu_s": c1 - c0, "filter_cpu_s": c2 - c1,
        "generate_filter_images_per_cpu_s": n / (c2 - c0),
        "accepted": int(report["accepted"]),
        "rss_after_imports_mb": rss_start, "peak_rss_after_generate_mb": rss_gen, "peak_rss_mb": _rss_mb(),
        "shards_mb": shard_bytes / 2**20,
        "all_images_mb": n * np.prod(json.loads((out / "generated" / "generate.json").read_text())["image_shape"]) / 2**20,
    })
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--size", type=int, default=28, help="image side (square)")
    p.add_argument("--channels", type=int, default=1)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--width", type=int, default=32, help="g/d channels (params.yaml default: 32)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--shard-size", type=int, default=4096)
    p.add_argument("--device", default="cpu")
    p.add_argument("--precision", default="auto", help="generate.precision and filter.precision")
    p.add_argument("--threads", type=int, default=0, help="torch.set_num_threads (0 = leave)")
    p.add_argument("--raw", action="store_true", help="also time the bare networks (no shards, no I/O)")
    p.add_argument("--train-iterations", type=int, default=20)
    p.add_argument("--filters", default="discriminator,label,memorisation",
                   help="filter.filters for the filter stage, comma-separated ('' = accept all); default: "
                        "discriminator,label,memorisation (the heaviest usual path; the config default is none)")
    p.add_argument("--workdir", default=None, help="scratch folder (default: a new temp dir, deleted)")
    p.add_argument("--json", default=None, help="write the summary here too")
    p.add_argument("--markdown", default=None, help="write/replace this run's section in a markdown results file")
    # internal: one size in a child process
    p.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--checkpoint", default=None, help=argparse.SUPPRESS)
    p.add_argument("--n", type=int, default=0, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    args.image_shape = (args.size, args.size, args.channels)
    if args.child:
        print(json.dumps(child(args)))
        return 0
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="bench_generate_"))
    try:
        t0 = time.perf_counter()
        ck = make_checkpoint(scratch / "generator.safetensors", args.size, args.channels, args.classes,
                             args.width, iterations=args.train_iterations)
        results = []
        for n in args.sizes:
            wd = scratch / f"n{n}"
            cmd = [PY, __file__, "--child", "--checkpoint", str(ck), "--n", str(n), "--workdir", str(wd),
                   "--classes", str(args.classes), "--batch-size", str(args.batch_size),
                   "--shard-size", str(args.shard_size), "--device", args.device, "--precision", args.precision,
                   "--threads", str(args.threads), "--size", str(args.size), "--channels", str(args.channels)]
            cmd += (["--raw"] if args.raw else []) + ([f"--filters={args.filters}"] if args.filters is not None else [])
            r = run_json(cmd)
            shutil.rmtree(wd, ignore_errors=True)
            results.append(r)
            if args.json:  # partial results survive an interrupted sweep
                Path(args.json).write_text(json.dumps({"partial": True, "results": results}, indent=2) + "\n")
            print(f"n={r['n']:>9,}  generate {r['generate_images_per_s']:>9,.0f} img/s  "
                  f"generate+filter {r['generate_filter_images_per_s']:>9,.0f} img/s  "
                  f"({r['generate_filter_images_per_cpu_s']:,.0f} img/CPU-s)  peak RSS {r['peak_rss_mb']:7.1f} MB (all images would be {r['all_images_mb']:8.1f} MB)"
                  + (f"  raw G+D {r['raw_images_per_s']:,.0f} img/s" if "raw_images_per_s" in r else ""),
                  file=sys.stderr, flush=True)
        summary = {"benchmark": "generate+filter", "filters": args.filters, "image_shape": [args.size, args.size, args.channels],
                   "classes": args.classes, "width": args.width, "machine": machine(),
                   "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                   "total_s": time.perf_counter() - t0, "results": results}
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.markdown:
        rows = "\n".join(
            f"| {r['n']:,} | {r['generate_images_per_s']:,.0f} | {r['generate_filter_images_per_s']:,.0f} | "
            f"{r['generate_filter_images_per_cpu_s']:,.0f} | {r['peak_rss_mb']:.0f} | {r['all_images_mb']:.0f} |"
            for r in results)
        body = (f"{args.size}x{args.size}x{args.channels}, {args.classes} classes, filters "
                f"{args.filters if args.filters is not None else 'default (params.yaml)'}, batch {args.batch_size}, "
                f"shard {args.shard_size}, device {args.device}, precision {args.precision}, "
                "generate.threads and filter.threads null (one per CPU).\n\n"
                "| samples | generate img/s | generate + filter img/s (wall) | img per CPU-s | peak RSS MB | all images MB |\n"
                "|---|---|---|---|---|---|\n" + rows)
        tag = "" if args.precision == "auto" else f"-{args.precision}"
        write_section(args.markdown, f"generate-{args.size}{tag}",
                      f"Generation + filtering at {args.size}x{args.size}" + (f", {args.precision}" if tag else ""),
                      summary, body)
    return emit(summary, args.json)


if __name__ == "__main__":
    raise SystemExit(main())
