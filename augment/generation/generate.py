"""The ``generate`` stage: N samples per class from a checkpoint, scored by its discriminator.

Samples are written in shards (``shard_00000.npz``: images, labels, scores, index), never all
in memory: at most one shard being computed plus one being written. Shard ``k`` is drawn from a
generator seeded by ``(seed, k)``, so any shard can be produced on its own (on another worker)
and the result is identical to a single-process run.

Fast paths (see ``benchmarks/``): the latent noise is always drawn on the CPU from the shard's
generator, so the same seed gives the same latents on every device. The networks run in channels-last
layout; on CUDA under bf16 autocast (``generate.precision: auto``), and a whole shard stays on
the device and crosses to the host once. On the CPU the default is fp32 (identical outputs for
a seed). Spectral norm is baked into the discriminator's weights once (it is only scored,
never trained, here), and shard files are written by a background thread while the next shard
is computed.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize
from tqdm.auto import tqdm

from augment.config import GenerateConfig
from augment.core.device import resolve_device
from augment.core.files import (
    atomic_directory,
    atomic_save_npz,
    atomic_write_json,
    sha256_file,
)
from augment.core.pixels import to_uint8_tensor
from augment.errors import CheckpointError
from augment.models.checkpoint import Checkpoint
from augment.training.families import get_trainer_class


@dataclass(frozen=True)
class DeformParams:
    """``generate.sampler: deform``'s parameters (:mod:`augment.models.deform`): the field lattice,
    the most pairs registered per class, the seed of their draw when a class has more, the scale,
    the fraction of samples warped by a random field of the class's field size."""

    grid: int = 6
    max_pairs: int = 400
    seed: int = 1
    scale: float = 1.0
    random: float = 0.0

    @classmethod
    def of(cls, cfg: GenerateConfig) -> "DeformParams":
        return cls(cfg.deform_grid, cfg.deform_pairs, cfg.seed, cfg.deform_scale, cfg.deform_random)


@dataclass
class LoadedGenerator:
    sampler: torch.nn.Module
    discriminator: torch.nn.Module
    checkpoint: Checkpoint
    device: torch.device
    autocast_dtype: torch.dtype | None = None  # None = full fp32
    channels_last: bool = False


def resolve_precision(precision: str, device: torch.device, name: str = "generate.precision") -> torch.dtype | None:
    """``auto``: bf16 autocast on a CUDA device that supports it, fp32 elsewhere (CPU outputs stay
    bit-reproducible). ``bf16`` forces bf16 autocast (on CPU too: faster on AVX512-BF16/AMX
    machines, scores shift slightly); ``fp32`` forces full precision."""
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "auto":
        if device.type == "cuda" and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return None
    raise ValueError(f"{name} = {precision!r}: expected auto, fp32 or bf16")


def _bake_spectral_norm(module: torch.nn.Module) -> None:
    """Replace each spectral-norm parametrisation by its current (eval-mode) weight ``W / sigma``.

    The module must already be in eval mode, so no power iteration runs; its outputs are
    unchanged and the per-forward normalisation cost disappears. Only for modules that are
    scored, never trained again.
    """
    for mod in list(module.modules()):
        if parametrize.is_parametrized(mod):
            for name in list(mod.parametrizations.keys()):
                parametrize.remove_parametrizations(mod, name, leave_parametrized=True)


