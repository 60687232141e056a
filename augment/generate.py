"""The ``generate`` stage: N samples per class from a checkpoint, scored by its discriminator.

Samples are written in shards (``shard_00000.npz``: images, labels, scores, index), never all
in memory. Shard ``k`` is drawn from a generator seeded by ``(seed, k)``, so any shard can be
produced on its own (on another worker) and the result is identical to a single-process run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
from tqdm.auto import tqdm

from augment.checkpoint import Checkpoint
from augment.config import GenerateConfig
from augment.device import resolve_device, to_uint8
from augment.io import DataError, atomic_directory, atomic_save_npz, atomic_write_json, load_npz, sha256_file
from augment.models import get_trainer_class


@dataclass
class LoadedGenerator:
    sampler: torch.nn.Module
    discriminator: torch.nn.Module
    checkpoint: Checkpoint
    device: torch.device


def load_generator(path: str | Path, device: str = "auto") -> LoadedGenerator:
    """Rebuild the sampler and discriminator from a checkpoint file alone."""
    ck = Checkpoint(path)
    dev = resolve_device(device)
    trainer = get_trainer_class(ck.family)(ck.cfg, ck.image_shape, len(ck.class_names), dev)
    ck.load_into({k: v for k, v in trainer.modules().items()})
    sampler, disc = trainer.sampler().eval(), trainer.discriminator().eval()
    return LoadedGenerator(sampler, disc, ck, dev)


def shard_seed(seed: int, shard_id: int) -> int:
    """A distinct, reproducible seed per shard (independent of how shards are scheduled)."""
    return int(np.random.SeedSequence([seed, shard_id]).generate_state(1)[0])


def num_shards(num_classes: int, cfg: GenerateConfig) -> int:
    return math.ceil(num_classes * cfg.n_per_class / cfg.shard_size)


@torch.no_grad()
def generate_shard(gen: LoadedGenerator, shard_id: int, num_classes: int, cfg: GenerateConfig) -> dict[str, np.ndarray]:
    """Samples with global index ``[shard_id * shard_size, ...)``; class = index // n_per_class."""
    total = num_classes * cfg.n_per_class
    lo, hi = shard_id * cfg.shard_size, min((shard_id + 1) * cfg.shard_size, total)
    index = np.arange(lo, hi, dtype=np.int64)
    labels = index // cfg.n_per_class
    g = torch.Generator(device="cpu").manual_seed(shard_seed(cfg.seed, shard_id))
    imgs, scores = [], []
    for s in range(0, hi - lo, cfg.batch_size):
        y = torch.from_numpy(labels[s : s + cfg.batch_size]).to(gen.device)
        x = gen.sampler.sample(y, g)
        scores.append(gen.discriminator(x, y).float().cpu().numpy())
        imgs.append(to_uint8(x))
    return {
        "images": np.concatenate(imgs) if imgs else np.zeros((0, *gen.checkpoint.image_shape), np.uint8),
        "labels": labels,
        "scores": np.concatenate(scores).astype(np.float32) if scores else np.zeros(0, np.float32),
        "index": index,
    }


def generate_samples(checkpoint_path: str | Path, out_dir: str | Path, cfg: GenerateConfig, progress: bool = True) -> dict:
    """Generate every shard into ``out_dir`` (swapped in atomically) and return a summary."""
    torch.manual_seed(cfg.seed)
    gen = load_generator(checkpoint_path, cfg.device)
    k = len(gen.checkpoint.class_names)
    n = num_shards(k, cfg)
    with atomic_directory(out_dir) as tmp:
        for shard_id in tqdm(range(n), desc="generate", unit="shard", disable=not progress):
            atomic_save_npz(tmp / f"shard_{shard_id:05d}.npz", **generate_shard(gen, shard_id, k, cfg))
        summary = {
            "checkpoint": str(checkpoint_path),
            "checkpoint_sha256": sha256_file(checkpoint_path),
            "family": gen.checkpoint.family,
            "class_names": gen.checkpoint.class_names,
            "image_shape": list(gen.checkpoint.image_shape),
            "n_per_class": cfg.n_per_class,
            "num_shards": n,
            "seed": cfg.seed,
            "device": str(gen.device),
        }
        atomic_write_json(tmp / "generate.json", summary)
    return summary


def iter_shards(gen_dir: str | Path, keys: tuple[str, ...] = ("images", "labels", "scores", "index")) -> Iterator[dict[str, np.ndarray]]:
    """Stream the shards of a generate output, one at a time (memory stays flat)."""
    gen_dir = Path(gen_dir)
    files = sorted(gen_dir.glob("shard_*.npz"))
    if not (gen_dir / "generate.json").is_file() or not files:
        raise DataError(f"{gen_dir} holds no generated samples: run the generate stage first (augment generate)")
    for f in files:
        z = load_npz(f)
        yield {k: z[k] for k in keys}
