"""Scale-out: generation sharded over a Dask cluster (prefect-dask, flows/scale.py) gives exactly the
single-process output. DDP training: tests/training/test_distributed.py."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT


@pytest.mark.slow
def test_dask_sharded_generate_and_filter_equal_single_process(workspace: Path, trained, prefect_server: dict):
    from augment.core.files import load_npz
    from augment.filters.apply import load_decisions
    from augment.pipeline import stages

    cfg, paths = trained
    # Single process, through the public stage functions.
    single = paths.__class__(**{**paths.__dict__, "generated": str(workspace / "single/generated"),
                                "filtered": str(workspace / "single/filtered")})
    stages.run_generate(cfg.generate, single, progress=False)
    stages.run_filter(cfg.filter, single)

    # Sharded over a 2-worker LocalCluster through prefect-dask's DaskTaskRunner (the CLI a user types).
    res = subprocess.run([sys.executable, str(ROOT / "flows/scale.py"), "--params", str(workspace / "params.yaml"),
                          "--workdir", str(workspace), "--dask-workers", "2", "--quiet"],
                         env=prefect_server, cwd=workspace, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr
    assert "accepted" in res.stdout

    a_files = sorted(p.name for p in Path(single.generated).glob("shard_*.npz"))
    b_files = sorted(p.name for p in Path(paths.generated).glob("shard_*.npz"))
    assert a_files == b_files and len(a_files) == 4  # 3 classes x 10 samples / 8 per shard
    for name in a_files:
        a, b = load_npz(Path(single.generated) / name), load_npz(Path(paths.generated) / name)
        assert a.keys() == b.keys()
        for k in a:
            np.testing.assert_array_equal(a[k], b[k], err_msg=f"{name}:{k}")
    ga = json.loads((Path(single.generated) / "generate.json").read_text())
    gb = json.loads((Path(paths.generated) / "generate.json").read_text())
    for k in ("checkpoint_sha256", "class_names", "image_shape", "n_per_class", "num_shards", "seed"):
        assert ga[k] == gb[k], k
    da, db = load_decisions(single.filtered), load_decisions(paths.filtered)
    assert da.keys() == db.keys()
    for k in da:
        np.testing.assert_array_equal(da[k], db[k], err_msg=f"decisions:{k}")


