"""Prefect flow: the same stage functions as ``dvc repro``, as tasks, with the same params.

Run as a script (``python flows/augment_flow.py --params params.yaml``), or call
``augment_pipeline(...)`` from another flow: it then runs as a subflow and returns an
:class:`AugmentResult` (where the augmented dataset is, its manifest, and the metrics).
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from prefect import flow, get_run_logger, task  # noqa: E402

from augment import stages  # noqa: E402
from augment.config import PipelineConfig, load_params  # noqa: E402
from augment.stages import Paths  # noqa: E402


@dataclass
class AugmentResult:
    """What a consumer of the pipeline gets back (small and JSON-able: paths + metrics)."""

    augmented_dir: str
    manifest: str
    checkpoint: str
    metrics: dict[str, Any] = field(default_factory=dict)
    filter_report: dict[str, Any] = field(default_factory=dict)


@task(name="prepare", retries=1)
def prepare_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Validate and split the raw dataset."""
    return stages.run_prepare(cfg.prepare, paths)


@task(name="train", retries=1)
def train_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Train the conditional generator on the train split (resumes after a crash)."""
    return stages.run_train(cfg.train, paths, progress=False)


@task(name="generate", retries=1)
def generate_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Generate samples per class, scored by the discriminator."""
    return stages.run_generate(cfg.generate, paths, progress=False)


@task(name="filter", retries=1)
def filter_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Accept samples by discriminator confidence."""
    return stages.run_filter(cfg.filter, paths)


@task(name="merge", retries=1)
def merge_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Merge real train images and accepted synthetic ones."""
    return stages.run_merge(cfg.merge, paths)


@task(name="evaluate", retries=0)
def evaluate_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Measure downstream accuracy for the four variants on the test split."""
    return stages.run_evaluate(cfg.evaluate, paths, progress=False)


@flow(name="augment-pipeline")
def augment_pipeline(params_path: str = "params.yaml", workdir: str = ".", evaluate: bool = True) -> AugmentResult:
    """prepare -> train -> generate -> filter -> merge [-> evaluate], rooted at ``workdir``."""
    logger = get_run_logger()
    cfg = load_params(params_path)
    paths = Paths().rooted(workdir)
    prepare_task(cfg, paths)
    train_task(cfg, paths)
    generate_task(cfg, paths)
    report = filter_task(cfg, paths)
    merged = merge_task(cfg, paths)
    logger.info("merged %d real + %d synthetic images into %s", merged["real"], merged["synthetic"], paths.augmented)
    metrics = evaluate_task(cfg, paths) if evaluate else {}
    return AugmentResult(
        augmented_dir=paths.augmented,
        manifest=str(Path(paths.augmented) / "manifest.csv"),
        checkpoint=paths.checkpoint,
        metrics=metrics,
        filter_report=report,
    )


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description="Run the augmentation pipeline as a Prefect flow")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--no-evaluate", action="store_true")
    a = ap.parse_args()
    result = augment_pipeline(params_path=a.params, workdir=a.workdir, evaluate=not a.no_evaluate)
    print(result)
