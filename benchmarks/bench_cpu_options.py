"""What helps on CPU: threads, channels-last, bf16 autocast and torch.compile, at 28x28.

Two workloads, the ones the pipeline spends its CPU time in:

* ``gan``: one training step of the default GAN (networks sized for 100 images, hinge,
  DiffAugment, mode-seeking, EMA) -- the train stage and each crossfit fold;
* ``classifier``: one training step of the downstream SmallCNN (batch 64, AdamW) -- the label
  filter, crossfit's models and the evaluate stage.

Each option is applied on top of the library's CPU path (fp32, contiguous, eager, one thread),
one at a time, and the variants alternate in one process so machine noise hits all of them;
reported: median wall seconds per step and the ratio to the baseline. An option that fails on
this machine (e.g. no compiler for ``torch.compile``) is reported with its error.

    OMP_NUM_THREADS=1 python benchmarks/bench_cpu_options.py --markdown docs/performance.md
"""

from __future__ import annotations

import contextlib
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import emit, machine, step_benchmark_inputs, write_section  # noqa: E402

OPTIONS = ["baseline", "threads2", "channels_last", "bf16", "channels_last+bf16", "compile"]


def _gan(option: str, real: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Generator], None]:
    from augment.config import TrainConfig
    from augment.training.gan import GANTrainer
    from augment.training.sizing import size_for_data

    cfg = size_for_data(TrainConfig(device="cpu"), len(real))
    torch.manual_seed(0)
    t = GANTrainer(cfg, tuple(real.shape[2:]) + (real.shape[1],), 10, torch.device("cpu"))
    if "channels_last" in option:
        t.prec.channels_last = True
        t.prec.prepare(t.G, t.D, t.G_ema)
    if "bf16" in option:
        t.prec.autocast = lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)
    if option == "compile":
        t.G, t.D = torch.compile(t.G), torch.compile(t.D)

    def step(g: torch.Generator) -> None:
        idx = torch.randint(0, len(real), (cfg.batch_size,), generator=g)
        t.step(t.prec.input(real[idx]), labels[idx], g)

    return step


def _classifier(option: str, real: torch.Tensor, labels: torch.Tensor) -> Callable[[torch.Generator], None]:
    from augment.downstream.classifier import SmallCNN

    torch.manual_seed(0)
    model = SmallCNN(real.shape[1], 10, real.shape[2], 32)
    opt = torch.optim.AdamW(model.parameters(), 2e-3, weight_decay=5e-4)
    fmt = torch.channels_last if "channels_last" in option else torch.contiguous_format
    model = model.to(memory_format=fmt)
    run = torch.compile(model) if option == "compile" else model
    ctx = (lambda: torch.autocast(device_type="cpu", dtype=torch.bfloat16)) if "bf16" in option else contextlib.nullcontext

    def step(g: torch.Generator) -> None:
        idx = torch.randint(0, len(real), (64,), generator=g)
        with ctx():
            loss = F.cross_entropy(run(real[idx].contiguous(memory_format=fmt)).float(), labels[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return step


def main(argv: list[str] | None = None) -> int:

    a, real, labels = step_benchmark_inputs(__doc__, argv, steps=20)
    base_threads = 1
    results: dict[str, dict[str, object]] = {}
    for workload, build in (("gan", _gan), ("classifier", _classifier)):
        steps, errors = {}, {}
        for opt in OPTIONS:
            try:
                torch.set_num_threads(2 if opt == "threads2" else base_threads)
                fn, g = build(opt, real, labels), torch.Generator().manual_seed(0)
                for _ in range(3):  # warm-up (and compilation)
                    fn(g)
                steps[opt] = (fn, g)
            except Exception as exc:  # noqa: BLE001 -- an option this machine lacks is a result
                errors[opt] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:160] if str(exc) else ''}"
        times: dict[str, list[float]] = {o: [] for o in steps}
        for _ in range(a.repeats):
            for opt, (fn, g) in steps.items():
                torch.set_num_threads(2 if opt == "threads2" else base_threads)
                t0 = time.perf_counter()
                for _ in range(a.steps):
                    fn(g)
                times[opt].append((time.perf_counter() - t0) / a.steps)
        med = {o: statistics.median(v) for o, v in times.items()}
        results[workload] = {"median_s_per_step": {o: round(v, 5) for o, v in med.items()},
                             "ratio_to_baseline": {o: round(v / med["baseline"], 3) for o, v in med.items()},
                             "errors": errors}
    torch.set_num_threads(base_threads)
    summary = {"benchmark": "CPU options at 28x28 (threads, channels-last, bf16 autocast, torch.compile)",
               "machine": machine(),
               "command": " ".join(["python", "benchmarks/bench_cpu_options.py"] + (argv if argv is not None else sys.argv[1:])),
               "steps": a.steps, "repeats": a.repeats, "results": results}
    if a.markdown:
        lines = ["Each option alone on top of the CPU default (fp32, contiguous, eager, 1 thread); median wall "
                 f"s/step over {a.repeats} alternating repeats x {a.steps} steps; ratio < 1 is faster.\n",
                 "| workload | " + " | ".join(OPTIONS) + " |", "|---|" + "---|" * len(OPTIONS)]
        for w, r in results.items():
            cells = []
            for o in OPTIONS:
                if o in r["median_s_per_step"]:
                    cells.append(f"{r['median_s_per_step'][o]:.4f} ({r['ratio_to_baseline'][o]:.2f}x)")
                else:
                    cells.append("failed")
            lines.append(f"| {w} | " + " | ".join(cells) + " |")
        errs = [f"- {w} / {o}: {e}" for w, r in results.items() for o, e in r["errors"].items()]
        body = "\n".join(lines + ([""] + errs if errs else []))
        write_section(a.markdown, "cpu-options", "What helps on CPU (28x28)", summary, body)
    return emit(summary, a.json)


if __name__ == "__main__":
    raise SystemExit(main())
