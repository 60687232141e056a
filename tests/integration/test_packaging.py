"""Packaging: every imported package declared, bounded pins, our own distribution name, Dask
optional, a fast --help and --version."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from importlib.metadata import packages_distributions

import pytest

from tests.conftest import ROOT

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")


def _project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def _names(reqs: list[str]) -> set[str]:
    import re

    return {re.split(r"[<>=!~\[; ]", r, maxsplit=1)[0].strip().lower().replace("_", "-") for r in reqs}


def _third_party_imports() -> set[str]:
    mods: set[str] = set()
    for folder in ("augment", "flows"):
        for f in (ROOT / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(f.read_text(), str(f))):
                if isinstance(node, ast.Import):
                    mods |= {a.name.split(".")[0] for a in node.names}
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    mods.add(node.module.split(".")[0])
    return {m for m in mods if m not in sys.stdlib_module_names and m not in ("augment", "flows")}


def test_every_imported_package_is_declared():
    proj = _project()
    declared = _names(proj["dependencies"]) | _names(proj["optional-dependencies"]["scale"])
    dists = packages_distributions()
    missing = {}
    for mod in sorted(_third_party_imports()):
        names = {d.lower().replace("_", "-") for d in dists.get(mod, [mod])}
        if not names & declared:
            missing[mod] = sorted(names)
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"
    assert {"scipy", "dvclive"} <= declared


def test_pins_are_bounded_and_the_name_is_ours():
    proj = _project()
    assert proj["name"] == "augment-scarce" and "augment" in proj["scripts"]
    for req in proj["dependencies"] + proj["optional-dependencies"]["scale"]:
        assert "==" not in req, f"exact pin: {req}"
    (alb,) = [r for r in proj["dependencies"] if r.startswith("albumentations")]
    assert alb == "albumentations>=2.0.8,<2.1"
    assert "MIT" in (ROOT / "pyproject.toml").read_text().split("albumentations>=")[0].rsplit("dependencies", 1)[1]
    assert not _names(proj["dependencies"]) & {"dask", "prefect-dask", "distributed"}  # only in [scale]


def _py(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT), **env})


def test_help_imports_no_heavy_library_and_version_prints():
    # --help stays instant because it imports none of the heavy libraries (how fast it is: a
    # benchmark's business, not a test's)
    heavy = ("torch", "numpy", "cv2", "albumentations", "prefect", "dvc")
    res = _py("import sys, augment.cli as c; c.build_parser().format_help(); "
              f"print(sorted(m for m in {heavy!r} if m in sys.modules))")
    assert res.returncode == 0 and res.stdout.strip() == "[]", (res.stdout, res.stderr)
    res = subprocess.run([sys.executable, "-m", "augment.cli", "--help"], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    assert res.returncode == 0 and "scheduled-run" in res.stdout
    res = subprocess.run([sys.executable, "-m", "augment.cli", "--version"], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": str(ROOT)}, timeout=60)
    from augment import __version__

    assert res.stdout.strip() == f"augment {__version__}"


def test_flows_import_without_the_scale_extra():
    """augment.flows.scale and augment.flows.augment_flow import with dask / prefect-dask absent (blocked here)."""
    code = ("import sys\n"
            "for m in ('dask', 'distributed', 'prefect_dask'): sys.modules[m] = None\n"
            "import augment.flows.scale, augment.flows.augment_flow\n"
            "print('ok', [m for m in ('dask', 'distributed', 'prefect_dask') if sys.modules.get(m)])\n")
    res = _py(code, NO_ALBUMENTATIONS_UPDATE="1")
    assert res.returncode == 0 and res.stdout.strip() == "ok []", res.stderr[-2000:]
