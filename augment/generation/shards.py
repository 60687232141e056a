"""Reading the generate stage's shards one at a time (memory stays flat)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterator

import numpy as np

from augment.core.files import (
    load_npz_keys,
)
from augment.errors import DataError


def iter_shards(gen_dir: str | Path, keys: tuple[str, ...] = ("images", "labels", "scores", "index")) -> Iterator[dict[str, np.ndarray]]:
    """Stream the shards of a generate output, one at a time (memory stays flat).

    Only ``keys`` are read from each file: asking for ``("labels", "scores", "index")`` never
    touches the images.
    """
    gen_dir = Path(gen_dir)
    files = sorted(gen_dir.glob("shard_*.npz"))
    if not (gen_dir / "generate.json").is_file() or not files:
        raise DataError(f"{gen_dir} holds no generated samples: run the generate stage first (augment generate)")
    for f in files:
        yield load_npz_keys(f, keys)