class SubPixelConv(torch.nn.Module):
    """``ConvTranspose2d(c_in, c_out, 4, stride=2, padding=1)`` rewritten as a 3x3 convolution to
    ``4 * c_out`` channels followed by a 2x pixel shuffle: the same function (up to float
    rounding), computed the way oneDNN does fast when ``c_out`` is small. On the 2-core CPU the
    28x28 image layer (32 -> 1 channel) took about half the time (docs/performance.md, "Inference
    layouts"); with 32 output channels it was 2x slower in a one-off timing, so only image layers
    are rewritten (``subpixel_image_layers``)."""

    # Phase a of the output row 2i + a reads input rows i + d through kernel row k: {d: k}.
    _TAPS = {0: {-1: 3, 0: 1}, 1: {0: 2, 1: 0}}

    def __init__(self, ct: torch.nn.ConvTranspose2d):
        super().__init__()
        c_in, c_out = ct.in_channels, ct.out_channels
        w = ct.weight.detach()  # (c_in, c_out, 4, 4)
        k = torch.zeros(c_out, 2, 2, c_in, 3, 3, dtype=w.dtype, device=w.device)
        for a, rows in self._TAPS.items():
            for b, cols in self._TAPS.items():
                for di, ki in rows.items():
                    for dj, kj in cols.items():
                        k[:, a, b, :, di + 1, dj + 1] = w[:, :, ki, kj].T
        self.conv = torch.nn.Conv2d(c_in, 4 * c_out, 3, padding=1, bias=ct.bias is not None,
                                    device=w.device, dtype=w.dtype)
        self.conv.weight.data.copy_(k.reshape(4 * c_out, c_in, 3, 3))
        if ct.bias is not None:
            self.conv.bias.data.copy_(ct.bias.detach().repeat_interleave(4))

    @staticmethod
    def applies(m: torch.nn.Module, max_out_channels: int = 4) -> bool:
        return (isinstance(m, torch.nn.ConvTranspose2d) and m.kernel_size == (4, 4) and m.stride == (2, 2)
                and m.padding == (1, 1) and m.output_padding == (0, 0) and m.dilation == (1, 1)
                and m.groups == 1 and m.out_channels <= max_out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.pixel_shuffle(self.conv(x), 2)


def subpixel_image_layers(module: torch.nn.Module) -> int:
    """Replace every image-producing ``ConvTranspose2d`` (<= 4 output channels) inside ``module``
    by a :class:`SubPixelConv`, in place; returns how many. For inference copies only."""
    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if SubPixelConv.applies(child):
                setattr(parent, name, SubPixelConv(child))
                count += 1
    return count


class FoldedClassBatchNorm(torch.nn.Module):
    """An eval-mode :class:`~augment.models.gan.ClassBatchNorm` (running statistics, then a
    per-class gain and bias) as one per-class affine map ``x * scale[y] + shift[y]``: the same
    function up to float rounding, one pass over the activations instead of three."""

    def __init__(self, cbn: torch.nn.Module):
        super().__init__()
        bn = cbn.bn
        inv = torch.rsqrt(bn.running_var.detach() + bn.eps)
        scale = cbn.gain.weight.detach() * inv  # (classes, channels)
        self.register_buffer("scale", scale)
        self.register_buffer("shift", cbn.bias.weight.detach() - bn.running_mean.detach() * scale)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.shift[y][:, :, None, None], x, self.scale[y][:, :, None, None])


def fold_class_batchnorm(module: torch.nn.Module) -> int:
    """Replace every eval-mode ``ClassBatchNorm`` with running statistics inside ``module`` by a
    :class:`FoldedClassBatchNorm`, in place; returns how many. For inference copies only."""
    from augment.models.gan import ClassBatchNorm

    count = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if (isinstance(child, ClassBatchNorm) and not child.training and child.bn.track_running_stats
                    and child.bn.running_mean is not None):
                setattr(parent, name, FoldedClassBatchNorm(child))
                count += 1
    return count


