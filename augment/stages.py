"""Stage adapters: read inputs from disk, call the pure library functions, write outputs atomically.

The CLI (and so ``dvc.yaml``) and the Prefect flow both call these, with the same typed configs.
Paths are arguments (written once, in ``dvc.yaml`` / the flow's parameters), never hard-coded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from augment.config import EvaluateConfig, FilterConfig, GenerateConfig, MergeConfig, PrepareConfig, TrainConfig
from augment.io import atomic_directory, atomic_write_csv, atomic_write_json, atomic_write_text


@dataclass(frozen=True)
class Paths:
    """Where each stage reads and writes. Defaults match ``dvc.yaml``."""

    prepared: str = "data/prepared"
    model_dir: str = "models"
    generated: str = "data/generated"
    filtered: str = "data/filtered"
    augmented: str = "data/augmented"
    metrics_dir: str = "metrics"
    resume: str = "runs/resume/train_state.safetensors"

    def rooted(self, root: str | Path) -> "Paths":
        root = Path(root)
        return Paths(**{k: str(root / v) for k, v in self.__dict__.items()})

    @property
    def checkpoint(self) -> str:
        return str(Path(self.model_dir) / "generator.safetensors")


def _require(path: Path, stage: str) -> None:
    """A stage's input must exist: say which stage makes it instead of a FileNotFoundError."""
    if not path.is_file():
        from augment.io import DataError

        raise DataError(f"{path} not found: run the {stage} stage first (augment {stage})")


def run_prepare(cfg: PrepareConfig, paths: Paths = Paths()) -> dict[str, Any]:
    from augment.data import prepare_dataset, save_prepared

    ds, report = prepare_dataset(cfg)
    save_prepared(ds, report, paths.prepared)
    return report


def run_train(cfg: TrainConfig, paths: Paths = Paths(), progress: bool = True) -> dict[str, Any]:
    from augment.checkpoint import save_checkpoint
    from augment.data import load_prepared
    from augment.plots import loss_curves, save_png
    from augment.train import train_generator

    ds = load_prepared(paths.prepared)
    x, y = ds.subset("train")  # the generator sees the TRAIN split only -- never val, never test
    Path(paths.resume).parent.mkdir(parents=True, exist_ok=True)
    result = train_generator(x, y, ds.class_names, cfg, resume_path=paths.resume, progress=progress)
    with atomic_directory(paths.model_dir) as tmp:
        save_checkpoint(tmp / "generator.safetensors", result.trainer.modules(), cfg, ds.image_shape,
                        ds.class_names, extra={"iteration": cfg.iterations, "train_images": int(len(x))})
        last = max(result.grids)
        save_png(result.grids[last], tmp / "sample_grid.png")
        (tmp / "samples").mkdir()
        for it, grid in sorted(result.grids.items()):
            save_png(grid, tmp / "samples" / f"iter_{it:07d}.png")
        loss_curves(result.log, tmp / "loss_curves.png")
    keys = sorted({k for r in result.log for k in r})
    keys = ["iteration"] + [k for k in keys if k != "iteration"]
    atomic_write_csv(Path(paths.metrics_dir) / "train_log.csv", result.log, keys)
    Path(paths.resume).unlink(missing_ok=True)  # finished: the resume state is no longer needed
    return {"checkpoint": paths.checkpoint, "iterations": cfg.iterations, "resumed_from": result.resumed_from,
            "final": result.log[-1] if result.log else {}}


def run_generate(cfg: GenerateConfig, paths: Paths = Paths(), progress: bool = True) -> dict[str, Any]:
    from augment.checkpoint import Checkpoint
    from augment.data import load_prepared
    from augment.generate import generate_samples

    if Path(paths.prepared, "dataset.npz").is_file():
        ds = load_prepared(paths.prepared)
        Checkpoint(paths.checkpoint).check_compatible(ds.image_shape, ds.class_names)
    return generate_samples(paths.checkpoint, paths.generated, cfg, progress=progress)


def run_filter(cfg: FilterConfig, paths: Paths = Paths()) -> dict[str, Any]:
    from augment.filter import collect_grid_samples, filter_samples, save_filter_output

    _require(Path(paths.generated) / "generate.json", "generate")
    ctx = filter_context(cfg, paths)
    decisions, report = filter_samples(paths.generated, cfg, ctx)
    class_names = json.loads((Path(paths.generated) / "generate.json").read_text())["class_names"]
    grids = collect_grid_samples(paths.generated, decisions, cfg.grid_per_class, len(class_names))
    save_filter_output(decisions, report, paths.filtered, class_names, grids)
    return report


