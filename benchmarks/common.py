"""Helpers shared by the benchmark scripts (not part of the library)."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def machine() -> dict:
    """What a figure was measured on."""
    import torch

    cpu = platform.processor() or ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info = {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
    }
    try:
        info["loadavg_1m"] = os.getloadavg()[0]
    except OSError:
        pass
    return info


def synthetic_images(num_classes: int, per_class: int, size: int, channels: int, seed: int = 0):
    """Structured random uint8 images (class c: a bright bar at row c) and their labels."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 60, size=(num_classes * per_class, size, size, channels), dtype=np.uint8)
    y = np.repeat(np.arange(num_classes), per_class)
    for i, c in enumerate(y):
        x[i, (c * 2) % size, :, :] = 255
        x[i, :, (c * 3 + i) % size, :] = 200
    return x, y.astype(np.int64)


def make_checkpoint(path: str | Path, size: int = 28, channels: int = 1, num_classes: int = 10,
                    width: int = 32, z_dim: int = 64, iterations: int = 20, seed: int = 0) -> Path:
    """A checkpoint of the default family (train.family) and the given shape, trained for a few
    iterations on structured random images (so batch-norm statistics and discriminator scores are
    not degenerate), saved with the training images as the train stage saves it."""
    from augment.config import TrainConfig
    from augment.models.checkpoint import save_checkpoint
    from augment.training.loop import sampler_tensors, train_generator

    x, y = synthetic_images(num_classes, 16, size, channels, seed)
    cfg = replace(TrainConfig(), iterations=iterations, batch_size=32, z_dim=z_dim, g_channels=width,
                  d_channels=width, seed=seed, device="cpu", checkpoint_every=10**6, sample_every=10**6,
                  log_every=10**6)
    names = [f"c{i}" for i in range(num_classes)]
    result = train_generator(x, y, names, cfg, progress=False)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, result.trainer.modules(), result.cfg, (size, size, channels), names,
                    extra={"iteration": iterations, "benchmark": True},
                    extra_tensors=sampler_tensors(result.trainer, x, y))  # as the train stage saves
    return path


def run_json(cmd: list[str], env: dict | None = None, timeout: float | None = None) -> dict:
    """Run a child Python that prints one JSON line last; return it."""
    out = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **(env or {})}, timeout=timeout,
                         cwd=ROOT)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


PY = sys.executable


def emit(summary: dict, json_path: str | None) -> int:
    """Print a benchmark's JSON summary (and write it to ``json_path`` if given); exit code 0."""
    text = json.dumps(summary, indent=2)
    if json_path:
        Path(json_path).write_text(text + "\n")
    print(text)
    return 0


def write_section(md_path: str | Path, key: str, title: str, summary: dict, body: str) -> None:
    """Write (or replace) one benchmark's section of a markdown results file: its title, the date,
    the machine and the command that produced it, then ``body``. Other sections are kept."""
    import datetime
    import re

    path = Path(md_path)
    text = path.read_text() if path.is_file() else "# Performance results\n\nEvery section is written by the benchmark named in it.\n"
    m = summary.get("machine", {})
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = m.get("loadavg_1m")
    section = (f"<!-- {key} -->\n## {title}\n\n{when}; {m.get('nproc')} CPU(s) {m.get('cpu', '')}, torch "
               f"{m.get('torch')}, OMP_NUM_THREADS={m.get('OMP_NUM_THREADS')}"
               + (f", 1-min load at start {load:.1f}" if load is not None else "")
               + f".\nCommand: `{summary.get('command')}`\n\n{body}\n<!-- /{key} -->\n")
    pattern = re.compile(rf"<!-- {re.escape(key)} -->.*?<!-- /{re.escape(key)} -->\n", re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip("\n") + "\n\n" + section
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def step_benchmark_inputs(doc: str, argv: list[str] | None, steps: int):
    """The shared CLI of the per-step benchmarks (``--steps --repeats --images --json --markdown``)
    and their inputs: ``images`` structured 28x28 grey images of 10 classes as a CPU tensor, labels."""
    import argparse

    import torch

    from augment.core.pixels import to_tensor

    ap = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=steps)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--images", type=int, default=100)
    ap.add_argument("--json", default=None)
    ap.add_argument("--markdown", default=None)
    a = ap.parse_args(argv)
    x, y = synthetic_images(10, a.images // 10, 28, 1)
    return a, to_tensor(x, torch.device("cpu")), torch.from_numpy(y)
