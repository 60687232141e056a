"""Multi-GPU (or multi-process CPU) training of the generator with torch DDP, under ``torchrun``.

    torchrun --nproc_per_node 4 -m augment.training.distributed --params params.yaml      # 4 GPUs
    torchrun --nproc_per_node 2 -m augment.training.distributed --params params.yaml --backend gloo  # CPU

It wraps the single-process training (:func:`augment.pipeline.stages.run_train` ->
:func:`augment.training.loop.train_generator`) instead of rewriting it: every rank runs the same
training loop; the trainer's trainable networks (the GAN's ``G`` and ``D``, the VAE) are wrapped
in :class:`torch.nn.parallel.DistributedDataParallel`, so gradients are averaged across ranks
after every backward pass and the weights stay identical on every rank (DDP also broadcasts rank
0's initial weights and its batch-norm / spectral-norm buffers). Each rank draws its own
class-balanced batches and DiffAugment transforms (seed ``train.seed + 1000 * rank`` for the
batch stream; rank 0 keeps ``train.seed``), so one iteration sees ``world_size x
train.batch_size`` images.

Rank 0 writes the same outputs as ``augment train`` (``models/generator.safetensors`` with the
unwrapped weights and the original config, sample grids, loss curves, ``metrics/train_log.csv``),
so ``augment generate`` loads the checkpoint as usual. The other ranks write nothing the
pipeline reads. The result is a valid generator but not bit-identical to a single-process run
(more images per step, different batch order). Resuming a killed DDP run is not supported: it
restarts.

Backend: ``nccl`` when CUDA is available and the stage's device is not ``cpu``, else ``gloo``.
Each rank uses ``cuda:<LOCAL_RANK>``.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import gc
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel as DDP


def _unwrap(m: Any) -> Any:
    return m.module if isinstance(m, DDP) else m


def max_divergence(modules: dict[str, torch.nn.Module]) -> float:
    """Largest |rank-0 weight - this rank's weight| over all parameters, max over ranks (0 = in sync)."""
    worst = torch.zeros(1)
    for m in modules.values():
        for p in m.parameters():
            ref = p.detach().clone()
            dist.broadcast(ref, src=0)
            worst = torch.maximum(worst, (ref - p.detach()).abs().max().cpu().reshape(1))
    worst = worst.to(next(p for m in modules.values() for p in m.parameters()).device)
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    return float(worst.item())


class DDPTrainer:
    """A family's trainer whose trainable networks are DDP-wrapped; same interface as the trainer.

    The trainer wraps its own networks (``distribute``); ``modules()`` / ``sampler()`` /
    ``discriminator()`` return the unwrapped networks, so checkpoints and sample grids are exactly
    those of a single-process trainer.
    """

    def __init__(self, inner: Any, device: torch.device):
        self.inner = inner
        ids = None if device.type == "cpu" else [device.index or 0]
        # Buffers (BN running stats, spectral-norm vectors) are synced from rank 0 (DDP default).
        inner.distribute(lambda m: DDP(m, device_ids=ids))

    def __getattr__(self, name: str) -> Any:  # step(), optimizers(), extra_state(), family, ...
        return getattr(self.inner, name)

    def modules(self) -> dict[str, torch.nn.Module]:
        return {k: _unwrap(v) for k, v in self.inner.modules().items()}

    def wrapped(self) -> dict[str, torch.nn.Module]:
        """The DDP-trained networks (unwrapped), e.g. to check they stayed in sync across ranks."""
        return {k: v.module for k, v in self.inner.modules().items() if isinstance(v, DDP)}

    def sampler(self) -> torch.nn.Module:
        return _unwrap(self.inner.sampler())

    def discriminator(self) -> torch.nn.Module:
        return _unwrap(self.inner.discriminator())


def _device(spec: str, local_rank: int) -> tuple[str, str]:
    """(device spec for this rank, backend)."""
    if spec != "cpu" and torch.cuda.is_available():
        return f"cuda:{local_rank}", "nccl"
    return "cpu", "gloo"


