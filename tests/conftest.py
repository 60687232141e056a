"""Shared fixtures: tiny datasets and tiny configs so every stage runs in seconds."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")

from augment.core.images import png_bytes  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

TINY_PARAMS = {
    "prepare": {"raw_dir": "data/raw", "test_dir": None, "val_fraction": 0.25, "test_fraction": 0.25, "seed": 0},
    "train": {"family": "gan", "iterations": 12, "batch_size": 8, "z_dim": 8, "g_channels": 8, "d_channels": 8,
              "checkpoint_every": 5, "sample_every": 6, "log_every": 2, "device": "cpu"},
    # threads 1: the same thread count on every path a test compares bit for bit (stage, Dask
    # shards, pool workers), whatever the CI machine's CPU count
    "generate": {"n_per_class": 10, "batch_size": 7, "shard_size": 8, "seed": 3, "device": "cpu", "threads": 1},
    "filter": {"filters": ["discriminator"], "mode": "top_fraction", "top_fraction": 0.5,
               "calibration_fakes_per_class": 4, "classifier_steps": 20, "device": "cpu", "threads": 1},
    "merge": {"quota": "all", "synthetic_per_real": None, "tune_steps": 10, "device": "cpu"},
    # workers 1: tiny models train faster than worker processes start (tests/evaluation and
    # tests/selection run the multi-process path and check it gives the same numbers)
    "evaluate": {"seeds": [0, 1], "steps": 15, "batch_size": 8, "width": 4, "device": "cpu",
                 "ablation_steps": 5, "workers": 1},
    "classical": {"rotate": 10.0, "translate": 0.1, "scale": 0.1},  # dvc.yaml names the group: it must exist
    # likewise the crossfit group (its stage only does work with merge.quota: crossfit)
    "crossfit": {"folds": 2, "shares": [0.0, 0.5], "seeds": [0], "steps": 10, "device": "cpu",
                 "workers": 1},
}


def make_image_folder(root: Path, num_classes: int = 3, per_class: int = 8, size: int = 8,
                      channels: int = 1, seed: int = 0, counts: list[int] | None = None) -> Path:
    """Class folders of random-but-structured images: class c has a bright bar at row/col c."""
    rng = np.random.default_rng(seed)
    for c in range(num_classes):
        d = root / f"class_{c}"
        d.mkdir(parents=True, exist_ok=True)
        n = counts[c] if counts else per_class
        for i in range(n):
            img = rng.integers(0, 60, size=(size, size, channels), dtype=np.uint8)
            img[(c * 2) % size, :, :] = 255
            img[:, (c * 3 + i) % size, :] = 200
            (d / f"img_{i:03d}.png").write_bytes(png_bytes(img))
    return root


def write_params(path: Path, overrides: dict | None = None) -> Path:
    params = {k: dict(v) for k, v in TINY_PARAMS.items()}
    for group, values in (overrides or {}).items():
        params[group].update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch) -> Path:
    """A temp workspace with a tiny 3-class dataset and tiny params.yaml, as the cwd."""
    make_image_folder(tmp_path / "data" / "raw")
    write_params(tmp_path / "params.yaml")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def prefect_harness():
    """One Prefect test server for the whole session (it takes ~10 s to start)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness():
        yield


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory):
    """A real ``prefect server start`` on 127.0.0.1 (own PREFECT_HOME) for subprocess tests:
    deployments, schedules, Dask workers. Yields the environment a subprocess needs."""
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    home = tmp_path_factory.mktemp("prefect-server-home")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    api = f"http://127.0.0.1:{port}/api"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1",
           "PREFECT_LOGGING_LEVEL": "INFO", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env.pop("PREFECT_API_URL", None)
    log = open(home / "server.log", "w")
    server = subprocess.Popen(["prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 90
        while True:
            if server.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"prefect server did not start:\n{(home / 'server.log').read_text()}")
            try:
                with urllib.request.urlopen(api + "/health", timeout=2):
                    break
            except OSError:
                time.sleep(0.5)
        yield {**env, "PREFECT_API_URL": api}
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def copy_project(dst: Path) -> Path:
    """Copy the project files a DVC run needs (code, dvc.yaml) into ``dst``."""
    for name in ("augment", "dvc.yaml"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(src, dst / name)
    return dst


@pytest.fixture
def trained(workspace: Path):
    """prepare + train on the tiny workspace, in-process: ``(cfg, paths)``."""
    from augment.config import load_params
    from augment.pipeline import stages
    from augment.pipeline.paths import Paths

    cfg = load_params(workspace / "params.yaml")
    paths = Paths().rooted(workspace)
    stages.run_prepare(cfg.prepare, paths)
    stages.run_train(cfg.train, paths, progress=False)
    return cfg, paths
