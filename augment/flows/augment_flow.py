"""Prefect flow: the same stage functions as ``dvc repro``, as tasks, with the same params.

Run as a script (``python flows/augment_flow.py --params params.yaml``), or call
``augment_pipeline(...)`` from another flow: it then runs as a subflow and returns an
:class:`AugmentResult` (where the augmented dataset is, its manifest, and the metrics).

* A task retries only a transient failure (:func:`transient_only`): bad input, bad params, a
  damaged file or a held lock (:class:`augment.errors.AugmentError`) fail at once. A retried
  ``train`` resumes from its last resumable state.
* ``overrides={"filter.top_fraction": 0.3}`` changes parameters for one run, validated as
  ``params.yaml`` is; every path (``params_path``, the dataset folders, the outputs) is rooted at
  ``workdir``, whatever the caller's working directory.
* Every task is cached on what it reads (input file hashes + its params group + its code, see
  :mod:`augment.flows.caching`): a re-run with unchanged data and params shows the stages as ``Cached``
  and does no work; a deleted or overwritten output makes that stage (and what depends on its
  bytes) run again.
* Each run publishes artifacts a person opens in the Prefect UI: the evaluation table
  (``augment-evaluation``), the per-class acceptance table (``augment-acceptance``), the sample
  grid and the score histogram (``augment-sample-grid``, ``augment-score-histogram``: embedded
  images, plus ``file://`` links to the PNGs).
* ``dask_address`` / ``dask_workers`` shard the generate step over a Dask cluster
  (:mod:`augment.flows.scale`); the outputs are byte-identical to the single-process run.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A temporary Prefect server (no PREFECT_API_URL) needs more than Prefect's default 20 s to start on a
# small loaded machine; effective when this module is imported before prefect (scripts/env.sh sets it too).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, task  # noqa: E402
from prefect.artifacts import (  # noqa: E402
    create_link_artifact,
    create_markdown_artifact,
    create_progress_artifact,
    create_table_artifact,
    update_progress_artifact,
)

from augment.config import PipelineConfig, load_config, root_config, under_root  # noqa: E402
from augment.errors import AugmentError  # noqa: E402
from augment.flows import caching  # noqa: E402
from augment.pipeline.paths import Paths  # noqa: E402
from augment.pipeline.stages import STAGE_NAMES, check_crossfit_folds, check_stage_paths, get_stage  # noqa: E402


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
    """``metrics/evaluate.json``, the headline: test accuracy mean and 95% CI per variant, synthetic
    share, accepted/merged counts, ``no_syn``; empty when ``evaluate=False``."""
    report: str | None = None
    """``metrics/evaluate.md`` (the evaluation table) when evaluated, else ``None``."""
    metrics_detail: str | None = None
    """``metrics/evaluate_detail.json`` (per seed, per class, ablation, quality) when evaluated."""
    classes_without_synthetic: list[str] = field(default_factory=list)
    """Classes the filter/quota left with no synthetic sample in the merged set (also warned about)."""
    warnings: list[str] = field(default_factory=list)
    """The stages' warnings (also logged and published as the ``augment-warnings`` artifact)."""
    params: dict[str, Any] = field(default_factory=dict)
    """The run's effective parameters: ``params.yaml`` with ``overrides`` applied, before the paths
    are rooted at ``workdir``. Also written to ``<metrics>/flow_params.yaml``: copy that file to a
    params file (outside the outputs) to repeat the run with ``augment run`` or ``dvc repro``."""
    overrides: dict[str, Any] | None = None
    """The ``overrides`` this run was given, as given."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def load(self):
        """``(images, labels, is_synthetic, manifest_rows)`` of the merged set."""
        from augment.data.torch_dataset import load_augmented

        return load_augmented(self.augmented_dir)


def _log(msg: str, *args: Any) -> None:
    get_run_logger().info(msg, *args)


def transient_only(task: Any, task_run: Any, state: Any) -> bool:
    """Retry a failed stage only when retrying can help: never for bad input, bad params, a
    damaged file or a held lock (:class:`augment.errors.AugmentError`), which fail the same way
    every time. A retried ``train`` resumes from its last resume state."""
    try:
        state.result()
    except AugmentError:
        return False
    except BaseException:
        return True
    return True


# Results are the stages' small JSON reports (never arrays or models), persisted for the cache.
@task(retries=2, retry_delay_seconds=2, retry_condition_fn=transient_only, persist_result=True,
      result_serializer="json")
def stage_task(stage: str, cfg: PipelineConfig, paths: Paths) -> dict:
    """Run one declared stage (:data:`augment.pipeline.stages.STAGES`) and log its summary."""
    st = get_stage(stage)
    out = st(cfg, paths, progress=False)
    _log("%s", st.summary(out))
    caching.write_stamp(stage, cfg, paths)
    return out


def run_stage(stage: str, cfg: PipelineConfig, paths: Paths) -> dict:
    """Call a stage's task with its cache policy; force a re-run when its outputs changed on disk."""
    refresh = not caching.outputs_current(stage, cfg, paths)
    return stage_task.with_options(name=stage, task_run_name=stage, cache_policy=caching.stage_cache_policy(),
                                   refresh_cache=refresh)(stage, cfg, paths)


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


