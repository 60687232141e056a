"""Each stage is declared once (augment/pipeline/stages.py); everything else must agree with it.

- the CLI's stage names are the declared ones;
- ``dvc.yaml`` has each stage with the declared params groups, deps that cover every module the
  stage imports (read off the real import graph, augment/pipeline/imports.py) and every declared
  input, and outs/metrics/plots that cover every declared output -- and the check fails on a
  ``dvc.yaml`` that misses one;
- an edit to a module a stage imports only indirectly changes that stage's Prefect cache key
  (and no other stage's), and makes ``dvc status`` list it.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from augment.pipeline.imports import function_imports, module_file, stage_modules
from augment.pipeline.paths import Paths
from augment.pipeline.stages import STAGE_NAMES, STAGES, Stage, get_stage
from tests.conftest import ROOT, copy_project, make_image_folder, write_params


def load_dvc(root: Path = ROOT) -> dict[str, Any]:
    return yaml.safe_load((root / "dvc.yaml").read_text())


def _names(entries: list[Any] | None) -> list[str]:
    """dvc.yaml list entries are a path or ``{path: options}``."""
    out = []
    for e in entries or []:
        out.extend([e] if isinstance(e, str) else list(e))
    return out


def covered(path: str, deps: list[str]) -> bool:
    """A dep covers itself and, when it is a folder, every file under it."""
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def input_dep(spec: str) -> str:
    """How a declared input appears in dvc.yaml: a path, or ``${group.key}`` for ``param:group.key``."""
    if spec.startswith("param:"):
        return "${" + spec[len("param:"):] + "}"
    return str(Paths().resolve(spec))


def dvc_problems(dvc: dict[str, Any], stages: tuple[Stage, ...] = STAGES) -> list[str]:
    """Everything in ``dvc`` (a loaded dvc.yaml) that disagrees with the declared ``stages``."""
    problems = []
    declared = {s.name for s in stages}
    if set(dvc.get("stages", {})) != declared:
        problems.append(f"dvc.yaml stages {sorted(dvc.get('stages', {}))} != declared {sorted(declared)}")
    for stage in stages:
        d = dvc.get("stages", {}).get(stage.name)
        if d is None:
            problems.append(f"{stage.name}: not in dvc.yaml")
            continue
        if d.get("cmd", "").split()[:2] != ["augment", stage.name]:
            problems.append(f"{stage.name}: cmd {d.get('cmd')!r} does not run `augment {stage.name}`")
        if _names(d.get("params")) != list(stage.groups):
            problems.append(f"{stage.name}: params {_names(d.get('params'))} != declared groups {list(stage.groups)}")
        deps = [str(x) for x in d.get("deps") or []]
        for f in stage_modules(stage):
            if not covered(f.as_posix(), deps):
                problems.append(f"{stage.name}: dep missing for {f.as_posix()} (the stage imports it)")
        for spec in stage.inputs:
            if input_dep(spec) not in deps and not covered(input_dep(spec), deps):
                problems.append(f"{stage.name}: dep missing for input {spec!r} ({input_dep(spec)})")
        outs = _names(d.get("outs")) + _names(d.get("metrics")) + _names(d.get("plots"))
        for spec in stage.outputs:
            if not covered(str(Paths().resolve(spec)), outs):
                problems.append(f"{stage.name}: output {spec!r} ({Paths().resolve(spec)}) not in outs/metrics/plots")
    return problems


# --------------------------------------------------------------------------------- the declarations


def test_cli_stage_names_are_the_declared_ones():
    import augment.cli

    assert augment.cli.STAGE_NAMES == STAGE_NAMES
    # every stage-folder flag says what the folder holds; the workspace is the CLI's own folder
    assert {f.name for f in augment.cli._path_fields()} == set(augment.cli.PATH_HELP)
    help_text = augment.cli.build_parser().format_help()
    assert all(name in help_text for name in STAGE_NAMES)


def test_dvc_yaml_agrees_with_the_declarations():
    assert dvc_problems(load_dvc()) == []


def test_every_declared_stage_imports_modules_beyond_its_adapter():
    """The graph is followed past the adapter: otherwise the checks above would prove little."""
    for stage in STAGES:
        files = {f.as_posix() for f in stage_modules(stage)}
        assert "augment/pipeline/stages.py" in files and "augment/config.py" in files
        assert len(files) > len({m for m in function_imports(stage.run) if module_file(m)}), stage.name


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d["stages"]["train"]["deps"].remove("augment/training"),
     "train: dep missing for augment/training/loop.py"),
    (lambda d: d["stages"]["evaluate"]["deps"].remove("augment"),
     "evaluate: dep missing for augment/evaluation/quality.py"),
    (lambda d: d["stages"]["generate"]["deps"].remove("models/generator.safetensors"),
     "generate: dep missing for input 'checkpoint'"),
    (lambda d: d["stages"]["prepare"]["deps"].remove("${prepare.raw_dir}"),
     "prepare: dep missing for input 'param:prepare.raw_dir'"),
    (lambda d: d["stages"]["filter"]["params"].remove("classical"),
     "filter: params ['filter'] != declared groups ['filter', 'classical']"),
    (lambda d: d["stages"]["merge"].pop("plots"),
     "merge: output 'metrics_dir:tuning.csv'"),
    (lambda d: d["stages"].pop("evaluate"), "evaluate: not in dvc.yaml"),
], ids=["code-folder", "whole-package", "input-path", "input-param", "params", "output", "stage"])
def test_the_check_fails_when_dvc_yaml_misses_something(edit, needle):
    doctored = copy.deepcopy(load_dvc())
    edit(doctored)
    problems = dvc_problems(doctored)
    assert any(p.startswith(needle) for p in problems), problems


# ------------------------------------------------------------------------- an indirect edit re-runs


def _copy_package(dst: Path) -> Path:
    shutil.copytree(ROOT / "augment", dst / "augment", ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def _keys(root: Path) -> dict[str, str]:
    from augment.config import load_params
    from augment.flows.caching import stage_key

    cfg = load_params(ROOT / "params.yaml")
    paths = Paths().rooted(root / "workspace")
    return {name: stage_key(name, cfg, paths, root=root) for name in STAGE_NAMES}


def _edit(path: Path) -> None:
    path.write_text(path.read_text() + "\n# an edit that changes the file, not its behaviour\n")


def test_editing_pixels_changes_the_train_cache_key_not_prepares(tmp_path: Path):
    root = _copy_package(tmp_path)
    before = _keys(root)
    assert before == _keys(root)  # the key is stable
    _edit(root / "augment/core/pixels.py")  # train reaches it via training.loop -> ... -> core.pixels
    after = _keys(root)
    assert after["train"] != before["train"]
    assert after["prepare"] == before["prepare"]


def test_prepare_records_and_cache_keys_do_not_depend_on_how_the_workspace_is_spelled(tmp_path: Path,
                                                                                         monkeypatch):
    """The flow roots every path at its workdir: given "." or the same folder's absolute path (from
    another current directory), prepare writes the same bytes (image paths relative to the
    workspace) and every stage gets the same cache key, so nothing re-runs for the spelling."""
    from augment.config import load_params, root_config
    from augment.pipeline.stages import get_stage
    from augment.flows.caching import hash_path, stage_key
    from tests.conftest import make_image_folder, write_params

    import numpy as np

    from augment.core.images import png_bytes

    ws = tmp_path / "ws"
    make_image_folder(ws / "data" / "raw")
    # a colour file and an odd-sized one: the report names an example of each (and of a grey file)
    rng = np.random.default_rng(5)
    (ws / "data/raw/class_0/colour.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)))
    (ws / "data/raw/class_1/wide.png").write_bytes(png_bytes(rng.integers(0, 256, (8, 12, 1), dtype=np.uint8)))
    write_params(ws / "params.yaml")
    cfg = load_params(ws / "params.yaml")
    monkeypatch.chdir(ws)
    dot = Paths().rooted(".")
    get_stage("prepare")(root_config(cfg, "."), dot, progress=False)
    first = hash_path(ws / "data/prepared")
    rows = (ws / "data/prepared/manifest.csv").read_text().splitlines()[1:]
    assert rows and all(r.startswith("data/raw/") for r in rows)
    report = __import__("json").loads((ws / "data/prepared/report.json").read_text())
    assert report["colour_example"] == "data/raw/class_0/colour.png" and report["grey_example"].startswith("data/raw/")
    assert [r["file"] for r in report["resized_files"]] == ["data/raw/class_1/wide.png"]
    keys_dot = {n: stage_key(n, root_config(cfg, "."), dot) for n in STAGE_NAMES}
    monkeypatch.chdir(tmp_path)
    absolute = Paths().rooted(ws)
    get_stage("prepare")(root_config(cfg, ws), absolute, progress=False)
    assert hash_path(ws / "data/prepared") == first
    assert {n: stage_key(n, root_config(cfg, ws), absolute) for n in STAGE_NAMES} == keys_dot


def test_generate_records_do_not_depend_on_how_the_workspace_is_spelled(tmp_path: Path, monkeypatch):
    """generate.json names the checkpoint relative to the workspace: the on-demand flow (an absolute
    workdir) and `dvc repro` (".") write the same bytes, so DVC does not see a changed output and
    the next scheduled `dvc pull` is not refused over it."""
    from augment.config import GenerateConfig
    from benchmarks.common import make_checkpoint

    ws = tmp_path / "ws"
    make_checkpoint(ws / "models" / "generator.safetensors", size=8, width=4, z_dim=8, num_classes=2, iterations=2)
    cfg = GenerateConfig(n_per_class=8, batch_size=8, device="cpu")
    monkeypatch.chdir(ws)
    get_stage("generate").run(cfg, Paths().rooted("."), progress=False)
    first = (ws / "data/generated/generate.json").read_bytes()
    assert json.loads(first)["checkpoint"] == "models/generator.safetensors"
    monkeypatch.chdir(tmp_path)
    get_stage("generate").run(cfg, Paths().rooted(ws), progress=False)
    assert (ws / "data/generated/generate.json").read_bytes() == first


def _importers(module: str) -> set[str]:
    return {s.name for s in STAGES if module in {f.as_posix() for f in stage_modules(s)}}


def _indirect_module(stage: Stage) -> str:
    """A module ``stage`` imports only indirectly (not named by its adapter), not a package __init__;
    the one fewest other stages import, so the test tells the stages apart."""
    direct = {module_file(m).relative_to(ROOT).as_posix() for m in function_imports(stage.run) if module_file(m)}
    indirect = sorted(f.as_posix() for f in stage_modules(stage)
                      if f.as_posix() not in direct and f.name != "__init__.py")
    assert indirect, stage.name
    return min(indirect, key=lambda m: (len(_importers(m)), m))


@pytest.mark.parametrize("name", STAGE_NAMES)
def test_an_indirect_edit_changes_exactly_the_keys_of_the_stages_that_import_it(name: str, tmp_path: Path):
    module = _indirect_module(get_stage(name))
    root = _copy_package(tmp_path)
    before = _keys(root)
    _edit(root / module)
    after = _keys(root)
    changed = {s for s in STAGE_NAMES if after[s] != before[s]}
    importers = _importers(module)
    assert name in changed, f"{name} imports {module} but its cache key did not change"
    assert changed == importers


@pytest.mark.slow
def test_dvc_status_lists_the_stages_an_indirect_edit_affects(tmp_path: Path):
    def sh(*cmd: str) -> str:
        env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
        env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
        return res.stdout

    copy_project(tmp_path)
    make_image_folder(tmp_path / "data/raw")
    make_image_folder(tmp_path / "data/test", per_class=4, seed=1)
    write_params(tmp_path / "params.yaml", {"prepare": {"test_dir": "data/test"},
                                            "evaluate": {"seeds": [0], "quality": False, "ablation": False}})
    sh("git", "init", "-q")
    sh("dvc", "init", "-q")
    sh("dvc", "add", "-q", "data/raw", "data/test")
    sh("dvc", "repro")
    assert json.loads(sh("dvc", "status", "--json") or "{}") == {}

    _edit(tmp_path / "augment/core/pixels.py")
    status = json.loads(sh("dvc", "status", "--json"))
    assert "train" in status and "prepare" not in status, status
    importers = _importers("augment/core/pixels.py")
    assert importers <= set(status), status  # every stage that runs the edited module; prepare does not
