"""Prefect caching for the pipeline's tasks, keyed like DVC: on what a stage reads, never on
Python objects.

A stage's cache key hashes

* the task's name (two tasks with the same arguments never share an entry),
* the library code the stage imports -- the ``augment/...`` deps listed for the stage in
  ``dvc.yaml`` (one source of truth for "what code does this stage depend on") plus
  ``augment/stages.py`` and the flow module itself,
* the stage's ``params.yaml`` group (its frozen dataclass, as JSON),
* the bytes of every input file/folder (sha256 of each file, walked in sorted order) -- the
  stage's data deps in ``dvc.yaml``, mapped onto the flow's workspace.

Outputs (to check they are still there, unchanged) are the stage's outs/metrics/plots in
``dvc.yaml``. Without a dvc.yaml the built-in tables below are used.

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
import re
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any, Callable

import yaml
from prefect.cache_policies import CacheKeyFnPolicy
from prefect.locking.filesystem import FileSystemLockManager
from prefect.transactions import IsolationLevel

from augment.config import PipelineConfig
from augment.stages import Paths

ROOT = Path(__file__).resolve().parents[1]
CACHE_VERSION = "1"  # bump to invalidate every cached stage result at once

# Fallback when dvc.yaml is absent: what each stage reads and writes (data only).
STAGE_INPUTS: dict[str, Callable[[PipelineConfig, Paths], list[str]]] = {
    "prepare": lambda c, p: [c.prepare.raw_dir] + ([c.prepare.test_dir] if c.prepare.test_dir else []),
    "train": lambda c, p: [p.prepared],
    "generate": lambda c, p: [p.checkpoint],
    "filter": lambda c, p: [p.generated],
    "merge": lambda c, p: [p.prepared, p.generated, p.filtered],
    "evaluate": lambda c, p: [p.prepared, p.augmented],
}
STAGE_OUTPUTS: dict[str, Callable[[Paths], list[str]]] = {
    "prepare": lambda p: [p.prepared],
    "train": lambda p: [p.model_dir],
    "generate": lambda p: [p.generated],
    "filter": lambda p: [p.filtered],
    "merge": lambda p: [p.augmented],
    "evaluate": lambda p: [str(Path(p.metrics_dir) / "evaluate.json"), str(Path(p.metrics_dir) / "evaluate.md")],
}


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


def _dvc_stage(stage: str) -> dict[str, Any]:
    dvc_yaml = ROOT / "dvc.yaml"
    if not dvc_yaml.is_file():
        return {}
    spec = yaml.safe_load(dvc_yaml.read_text()) or {}
    return (spec.get("stages") or {}).get(stage) or {}


def _entries(items: list[Any] | None) -> list[str]:
    out: list[str] = []
    for item in items or []:
        out.extend(item.keys() if isinstance(item, dict) else [item])
    return [str(i) for i in out]


def _interpolate(text: str, cfg: PipelineConfig) -> str | None:
    """``${prepare.raw_dir}`` -> its value (None when the param is null)."""
    m = re.fullmatch(r"\$\{(\w+)\.(\w+)\}", text.strip())
    if not m:
        return text
    value = getattr(getattr(cfg, m.group(1)), m.group(2))
    return None if value is None else str(value)


def _map_path(dep: str, paths: Paths) -> str:
    """A dvc.yaml path (relative to the repo root) -> the same file under the flow's ``paths``."""
    for f in fields(Paths):
        default = f.default
        if dep == default or dep.startswith(default + "/"):
            return getattr(paths, f.name) + dep[len(default):]
    return dep  # e.g. the raw dataset: resolved like the stage function does (from the cwd)


def code_deps(stage: str) -> list[Path]:
    """The ``augment/...`` deps of ``stage`` in dvc.yaml (whole package if dvc.yaml lacks it)."""
    deps = [d for d in _entries(_dvc_stage(stage).get("deps")) if d.startswith("augment")] or ["augment"]
    return [ROOT / d for d in deps] + [ROOT / "augment" / "stages.py", Path(__file__)]


def data_deps(stage: str, cfg: PipelineConfig, paths: Paths) -> list[str]:
    """What the stage reads: its non-code deps in dvc.yaml, mapped onto ``paths``."""
    deps = [d for d in _entries(_dvc_stage(stage).get("deps")) if not d.startswith("augment")]
    if not deps:
        return STAGE_INPUTS[stage](cfg, paths)
    resolved = [_interpolate(d, cfg) for d in deps]
    return [_map_path(d, paths) for d in resolved if d is not None]


def outputs(stage: str, paths: Paths) -> list[str]:
    """What the stage writes: its outs/metrics/plots in dvc.yaml, mapped onto ``paths``."""
    spec = _dvc_stage(stage)
    outs = _entries(spec.get("outs")) + _entries(spec.get("metrics")) + _entries(spec.get("plots"))
    return [_map_path(o, paths) for o in outs] if outs else STAGE_OUTPUTS[stage](paths)


def stage_key(stage: str, cfg: PipelineConfig, paths: Paths) -> str:
    h = hashlib.sha256()
    h.update(f"augment-task:{stage}:v{CACHE_VERSION}\0".encode())
    for dep in code_deps(stage):
        h.update(f"{dep.name}={hash_path(dep)}\0".encode())
    h.update(json.dumps(asdict(getattr(cfg, stage)), sort_keys=True).encode() + b"\0")
    for inp in data_deps(stage, cfg, paths):
        h.update(f"{hash_path(inp)}\0".encode())
    return f"augment-{stage}-{h.hexdigest()[:32]}"


def _cache_key_fn(context: Any, parameters: dict[str, Any]) -> str:
    stage = context.task.name
    return stage_key(stage, parameters["cfg"], parameters["paths"])


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
    from augment.io import atomic_write_json

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