def publish_warnings(warnings: dict[str, list[str]]) -> None:
    """The stages' warnings as one artifact (``augment-warnings``), on every run, cached or not:
    e.g. a filter that left a class with no synthetic sample."""
    lines = [f"- **{stage}**: {line}" for stage, ws in warnings.items() for line in ws]
    # Published also when there are none: the UI shows a key's latest version, which would
    # otherwise still be an earlier run's warnings.
    create_markdown_artifact(key="augment-warnings", description=f"{len(lines)} pipeline warning(s)",
                             markdown="## Pipeline warnings\n\n" + ("\n".join(lines) or "None in this run."))


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
    else:  # not left showing an earlier run's table as if it were this run's
        create_markdown_artifact(key="augment-evaluation", description="Not evaluated in this run",
                                 markdown="## Downstream evaluation\n\nThis run was not evaluated (`evaluate=False`); "
                                 "`metrics/evaluate.md` may hold an earlier run's table.")


# ------------------------------------------------------------------------------------ the flow


@flow(name="augment-pipeline", log_prints=True)
def augment_pipeline(params_path: str = "params.yaml", workdir: str = ".", evaluate: bool = True,
                     dask_address: str | None = None, dask_workers: int = 0,
                     overrides: dict[str, Any] | None = None) -> AugmentResult:
    """prepare -> train -> generate -> filter -> crossfit -> merge [-> evaluate], rooted at ``workdir``.

    ``params_path``, when relative, is read under ``workdir`` (as every other path is).
    ``overrides`` (``{"filter.top_fraction": 0.3}``) change single parameters for this run
    without editing the file, validated exactly as ``params.yaml`` (an unknown key or an
    out-of-range value is a :class:`~augment.errors.ConfigError` naming it; not retried). Only
    the stages whose params group changed miss the cache and run again.

    ``dask_address`` (``tcp://scheduler:8786``, an existing cluster whose workers see ``workdir``)
    or ``dask_workers`` (> 0: a LocalCluster of that many processes) shard the generate step
    over Dask workers; the output is byte-identical to the single-process run.
    """
    from augment.core.locking import workspace_lock

    # Every relative path -- the stages' outputs and the dataset folders in params.yaml -- is
    # rooted at ``workdir``, whatever the calling process's working directory.
    params_file = under_root(params_path, workdir)
    effective = load_config(params_file, overrides)
    cfg = root_config(effective, workdir)
    if overrides:
        get_run_logger().info("parameter overrides: %s", json.dumps(overrides, sort_keys=True))
    # One run per workspace at a time (the same lock as the `augment` CLI): a second run is refused.
    with workspace_lock(workdir, what="prefect flow augment-pipeline"):
        result = _pipeline(cfg, params_file, workdir, evaluate, dask_address, dask_workers, overrides)
        result = replace(result, params=asdict(effective), overrides=overrides)
        # What this run used, whatever params.yaml says tomorrow: a params file that repeats it.
        from augment.config import effective_params_yaml
        from augment.core.files import atomic_write_text

        atomic_write_text(Path(Paths().rooted(workdir).metrics_dir) / "flow_params.yaml", effective_params_yaml(
            effective, f"flow augment-pipeline, params {params_path}, overrides {json.dumps(overrides, sort_keys=True)}"))
        return result


