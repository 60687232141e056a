"""Safe checkpoints: safetensors weights + string metadata carrying the model's own config.

Nothing is ever unpickled. A checkpoint holds everything needed to rebuild its networks
(family, train config, image shape, class names), so ``generate`` needs only the file.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from augment.config import TrainConfig, check_numbers, from_dict, software_versions
from augment.core.files import atomic_write_bytes
from augment.errors import CheckpointError, ConfigError

FORMAT = "augment-checkpoint/1"


META_KEY = "augment"

# Sanity caps on a checkpoint's metadata (beyond the train config's own ranges).
MAX_SIDE = 4096
MAX_CLASSES = 100_000


def _flatten_optimizer(prefix: str, opt: torch.optim.Optimizer, tensors: dict, meta: dict) -> None:
    sd = opt.state_dict()
    for pid, state in sd["state"].items():
        for key, val in state.items():
            t = val if torch.is_tensor(val) else torch.tensor(val)
            tensors[f"{prefix}/state/{pid}/{key}"] = t.detach().cpu().contiguous()
    meta[f"{prefix}/param_groups"] = sd["param_groups"]


def _unflatten_optimizer(prefix: str, tensors: dict, meta: dict) -> dict:
    state: dict[int, dict[str, Any]] = {}
    for name, t in tensors.items():
        if name.startswith(prefix + "/state/"):
            pid, key = name[len(prefix) + 7 :].split("/", 1)
            state.setdefault(int(pid), {})[key] = t
    return {"state": state, "param_groups": meta[f"{prefix}/param_groups"]}


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes (in name order)."""
    import hashlib

    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{list(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def meta_digest(meta: dict[str, Any]) -> str:
    """sha256 of the metadata (sorted JSON, without this digest): safetensors checks neither."""
    body = {k: v for k, v in meta.items() if k != "meta_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def save_checkpoint(
    path: str | Path,
    modules: dict[str, torch.nn.Module],
    cfg: TrainConfig,
    image_shape: tuple[int, int, int],
    class_names: list[str],
    extra: dict[str, Any] | None = None,
    optimizers: dict[str, torch.optim.Optimizer] | None = None,
    rng_states: dict[str, torch.Tensor] | None = None,
    extra_tensors: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write a checkpoint atomically. ``optimizers``/``rng_states`` make it resumable.

    ``cfg`` must be the config the networks were built from, with every auto size resolved
    (``TrainResult.cfg``): the checkpoint is rebuilt from it alone."""
    if cfg.arch == "auto" or cfg.g_channels is None or cfg.d_channels is None or cfg.iterations is None:
        raise ValueError("save_checkpoint needs the resolved training config (TrainResult.cfg, or "
                         "augment.training.sizing.size_for_data), not one with auto sizes")
    tensors: dict[str, torch.Tensor] = {}
    for name, mod in modules.items():
        for key, t in mod.state_dict().items():
            tensors[f"{name}.{key}"] = t.detach().cpu().contiguous().clone()
    meta: dict[str, Any] = {
        "format": FORMAT,
        "family": cfg.family,
        "train_config": asdict(cfg),
        "image_shape": list(image_shape),
        "class_names": list(class_names),
        "extra": extra or {},
        "versions": software_versions(),  # what wrote it (a record: a checkpoint loads in any version)
    }
    for name, opt in (optimizers or {}).items():
        _flatten_optimizer(name, opt, tensors, meta)
    for name, state in (rng_states or {}).items():
        tensors[f"rng/{name}"] = state.cpu().contiguous()
    for name, t in (extra_tensors or {}).items():
        tensors[f"extra/{name}"] = t.detach().cpu().contiguous()
    # safetensors has no checksum: a flipped byte in the weights would load silently.
    meta["tensors_sha256"] = tensors_digest(tensors)
    meta["meta_sha256"] = meta_digest(meta)  # and an edited config, class list or extra
    # One metadata key holding sorted JSON: safetensors does not keep key order, and the same
    # seed must give a byte-identical file (stable DVC hashes).
    atomic_write_bytes(path, st_save(tensors, metadata={META_KEY: json.dumps(meta, sort_keys=True)}))


class Checkpoint:
    """A loaded checkpoint: metadata + flat tensors. Build networks with :meth:`load_into`."""

    def __init__(self, path: str | Path):
        path = Path(path)
        self.path = path
        if not path.is_file():
            raise CheckpointError(f"checkpoint {path} not found: run the train stage first (augment train)")
        data = path.read_bytes()
        try:
            self.tensors = st_load(data)
            from safetensors import (
                safe_open,  # metadata only; no code execution possible
            )

            with safe_open(str(path), framework="pt") as fh:
                raw_meta = fh.metadata() or {}
            self.meta: dict[str, Any] = json.loads(raw_meta.get(META_KEY, "{}"))
        except (SafetensorError, Exception) as exc:  # noqa: BLE001 - any parse failure
            raise CheckpointError(
                f"checkpoint {path} is corrupt, truncated or not a safetensors file ({exc}); "
                "re-run the train stage"
            ) from None
        if self.meta.get("format") != FORMAT:
            raise CheckpointError(f"checkpoint {path}: unknown format {self.meta.get('format')!r}, expected {FORMAT}")
        expected = self.meta.get("tensors_sha256")
        if expected is not None and tensors_digest(self.tensors) != expected:
            raise CheckpointError(
                f"checkpoint {path} failed its integrity check (weights changed after it was written: "
                "tampered or corrupted); re-run the train stage"
            )
        expected = self.meta.get("meta_sha256")  # absent in checkpoints written before it was added
        if expected is not None and meta_digest(self.meta) != expected:
            raise CheckpointError(
                f"checkpoint {path} failed its integrity check (its metadata -- training config, classes, "
                "extra -- changed after it was written: tampered or corrupted); re-run the train stage"
            )
        try:
            # The embedded config passes the same checks as params.yaml (types, ranges, finite
            # floats, seeds) and the shape/class sanity caps, before any network is built.
            self.cfg: TrainConfig = from_dict(TrainConfig, self.meta["train_config"], "train")
            check_numbers(self.cfg, "train")
            self.cfg.validate()
            shape, names = self.meta["image_shape"], self.meta["class_names"]
            if (not isinstance(shape, list) or len(shape) != 3
                    or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape)):
                raise ValueError(f"image_shape {shape!r:.60} is not three integers")
            self.image_shape: tuple[int, int, int] = tuple(shape)  # type: ignore[assignment]
            h, w, c = self.image_shape
            if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE and c in (1, 3)):
                raise ValueError(f"image_shape {list(shape)} is outside H, W in [1, {MAX_SIDE}], C in (1, 3)")
            if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
                raise ValueError("class_names is not a list of strings")
            if not 2 <= len(names) <= MAX_CLASSES or len(set(names)) != len(names):
                raise ValueError(f"{len(names)} class names: expected 2 to {MAX_CLASSES} distinct names")
            self.class_names: list[str] = list(names)
            if self.meta.get("family") != self.cfg.family:
                raise ValueError(f"family {self.meta.get('family')!r} differs from train.family {self.cfg.family!r}")
            self.extra: dict[str, Any] = dict(self.meta.get("extra", {}))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise CheckpointError(f"checkpoint {path}: metadata is damaged or out of range ({exc}); "
                                  "re-run the train stage") from None

    @property
    def family(self) -> str:
        return self.meta["family"]

    def state_dict(self, name: str) -> dict[str, torch.Tensor]:
        prefix = name + "."
        return {k[len(prefix) :]: v for k, v in self.tensors.items() if k.startswith(prefix)}

    def check_architecture(self) -> None:
        """Build the networks the metadata describes on PyTorch's ``meta`` device (no memory is
        allocated) and check every tensor's name and shape against the file's, so metadata that
        does not match its weights (edited sizes) fails here, before a real network is built."""
        from augment.training.families import get_trainer_class

        meta_dev = torch.device("meta")
        try:
            with meta_dev:
                trainer = get_trainer_class(self.family)(self.cfg, self.image_shape, len(self.class_names), meta_dev)
        except (RuntimeError, ValueError, NotImplementedError) as exc:
            raise CheckpointError(f"checkpoint {self.path}: its metadata describes networks that cannot be "
                                  f"built ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                                  "re-run the train stage") from None
        for name, mod in trainer.modules().items():
            want = {k: tuple(v.shape) for k, v in mod.state_dict().items()}
            have = {k: tuple(v.shape) for k, v in self.state_dict(name).items()}
            if want != have:
                diff = sorted(set(want) ^ set(have)) or sorted(k for k in want if want[k] != have[k])
                raise CheckpointError(
                    f"checkpoint {self.path}: metadata does not match its weights ({name}: {diff[0]!r} "
                    "differs; tampered file?); re-run the train stage")

    def load_into(self, modules: dict[str, torch.nn.Module]) -> None:
        for name, mod in modules.items():
            sd = self.state_dict(name)
            try:
                mod.load_state_dict(sd, strict=True)
            except RuntimeError as exc:
                raise CheckpointError(
                    f"checkpoint {self.path}: weights for {name} do not fit the network "
                    f"(tampered file or a different architecture): {str(exc).splitlines()[0]}"
                ) from None

    def optimizer_state(self, name: str) -> dict:
        return _unflatten_optimizer(name, self.tensors, self.meta)

    def rng_state(self, name: str) -> torch.Tensor | None:
        return self.tensors.get(f"rng/{name}")

    def extra_tensors(self) -> dict[str, torch.Tensor]:
        """Tensors saved with ``extra_tensors`` (e.g. a resume state's sample grids)."""
        return {k[6:]: v for k, v in self.tensors.items() if k.startswith("extra/")}

    def check_compatible(self, image_shape: tuple[int, ...], class_names: list[str]) -> None:
        """Refuse a checkpoint trained on a dataset with other classes or another image shape."""
        if tuple(image_shape) != tuple(self.image_shape):
            raise CheckpointError(
                f"checkpoint {self.path} was trained on images of shape {list(self.image_shape)}, "
                f"but the prepared data has shape {list(image_shape)}; re-run the train stage"
            )
        if list(class_names) != list(self.class_names):
            raise CheckpointError(
                f"checkpoint {self.path} was trained on classes {self.class_names}, but the prepared "
                f"data has classes {class_names}; re-run the train stage"
            )
