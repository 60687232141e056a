"""Live training metrics through dvclive: per-step losses, the ADA strength ``aug_p`` and the
sample grids as images, written as they happen (``dvc exp run`` and ``dvc plots show`` read them).

dvclive is a declared dependency but optional at import: without it :class:`LiveLogger` does
nothing and ``metrics/train_log.csv`` (always written) still holds every logged row.

``Live(dir, dvcyaml=False, save_dvc_exp=False)``: dvclive neither rewrites the project's
``dvc.yaml`` (the plots are declared there by hand) nor creates a ``dvc.yaml`` in the current
directory, nor saves an experiment of its own; inside ``dvc exp run`` DVC itself records the
experiment. Layout (dvclive's): ``<dir>/metrics.json`` (the last step),
``<dir>/plots/metrics/<name>.tsv`` (one row per logged step), ``<dir>/plots/images/samples/
iter_<n>.png`` (the fixed-noise sample grid, one row per class).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)


def dvclive_available() -> bool:
    try:
        import dvclive  # noqa: F401
    except ImportError:
        return False
    return True


class LiveLogger:
    """``on_log`` / ``on_grid`` callbacks for :func:`augment.training.loop.train_generator`.

    ``resume=True`` keeps what an interrupted run already logged (training resumes from its
    resume state); otherwise the directory starts empty.
    """

    def __init__(self, directory: str | Path, resume: bool = False, enabled: bool = True):
        self.directory = Path(directory)
        self.live: Any = None
        if not enabled:
            return
        try:
            from dvclive import Live
        except ImportError:
            log.info("dvclive is not installed: no live training metrics (metrics/train_log.csv is still written)")
            return
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        # Quiet: dvclive logs "Logging to experiment ..." at INFO on every start.
        logging.getLogger("dvclive").setLevel(logging.WARNING)
        try:
            self.live = Live(str(self.directory), resume=resume, report=None, dvcyaml=False, save_dvc_exp=False)
        except Exception as exc:  # noqa: BLE001 -- live metrics are optional; training must not fail on them
            # e.g. dvclive 3.49 raises SCMError("Empty git repo") in a repository with no commit yet
            log.warning("dvclive disabled for this run (%s: %s); metrics/train_log.csv is still written",
                        type(exc).__name__, exc)
            self.live = None

    def on_log(self, row: dict[str, float]) -> None:
        if self.live is None:
            return
        self.live.step = int(row["iteration"])
        for key, value in row.items():
            if key != "iteration":
                self.live.log_metric(key, float(value))
        self.live.next_step()  # writes metrics.json and the .tsv rows now, not at the end

    def on_grid(self, iteration: int, grid: np.ndarray) -> None:
        if self.live is None:
            return
        img = grid[..., 0] if grid.ndim == 3 and grid.shape[2] == 1 else grid  # PIL: (H, W) or (H, W, 3)
        self.live.log_image(f"samples/iter_{iteration:07d}.png", np.ascontiguousarray(img))

    def end(self) -> None:
        if self.live is not None:
            self.live.end()
            self.live = None

    def __enter__(self) -> "LiveLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()
