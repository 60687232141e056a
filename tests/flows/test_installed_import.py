"""The flows are part of the installed package, under the library's own name: a downstream
project that ``pip install``s us imports the flow and its result type from any working
directory, without the repository on ``sys.path``, even when it has a ``flows/`` package of its
own (a common Prefect project layout)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT


def test_flows_are_packaged_inside_augment():
    """This checkout's packaging (pyproject.toml) ships ``augment.flows`` and no top-level
    ``flows`` package that would shadow, or be shadowed by, a user's own."""
    from setuptools import find_packages

    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    find = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = find_packages(str(ROOT), include=find["include"])
    assert "augment.flows" in packages and "augment" in packages
    assert not {p for p in packages if p.split(".")[0] in ("tests", "benchmarks", "flows")}


def test_flow_imports_from_a_project_with_its_own_flows_package(tmp_path: Path):
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "__init__.py").write_text("")
    (tmp_path / "flows" / "etl.py").write_text("NAME = 'the user\\'s own flow'\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1", NO_ALBUMENTATIONS_UPDATE="1")
    res = subprocess.run(
        [sys.executable, "-c", "import augment.flows.augment_flow as f; from flows.etl import NAME; "
                               "print(f.AugmentResult); print(NAME); print(f.__file__)"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "<class 'augment.flows.augment_flow.AugmentResult'>" in res.stdout and "the user's own flow" in res.stdout
    assert not Path(res.stdout.split()[-1]).is_relative_to(tmp_path)  # the installed copy, not a stray file