def interpolation_anchors(ck: Checkpoint, sampler: str = "interpolate") -> tuple[torch.Tensor, torch.Tensor]:
    """The training images' codes and labels a VAE checkpoint carries, checked (shape, finite,
    labels in range) so that a damaged file fails here with the fix named."""
    extra = ck.extra_tensors()
    where = f"checkpoint {ck.path}"
    if ck.family != "vae":
        raise CheckpointError(f"{where}: generate.sampler = {sampler} needs a train.family vae checkpoint "
                              f"(this one is {ck.family}); set generate.sampler: prior")
    if "anchors" not in extra or "anchor_labels" not in extra:
        raise CheckpointError(f"{where} carries no training codes (written before generate.sampler: {sampler} "
                              "existed): re-run the train stage, or set generate.sampler: prior")
    z, y = extra["anchors"], extra["anchor_labels"]
    if (z.dim() != 2 or z.size(1) != ck.cfg.z_dim or y.dim() != 1 or len(y) != len(z) or y.dtype != torch.int64
            or not z.dtype.is_floating_point or not bool(torch.isfinite(z).all())
            or (len(y) and not (0 <= int(y.min()) and int(y.max()) < len(ck.class_names)))):
        raise CheckpointError(f"{where}: its training codes are damaged (shape {tuple(z.shape)}, labels "
                              f"{tuple(y.shape)}); re-run the train stage")
    return z.float(), y


def training_images(ck: Checkpoint, sampler: str = "deform") -> tuple[torch.Tensor, torch.Tensor]:
    """The training images a checkpoint carries (a VAE's or a GAN's: uint8 ``(N, H, W, C)``) and
    their labels, for ``generate.sampler: deform`` and ``residual``; checked (labels int64 and in
    range, one image of the checkpoint's shape per label) so that a damaged file fails here with
    the fix named."""
    extra = ck.extra_tensors()
    where = f"checkpoint {ck.path}"
    if "anchor_labels" not in extra or "anchor_images" not in extra:
        raise CheckpointError(f"{where} carries no training images (written before generate.sampler: {sampler} "
                              "existed): re-run the train stage, or set generate.sampler: prior")
    x, y = extra["anchor_images"], extra["anchor_labels"]
    if (y.dim() != 1 or y.dtype != torch.int64
            or (len(y) and not (0 <= int(y.min()) and int(y.max()) < len(ck.class_names)))):
        raise CheckpointError(f"{where}: its training labels are damaged (shape {tuple(y.shape)}, {y.dtype}); "
                              "re-run the train stage")
    n = len(y)
    if x.dtype != torch.uint8 or tuple(x.shape) != (n, *ck.image_shape):
        raise CheckpointError(f"{where}: its training images are damaged (shape {tuple(x.shape)}, {x.dtype}; "
                              f"expected ({n}, {', '.join(map(str, ck.image_shape))}) uint8); re-run the train stage")
    return x, y


