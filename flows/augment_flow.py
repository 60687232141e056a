"""Prefect flow: the same stage functions as ``dvc repro``, as tasks, with the same params.

Run as a script (``python flows/augment_flow.py --params params.yaml``), or call
``augment_pipeline(...)`` from another flow: it then runs as a subflow and returns an
:class:`AugmentResult` (where the augmented dataset is, its manifest, and the metrics).

* Every task retries on failure (training resumes from its last resumable state).
* Every task is cached on what it reads (input file hashes + its params group + its code, see
  :mod:`flows.caching`): a re-run with unchanged data and params shows the stages as ``Cached``
  and does no work; a deleted or overwritten output makes that stage (and what depends on its
  bytes) run again.
* Each run publishes artifacts a person opens in the Prefect UI: the evaluation table
  (``augment-evaluation``), the per-class acceptance table (``augment-acceptance``), the sample
  grid and the score histogram (``augment-sample-grid``, ``augment-score-histogram``: embedded
  images, plus ``file://`` links to the PNGs).
* ``dask_address`` / ``dask_workers`` shard the generate step over a Dask cluster
  (:mod:`flows.scale`); the outputs are byte-identical to the single-process run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run as a script from anywhere
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import (  # noqa: E402
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from augment import stages  # noqa: E402
from augment.config import PipelineConfig, load_params  # noqa: E402
from augment.stages import Paths  # noqa: E402
from flows import caching  # noqa: E402


@dataclass(frozen=True)
class AugmentResult:
    """What a consumer of the pipeline gets back: small, typed, JSON-able (paths + numbers).

    Never arrays or models -- read the data with :meth:`load` or from the paths.
    """

    augmented_dir: str
    """Folder of class sub-folders with ``real_*.png`` and ``syn_*.png`` (the merged training set)."""
    manifest: str
    """``<augmented_dir>/manifest.csv``: one row per image (source, class, score, checkpoint sha256, seed, ...)."""
    checkpoint: str
    """The generator checkpoint (safetensors) the synthetic images came from."""
    checkpoint_sha256: str
    """sha256 of ``checkpoint``: ties every synthetic image to the exact weights."""
    class_names: list[str]
    """Class index -> name, as in the manifest's ``label`` column."""
    real_images: int
    """Real TRAIN-split images in the merged set."""
    synthetic_images: int
    """Accepted synthetic images in the merged set."""
    filter_report: dict[str, Any] = field(default_factory=dict)
    """The filter stage's report: generated/accepted counts, per-class acceptance, mode."""
    metrics: dict[str, Any] = field(default_factory=dict)
    """``metrics/evaluate.json`` (test-split accuracies per variant); empty when ``evaluate=False``."""
    report: str | None = None
    """``metrics/evaluate.md`` (the evaluation table) when evaluated, else ``None``."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load(self):
        """``(images, labels, is_synthetic, manifest_rows)`` of the merged set."""
        from augment.merge import load_augmented

        return load_augmented(self.augmented_dir)


def _log(msg: str, *args: Any) -> None:
    get_run_logger().info(msg, *args)


def _done(stage: str, cfg: PipelineConfig, paths: Paths) -> None:
    caching.write_stamp(stage, cfg, paths)


# Results are the stages' small JSON reports (never arrays or models), persisted for the cache.
_TASK = dict(persist_result=True, result_serializer="json")


@task(name="prepare", retries=2, retry_delay_seconds=2, **_TASK)
def prepare_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Validate and split the raw dataset."""
    report = stages.run_prepare(cfg.prepare, paths)
    _log("prepared %d classes, image shape %s", report["num_classes"], report["image_shape"])
    _done("prepare", cfg, paths)
    return report


