"""Prefect caching for the pipeline's tasks, keyed like DVC: on what a stage reads, never on
Python objects.

A stage's cache key hashes

* the task's name (two tasks with the same arguments never share an entry),
* every library module the stage runs, read off the real import graph
  (:func:`augment.pipeline.imports.stage_modules`, the same list a test checks ``dvc.yaml``
  against), plus the flow modules themselves,
* the stage's ``params.yaml`` group (its frozen dataclass, as JSON),
* the bytes of every input file/folder (sha256 of each file, walked in sorted order) -- the
  stage's declared inputs (:data:`augment.pipeline.stages.STAGES`) under the flow's workspace.

Outputs (to check they are still there, unchanged) are the stage's declared outputs.

A cached result only stands while the stage's outputs are still on disk and unchanged: after a
task runs it writes a small *stamp* (cache key + hash of its outputs) under
``$PREFECT_HOME/augment-stamps/``; before calling a task the flow checks the stamp and forces a
refresh (``refresh_cache=True``) when an output was deleted or overwritten by another run.

Results stay small (the stage's JSON report, never arrays or models) and are serialised as JSON.
Concurrent runs with the same key do not duplicate work: SERIALIZABLE isolation with a
file-system lock manager makes the second run wait for the first and take its cached result.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from augment.config import PipelineConfig
from augment.core.files import workspace_relative
from augment.pipeline.imports import PACKAGE_ROOT, stage_modules
from augment.pipeline.paths import Paths
from augment.pipeline.stages import get_stage

CACHE_VERSION = "2"  # bump to invalidate every cached stage result at once


def hash_path(path: str | Path) -> str:
    """sha256 over a file, or over every file under a folder (relative names + contents)."""
    path = Path(path)
    h = hashlib.sha256()
    if path.is_file():
        files = [(path.name, path)]
    elif path.is_dir():
        files = sorted((str(f.relative_to(path)), f) for f in path.rglob("*")
                       if f.is_file() and "__pycache__" not in f.parts and not f.name.startswith("."))
    else:
        return "missing"
    for rel, f in files:
        h.update(rel.encode() + b"\0")
        with open(f, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


def code_deps(stage: str, root: Path = PACKAGE_ROOT) -> list[Path]:
    """Every library module the stage runs (the real import graph) plus this flow's own modules."""
    files = [root / f for f in stage_modules(get_stage(stage), root)]
    return files + [Path(__file__), Path(__file__).with_name("augment_flow.py")]


def data_deps(stage: str, cfg: PipelineConfig, paths: Paths) -> list[str]:
    """What the stage reads (its declared inputs), under the flow's ``paths``."""
    resolved = [paths.resolve(spec, cfg) for spec in get_stage(stage).inputs]
    return [r for r in resolved if r is not None]


def outputs(stage: str, paths: Paths) -> list[str]:
    """What the stage writes (its declared outputs), under the flow's ``paths``."""
    return [paths.resolve(spec) for spec in get_stage(stage).outputs]


def stage_key(stage: str, cfg: PipelineConfig, paths: Paths, root: Path = PACKAGE_ROOT) -> str:
    """The cache key (see the module docstring); ``root`` is the folder holding ``augment/``."""
    h = hashlib.sha256()
    h.update(f"augment-task:{stage}:v{CACHE_VERSION}\0".encode())
    for dep in code_deps(stage, root):
        h.update(f"{dep.name}={hash_path(dep)}\0".encode())
    for group in get_stage(stage).groups:
        values = asdict(getattr(cfg, group))
        if group == "prepare":  # the dataset folders as the run records them, not as workdir spells them
            for key in ("raw_dir", "test_dir"):
                if values.get(key) is not None:
                    values[key] = workspace_relative(values[key], paths.workspace)
        h.update(json.dumps(values, sort_keys=True).encode() + b"\0")
    for inp in data_deps(stage, cfg, paths):
        h.update(f"{hash_path(inp)}\0".encode())
    return f"augment-{stage}-{h.hexdigest()[:32]}"


def _cache_key_fn(context: Any, parameters: dict[str, Any]) -> str:
    return stage_key(parameters["stage"], parameters["cfg"], parameters["paths"])


def _home() -> Path:
    from prefect.settings import get_current_settings

    return Path(get_current_settings().home)


def stage_cache_policy() -> CacheKeyFnPolicy:
    locks = _home() / "augment-locks"
    locks.mkdir(parents=True, exist_ok=True)
    return CacheKeyFnPolicy(cache_key_fn=_cache_key_fn).configure(
        isolation_level=IsolationLevel.SERIALIZABLE,
        lock_manager=FileSystemLockManager(lock_files_directory=locks),
    )


def _stamp_path(stage: str, paths: Paths) -> Path:
    where = hashlib.sha256(str(Path(paths.prepared).resolve().parent).encode()).hexdigest()[:16]
    return _home() / "augment-stamps" / where / f"{stage}.json"


def _outputs_hash(stage: str, paths: Paths) -> str:
    return hashlib.sha256("".join(hash_path(o) for o in outputs(stage, paths)).encode()).hexdigest()


def write_stamp(stage: str, cfg: PipelineConfig, paths: Paths) -> None:
    """Record which key produced the outputs now on disk (called by a task after it ran)."""
    from augment.core.files import atomic_write_json

    atomic_write_json(_stamp_path(stage, paths), {"key": stage_key(stage, cfg, paths),
                                                   "outputs": _outputs_hash(stage, paths)})


def outputs_current(stage: str, cfg: PipelineConfig, paths: Paths) -> bool:
    """True when the outputs on disk are the ones the cached result for the current key made."""
    if any(not Path(o).exists() for o in outputs(stage, paths)):
        return False
    try:
        stamp = json.loads(_stamp_path(stage, paths).read_text())
    except (OSError, ValueError):
        return False
    return stamp.get("key") == stage_key(stage, cfg, paths) and stamp.get("outputs") == _outputs_hash(stage, paths)