def filter_context(cfg: FilterConfig, paths: Paths):
    """TRAIN and VAL images for the filters (never the test split), and the checkpoint."""
    from augment.data import load_prepared
    from augment.filter import FilterContext

    needs_data = bool(cfg.filters)
    if needs_data:
        _require(Path(paths.prepared) / "dataset.npz", "prepare")
        ds = load_prepared(paths.prepared)
        tx, ty = ds.subset("train")
        vx, vy = ds.subset("val")
        k = ds.num_classes
    else:
        import numpy as np

        tx = vx = np.zeros((0, 1, 1, 1), np.uint8)
        ty = vy = np.zeros(0, np.int64)
        k = len(json.loads((Path(paths.generated) / "generate.json").read_text())["class_names"])
    ckpt = paths.checkpoint if "discriminator" in cfg.filters else None
    if ckpt is not None:
        _require(Path(ckpt), "train")
    return FilterContext(tx, ty, vx, vy, k, ckpt)


def run_merge(cfg: MergeConfig, paths: Paths = Paths()) -> dict[str, Any]:
    from augment.data import load_prepared
    from augment.filter import load_decisions
    from augment.merge import merge_dataset

    ds = load_prepared(paths.prepared)
    _require(Path(paths.generated) / "generate.json", "generate")
    _require(Path(paths.filtered) / "decisions.npz", "filter")
    summary = merge_dataset(ds, paths.generated, load_decisions(paths.filtered), paths.augmented, cfg)
    curve = summary.pop("tuning_curve")
    # The tuning curve (VAL accuracy per grid point) is a DVC plot; empty when quota is not tuned.
    keys = ["point", "synthetic_share", "fraction", "synthetic", "val_accuracy", "val_nll"]
    atomic_write_csv(Path(paths.metrics_dir) / "tuning.csv", curve, keys)
    return summary


def run_evaluate(cfg: EvaluateConfig, paths: Paths = Paths(), progress: bool = True) -> dict[str, Any]:
    from augment.data import load_prepared
    from augment.evaluate import evaluate_variants, format_table
    from augment.merge import load_augmented

    ds = load_prepared(paths.prepared)
    images, labels, synthetic, _ = load_augmented(paths.augmented)
    merge_summary_path = Path(paths.augmented) / "summary.json"
    merge_summary = json.loads(merge_summary_path.read_text()) if merge_summary_path.is_file() else {}
    if cfg.synthetic_share is None and merge_summary.get("synthetic_share") is not None:
        import dataclasses

        # the share the merge stage chose (tuned on VAL when merge.quota is "tuned")
        cfg = dataclasses.replace(cfg, synthetic_share=merge_summary["synthetic_share"])
    # merge.refit_with_val: every variant trains on the merged real images (train + val)
    real = (images[~synthetic], labels[~synthetic]) if "val" in merge_summary.get("real_splits", []) else None
    metrics = evaluate_variants(ds, images[synthetic], labels[synthetic], cfg, progress=progress, real=real)
    metrics["synthetic_share"] = cfg.synthetic_share
    table = format_table(metrics)
    if cfg.ablation and Path(paths.filtered, "decisions.npz").is_file():
        from augment.ablation import format_ablation, run_ablation
        from augment.filter import load_decisions

        metrics["ablation"] = run_ablation(ds, paths.generated, load_decisions(paths.filtered), merge_summary,
                                           cfg, progress=progress, real=real)
        table += "\n\n" + format_ablation(metrics["ablation"])
    if cfg.quality:  # FD, PRDC, CAS, diversity of the synthetic images (augment/quality.py)
        from augment.quality import evaluate_quality, format_quality

        metrics["quality"] = evaluate_quality(ds, images[synthetic], labels[synthetic], paths.generated, cfg)
        table += "\n\n" + format_quality(metrics["quality"])
    atomic_write_json(Path(paths.metrics_dir) / "evaluate.json", metrics)
    atomic_write_text(Path(paths.metrics_dir) / "evaluate.md", "```\n" + table + "\n```\n")
    print(table)
    return metrics