@task(name="train", retries=2, retry_delay_seconds=2, **_TASK)
def train_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Train the conditional generator on the train split (a retry resumes from runs/resume/)."""
    out = stages.run_train(cfg.train, paths, progress=False)
    _log("trained %s for %d iterations (resumed from %d) -> %s", cfg.train.family, out["iterations"],
         out["resumed_from"], out["checkpoint"])
    _done("train", cfg, paths)
    return out


@task(name="generate", retries=2, retry_delay_seconds=2, **_TASK)
def generate_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Generate samples per class, scored by the discriminator."""
    out = stages.run_generate(cfg.generate, paths, progress=False)
    _log("generated %d per class in %d shard(s) on %s", out["n_per_class"], out["num_shards"], out["device"])
    _done("generate", cfg, paths)
    return out


@task(name="filter", retries=2, retry_delay_seconds=2, **_TASK)
def filter_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Accept samples by discriminator confidence."""
    report = stages.run_filter(cfg.filter, paths)
    _log("filter (%s): accepted %d of %d", report["mode"], report["accepted"], report["generated"])
    _done("filter", cfg, paths)
    return report


@task(name="merge", retries=2, retry_delay_seconds=2, **_TASK)
def merge_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Merge real train images and accepted synthetic ones."""
    out = stages.run_merge(cfg.merge, paths)
    _log("merged %d real + %d synthetic images into %s", out["real"], out["synthetic"], paths.augmented)
    _done("merge", cfg, paths)
    return out


@task(name="evaluate", retries=1, retry_delay_seconds=2, **_TASK)
def evaluate_task(cfg: PipelineConfig, paths: Paths) -> dict:
    """Measure downstream accuracy for the four variants on the test split (its only use)."""
    metrics = stages.run_evaluate(cfg.evaluate, paths, progress=False)
    _log("evaluate: combined vs real %+.4f, combined vs classical %+.4f",
         metrics["delta"]["combined_vs_real"], metrics["delta"]["combined_vs_classical"])
    _done("evaluate", cfg, paths)
    return metrics


def _run_stage(task_fn, stage: str, cfg: PipelineConfig, paths: Paths) -> dict:
    """Call a stage task with its cache policy; force a re-run when its outputs changed on disk."""
    refresh = not caching.outputs_current(stage, cfg, paths)
    return task_fn.with_options(cache_policy=caching.stage_cache_policy(), refresh_cache=refresh)(cfg, paths)


# ------------------------------------------------------------------------------------ artifacts


def _embed_png(path: Path, alt: str, max_bytes: int = 400_000) -> str:
    """Markdown for a PNG: embedded as a data URI when small, always with a file:// link."""
    if not path.is_file():
        return f"*{alt}: {path} not found*"
    link = f"[{path.name}]({path.resolve().as_uri()})"
    data = path.read_bytes()
    if len(data) > max_bytes:
        return f"{alt}: {link} ({len(data) // 1024} KiB, not embedded)"
    return f"![{alt}](data:image/png;base64,{base64.b64encode(data).decode()})\n\n{link}"


def publish_artifacts(paths: Paths, filter_report: dict, evaluated: bool) -> None:
    """Artifacts a person opens in the Prefect UI (created on every run, cached or not)."""
    grid = Path(paths.model_dir) / "sample_grid.png"
    hist = Path(paths.filtered) / "score_histogram.png"
    create_markdown_artifact(key="augment-sample-grid", description="Generator samples, one row per class",
                             markdown="## Sample grid (one row per class)\n\n" + _embed_png(grid, "sample grid")
                             + "\n\n" + _embed_png(Path(paths.model_dir) / "loss_curves.png", "loss curves"))
    create_markdown_artifact(key="augment-score-histogram", description="Discriminator confidence per class",
                             markdown="## Discriminator confidence, accepted vs rejected\n\n" + _embed_png(hist, "histogram"))
    for key, p in (("augment-sample-grid-file", grid), ("augment-score-histogram-file", hist)):
        if p.is_file():
            create_link_artifact(key=key, link=p.resolve().as_uri(), link_text=p.name)
    rows = [{"class": name, **{k: (round(v, 4) if isinstance(v, float) else v) for k, v in pc.items()}}
            for name, pc in filter_report.get("per_class", {}).items()]
    create_table_artifact(key="augment-acceptance", table=rows,
                          description=f"Filter ({filter_report.get('mode')}): accepted "
                                      f"{filter_report.get('accepted')} of {filter_report.get('generated')}")
    if evaluated:
        md = Path(paths.metrics_dir) / "evaluate.md"
        table = md.read_text() if md.is_file() else "*metrics/evaluate.md missing*"
        create_markdown_artifact(key="augment-evaluation", description="Downstream test accuracy, four variants",
                                 markdown="## Downstream evaluation\n\n" + table + "\n\n"
                                 + _embed_png(hist, "score histogram"))


