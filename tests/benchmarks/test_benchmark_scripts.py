"""The benchmark scripts run (tiny sizes; nothing here is timed). The library pieces they rely on
are tested with their packages: tests/core/test_files.py, tests/generation/test_generate.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_scripts_run_at_tiny_sizes(tmp_path: Path):
    from benchmarks import bench_generate, bench_train

    out = tmp_path / "gen.json"
    assert bench_generate.main(["--sizes", "40", "--size", "8", "--classes", "2", "--width", "4",
                                "--batch-size", "16", "--shard-size", "32", "--train-iterations", "1",
                                "--filters=", "--raw", "--threads", "1", "--json", str(out)]) == 0
    res = json.loads(out.read_text())["results"]
    assert [r["n"] for r in res] == [40] and all(r["peak_rss_mb"] > 0 for r in res)
    out = tmp_path / "train.json"
    assert bench_train.main(["--size", "8", "--classes", "2", "--per-class", "4", "--width", "4",
                             "--batch-size", "8", "--iterations", "2", "--repeats", "1", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["results"][0]["ratio_wall_median"] > 0


@pytest.mark.slow
def test_gpu_check_without_cuda_exits_cleanly_after_its_cpu_half(tmp_path: Path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA machine runs the full check (benchmarks/gpu_check.py)")
    out = tmp_path / "gpu.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_check.py"), "--size", "8", "--classes", "2",
                           "--width", "4", "--n-compare", "40", "--compare-batch", "8", "--train-iterations", "1",
                           "--n-scale", "40", "--scale-batch", "8", "--scale-shard", "16", "--scale-on-cpu",
                           "--filters=discriminator", "--json", str(out)], capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "CUDA is not available" in proc.stderr
    summary = json.loads(out.read_text())
    assert summary["cuda"] is False and summary["ok"] is True
    assert 0.0 <= summary["correctness_vs_cpu_fp32"]["cpu_bf16"]["jaccard_accepted"] <= 1.0
    assert summary["scale"]["n"] == 40 and summary["throughput_images_per_s"]["generate_plus_filter"] > 0


