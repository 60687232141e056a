"""The flows are part of the installed package: a downstream project that ``pip install``s us
imports the flow and its result type from any working directory, without the repository on
``sys.path``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_flows_are_packaged():
    """This checkout's packaging (pyproject.toml) ships ``flows`` next to ``augment``."""
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"])
    assert "flows" in packages and "augment" in packages
    assert not {p for p in packages if p.split(".")[0] in ("tests", "benchmarks")}


def test_flow_imports_from_a_folder_outside_the_repository(tmp_path: Path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", NO_ALBUMENTATIONS_UPDATE="1")
    res = subprocess.run(
        [sys.executable, "-c", "import flows.augment_flow as f; print(f.AugmentResult); print(f.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "<class 'flows.augment_flow.AugmentResult'>" in res.stdout
    assert not Path(res.stdout.split()[-1]).is_relative_to(tmp_path)  # the installed copy, not a stray file
