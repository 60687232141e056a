"""PNG pictures a person opens: sample grids, score histograms, loss curves.

matplotlib with the non-interactive Agg backend; every file is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Sequence

import matplotlib
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from augment.core.files import atomic_write_bytes  # noqa: E402
from augment.core.images import png_bytes  # noqa: E402

matplotlib.use("Agg")


def save_png(arr: np.ndarray, path: str | Path) -> None:
    atomic_write_bytes(path, png_bytes(arr))


def _save_fig(fig, path: str | Path) -> None:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def score_histogram(conf: np.ndarray, labels: np.ndarray, accepted: np.ndarray,
                    class_names: Sequence[str], path: str | Path,
                    title: str = "discriminator confidence per class") -> None:
    """Per-class histograms of the filter's rank score, accepted vs rejected; ``title`` says
    which score it is (calibrated P(real), uncalibrated sigmoid, label confidence)."""
    k = len(class_names)
    cols = min(k, 5)
    rows = -(-k // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.0 * rows), squeeze=False)
    bins = np.linspace(0, 1, 26)
    for c, name in enumerate(class_names):
        ax = axes[c // cols][c % cols]
        m = labels == c
        ax.hist(conf[m & accepted], bins=bins, color="tab:green", alpha=0.7, label="accepted")
        ax.hist(conf[m & ~accepted], bins=bins, color="tab:red", alpha=0.6, label="rejected")
        ax.set_title(str(name), fontsize=8)
        ax.tick_params(labelsize=6)
    for j in range(k, rows * cols):
        axes[j // cols][j % cols].axis("off")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    fig.suptitle(title, fontsize=9, y=1.0, va="bottom")  # above the panels' titles, not over them
    _save_fig(fig, path)


def loss_curves(log: Sequence[dict], path: str | Path) -> None:
    if not log:
        return
    # one order whatever order the rows' keys come in (a resumed run restores its log with sorted
    # keys): the same losses give the same picture, so DVC sees the same models/ folder
    keys = sorted({k for r in log for k in r} - {"iteration"})
    if not keys:
        return
    it = [r["iteration"] for r in log]
    # One panel per series, each on its own scale: on a shared axis the VAE's KL (~100) flattened
    # every other loss into a line at 0.
    cols = min(len(keys), 3)
    rows = -(-len(keys) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.0 * cols, 1.9 * rows), squeeze=False, sharex=True)
    for j, k in enumerate(keys):
        ax = axes[j // cols][j % cols]
        ax.plot(it, [r.get(k, np.nan) for r in log], linewidth=1)
        ax.set_title(k, fontsize=8)
        ax.tick_params(labelsize=6)
        ax.grid(alpha=0.3)
    for j in range(len(keys), rows * cols):
        axes[j // cols][j % cols].axis("off")
    for col in range(cols):  # the lowest panel of each column carries the iteration axis
        lowest = max(r for r in range(rows) if r * cols + col < len(keys))
        ax = axes[lowest][col]
        ax.tick_params(labelbottom=True)
        ax.set_xlabel("iteration", fontsize=7)
    fig.tight_layout()
    _save_fig(fig, path)
