"""The benchmark scripts run (tiny sizes; nothing here is timed) and the streaming/GPU-path
pieces of generate behave: lazy shard reads, precision choice, CPU bf16 close to fp32."""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from augment.config import GenerateConfig, from_dict
from augment.core.files import atomic_save_npz, load_npz_keys
from augment.errors import ConfigError, DataError

ROOT = Path(__file__).resolve().parents[1]


def test_load_npz_keys_reads_only_the_asked_arrays(tmp_path: Path):
    f = tmp_path / "shard_00000.npz"
    atomic_save_npz(f, images=np.zeros((4, 2, 2, 1), np.uint8), scores=np.arange(4, dtype=np.float32))
    out = load_npz_keys(f, ("scores",))
    assert list(out) == ["scores"] and out["scores"].tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="missing array.*labels"):
        load_npz_keys(f, ("labels",))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_npz_keys(tmp_path / "bad.npz", ("scores",))


def test_generate_precision_param_is_checked():
    assert from_dict(GenerateConfig, {"precision": "bf16"}, "generate").precision == "bf16"
    with pytest.raises(ConfigError, match="generate.precision"):
        from_dict(GenerateConfig, {"precision": "fp8"}, "generate")


def test_cpu_generation_is_reproducible_and_bf16_stays_close(tmp_path: Path):
    from augment.generation.generate import generate_samples
    from augment.generation.shards import iter_shards
    from benchmarks.common import make_checkpoint

    ck = make_checkpoint(tmp_path / "g.safetensors", size=8, width=4, z_dim=8, num_classes=3, iterations=2)
    cfg = GenerateConfig(n_per_class=20, batch_size=16, shard_size=32, seed=5, device="cpu")
    outs = {}
    for name, c in {"a": cfg, "b": cfg, "bf16": replace(cfg, precision="bf16")}.items():
        summary = generate_samples(ck, tmp_path / name, c, progress=False)
        outs[name] = list(iter_shards(tmp_path / name))
    assert summary["precision"] == "bf16"
    for x, y in zip(outs["a"], outs["b"]):  # same seed -> identical on CPU (fp32 default)
        assert all(np.array_equal(x[k], y[k]) for k in x)
    for x, y in zip(outs["a"], outs["bf16"]):  # bf16: same latents and labels, scores close
        assert np.array_equal(x["index"], y["index"]) and np.array_equal(x["labels"], y["labels"])
        assert np.abs(x["scores"] - y["scores"]).max() < 0.1 * (np.abs(x["scores"]).max() + 1.0)
    # reading only the metadata never loads images
    assert set(next(iter_shards(tmp_path / "a", keys=("scores", "index")))) == {"scores", "index"}


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


def test_classifier_prefetch_keeps_order_and_reraises():
    from augment.downstream.classifier import _prefetch

    assert list(_prefetch(iter(range(50)), depth=2)) == list(range(50))

    def broken():
        yield 1
        raise ValueError("bad batch")

    with pytest.raises(ValueError, match="bad batch"):
        list(_prefetch(broken()))
    it = _prefetch(iter(range(10**6)))
    assert next(it) == 0
    it.close()  # the consumer stops early: the producer thread is stopped, nothing hangs
