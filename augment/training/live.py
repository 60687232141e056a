"""Live training metrics through dvclive: per-step losses, the ADA strength ``aug_p`` and the
sample grids as images, written as they happen (``dvc exp run`` and ``dvc plots show`` read them).

dvclive is a declared dependency but optional at import: without it (or when it cannot start,
e.g. in a git repository with no commit yet) :class:`LiveLogger` writes the same files itself, so
the outputs ``dvc.yaml`` declares always exist; only DVC's live-experiment signalling is lost.
``metrics/train_log.csv`` is written as before.

``Live(dir, dvcyaml=False, save_dvc_exp=False)``: dvclive neither rewrites the project's
``dvc.yaml`` (the plots are declared there by hand) nor creates a ``dvc.yaml`` in the current
directory, nor saves an experiment of its own; inside ``dvc exp run`` DVC itself records the
experiment. Layout (dvclive's): ``<dir>/metrics.json`` (the last step),
``<dir>/plots/metrics/<name>.tsv`` (one row per logged step), ``<dir>/plots/images/samples/
iter_<n>.png`` (the fixed-noise sample grid, one row per class).
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from augment.core.files import atomic_write_json

log = logging.getLogger(__name__)


def dvclive_available() -> bool:
    try:
        import dvclive  # noqa: F401
    except ImportError:
        return False
    return True


class _PlainFiles:
    """dvclive's file layout written without dvclive (not installed, or unable to start): the
    outputs ``dvc.yaml`` declares exist either way; only DVC's live-experiment signalling is lost."""

    def __init__(self, directory: Path, resume: bool):
        import json

        self.dir = directory
        if not resume and self.dir.exists():
            shutil.rmtree(self.dir)  # like Live(): a fresh run starts empty
        (self.dir / "plots" / "metrics").mkdir(parents=True, exist_ok=True)
        self.summary: dict[str, Any] = {}
        if resume and (self.dir / "metrics.json").is_file():
            try:
                self.summary = json.loads((self.dir / "metrics.json").read_text())
            except ValueError:
                self.summary = {}
        if not (self.dir / "metrics.json").is_file():
            atomic_write_json(self.dir / "metrics.json", self.summary)

    def log(self, row: dict[str, float]) -> None:
        step = int(row["iteration"])
        for key, value in row.items():
            if key == "iteration":
                continue
            tsv = self.dir / "plots" / "metrics" / f"{key}.tsv"
            new = not tsv.is_file()
            with open(tsv, "a", encoding="utf-8") as fh:
                if new:
                    fh.write(f"step\t{key}\n")
                fh.write(f"{step}\t{float(value)!r}\n")
            self.summary[key] = float(value)
        self.summary["step"] = step
        atomic_write_json(self.dir / "metrics.json", self.summary)

    def image(self, name: str, img: np.ndarray) -> None:
        from augment.core.images import png_bytes

        path = self.dir / "plots" / "images" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(png_bytes(img if img.ndim == 3 else img[..., None]))


class LiveLogger:
    """``on_log`` / ``on_grid`` callbacks for :func:`augment.training.loop.train_generator`.

    ``resume=True`` keeps what an interrupted run already logged; otherwise the directory starts
    empty. The train stage always starts it empty: a resumed :func:`train_generator` replays the
    history in its resume state through the callbacks, which also holds when ``dvc repro`` deleted
    the folder before the retry.
    """

    def __init__(self, directory: str | Path, resume: bool = False, enabled: bool = True):
        self.directory = Path(directory)
        self.live: Any = None
        self.files: _PlainFiles | None = None
        if not enabled:
            return
        self.directory.parent.mkdir(parents=True, exist_ok=True)
        try:
            from dvclive import Live
        except ImportError:
            log.info("dvclive is not installed: live metrics written without it (same files)")
            self.files = _PlainFiles(self.directory, resume)
            return
        # Quiet: dvclive logs "Logging to experiment ..." at INFO on every start.
        logging.getLogger("dvclive").setLevel(logging.WARNING)
        try:
            self.live = Live(str(self.directory), resume=resume, report=None, dvcyaml=False, save_dvc_exp=False)
        except Exception as exc:  # noqa: BLE001 -- live metrics are optional; training must not fail on them
            # e.g. dvclive 3.49 raises SCMError("Empty git repo") in a repository with no commit yet
            log.warning("dvclive could not start (%s: %s); live metrics written without it (same files)",
                        type(exc).__name__, exc)
            self.files = _PlainFiles(self.directory, resume)

    def on_log(self, row: dict[str, float]) -> None:
        if self.files is not None:
            self.files.log(row)
        if self.live is None:
            return
        self.live.step = int(row["iteration"])
        for key, value in row.items():
            if key != "iteration":
                self.live.log_metric(key, float(value))
        self.live.next_step()  # writes metrics.json and the .tsv rows now, not at the end

    def on_grid(self, iteration: int, grid: np.ndarray) -> None:
        name = f"samples/iter_{iteration:07d}.png"
        if self.files is not None:
            self.files.image(name, grid)
        if self.live is None:
            return
        img = grid[..., 0] if grid.ndim == 3 and grid.shape[2] == 1 else grid  # PIL: (H, W) or (H, W, 3)
        self.live.log_image(name, np.ascontiguousarray(img))

    def end(self) -> None:
        if self.live is not None:
            live, self.live = self.live, None
            try:
                live.end()
            except Exception as exc:  # noqa: BLE001 -- live metrics are optional; training must not fail on them
                # e.g. two DDP ranks' dvclive both removing .dvc/tmp/exps/run/DVCLIVE_STEP_COMPLETED
                log.warning("dvclive could not end cleanly (%s: %s); the metrics files are already written",
                            type(exc).__name__, exc)

    def __enter__(self) -> "LiveLogger":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.end()