def load_generator(path: str | Path, device: str = "auto", precision: str = "auto",
                   sampler: str = "prior", residual_scale: float = 1.0,
                   deform: DeformParams | None = None) -> LoadedGenerator:
    """Rebuild the sampler and discriminator from a checkpoint file alone (eval mode, for inference).

    ``sampler``: ``generate.sampler`` (``interpolate``: a VAE's :class:`InterpolatingSampler`;
    ``residual``: its :class:`ResidualSampler`, edits of the training images by ``residual_scale``;
    ``deform``: its :class:`~augment.models.deform.DeformSampler`, the training images warped by
    the deformations registered between them, ``deform``'s parameters)."""
    from augment.core.pixels import to_tensor

    ck = Checkpoint(path)
    ck.check_architecture()  # metadata vs weights, on the meta device: nothing allocated yet
    anchors = interpolation_anchors(ck, sampler) if sampler in ("interpolate", "residual") else None
    images, image_labels = training_images(ck, sampler) if sampler in ("residual", "deform") else (None, None)
    dev = resolve_device(device)
    trainer = get_trainer_class(ck.family)(ck.cfg, ck.image_shape, len(ck.class_names), dev)
    ck.load_into({k: v for k, v in trainer.modules().items()})
    sampler_mod, disc = trainer.sampler().eval(), trainer.discriminator().eval()
    for p in list(sampler_mod.parameters()) + list(disc.parameters()):
        p.requires_grad_(False)
    with torch.no_grad():
        _bake_spectral_norm(disc)
        fold_class_batchnorm(sampler_mod)
        if dev.type == "cpu":
            subpixel_image_layers(sampler_mod)
    # Channels-last: cuDNN's fast convolution layout on CUDA, and on CPU oneDNN's too (measured
    # 1.4x for G + D at 28x28, benchmarks/RESULTS.md). Outputs stay deterministic for a seed.
    channels_last = dev.type in ("cuda", "cpu")
    if channels_last:
        sampler_mod.to(memory_format=torch.channels_last)
        disc.to(memory_format=torch.channels_last)
    if sampler == "deform":
        from augment.models.deform import DeformSampler, fit_fields

        d = deform or DeformParams()
        y, k = image_labels, len(ck.class_names)
        x = to_tensor(images.numpy(), torch.device("cpu"))
        pairs, fields = fit_fields(x, y, k, d.grid, d.max_pairs, d.seed)
        sampler_mod = DeformSampler(sampler_mod, x.to(dev), y.to(dev), pairs.to(dev), fields.to(dev), k,
                                    d.scale, d.random).eval()
    elif anchors is not None:  # wrapped after the rewrites: a residual is taken with the decoder that samples
        from augment.models.vae import InterpolatingSampler, ResidualSampler

        z, y = anchors[0].to(dev), anchors[1].to(dev)
        sampler_mod = (ResidualSampler(sampler_mod.decoder, sampler_mod.prior, z, y, to_tensor(images.numpy(), dev),
                                       residual_scale)
                       if images is not None else InterpolatingSampler(sampler_mod.decoder, sampler_mod.prior, z, y))
        sampler_mod.eval()
    return LoadedGenerator(sampler_mod, disc, ck, dev, resolve_precision(precision, dev), channels_last)


def shard_seed(seed: int, shard_id: int) -> int:
    """A distinct, reproducible seed per shard (independent of how shards are scheduled)."""
    return int(np.random.SeedSequence([seed, shard_id]).generate_state(1)[0])


def num_shards(num_classes: int, cfg: GenerateConfig) -> int:
    return math.ceil(num_classes * cfg.n_per_class / cfg.shard_size)


def _autocast(gen: LoadedGenerator):
    if gen.autocast_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=gen.device.type, dtype=gen.autocast_dtype)


@torch.inference_mode()
def generate_shard(gen: LoadedGenerator, shard_id: int, num_classes: int, cfg: GenerateConfig) -> dict[str, np.ndarray]:
    """Samples with global index ``[shard_id * shard_size, ...)``; class = index // n_per_class.

    Scores are the discriminator's logit for each sample, computed on the batches of
    ``cfg.batch_size`` (the discriminator's minibatch-stddev feature looks at batch-mates, so the
    scores depend on the batch size; the same batch size gives the same scores).
    """
    total = num_classes * cfg.n_per_class
    lo, hi = shard_id * cfg.shard_size, min((shard_id + 1) * cfg.shard_size, total)
    index = np.arange(lo, hi, dtype=np.int64)
    labels = index // cfg.n_per_class
    g = torch.Generator(device="cpu").manual_seed(shard_seed(cfg.seed, shard_id))
    labels_dev = torch.from_numpy(labels).to(gen.device, non_blocking=True)
    imgs, scores = [], []
    for s in range(0, hi - lo, cfg.batch_size):
        y = labels_dev[s : s + cfg.batch_size]
        with _autocast(gen):
            x = gen.sampler.sample(y, g)  # noise drawn from the CPU generator ``g``, then moved
            if gen.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            scores.append(gen.discriminator(x, y).float())
        imgs.append(to_uint8_tensor(x))
    # One device -> host copy per shard (each .cpu() is a synchronisation point on CUDA).
    images = torch.cat(imgs).contiguous().cpu().numpy()
    return {"images": images, "labels": labels, "scores": torch.cat(scores).cpu().numpy().astype(np.float32),
            "index": index}


