"""The downstream classifier used to measure whether synthetic data helps, and classical augmentation.

A small CNN whose depth adapts to the image size. Training runs a fixed number of optimisation
steps (the same for every variant, so adding data never means "more training"); batches are
drawn with a seeded numpy generator and augmented with the seeded classical transform
(augment/data/classical.py).
"""

from __future__ import annotations

import copy
import queue
import threading
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from augment.config import ClassicalConfig
from augment.core.pixels import to_tensor
from augment.data.classical import augment_batch, classical_augmentation


class SmallCNN(nn.Module):
    def __init__(self, in_channels: int, num_classes: int, size: int, width: int = 32):
        super().__init__()
        layers: list[nn.Module] = []
        c, s, w = in_channels, size, width
        while True:
            layers += [nn.Conv2d(c, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
            c = w
            if s >= 4:
                layers.append(nn.MaxPool2d(2))
                s //= 2
                w = min(w * 2, width * 8)
            if s < 4 or len(layers) >= 16:
                break
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(c, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return F.adaptive_avg_pool2d(self.features(x), 1).flatten(1)  # (B, feature_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.embed(x)))


def _batch_stream(images: np.ndarray, spec: "ClassifierSpec", rng: np.random.Generator, p: np.ndarray | None,
                  augment) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """``spec.steps`` batches: indices drawn with ``rng`` (weights ``p``), then augmented."""
    n = len(images)
    size, replace = min(spec.batch_size, n), p is not None or n < spec.batch_size
    for _ in range(spec.steps):
        idx = rng.choice(n, size=size, replace=replace, p=p)
        batch = images[idx]
        if augment is not None:
            batch = augment_batch(augment, batch)
        yield idx, batch


_END = object()


def _prefetch(items: Iterator, depth: int = 2) -> Iterator:
    """Iterate ``items`` in one background thread, up to ``depth`` ahead; order is preserved and
    an exception in the producer is re-raised here. Stops the producer if the consumer stops."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer
            put(_Failure(exc))
            return
        put(_END)

    thread = threading.Thread(target=work, name="classifier-batches", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


@dataclass
class _Failure:
    exc: BaseException


# (in_channels, num_classes, image size) -> an untrained network that maps (B, C, H, W) to logits
ModelFactory = Callable[[int, int, int], nn.Module]


@dataclass
class ClassifierSpec:
    steps: int = 1500
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    weight_decay: float = 5e-4


def train_classifier(
    images: np.ndarray,
    labels: np.ndarray,
    num_classes: int,
    spec: ClassifierSpec,
    seed: int,
    augment=None,
    device: torch.device = torch.device("cpu"),
    sample_weights: np.ndarray | None = None,
    make_model: ModelFactory | None = None,
) -> nn.Module:
    """Train on uint8 ``(N, H, W, C)`` images. ``sample_weights`` sets how often each is drawn.

    ``labels``: class indices ``(N,)``, or per-class target probabilities ``(N, num_classes)``
    (soft labels, e.g. a teacher's for synthetic images; rows sum to 1).

    ``make_model(in_channels, num_classes, size)`` builds another network to train the same way
    (default: :class:`SmallCNN`); it is called after the seed is set, so its initialisation is seeded."""
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    size = min(images.shape[1:3])
    model = (make_model(images.shape[3], num_classes, size) if make_model is not None
             else SmallCNN(images.shape[3], num_classes, size, spec.width)).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=spec.lr, weight_decay=spec.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=spec.lr, total_steps=spec.steps)
    p = None if sample_weights is None else sample_weights / sample_weights.sum()
    labels_t = torch.from_numpy(_targets(labels, num_classes))
    model.train()
    with _threads_for(images, device):
        _fit(model, opt, sched, images, labels_t, spec, rng, p, augment, device)
    return model.eval()


# Small images give each op too little work to split: on a 2-core CPU one intra-op thread trained
# the 8x8 classifier 3x faster than two (51.7 vs 16.7 steps/s), and two OpenMP threads plus the
# batch-prefetch thread were 13x slower (benchmarks/RESULTS.md). At 28x28 two threads train it in
# 0.61x the time of one (docs/performance.md, CPU options). Larger images keep the process's setting
# (one thread in a pool worker; every CPU in the filter stage). The crossover between 8x8 and 28x28
# is not measured: 16x16 is a guess.
SMALL_IMAGE_PIXELS = 16 * 16


@contextmanager
def _threads_for(images: np.ndarray, device: torch.device):
    small = device.type == "cpu" and images.shape[1] * images.shape[2] <= SMALL_IMAGE_PIXELS
    before = torch.get_num_threads()
    if small and before > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices as int64, or soft labels as float32 after checking their shape and sums."""
    if labels.ndim == 1:
        return labels.astype(np.int64)
    if labels.ndim != 2 or labels.shape[1] != num_classes:
        raise ValueError(f"soft labels must have shape (N, {num_classes}), got {list(labels.shape)}")
    soft = labels.astype(np.float32)
    if not np.isfinite(soft).all() or (soft < 0).any() or not np.allclose(soft.sum(1), 1.0, atol=1e-3):
        raise ValueError("soft labels must be finite, non-negative and sum to 1 per image")
    return soft


def _fit(model, opt, sched, images, labels_t, spec, rng, p, augment, device) -> None:
    batches = _batch_stream(images, spec, rng, p, augment)
    if augment is not None:
        # Augmentation is a share of a small CNN's step on CPU: prepare the next batches in one
        # background thread while this one trains. One producer draws from
        # ``rng`` and the augmentation's own generator in the same order as a plain loop, so
        # the batches (and the trained model) are identical.
        batches = _prefetch(batches, depth=2)
    for idx, batch in batches:
        x = to_tensor(batch, device)
        loss = F.cross_entropy(model(x), labels_t[idx].to(device), label_smoothing=0.05)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()


def for_inference(model: nn.Module) -> nn.Module:
    """An eval-mode copy of ``model`` whose Conv2d + BatchNorm2d pairs are folded into one
    convolution (the running statistics are constants at inference) and whose ReLU runs after the
    max-pool: the same outputs up to float rounding, less CPU per image (batch norm was a fifth of
    the filter stage's time in a profile)."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval

    if not isinstance(model, SmallCNN) or not any(isinstance(m, nn.BatchNorm2d) for m in model.features):
        return model.eval()  # nothing to fold (e.g. already folded): no copy per call
    fused = copy.deepcopy(model).eval()
    layers, out, i = list(fused.features), [], 0
    while i < len(layers):
        if isinstance(layers[i], nn.Conv2d) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.BatchNorm2d):
            out.append(fuse_conv_bn_eval(layers[i], layers[i + 1]))
            i += 2
        elif (isinstance(layers[i], nn.ReLU) and i + 1 < len(layers) and isinstance(layers[i + 1], nn.MaxPool2d)):
            # max-pool before ReLU: the same values exactly (both only compare), ReLU on 4x fewer
            out += [layers[i + 1], layers[i]]
            i += 2
        else:
            out.append(layers[i])
            i += 1
    fused.features = nn.Sequential(*out)
    return fused


# Inference layout: channels-last convolutions in chunks of 256 images on CPU. Measured on the
# 2-core CPU for the filter's 28x28 classifier (docs/performance.md, "Inference layouts"): fp32
# contiguous ran 190-310 us per image at any chunk size; channels-last about 70 us at 128-256
# images and 90-105 us at 512-1024 (the activations leave the cache). On CUDA large chunks win.
CPU_INFERENCE_BATCH = 256


def _inference_model(model: nn.Module, device: torch.device) -> tuple[nn.Module, int, bool]:
    """(folded eval model, chunk size, channels_last) for the predict functions below."""
    model = for_inference(model)
    channels_last = isinstance(model, SmallCNN)
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    return model, (CPU_INFERENCE_BATCH if device.type == "cpu" else 1024), channels_last


def _inputs(images: np.ndarray, device: torch.device, channels_last: bool) -> torch.Tensor:
    x = to_tensor(images, device)
    return x.contiguous(memory_format=torch.channels_last) if channels_last else x


@torch.no_grad()
def predict_proba(model: nn.Module, images: np.ndarray, device: torch.device = torch.device("cpu")) -> np.ndarray:
    model, batch, cl = _inference_model(model, device)
    out = []
    for s in range(0, len(images), batch):
        out.append(F.softmax(model(_inputs(images[s : s + batch], device, cl)), dim=1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, 0))


@torch.no_grad()
def predict_with_embedding(model: SmallCNN, images: np.ndarray, device: torch.device = torch.device("cpu"),
                           autocast_dtype: torch.dtype | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Class probabilities and the penultimate-layer embedding from ONE forward pass per image.

    ``autocast_dtype`` (e.g. bf16): the convolutions run in that precision (faster on a CPU with
    AMX / AVX512-BF16, docs/performance.md); probabilities and embeddings are fp32."""
    model, batch, cl = _inference_model(model, device)
    probs, feats = [], []
    for s in range(0, len(images), batch):
        x = _inputs(images[s : s + batch], device, cl)
        if autocast_dtype is None:
            f = model.embed(x)
        else:
            with torch.autocast(device_type=device.type, dtype=autocast_dtype):
                f = model.embed(x).float()
        probs.append(F.softmax(model.head(model.dropout(f)), dim=1).cpu().numpy())
        feats.append(f.cpu().numpy())
    if not probs:
        return np.zeros((0, model.head.out_features)), np.zeros((0, model.head.in_features))
    return np.concatenate(probs), np.concatenate(feats)


@torch.no_grad()
def embed(model: SmallCNN, images: np.ndarray, device: torch.device = torch.device("cpu")) -> np.ndarray:
    model, batch, cl = _inference_model(model, device)
    out = [model.embed(_inputs(images[s : s + batch], device, cl)).cpu().numpy() for s in range(0, len(images), batch)]
    return np.concatenate(out)


def per_class_accuracy(pred: np.ndarray, labels: np.ndarray, num_classes: int) -> list[float | None]:
    return [float((pred[labels == c] == c).mean()) if (labels == c).any() else None for c in range(num_classes)]



def mixing_weights(is_synthetic: np.ndarray, share: float | None,
                   labels: np.ndarray | None = None) -> np.ndarray | None:
    """Per-image draw weights so that synthetic images make up ``share`` of each batch.

    With ``labels`` (class indices), the share is taken *within each class*: a class keeps the draw
    mass its real images have in the real set, and its synthetic images take ``share`` of it (all
    of it stays real where the class has no synthetic image). The synthetic images then never
    change how often each class is drawn -- an uneven acceptance (e.g. 79 samples of one digit and
    none of another) does not tilt the classifier's class prior."""
    if share is None or not is_synthetic.any() or is_synthetic.all():
        return None
    if labels is None:
        n_syn, n_real = int(is_synthetic.sum()), int((~is_synthetic).sum())
        return np.where(is_synthetic, share / n_syn, (1 - share) / n_real)
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError("class-balanced mixing needs class indices, not soft labels")
    k = int(labels.max()) + 1
    real_counts = np.bincount(labels[~is_synthetic], minlength=k)
    syn_counts = np.bincount(labels[is_synthetic], minlength=k)
    mass = real_counts / real_counts.sum()  # the real set's class frequencies
    real_part = np.where(syn_counts > 0, 1.0 - share, 1.0) * mass
    syn_part = np.where(syn_counts > 0, share, 0.0) * mass
    w = np.where(is_synthetic, syn_part[labels] / np.maximum(syn_counts[labels], 1),
                 real_part[labels] / np.maximum(real_counts[labels], 1))
    return w / w.sum()


def train_downstream(real_x: np.ndarray, real_y: np.ndarray, num_classes: int, spec: ClassifierSpec, seed: int,
                     device: torch.device, classical: ClassicalConfig | None = None,
                     syn_x: np.ndarray | None = None, syn_y: np.ndarray | None = None,
                     share: float | None = None, make_model: ModelFactory | None = None,
                     class_balanced: bool = False) -> nn.Module:
    """The one downstream model every part of the pipeline trains: real images, optionally with
    classical augmentation (``classical``), optionally with synthetic images drawn at ``share`` of
    each batch (``None``: in proportion to their count; 0: no synthetic at all). ``syn_y`` may be
    soft labels ``(N, num_classes)``; the real images then count as one-hot.

    Used by the label filter (with the default :class:`SmallCNN`), and by the tuner,
    cross-fitting, the evaluation's four variants and the filter ablation with the network
    ``merge.tune_model`` / ``crossfit.model`` / ``evaluate.model`` names (``make_model``:
    augment/downstream/models.py; the utility benchmark also uses it to check a result on other
    classifier families)."""
    x, y, w = real_x, real_y, None
    if syn_x is not None and syn_y is not None and len(syn_x) and (share is None or share > 0):
        x = np.concatenate([real_x, syn_x])
        if syn_y.ndim == 2 and real_y.ndim == 1:  # soft synthetic labels: the real ones one-hot
            real_y = np.eye(num_classes, dtype=np.float32)[real_y]
        y = np.concatenate([real_y, syn_y])
        is_syn = np.r_[np.zeros(len(real_x), bool), np.ones(len(syn_x), bool)]
        hard = syn_y.ndim == 1
        w = mixing_weights(is_syn, share, np.concatenate([real_y, syn_y]) if class_balanced and hard else None)
    aug = classical_augmentation(classical, seed) if classical is not None else None
    return train_classifier(x, y, num_classes, spec, seed, augment=aug, device=device, sample_weights=w,
                            make_model=make_model)
