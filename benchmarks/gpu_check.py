"""GPU check: the CUDA generation path against the CPU path, and timings per stage (< 5 min).

On a CUDA machine:
  1. builds a 28x28, 10-class checkpoint (a few training iterations on CPU; seeded);
  2. CPU reference: ``generate`` (fp32) of ``--n-compare`` samples;
  3. the same samples on CUDA in fp32 and in bf16 (same seed and batch size -> same latents):
     max |score diff|, uint8 pixel agreement, and the Jaccard index of the accepted sets
     (top ``--top-fraction`` of each class by score) against the CPU set;
  4. times the stages at scale on CUDA: the bare networks (bf16 + channels-last; optionally
     ``torch.compile``), ``generate`` of ``--n-scale`` samples, and the ``filter`` stage;
  5. prints one JSON summary; exit status 1 if a correctness check fails.

Without CUDA it says so, still runs the CPU half (reference + a CPU bf16-vs-fp32 comparison, so
the comparison code is exercised) and exits 0.

    python benchmarks/gpu_check.py                       # defaults sized for an H200, < 5 min
    python benchmarks/gpu_check.py --n-compare 200 --n-scale 0 --width 8   # quick (tests)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import machine, make_checkpoint  # noqa: E402

# Tolerances for bf16 on CUDA vs fp32 on CPU (fp32 on CUDA must be much closer: TF32 is off).
JACCARD_MIN = 0.95
FP32_MAX_SCORE_DIFF = 1e-2


def top_fraction_sets(scores: np.ndarray, labels: np.ndarray, fraction: float) -> np.ndarray:
    accepted = np.zeros(len(scores), dtype=bool)
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(len(idx) * fraction)))
        accepted[idx[np.argsort(-scores[idx], kind="stable")[:k]]] = True
    return accepted


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    union = int((a | b).sum())
    return float((a & b).sum() / union) if union else 1.0


def read_all(gen_dir: Path) -> dict[str, np.ndarray]:
    from augment.generation.shards import iter_shards

    parts = list(iter_shards(gen_dir))
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def compare(ref: dict, other: dict, fraction: float) -> dict:
    assert np.array_equal(ref["index"], other["index"]) and np.array_equal(ref["labels"], other["labels"])
    a = top_fraction_sets(ref["scores"], ref["labels"], fraction)
    b = top_fraction_sets(other["scores"], other["labels"], fraction)
    pix = np.abs(ref["images"].astype(np.int16) - other["images"].astype(np.int16))
    return {
        "max_abs_score_diff": float(np.abs(ref["scores"] - other["scores"]).max()),
        "mean_abs_score_diff": float(np.abs(ref["scores"] - other["scores"]).mean()),
        "score_std": float(ref["scores"].std()),
        "jaccard_accepted": jaccard(a, b),
        "pixels_identical_fraction": float((pix == 0).mean()),
        "max_abs_pixel_diff": int(pix.max()),
    }


def timed(fn, sync: bool = False):
    import torch

    if sync:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    out = fn()
    if sync:
        torch.cuda.synchronize()
    return out, time.perf_counter() - t0


def raw_throughput(checkpoint: Path, device: str, precision: str, batch: int, seconds: float,
                   compile_: bool = False) -> float:
    """G + D forward only (no shards, no I/O), same fast path as ``generate``."""
    import torch

    from augment.generation.generate import _autocast, load_generator

    gen = load_generator(checkpoint, device, precision)
    sampler, disc = gen.sampler, gen.discriminator
    if compile_:
        sampler, disc = torch.compile(sampler), torch.compile(disc)
    k = len(gen.checkpoint.class_names)
    y = (torch.arange(batch, device=gen.device) % k)
    z = torch.randn(batch, sampler.z_dim if hasattr(sampler, "z_dim") else gen.sampler.z_dim, device=gen.device)
    sync = gen.device.type == "cuda"

    def once():
        with torch.inference_mode(), _autocast(gen):
            return disc(sampler(z, y), y)

    for _ in range(3):
        once()  # warm-up (cuDNN autotune, compilation)
    if sync:
        torch.cuda.synchronize()
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        once()
        n += batch
        if sync:
            torch.cuda.synchronize()
    return n / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=28)
    p.add_argument("--classes", type=int, default=10)
    p.add_argument("--width", type=int, default=32, help="g/d channels (params.yaml default: 32)")
    p.add_argument("--n-compare", type=int, default=20_000, help="samples compared CPU vs CUDA")
    p.add_argument("--compare-batch", type=int, default=512)
    p.add_argument("--n-scale", type=int, default=2_000_000, help="samples generated + filtered on CUDA (0 = skip)")
    p.add_argument("--scale-batch", type=int, default=16_384)
    p.add_argument("--scale-shard", type=int, default=131_072)
    p.add_argument("--top-fraction", type=float, default=0.5)
    p.add_argument("--compile", action="store_true", help="also time torch.compile'd networks (bare)")
    p.add_argument("--filters", default="discriminator,label,memorisation",
                   help="filter.filters for the timed filter stage (default: discriminator,label,memorisation)")
    p.add_argument("--train-iterations", type=int, default=30)
    p.add_argument("--scale-on-cpu", action="store_true",
                   help="without CUDA, run the timing half on the CPU too (tiny sizes; exercises the code path)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from augment.config import GenerateConfig
    from augment.generation.generate import generate_samples

    torch.backends.cuda.matmul.allow_tf32 = False  # the fp32 comparison means fp32
    torch.backends.cudnn.allow_tf32 = False
    cuda = torch.cuda.is_available()
    summary: dict = {"check": "gpu_check", "cuda": cuda, "machine": machine(),
                     "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]),
                     "tolerance": {"jaccard_min_bf16": JACCARD_MIN, "fp32_max_abs_score_diff": FP32_MAX_SCORE_DIFF},
                     "stages_s": {}, "throughput_images_per_s": {}}
    if not cuda:
        summary["message"] = "no CUDA device: ran the CPU half only (reference + CPU bf16 vs fp32)"
        print("gpu_check: CUDA is not available on this machine; running the CPU half only.", file=sys.stderr)
    t_start = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    ok = True
    try:
        ck, t = timed(lambda: make_checkpoint(scratch / "generator.safetensors", args.size, 1, args.classes,
                                              args.width, iterations=args.train_iterations))
        summary["stages_s"]["make_checkpoint_cpu"] = t
        n_per_class = max(1, args.n_compare // args.classes)
        base = GenerateConfig(n_per_class=n_per_class, batch_size=args.compare_batch,
                              shard_size=max(args.compare_batch, 8192), seed=1, device="cpu", precision="fp32",
                              sampler="prior")  # the networks on the GPU (the warps register on the CPU)
        _, t = timed(lambda: generate_samples(ck, scratch / "cpu_fp32", base, progress=False))
        n = n_per_class * args.classes
        summary["stages_s"]["generate_cpu_fp32"] = t
        summary["throughput_images_per_s"]["generate_cpu_fp32"] = n / t
        ref = read_all(scratch / "cpu_fp32")
        variants = {"cpu_bf16": replace(base, precision="bf16")}
        if cuda:
            variants = {"cuda_fp32": replace(base, device="cuda", precision="fp32"),
                        "cuda_bf16": replace(base, device="cuda", precision="auto")}
        checks = {}
        for name, cfg in variants.items():
            _, t = timed(lambda: generate_samples(ck, scratch / name, cfg, progress=False), sync=cuda)
            summary["stages_s"][f"generate_{name}_compare"] = t
            checks[name] = compare(ref, read_all(scratch / name), args.top_fraction)
            shutil.rmtree(scratch / name, ignore_errors=True)
        summary["correctness_vs_cpu_fp32"] = checks
        if cuda:
            c32, c16 = checks["cuda_fp32"], checks["cuda_bf16"]
            checks["pass"] = bool(c32["max_abs_score_diff"] <= FP32_MAX_SCORE_DIFF and c32["jaccard_accepted"] >= 0.99
                                  and c16["jaccard_accepted"] >= JACCARD_MIN)
            ok = checks["pass"]

        dev = "cuda" if cuda else "cpu"
        if args.n_scale > 0 and (cuda or args.scale_on_cpu):
            from augment.filters.apply import save_filter_output
            from benchmarks.bench_generate import run_filter_stage

            tp = summary["throughput_images_per_s"]
            secs = 5.0 if cuda else 0.5
            tp[f"raw_{dev}_bf16_channels_last"] = raw_throughput(ck, dev, "bf16", args.scale_batch, secs)
            tp[f"raw_{dev}_fp32_channels_last"] = raw_throughput(ck, dev, "fp32", args.scale_batch, secs)
            if args.compile:
                try:
                    tp[f"raw_{dev}_bf16_compiled"] = raw_throughput(ck, dev, "bf16", args.scale_batch, secs, True)
                except Exception as exc:  # compilation needs a toolchain; report, don't fail
                    summary["compile_error"] = f"{type(exc).__name__}: {exc}"[:500]
            npc = max(1, args.n_scale // args.classes)
            cfg = GenerateConfig(n_per_class=npc, batch_size=args.scale_batch, shard_size=args.scale_shard,
                                 seed=1, device=dev, precision="auto", sampler="prior")
            _, t_gen = timed(lambda: generate_samples(ck, scratch / "scale", cfg, progress=False), sync=cuda)

            def filt():
                d, r = run_filter_stage(scratch / "scale", str(ck), args.classes, args.filters,
                                        (args.size, args.size, 1), device=dev)
                save_filter_output(d, r, scratch / "scale_filtered", [f"c{i}" for i in range(args.classes)])

            _, t_filt = timed(filt, sync=cuda)
            n = npc * args.classes
            summary["stages_s"].update({f"generate_{dev}_scale": t_gen, "filter_scale": t_filt})
            tp.update({f"generate_{dev}": n / t_gen, "filter": n / t_filt, "generate_plus_filter": n / (t_gen + t_filt)})
            summary["scale"] = {"n": n, "device": dev, "batch_size": args.scale_batch, "shard_size": args.scale_shard,
                                "peak_cuda_memory_gb": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    summary["total_s"] = time.perf_counter() - t_start
    summary["ok"] = ok
    text = json.dumps(summary, indent=2)
    if args.json:
        Path(args.json).write_text(text + "\n")
    print(text)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