def shard_record(path: Path, shard_id: int) -> dict:
    """What a consumer checks a shard against: its file name, sample count and sha256."""
    from augment.core.files import load_npz_keys

    samples = int(len(load_npz_keys(path, ("index",))["index"]))
    return {"shard": shard_id, "file": path.name, "samples": samples, "sha256": sha256_file(path)}


def generation_summary(ckpt: Checkpoint, checkpoint_path: str, checkpoint_sha256: str, cfg: GenerateConfig,
                       device: str, autocast_dtype: torch.dtype | None, shards: list[dict]) -> dict:
    """``generate.json``: where the samples came from, and every shard with its count and sha256.

    One definition for the single-process stage and the sharded flow (:mod:`augment.flows.scale`)."""
    return {
        "checkpoint": checkpoint_path,
        "checkpoint_sha256": checkpoint_sha256,
        "family": ckpt.family,
        "class_names": ckpt.class_names,
        "image_shape": list(ckpt.image_shape),
        "n_per_class": cfg.n_per_class,
        "num_shards": len(shards),
        "seed": cfg.seed,
        # the discriminator scores depend on the batch composition (batch norm): recorded so a run
        # can be repeated from this file
        "batch_size": cfg.batch_size,
        "shard_size": cfg.shard_size,
        "device": device,
        "precision": "bf16" if autocast_dtype == torch.bfloat16 else "fp32",
        "sampler": cfg.sampler,
        **({"residual_scale": cfg.residual_scale} if cfg.sampler == "residual" else {}),
        **({"deform": dataclasses.asdict(DeformParams.of(cfg))} if cfg.sampler == "deform" else {}),
        "shards": [{k: s[k] for k in ("shard", "file", "samples", "sha256")} for s in shards],
        # the prepared dataset the checkpoint was trained from (filter and merge check it)
        **({"prepared_sha256": ckpt.extra["prepared_sha256"]} if "prepared_sha256" in ckpt.extra else {}),
    }


def generate_samples(checkpoint_path: str | Path, out_dir: str | Path, cfg: GenerateConfig, progress: bool = True,
                     recorded_checkpoint: str | None = None) -> dict:
    """Generate every shard into ``out_dir`` (swapped in atomically) and return a summary.

    ``recorded_checkpoint``: the checkpoint's path as ``generate.json`` records it (the stage passes
    it relative to the workspace, so a run from ``.`` and one from the folder's absolute path write
    the same bytes; default: ``checkpoint_path`` as given).
    On CPU the batches run on ``generate.threads`` torch threads (null: one per usable CPU)."""
    from augment.core.parallel import inference_threads

    torch.manual_seed(cfg.seed)
    gen = load_generator(checkpoint_path, cfg.device, cfg.precision, cfg.sampler, cfg.residual_scale,
                         DeformParams.of(cfg))
    k = len(gen.checkpoint.class_names)
    n = num_shards(k, cfg)
    with inference_threads(cfg.threads, gen.device), atomic_directory(out_dir) as tmp, \
            ThreadPoolExecutor(max_workers=1) as writer:
        # Shard k is written (serialise + fsync) in the background while shard k+1 is computed;
        # at most one pending write, so at most two shards are ever in memory.
        pending: Future | None = None
        for shard_id in tqdm(range(n), desc="generate", unit="shard", disable=not progress):
            shard = generate_shard(gen, shard_id, k, cfg)
            if pending is not None:
                pending.result()
            pending = writer.submit(atomic_save_npz, tmp / f"shard_{shard_id:05d}.npz", **shard)
            del shard
        if pending is not None:
            pending.result()
        shards = [shard_record(tmp / f"shard_{i:05d}.npz", i) for i in range(n)]
        summary = generation_summary(gen.checkpoint, recorded_checkpoint or str(checkpoint_path),
                                     sha256_file(checkpoint_path), cfg,
                                     str(gen.device), gen.autocast_dtype, shards)
        atomic_write_json(tmp / "generate.json", summary)
    return summary
