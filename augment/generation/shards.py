"""Reading the generate stage's output: ``generate.json`` checked, then its shards one at a time.

``generate.json`` lists every shard with its file name, sample count and sha256
(:func:`augment.generation.generate.generation_summary`). A consumer trusts nothing else: a
shard missing, added, changed or truncated is a :class:`DataError` naming the file and saying to
re-run ``augment generate`` -- never a silently smaller sample set.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from augment.core.files import (
    check_arrays,
    load_npz_keys,
    read_json_checked,
    sha256_file,
)
from augment.errors import DataError

_RERUN = "; re-run the generate stage (augment generate)"
_SHARD_NAME = re.compile(r"shard_\d{5,}\.npz")
# What each shard array must be: kind and number of dimensions.
SHARD_SPEC = {"images": ("uint8", 4), "labels": ("int", 1), "scores": ("float", 1), "index": ("int", 1)}


def load_generate_meta(gen_dir: str | Path) -> dict[str, Any]:
    """``generate.json`` of ``gen_dir``, its schema checked (keys, types, the shard list)."""
    path = Path(gen_dir) / "generate.json"
    if not path.is_file():
        raise DataError(f"{path} not found: run the generate stage first (augment generate)")
    meta = read_json_checked(path, {"class_names": list, "image_shape": list, "n_per_class": int,
                                    "num_shards": int, "seed": int, "checkpoint_sha256": str, "shards": list},
                             producer="generate")
    names = meta["class_names"]
    if not names or not all(isinstance(c, str) for c in names):
        raise DataError(f"{path}: class_names must be a non-empty list of strings{_RERUN}")
    shape = meta["image_shape"]
    if len(shape) != 3 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        raise DataError(f"{path}: image_shape {shape!r:.60} is not three positive integers{_RERUN}")
    if meta["n_per_class"] < 1:
        raise DataError(f"{path}: n_per_class = {meta['n_per_class']} must be at least 1{_RERUN}")
    shards = meta["shards"]
    if len(shards) != meta["num_shards"]:
        raise DataError(f"{path}: lists {len(shards)} shard(s) but num_shards = {meta['num_shards']}{_RERUN}")
    seen: set[str] = set()
    total = 0
    for i, s in enumerate(shards):
        ok = (isinstance(s, dict) and isinstance(s.get("file"), str) and _SHARD_NAME.fullmatch(s["file"])
              and isinstance(s.get("samples"), int) and not isinstance(s.get("samples"), bool)
              and s["samples"] >= 0 and isinstance(s.get("sha256"), str) and len(s["sha256"]) == 64)
        if not ok:
            raise DataError(f"{path}: shard entry {i} is malformed (needs file shard_NNNNN.npz, samples, "
                            f"sha256){_RERUN}")
        if s["file"] in seen:
            raise DataError(f"{path}: shard {s['file']} is listed twice{_RERUN}")
        seen.add(s["file"])
        total += s["samples"]
    if total != len(names) * meta["n_per_class"]:
        raise DataError(f"{path}: its shards hold {total} samples, but {len(names)} classes x n_per_class "
                        f"{meta['n_per_class']} = {len(names) * meta['n_per_class']}{_RERUN}")
    return meta


def check_shard_files(gen_dir: str | Path, meta: dict[str, Any]) -> None:
    """The shard files on disk are exactly those listed in ``generate.json`` (none missing, none extra)."""
    gen_dir = Path(gen_dir)
    listed = {s["file"] for s in meta["shards"]}
    present = {p.name for p in gen_dir.glob("shard_*.npz")}
    missing, extra = sorted(listed - present), sorted(present - listed)
    if missing:
        raise DataError(f"{gen_dir / missing[0]}: missing ({len(missing)} shard(s) listed in generate.json are "
                        f"gone){_RERUN}")
    if extra:
        raise DataError(f"{gen_dir / extra[0]}: not listed in generate.json ({len(extra)} unexpected shard "
                        f"file(s)){_RERUN}")


def total_samples(meta: dict[str, Any]) -> int:
    return sum(s["samples"] for s in meta["shards"])


def iter_shards(gen_dir: str | Path, keys: tuple[str, ...] = ("images", "labels", "scores", "index")) -> Iterator[dict[str, np.ndarray]]:
    """Stream the shards of a generate output, one at a time (memory stays flat).

    Only ``keys`` are read from each file: asking for ``("labels", "scores", "index")`` never
    touches the images. Every shard is checked against ``generate.json`` first (set of files,
    sha256, sample count, array dtypes and shapes).
    """
    gen_dir = Path(gen_dir)
    if not (gen_dir / "generate.json").is_file():
        raise DataError(f"{gen_dir} holds no generated samples: run the generate stage first (augment generate)")
    meta = load_generate_meta(gen_dir)
    check_shard_files(gen_dir, meta)
    k, shape = len(meta["class_names"]), tuple(meta["image_shape"])
    for s in meta["shards"]:
        f = gen_dir / s["file"]
        if sha256_file(f) != s["sha256"]:
            raise DataError(f"{f}: content changed since it was written (sha256 differs from generate.json){_RERUN}")
        shard = load_npz_keys(f, keys, producer="generate")
        n = check_arrays(f, shard, {key: SHARD_SPEC[key] for key in keys if key in SHARD_SPEC}, "generate")
        if n is not None and n != s["samples"]:
            raise DataError(f"{f}: holds {n} samples, generate.json says {s['samples']}{_RERUN}")
        if "images" in shard and tuple(shard["images"].shape[1:]) != shape:
            raise DataError(f"{f}: images of shape {list(shard['images'].shape[1:])}, generate.json says "
                            f"{list(shape)}{_RERUN}")
        if "labels" in shard and len(shard["labels"]) and not (
                (shard["labels"] >= 0).all() and (shard["labels"] < k).all()):
            raise DataError(f"{f}: labels outside [0, {k}){_RERUN}")
        yield shard