# ------------------------------------------------------------------------------------ the flow


@flow(name="augment-pipeline", log_prints=True)
def augment_pipeline(params_path: str = "params.yaml", workdir: str = ".", evaluate: bool = True,
                     dask_address: str | None = None, dask_workers: int = 0) -> AugmentResult:
    """prepare -> train -> generate -> filter -> merge [-> evaluate], rooted at ``workdir``.

    ``dask_address`` (``tcp://scheduler:8786``, an existing cluster whose workers see ``workdir``)
    or ``dask_workers`` (> 0: a LocalCluster of that many processes) shard the generate step
    over Dask workers; the output is byte-identical to the single-process run.
    """
    from augment.locking import workspace_lock

    cfg = load_params(params_path)
    # One run per workspace at a time (the same lock as the `augment` CLI): a second run is refused.
    with workspace_lock(workdir, what="prefect flow augment-pipeline"):
        return _pipeline(cfg, params_path, workdir, evaluate, dask_address, dask_workers)


def _pipeline(cfg: PipelineConfig, params_path: str, workdir: str, evaluate: bool, dask_address: str | None,
              dask_workers: int) -> AugmentResult:
    logger = get_run_logger()
    paths = Paths().rooted(workdir)
    n_stages = 6 if evaluate else 5
    progress = create_progress_artifact(0.0, key="augment-pipeline-progress", description="stages done")

    def done(k: int) -> None:
        update_progress_artifact(progress, 100.0 * k / n_stages)

    _run_stage(prepare_task, "prepare", cfg, paths)
    done(1)
    _run_stage(train_task, "train", cfg, paths)
    done(2)
    if dask_address or dask_workers > 0:
        from flows.scale import generate_sharded, sharded_flow

        sharded_flow(generate_sharded, dask_address, dask_workers)(params_path=params_path, workdir=workdir)
    else:
        _run_stage(generate_task, "generate", cfg, paths)
    done(3)
    report = _run_stage(filter_task, "filter", cfg, paths)
    done(4)
    merged = _run_stage(merge_task, "merge", cfg, paths)
    done(5)
    metrics = _run_stage(evaluate_task, "evaluate", cfg, paths) if evaluate else {}
    done(n_stages)
    publish_artifacts(paths, report, evaluate)
    gen_meta = json.loads((Path(paths.generated) / "generate.json").read_text())
    result = AugmentResult(
        augmented_dir=paths.augmented,
        manifest=str(Path(paths.augmented) / "manifest.csv"),
        checkpoint=paths.checkpoint,
        checkpoint_sha256=gen_meta["checkpoint_sha256"],
        class_names=list(merged["class_names"]),
        real_images=int(merged["real"]),
        synthetic_images=int(merged["synthetic"]),
        filter_report=report,
        metrics=metrics,
        report=str(Path(paths.metrics_dir) / "evaluate.md") if evaluate else None,
    )
    logger.info("augmented set: %d real + %d synthetic images in %s", result.real_images,
                result.synthetic_images, result.augmented_dir)
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the augmentation pipeline as a Prefect flow")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--dask-address", default=None, help="shard generate over an existing Dask cluster")
    ap.add_argument("--dask-workers", type=int, default=0, help="shard generate over a local Dask cluster")
    a = ap.parse_args(argv)
    result = augment_pipeline(params_path=a.params, workdir=a.workdir, evaluate=not a.no_evaluate,
                              dask_address=a.dask_address, dask_workers=a.dask_workers)
    print(json.dumps({k: v for k, v in result.to_dict().items() if k not in ("metrics", "filter_report")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
