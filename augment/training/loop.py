"""The ``train`` stage: fit a class-conditional generator on the TRAIN split only.

The loop is family-agnostic (GAN or VAE trainers share one interface, see
:mod:`augment.models`). It samples class-balanced batches from one seeded ``torch.Generator``,
logs losses, writes sample grids, and checkpoints a resumable state so a killed run picks up
where it stopped and reaches the same weights as an uninterrupted run (CPU, same seed).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from tqdm.auto import tqdm

from augment.config import ClassicalConfig, TrainConfig
from augment.core.device import resolve_device
from augment.core.images import image_grid, shorten
from augment.core.pixels import to_tensor, to_uint8
from augment.data.classical import augment_batch, classical_augmentation
from augment.errors import CheckpointError
from augment.models.checkpoint import Checkpoint, save_checkpoint
from augment.training.families import get_trainer_class
from augment.training.sizing import size_for_data


@dataclass
class TrainResult:
    trainer: Any
    log: list[dict[str, float]] = field(default_factory=list)
    grids: dict[int, np.ndarray] = field(default_factory=dict)  # iteration -> grid image
    resumed_from: int = 0
    cfg: TrainConfig | None = None  # the config actually trained (auto sizes resolved): goes in the checkpoint


def run_key(images: np.ndarray, labels: np.ndarray, cfg: TrainConfig, classical: ClassicalConfig | None = None) -> str:
    """Identity of a training run: data + config (a resume state only fits the same run)."""
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(images).tobytes())
    h.update(np.ascontiguousarray(labels).tobytes())
    h.update(json.dumps(asdict(cfg), sort_keys=True).encode())
    if classical is not None:
        h.update(json.dumps(asdict(classical), sort_keys=True).encode())
    return h.hexdigest()[:16]


def sampler_tensors(trainer: Any, images: np.ndarray, labels: np.ndarray) -> dict[str, torch.Tensor]:
    """What the trained family saves with its checkpoint for sampling beyond its weights: the
    training images and their labels (``generate.sampler: deform``, and a VAE's ``residual``),
    and a VAE's codes of them (``interpolate``); ``{}`` for a family that saves none."""
    fn = getattr(trainer, "sampler_tensors", None)
    return fn(images, labels) if fn is not None else {}


def class_balanced_indices(labels_t: torch.Tensor, num_classes: int, batch: int, g: torch.Generator):
    """Draw a batch: classes uniformly, then an image of that class (rare classes get trained)."""
    cls = torch.randint(0, num_classes, (batch,), generator=g)
    idx = torch.empty(batch, dtype=torch.long)
    for c in range(num_classes):
        pool = torch.nonzero(labels_t == c).squeeze(1)
        sel = cls == c
        k = int(sel.sum())
        if k:
            idx[sel] = pool[torch.randint(0, len(pool), (k,), generator=g)]
    return idx


def sample_grid(sampler: torch.nn.Module, class_names: list[str], per_class: int, seed: int,
                device: torch.device) -> np.ndarray:
    """One row per class, labelled with its name; fixed noise: grids of different iterations compare."""
    num_classes = len(class_names)
    g = torch.Generator(device="cpu").manual_seed(seed)
    labels = torch.arange(num_classes).repeat_interleave(per_class).to(device)
    was_training = sampler.training
    sampler.eval()
    with torch.no_grad():
        imgs = to_uint8(sampler.sample(labels, g))
    sampler.train(was_training)
    scale = max(1, 64 // imgs.shape[1])
    return image_grid(imgs, nrow=per_class, scale=scale, row_labels=[shorten(n) for n in class_names])


def train_generator(
    train_images: np.ndarray,
    train_labels: np.ndarray,
    class_names: list[str],
    cfg: TrainConfig,
    resume_path: str | Path | None = None,
    progress: bool = True,
    on_log: Callable[[dict[str, float]], None] | None = None,
    wrap_trainer: Callable[[Any], Any] | None = None,
    classical: ClassicalConfig | None = None,
    on_grid: Callable[[int, np.ndarray], None] | None = None,
) -> TrainResult:
    """Train on ``train_images`` (uint8 N,H,W,C) -- the TRAIN split only, never val or test.

    If ``resume_path`` is given, a resumable state is saved there every
    ``cfg.checkpoint_every`` iterations and, when one for the same data and config exists,
    training continues from it.

    ``on_log(row)`` is called with every logged row (iteration, losses, ADA ``aug_p``) and
    ``on_grid(iteration, grid)`` with every sample grid (uint8 ``(H, W, C)``), as they happen
    (e.g. :class:`augment.training.live.LiveLogger` writes them to dvclive). A resumed run first
    repeats those of the iterations before the interruption (from its resume state), so the
    callbacks see the whole history either way.
    """
    cfg = size_for_data(cfg, len(train_images))  # auto widths/iterations -> concrete (recorded in result.cfg)
    torch.manual_seed(cfg.seed)  # module initialisation
    device = resolve_device(cfg.device)
    num_classes = len(class_names)
    image_shape = tuple(int(s) for s in train_images.shape[1:])
    trainer = get_trainer_class(cfg.family)(cfg, image_shape, num_classes, device)
    if wrap_trainer is not None:  # e.g. DDP (augment.training.distributed)
        trainer = wrap_trainer(trainer)
    g = torch.Generator(device="cpu").manual_seed(cfg.seed + 1)
    key = run_key(train_images, train_labels, cfg, classical if cfg.real_augment == "classical" else None)
    real_aug = None
    if cfg.real_augment == "classical":  # the generator learns from classically augmented reals
        real_aug = classical_augmentation(classical or ClassicalConfig(), cfg.seed)
    result = TrainResult(trainer=trainer, cfg=cfg)
    start = 0
    if resume_path is not None and Path(resume_path).is_file():
        try:
            ck = Checkpoint(resume_path)
            if ck.extra.get("run_key") == key:
                ck.load_into(trainer.modules())
                for name, opt in trainer.optimizers().items():
                    opt.load_state_dict(ck.optimizer_state(name))
                g.set_state(ck.rng_state("train"))
                start = int(ck.extra["iteration"])
                result.log = list(ck.extra.get("log", []))
                trainer.load_extra_state(ck.extra.get("trainer_state", {"aug_p": ck.extra.get("aug_p", 1.0)}))
                result.resumed_from = start
                # the sample grids of the iterations before the interruption (else they are lost)
                result.grids = {int(k[5:]): v.numpy() for k, v in ck.extra_tensors().items()
                                if k.startswith("grid_") and int(k[5:]) <= start}
        except CheckpointError:
            start = 0  # a damaged resume state is ignored; training starts over
    if start:
        # Hand the callbacks the history before the interruption, in the order the loop gave it,
        # so a live log started afresh (dvc repro deletes it before re-running the stage) ends up
        # with every row, not only those after the resume.
        rows = {int(r["iteration"]): r for r in result.log}
        for it in sorted(set(rows) | set(result.grids)):
            if on_log and it in rows:
                on_log(rows[it])
            if on_grid and it in result.grids:
                on_grid(it, result.grids[it])
    images_t = to_tensor(train_images, device)
    labels_t = torch.from_numpy(np.asarray(train_labels, dtype=np.int64))
    labels_dev = labels_t.to(device)
    bar = tqdm(total=cfg.iterations, initial=start, disable=not progress, desc=f"train {cfg.family}", unit="it")
    for it in range(start + 1, cfg.iterations + 1):
        idx = class_balanced_indices(labels_t, num_classes, cfg.batch_size, g)
        if real_aug is not None:
            # Seeded per iteration (not by a running stream): a resumed run augments identically.
            real_aug.set_random_seed(int(np.random.SeedSequence([cfg.seed, it, 7717]).generate_state(1)[0]))
            real = to_tensor(augment_batch(real_aug, train_images[idx.numpy()]), device)
        else:
            real = images_t[idx.to(device)]
        losses = trainer.step(real, labels_dev[idx.to(device)], g)
        if it % cfg.log_every == 0 or it == cfg.iterations:
            row = {"iteration": it, **{k: round(v, 6) for k, v in losses.items()}}
            result.log.append(row)
            if on_log:
                on_log(row)
            bar.set_postfix({k: f"{v:.3f}" for k, v in losses.items() if k.startswith("loss") or k == "aug_p"})
        if it % cfg.sample_every == 0 or it == cfg.iterations:
            result.grids[it] = sample_grid(trainer.sampler(), class_names, 8, cfg.seed, device)
            if on_grid:
                on_grid(it, result.grids[it])
        if resume_path is not None and (it % cfg.checkpoint_every == 0) and it < cfg.iterations:
            save_checkpoint(
                resume_path, trainer.modules(), cfg, image_shape, class_names,
                extra={"run_key": key, "iteration": it, "log": result.log,
                       "trainer_state": trainer.extra_state()},  # ADA strength p, step counters
                optimizers=trainer.optimizers(), rng_states={"train": g.get_state()},
                extra_tensors={f"grid_{k}": torch.from_numpy(np.ascontiguousarray(v))
                               for k, v in result.grids.items()},
            )
        bar.update(1)
    bar.close()
    return result