def _pipeline(cfg: PipelineConfig, params_path: str, workdir: str, evaluate: bool, dask_address: str | None,
              dask_workers: int, overrides: dict[str, Any] | None = None) -> AugmentResult:
    logger = get_run_logger()
    paths = Paths().rooted(workdir)
    stages = [s for s in STAGE_NAMES if evaluate or s != "evaluate"]
    for stage in stages:  # every stage's outputs checked before the first one writes anything
        check_stage_paths(get_stage(stage), cfg, paths, protect={"params_path": params_path})
    n_stages = len(stages)
    progress = create_progress_artifact(0.0, key="augment-pipeline-progress", description="stages done")

    def done(k: int) -> None:
        update_progress_artifact(progress, 100.0 * k / n_stages)

    out: dict[str, dict] = {}
    warnings: dict[str, list[str]] = {}
    for k, stage in enumerate(stages):
        if stage == "generate" and (dask_address or dask_workers > 0):
            from augment.flows.scale import generate_sharded, sharded_flow

            out[stage] = sharded_flow(generate_sharded, dask_address, dask_workers)(
                params_path=params_path, workdir=workdir, overrides=overrides)
        else:
            out[stage] = run_stage(stage, cfg, paths)
        # Warnings are logged by the flow, so a cached stage still shows them.
        warnings[stage] = get_stage(stage).warnings(out[stage])
        for line in warnings[stage]:
            logger.warning("%s: %s", stage, line)
        if stage == "prepare":
            check_crossfit_folds(cfg, paths)  # crossfit.folds fits the data: fail before train, not after
        done(k + 1)
    report, merged, metrics = out["filter"], out["merge"], out.get("evaluate", {})
    publish_artifacts(paths, report, evaluate)
    publish_warnings(warnings)
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
        metrics=metrics.get("headline", {}),
        report=str(Path(paths.metrics_dir) / "evaluate.md") if evaluate else None,
        metrics_detail=str(Path(paths.metrics_dir) / "evaluate_detail.json") if evaluate else None,
        classes_without_synthetic=[c for c, r in merged.get("per_class", {}).items() if not r.get("synthetic")],
        warnings=[f"{stage}: {line}" for stage, ws in warnings.items() for line in ws],
    )
    logger.info("augmented set: %d real + %d synthetic images in %s", result.real_images,
                result.synthetic_images, result.augmented_dir)
    return result


def parse_set_args(ap: argparse.ArgumentParser, items: list[str]) -> dict[str, Any]:
    """``--set GROUP.KEY=VALUE`` arguments (YAML values) as an overrides dict; a malformed one is a
    usage error (exit 2)."""
    overrides = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq:
            ap.error(f"--set {item!r}: expected GROUP.KEY=VALUE")
        overrides[key.strip()] = yaml.safe_load(value)
    return overrides


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Run the augmentation pipeline as a Prefect flow")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--no-evaluate", action="store_true")
    ap.add_argument("--dask-address", default=None, help="shard generate over an existing Dask cluster")
    ap.add_argument("--dask-workers", type=int, default=0, help="shard generate over a local Dask cluster")
    ap.add_argument("--set", "-S", dest="overrides", action="append", default=[], metavar="GROUP.KEY=VALUE",
                    help="override one parameter (YAML value), e.g. -S filter.top_fraction=0.3; repeatable")
    a = ap.parse_args(argv)
    overrides = parse_set_args(ap, a.overrides)
    params_file = under_root(a.params, a.workdir)
    try:
        load_config(params_file, overrides or None)  # a bad param: one line, before any server starts
        result = augment_pipeline(params_path=a.params, workdir=a.workdir, evaluate=not a.no_evaluate,
                                  dask_address=a.dask_address, dask_workers=a.dask_workers,
                                  overrides=overrides or None)
    except AugmentError as exc:  # bad params or data, an output refused, the workspace lock held
        print(f"{ap.prog}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    print(json.dumps({k: v for k, v in result.to_dict().items() if k != "filter_report"}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
