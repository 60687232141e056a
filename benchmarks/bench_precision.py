"""Does bf16 inference change what the pipeline accepts? fp32 vs bf16 generation + filtering.

Trains the default generator (params.yaml defaults) on scikit-learn's digits upsampled to 28x28,
10 labelled images per class (the utility benchmark's digits28_10 draw), then generates the same
samples (same seed) with ``generate.precision`` fp32 and bf16 and filters each with the filters
discriminator, label, memorisation, ``filter.precision`` matching. Reports how far the images and
scores move and how many
accept / reject decisions flip, next to the wall time of each path -- the evidence for or
against bf16 inference on a CPU that has native bf16 (AMX / AVX512-BF16).

    OMP_NUM_THREADS=1 python benchmarks/bench_precision.py --n-per-class 2000 --markdown docs/performance.md
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, write_section  # noqa: E402


# the filters whose fp32/bf16 agreement is measured (the config default is none since 2026-12-04)
FILTERS = ("discriminator", "label", "memorisation")

def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n-per-class", type=int, default=2000)
    p.add_argument("--per-class", type=int, default=10, help="labelled images per class")
    p.add_argument("--seed", type=int, default=0, help="labelled draw and generator seed")
    p.add_argument("--json", default=None)
    p.add_argument("--markdown", default=None)
    p.add_argument("--from-json", default=None, help="render --markdown from this script's earlier --json output")
    args = p.parse_args(argv)
    if args.from_json:
        import json

        out = json.loads(Path(args.from_json).read_text())
        _markdown(args, out)
        return 0

    from augment.config import FilterConfig, GenerateConfig, TrainConfig
    from augment.filters.apply import FilterContext, filter_samples
    from augment.generation.generate import generate_samples
    from augment.generation.shards import iter_shards
    from augment.models.checkpoint import save_checkpoint
    from augment.training.loop import train_generator
    from benchmarks.utility import load_data

    x, y, names = load_data("digits", 28)
    rng = np.random.default_rng(args.seed)
    pick = np.concatenate([rng.choice(np.flatnonzero(y == c), args.per_class, replace=False) for c in range(10)])
    tx, ty = x[pick], y[pick]
    train_cfg = dataclasses.replace(TrainConfig(), seed=args.seed, device="cpu")
    out: dict = {"benchmark": "precision", "machine": machine(),
                 "command": " ".join([os.path.relpath(sys.argv[0])] + sys.argv[1:]), "labelled": int(len(ty))}
    with tempfile.TemporaryDirectory(prefix="bench_precision_") as tmp:
        tmp = Path(tmp)
        t0 = time.perf_counter()
        result = train_generator(tx, ty, names, train_cfg, progress=False)
        out["train_s"] = time.perf_counter() - t0
        ck = tmp / "generator.safetensors"
        save_checkpoint(ck, result.trainer.modules(), result.cfg, (28, 28, 1), names,
                        extra={"iteration": result.cfg.iterations})
        runs = {}
        for prec in ("fp32", "bf16"):
            gcfg = dataclasses.replace(GenerateConfig(), n_per_class=args.n_per_class, device="cpu", precision=prec,
                                       sampler="prior")  # the networks' precision, not the warps'
            fcfg = dataclasses.replace(FilterConfig(), device="cpu", precision=prec, filters=list(FILTERS))
            t0 = time.perf_counter()
            generate_samples(ck, tmp / prec, gcfg, progress=False)
            t1 = time.perf_counter()
            ctx = FilterContext(tx, ty, tx[:0], ty[:0], 10, str(ck))
            dec, report = filter_samples(tmp / prec, fcfg, ctx)
            t2 = time.perf_counter()
            imgs = np.concatenate([s["images"] for s in iter_shards(tmp / prec, keys=("images",))])
            scores = np.concatenate([s["scores"] for s in iter_shards(tmp / prec, keys=("scores",))])
            runs[prec] = {"dec": dec, "imgs": imgs, "scores": scores, "generate_s": t1 - t0, "filter_s": t2 - t1}
    a, b = runs["fp32"], runs["bf16"]
    n = len(a["scores"])
    diff = np.abs(a["imgs"].astype(np.int16) - b["imgs"].astype(np.int16))
    acc_a, acc_b = a["dec"]["accepted"], b["dec"]["accepted"]
    out.update({
        "samples": int(n),
        "fp32_generate_filter_s": a["generate_s"] + a["filter_s"],
        "bf16_generate_filter_s": b["generate_s"] + b["filter_s"],
        "pixel_mean_abs_diff": float(diff.mean()), "pixel_max_abs_diff": int(diff.max()),
        "pixels_changed": float((diff > 0).mean()),
        "score_corr": float(np.corrcoef(a["scores"], b["scores"])[0, 1]),
        "accepted_fp32": int(acc_a.sum()), "accepted_bf16": int(acc_b.sum()),
        "decisions_equal": float((acc_a == acc_b).mean()),
        "accepted_jaccard": float((acc_a & acc_b).sum() / max((acc_a | acc_b).sum(), 1)),
        "per_filter_equal": {k[len("accept_"):]: float((a["dec"][k] == b["dec"][k]).mean())
                             for k in a["dec"] if k.startswith("accept_")},
    })
    out["per_class"], out["seed"] = args.per_class, args.seed
    _markdown(args, out)
    return emit(out, args.json)


def _markdown(args: argparse.Namespace, out: dict) -> None:
    if args.markdown:
        n = out["samples"]
        body = (f"Default generator trained on digits 28x28, {out['per_class']} labelled per class (seed {out['seed']}); "
                f"{n:,} samples generated and filtered (filters {', '.join(FILTERS)}) in fp32 and in bf16.\n\n"
                "| measure | value |\n|---|---|\n"
                f"| generate + filter wall s, fp32 / bf16 (1-min load at start {out['machine'].get('loadavg_1m', 0):.1f}; "
                f"speed: the generate sections) | {out['fp32_generate_filter_s']:.1f} / {out['bf16_generate_filter_s']:.1f} |\n"
                f"| pixels changed (uint8) / mean abs diff / max | {out['pixels_changed']:.1%} / {out['pixel_mean_abs_diff']:.3f} / {out['pixel_max_abs_diff']} |\n"
                f"| discriminator score correlation | {out['score_corr']:.5f} |\n"
                f"| accepted fp32 / bf16 | {out['accepted_fp32']:,} / {out['accepted_bf16']:,} |\n"
                f"| accept/reject decisions equal | {out['decisions_equal']:.2%} |\n"
                f"| accepted sets, Jaccard | {out['accepted_jaccard']:.3f} |\n"
                + "".join(f"| {k} filter decisions equal | {v:.2%} |\n" for k, v in out["per_filter_equal"].items()))
        write_section(args.markdown, "precision-28", "bf16 vs fp32 inference: what the filters accept", out, body)


if __name__ == "__main__":
    raise SystemExit(main())
