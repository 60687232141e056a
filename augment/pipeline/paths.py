"""Where each stage reads and writes (defaults match ``dvc.yaml``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment.errors import ConfigError, DataError


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes. Defaults match ``dvc.yaml``."""

    prepared: str = "data/prepared"
    model_dir: str = "models"
    generated: str = "data/generated"
    filtered: str = "data/filtered"
    augmented: str = "data/augmented"
    crossfit: str = "data/crossfit"
    metrics_dir: str = "metrics"
    resume: str = "runs/resume/train_state.safetensors"
    # the folder the run works in (the CLI's current directory, the flow's workdir): recorded image
    # paths are written relative to it. Not a CLI flag: the CLI's workspace is where it runs.
    workspace: str = "."

    def rooted(self, root: str | Path) -> "Paths":
        root = Path(root)
        return Paths(**{k: str(root / v) for k, v in self.__dict__.items()})

    @property
    def checkpoint(self) -> str:
        return str(Path(self.model_dir) / "generator.safetensors")

    def resolve(self, spec: str, cfg: Any = None) -> str | None:
        """A stage input/output spec -> a path: ``"prepared"`` (a field), ``"checkpoint"``,
        ``"metrics_dir:evaluate.json"`` (a file in a field's folder) or ``"param:prepare.raw_dir"``
        (a dataset folder from the config; ``None`` when that param is null)."""
        if spec.startswith("param:"):
            group, key = spec[6:].split(".")
            value = getattr(getattr(cfg, group), key)
            return None if value is None else str(value)
        base, _, leaf = spec.partition(":")
        path = getattr(self, base)
        return str(Path(path) / leaf) if leaf else str(path)


def require(path: Path, stage: str) -> None:
    """A stage's input must exist: say which stage makes it instead of a FileNotFoundError."""
    if not path.is_file():
        raise DataError(f"{path} not found: run the {stage} stage first (augment {stage})")


def _real(p: str | Path) -> Path:
    """Absolute, links resolved (as far as the path exists): two spellings of one place compare equal."""
    return Path(os.path.realpath(os.path.abspath(os.fspath(p))))


def written_by_augment(file: Path, keys: tuple[str, ...]) -> bool:
    """Whether ``file`` is one augment wrote, by its content, not only its name: a JSON object, an
    ``.npz`` archive or a safetensors header holding every one of ``keys`` (a folder of someone
    else's that happens to hold a ``summary.json`` is not replaced). Reads no array data."""
    import json
    import struct
    import zipfile

    if not file.is_file():
        return False
    try:
        if file.suffix == ".json":
            found = json.loads(file.read_text(encoding="utf-8"))
        elif file.suffix == ".npz":
            with zipfile.ZipFile(file) as z:
                found = {n[:-4] if n.endswith(".npy") else n for n in z.namelist()}
        elif file.suffix == ".safetensors":
            with file.open("rb") as f:
                (size,) = struct.unpack("<Q", f.read(8))
                found = json.loads(f.read(min(size, 100_000_000))).get("__metadata__") or {}
        else:
            return False
    except (OSError, ValueError, UnicodeDecodeError, zipfile.BadZipFile, struct.error, AttributeError):
        return False
    return isinstance(found, (dict, set)) and all(k in found for k in keys)


def check_output_owned(stage: str, name: str, path: str | Path, own_file: str, keys: tuple[str, ...] = ()) -> None:
    """Refuse to replace ``path`` unless it is missing, an empty folder or a folder this stage wrote
    (it holds ``own_file`` with the ``keys`` augment writes into it, :func:`written_by_augment`):
    replacing a folder deletes everything in it."""
    p = Path(path)
    if p.is_symlink() or not p.exists():  # a link is replaced, never what it points to
        return
    if not p.is_dir():
        raise ConfigError(f"output {name} = {path} ({stage} stage) is a file, not a folder; the stage writes a "
                          "folder there and would delete it; move it or choose another path")
    if not any(p.iterdir()):
        return
    if not (p / own_file).is_file():
        raise ConfigError(f"output {name} = {path} ({stage} stage) is a folder that augment did not write (it has "
                          f"files but no {own_file}); the stage replaces the whole folder and would delete them; "
                          "empty or move it, or choose another path")
    if keys and not written_by_augment(p / own_file, keys):
        raise ConfigError(f"output {name} = {path} ({stage} stage) is a folder that augment did not write (its "
                          f"{own_file} is not one augment wrote: no {', '.join(keys)}); the stage replaces the whole "
                          "folder and would delete it; empty or move it, or choose another path")


def check_outputs_safe(stage: str, outputs: dict[str, str], protected: dict[str, str],
                       workspace: str | Path = ".") -> None:
    """Refuse, before anything is deleted or swapped, an output that equals, contains or lies inside
    a protected path (an input dataset, another stage's output), or that equals or contains the
    workspace itself. ``outputs``/``protected`` map a name for the message (``--augmented``,
    ``prepare.raw_dir``) to a path. Raises :class:`ConfigError` naming both.
    """
    ws = _real(workspace)
    for oname, opath in outputs.items():  # first: the gravest mistake is named, not a symptom of it
        out = _real(opath)
        if out == ws or ws.is_relative_to(out):
            raise ConfigError(f"output {oname} = {opath} ({stage} stage) is the workspace folder {workspace} "
                              "or contains it; replacing it would delete your data; choose another path")
    names = list(outputs)
    for i, a in enumerate(names):  # a stage's own outputs must not overlap either
        for b in names[i + 1:]:
            pa, pb = _real(outputs[a]), _real(outputs[b])
            if pa == pb or pa.is_relative_to(pb) or pb.is_relative_to(pa):
                raise ConfigError(f"outputs {a} = {outputs[a]} and {b} = {outputs[b]} ({stage} stage) overlap; "
                                  "one would overwrite the other; choose another path")
    for oname, opath in outputs.items():
        out = _real(opath)
        for pname, ppath in protected.items():
            if ppath is None:
                continue
            p = _real(ppath)
            if out == p:
                how = "is"
            elif p.is_relative_to(out):
                how = "contains"
            elif out.is_relative_to(p):
                how = "lies inside"
            else:
                continue
            raise ConfigError(f"output {oname} = {opath} ({stage} stage) {how} {pname} = {ppath}; "
                              f"writing it would destroy that input; choose another path")
