"""Where each stage reads and writes (defaults match ``dvc.yaml``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment.errors import DataError


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
