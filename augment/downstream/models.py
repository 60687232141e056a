"""Which downstream classifier the share is chosen with and the result is measured on.

Synthetic data that helps one classifier can cost another: on real 28x28 MNIST digits at 10 per
class, 1,000 samples per class merged at share 0.25 cost the pipeline's SmallCNN 0.23 points and
gave a pixel MLP +0.59 and a LeNet +0.33 (``docs/results.md``). So ``crossfit.model`` and
``evaluate.model`` name the classifier a user will actually train:

* ``smallcnn`` (default): :class:`augment.downstream.classifier.SmallCNN` (batch norm, width
  ``evaluate.width``);
* ``lenet``: :class:`LeNet` (LeNet-5's layout, no batch norm);
* ``mlp``: :class:`PixelMLP` (two hidden layers on the raw pixels);
* ``package.module:function``: the user's own ``function(in_channels, num_classes, size)`` that
  returns an untrained ``torch.nn.Module`` mapping ``(B, C, H, W)`` floats in [-1, 1] to logits.

Every choice trains with the same recipe (steps, batch, optimiser, classical augmentation,
seeds: :func:`augment.downstream.classifier.train_downstream`). The label filter and the quality
metrics keep the SmallCNN: they need a good classifier of the real images, not the user's.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

import torch
import torch.nn as nn

from augment.config import import_model_factory
from augment.downstream.classifier import ModelFactory
from augment.errors import AugmentError, ConfigError


class PixelMLP(nn.Module):
    """A two-hidden-layer perceptron on the raw pixels (no convolution, no batch norm). An image
    that is not ``size`` x ``size`` (``size`` is its shorter side) is area-averaged to that first."""

    def __init__(self, in_channels: int, num_classes: int, size: int, hidden: int = 256):
        super().__init__()
        # (identity for size x size images)
        self.net = nn.Sequential(nn.AdaptiveAvgPool2d((size, size)), nn.Flatten(),
                                 nn.Linear(in_channels * size * size, hidden), nn.ReLU(),
                                 nn.Dropout(0.3), nn.Linear(hidden, hidden), nn.ReLU(), nn.Dropout(0.3),
                                 nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class LeNet(nn.Module):
    """LeNet-5's layout (two 5x5 convolutions, fixed widths 6 and 16, two fully connected layers)
    with ReLU and max-pooling, and no batch norm. For an image that is not square (``size``: its
    shorter side) the last feature map is area-averaged to the square one's size."""

    def __init__(self, in_channels: int, num_classes: int, size: int):
        super().__init__()
        s = size // 2 // 2
        self.net = nn.Sequential(nn.Conv2d(in_channels, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.Conv2d(6, 16, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
                                 nn.AdaptiveAvgPool2d((s, s)), nn.Flatten(),  # (identity when square)
                                 nn.Linear(16 * s * s, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                                 nn.Linear(84, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


# Built-in families besides the default SmallCNN (which train_downstream builds itself, at the
# recipe's width); the names config.MODEL_NAMES accepts.
BUILTIN_MODELS: dict[str, ModelFactory] = {"mlp": PixelMLP, "lenet": LeNet}
DEFAULT_MODEL = "smallcnn"


def resolve_model(spec: str, param: str = "evaluate.model") -> ModelFactory | None:
    """The factory ``spec`` names; ``None`` for the default SmallCNN. A user path is imported here,
    so a missing module or attribute fails with ``param`` named, before any training starts."""
    if spec == DEFAULT_MODEL:
        return None
    if spec in BUILTIN_MODELS:
        return BUILTIN_MODELS[spec]
    return import_model_factory(param, spec)  # checks the name's syntax first


def check_model_builds(spec: str, param: str, in_channels: int, num_classes: int, size: int,
                       height: int | None = None, width: int | None = None) -> ModelFactory | None:
    """Build the model once on a dummy batch of the images' real shape (``height`` x ``width``,
    default ``size`` x ``size``): a factory that fails, returns no module or maps to the wrong
    output shape is reported with ``param`` named, before any training starts. Returns the
    checked factory (:func:`resolve_model`'s: ``None`` for the default SmallCNN)."""
    height, width = height or size, width or size
    factory = resolve_model(spec, param)
    if factory is None:
        return None
    try:
        model = factory(in_channels, num_classes, size)
    except Exception as exc:
        raise ConfigError(f"{param} = {spec!r}: building the model for {in_channels} channel(s), {num_classes} "
                          f"classes, size {size} failed: {type(exc).__name__}: {exc}") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{param} = {spec!r} returned {type(model).__name__}, not a torch.nn.Module")
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, in_channels, height, width))  # a throwaway instance
    except Exception as exc:
        raise ConfigError(f"{param} = {spec!r}: the model fails on a (2, {in_channels}, {height}, {width}) batch: "
                          f"{type(exc).__name__}: {exc}") from exc
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ConfigError(f"{param} = {spec!r}: the model maps a (2, {in_channels}, {height}, {width}) batch to "
                          f"{shape}, expected logits of shape (2, {num_classes})")
    return factory


def _raised_in(exc: BaseException, package: str) -> bool:
    """Whether a frame of ``exc``'s traceback runs code of ``package`` or one of its modules."""
    tb = exc.__traceback__
    while tb is not None:
        name = tb.tb_frame.f_globals.get("__name__", "")
        if name == package or name.startswith(package + "."):
            return True
        tb = tb.tb_next
    return False


def _out_of_memory(exc: BaseException) -> bool:
    """torch's out-of-memory errors: ``torch.OutOfMemoryError`` on CUDA, a RuntimeError from
    the CPU allocator -- the machine's limit, not a fault of the user's model."""
    oom = getattr(torch, "OutOfMemoryError", None)
    if oom is not None and isinstance(exc, oom):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text or "can't allocate memory" in text)


@contextmanager
def user_model_errors(spec: str, param: str) -> Iterator[None]:
    """Report an error raised while training or scoring the user's own classifier (``param`` =
    ``package.module:function``) as a :class:`ConfigError` naming ``param``, not a traceback from
    inside the pipeline. Only errors raised in the user's code are wrapped (a frame of the user's
    top-level package on the traceback, e.g. their ``forward``); the pipeline's own errors
    (:class:`AugmentError`, out of memory, a bug) and the built-in models' pass through unchanged."""
    if spec == DEFAULT_MODEL or spec in BUILTIN_MODELS:
        yield
        return
    package = spec.split(":", 1)[0].split(".", 1)[0]
    try:
        yield
    except (AugmentError, MemoryError):
        raise
    except Exception as exc:  # noqa: BLE001 -- anything the user's code raises
        if not _raised_in(exc, package) or _out_of_memory(exc):
            raise
        raise ConfigError(f"{param} = {spec!r}: training or scoring your model failed: {type(exc).__name__}: "
                          f"{exc}") from exc
