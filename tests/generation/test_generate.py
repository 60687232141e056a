"""Generation: the precision param is checked; CPU output is reproducible and bf16 stays close to fp32."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from augment.config import GenerateConfig, from_dict
from augment.errors import ConfigError


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
