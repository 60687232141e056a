"""The pipeline driven by ``dvc repro`` (the Prefect flow: tests/flows/test_flows.py)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_project, make_image_folder, write_params


def _sh(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.mark.slow
def test_dvc_repro_end_to_end_then_nothing_to_do(tmp_path: Path):
    copy_project(tmp_path)
    make_image_folder(tmp_path / "data" / "raw")
    make_image_folder(tmp_path / "data" / "test", per_class=4, seed=1)
    write_params(tmp_path / "params.yaml", {"prepare": {"test_dir": "data/test"}})
    _sh(["git", "init", "-q"], tmp_path)
    _sh(["dvc", "init", "-q"], tmp_path)
    _sh(["dvc", "add", "data/raw", "data/test"], tmp_path)
    _sh(["dvc", "repro"], tmp_path)
    metrics = json.loads((tmp_path / "metrics/evaluate_detail.json").read_text())
    assert metrics["test_images"] == 12  # every test image came from data/test
    assert "up to date" in _sh(["dvc", "status"], tmp_path)
    second = _sh(["dvc", "repro"], tmp_path)
    assert "didn't change, skipping" in second and "Running stage" not in second
    # Changing one param re-runs only the stages that read it (and their dependants).
    write_params(tmp_path / "params.yaml", {"prepare": {"test_dir": "data/test"}, "filter": {"top_fraction": 0.3}})
    third = _sh(["dvc", "repro"], tmp_path)
    assert "Running stage 'filter'" in third and "Running stage 'train'" not in third


# The Prefect flow tests live in tests/flows/test_flows.py (caching, artifacts, subflow, deployment).