def train_ddp(params_path: str, paths: Any, backend: str | None = None, progress: bool = True) -> dict[str, Any] | None:
    """Run one DDP rank (call under torchrun). Returns rank 0's train summary, ``None`` elsewhere."""
    from augment.config import load_params
    from augment.core.locking import workspace_lock
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import check_stage_paths, get_stage, run_train

    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    full = load_params(params_path)
    cfg = full.train
    # The same output checks as `augment train` (Stage.__call__) on every rank, before any rank
    # waits for the others: an output that would destroy an input is refused at once.
    check_stage_paths(get_stage("train"), full, paths, {"--params": str(params_path)})
    device_spec, default_backend = _device(cfg.device, local_rank)
    backend = backend or default_backend
    if device_spec.startswith("cuda"):
        torch.cuda.set_device(local_rank)
    built: list[DDPTrainer] = []
    dist.init_process_group(backend=backend, rank=rank, world_size=world)
    try:
        # Rank 0 keeps the user's config (it goes into the checkpoint); other ranks only shift the
        # batch/augmentation stream. Weights start equal anyway: DDP broadcasts rank 0's.
        rank_cfg = dataclasses.replace(cfg, device=device_spec, seed=cfg.seed + 1000 * rank)
        if rank == 0:
            rank_cfg = dataclasses.replace(cfg, device=device_spec)

        def wrap(trainer: Any) -> DDPTrainer:
            built.append(DDPTrainer(trainer, torch.device(device_spec)))
            return built[-1]

        with tempfile.TemporaryDirectory(prefix=f"ddp-rank{rank}-") as tmp:
            if rank == 0:
                rank_paths = dataclasses.replace(paths, resume=str(Path(tmp) / "resume.safetensors"))
            else:  # same inputs; outputs go to a throwaway folder
                rank_paths = Paths(prepared=paths.prepared, model_dir=str(Path(tmp) / "models"),
                                   metrics_dir=str(Path(tmp) / "metrics"),
                                   resume=str(Path(tmp) / "resume.safetensors"))
            # Rank 0 writes the workspace's models/ and metrics/: it holds the workspace lock, as
            # every augment command does, so a flow or CLI run cannot interleave with it.
            with workspace_lock(".", what="augment.training.distributed") if rank == 0 else contextlib.nullcontext():
                out = run_train(rank_cfg, rank_paths, progress=progress and rank == 0, wrap_trainer=wrap,
                                classical=full.classical)  # train.real_augment: classical uses these
        # The DDP-trained networks (not EMA copies) must have stayed identical on every rank.
        out["ddp"] = {"world_size": world, "backend": backend,
                      "max_param_divergence": max_divergence(built[-1].wrapped())}
        dist.barrier()
        return out if rank == 0 else None
    finally:
        # Free the DDP wrappers (their reducers hold the process group and gloo work) while the
        # interpreter and the group are alive: left to interpreter exit, a gloo thread can be torn
        # down after Python and abort the process ("terminate called without an active
        # exception", seen once under load after a finished run).
        built.clear()
        gc.collect()
        dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    from augment.errors import AugmentError
    from augment.pipeline.paths import Paths

    ap = argparse.ArgumentParser(prog="torchrun -m augment.training.distributed",
                                 description="Train the generator with DDP (one process per GPU, or gloo on CPU)")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--prepared", default=Paths.prepared)
    ap.add_argument("--model-dir", default=Paths.model_dir)
    ap.add_argument("--metrics-dir", default=Paths.metrics_dir)
    ap.add_argument("--backend", choices=["gloo", "nccl"], default=None, help="default: nccl on CUDA, else gloo")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    paths = Paths(prepared=a.prepared, model_dir=a.model_dir, metrics_dir=a.metrics_dir)
    try:
        out = train_ddp(a.params, paths, a.backend, progress=not a.quiet)
    except AugmentError as exc:  # bad params or data, an output refused, the workspace lock held
        print(f"augment.training.distributed: error: {exc}", file=sys.stderr)
        return 2
    if out is not None:
        world = os.environ.get("WORLD_SIZE", "1")
        print(f"trained {out['iterations']} iterations on {world} process(es) (DDP, {out['ddp']['backend']}; "
              f"max weight difference between ranks {out['ddp']['max_param_divergence']:.3g}) -> {out['checkpoint']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
