"""DDP training under torchrun (gloo, 2 CPU processes) writes a checkpoint generate loads
(augment/training/distributed.py)."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ddp_training_with_torchrun_gloo_two_processes_writes_a_loadable_checkpoint(workspace: Path, trained):
    from augment.models.checkpoint import Checkpoint
    from augment.pipeline import stages

    cfg, paths = trained
    ddp_models = workspace / "ddp/models"
    res = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "augment.training.distributed", "--params", str(workspace / "params.yaml"),
         "--prepared", paths.prepared, "--model-dir", str(ddp_models), "--metrics-dir", str(workspace / "ddp/metrics"),
         "--backend", "gloo", "--quiet"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**__import__("os").environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)})
    assert res.returncode == 0, res.stdout + res.stderr
    assert "on 2 process(es) (DDP, gloo; max weight difference between ranks 0)" in res.stdout

    ck = Checkpoint(ddp_models / "generator.safetensors")
    # the user's config (auto sizes resolved for the data), not a rank's (ranks shift the seed)
    from augment.data.prepare import load_prepared
    from augment.training.sizing import size_for_data

    n_train = len(load_prepared(paths.prepared).subset("train")[1])
    assert ck.cfg == size_for_data(cfg.train, n_train)
    assert (ddp_models / "sample_grid.png").is_file() and (workspace / "ddp/metrics/train_log.csv").is_file()
    ddp_paths = paths.__class__(**{**paths.__dict__, "model_dir": str(ddp_models),
                                   "generated": str(workspace / "ddp/generated")})
    out = stages.run_generate(cfg.generate, ddp_paths, progress=False)
    assert out["num_shards"] == 4
    # Different from the single-process weights (more images per step), but a working generator.
    import torch

    from augment.generation.shards import iter_shards

    single = Checkpoint(paths.checkpoint)
    assert single.family == ck.family and single.tensors.keys() == ck.tensors.keys()
    assert any(not torch.equal(single.tensors[k], ck.tensors[k]) for k in ck.tensors)
    shards = list(iter_shards(ddp_paths.generated))
    labels = np.concatenate([s["labels"] for s in shards])
    assert np.bincount(labels).tolist() == [cfg.generate.n_per_class] * 3
    assert all(np.isfinite(s["scores"]).all() for s in shards)


def test_ddp_entry_point_refuses_an_output_that_would_destroy_an_input(tmp_path: Path, monkeypatch, capsys):
    """torchrun -m augment.training.distributed gets the output checks `augment train` has, before
    any rank waits for the others (no process group is needed to be refused)."""
    from augment.training.distributed import main
    from tests.conftest import write_params

    write_params(tmp_path / "params.yaml")
    (tmp_path / "data/prepared").mkdir(parents=True)
    (tmp_path / "data/prepared/dataset.npz").write_bytes(b"keep")
    monkeypatch.chdir(tmp_path)
    assert main(["--params", "params.yaml", "--prepared", "data/prepared", "--model-dir", "data/prepared"]) == 2
    err = capsys.readouterr().err
    assert "augment.training.distributed: error:" in err and "--model-dir" in err and "--prepared" in err
    assert (tmp_path / "data/prepared/dataset.npz").read_bytes() == b"keep"
