"""The pipeline driven by its two orchestrators: ``dvc repro`` and the Prefect flow."""

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
    metrics = json.loads((tmp_path / "metrics/evaluate.json").read_text())
    assert metrics["test_images"] == 12  # every test image came from data/test
    assert "up to date" in _sh(["dvc", "status"], tmp_path)
    second = _sh(["dvc", "repro"], tmp_path)
    assert "didn't change, skipping" in second and "Running stage" not in second
    # Changing one param re-runs only the stages that read it (and their dependants).
    write_params(tmp_path / "params.yaml", {"prepare": {"test_dir": "data/test"}, "filter": {"top_fraction": 0.3}})
    third = _sh(["dvc", "repro"], tmp_path)
    assert "Running stage 'filter'" in third and "Running stage 'train'" not in third


@pytest.mark.slow
def test_prefect_flow_runs_pipeline_and_returns_result(workspace: Path, prefect_harness):
    from flows.augment_flow import AugmentResult, augment_pipeline

    result = augment_pipeline(params_path=str(workspace / "params.yaml"), workdir=str(workspace))
    assert isinstance(result, AugmentResult)
    assert Path(result.manifest).is_file() and Path(result.checkpoint).is_file()
    assert set(result.metrics["variants"]) == {"real", "classical", "synthetic", "combined"}
    assert result.filter_report["accepted"] == 15


@pytest.mark.slow
def test_downstream_flow_calls_pipeline_as_subflow(workspace: Path, prefect_harness):
    from flows.train_downstream import downstream_training

    out = downstream_training(params_path=str(workspace / "params.yaml"), workdir=str(workspace), steps=10)
    assert 0.0 <= out["val_accuracy"] <= 1.0
    assert out["train_images"] > 0
