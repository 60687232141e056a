"""Nightly runs on a Prefect schedule, and the pipeline as an on-demand deployment.

    prefect server start --host 127.0.0.1                       # once (or PREFECT_API_URL of yours)
    export PREFECT_API_URL=http://127.0.0.1:4200/api
    python flows/scheduled.py --repo /path/to/repo --cron "0 2 * * *"   # serves until stopped

serves two deployments from this process (``flow.serve`` semantics: no work pool or worker):

* ``augment-nightly/nightly`` -- :func:`nightly_dvc_run` on the cron schedule (UTC by default,
  ``--timezone`` to change): ``dvc pull -> dvc repro -> dvc push -> git commit dvc.lock`` in
  ``--repo`` (:mod:`augment.ops.scheduling`); one run at a time (``limit=1`` plus a file lock);
* ``augment-pipeline/on-demand`` -- :func:`augment.flows.augment_flow.augment_pipeline` without a
  schedule, for a run started by hand or by another system:

    prefect deployment run augment-nightly/nightly
    prefect deployment run augment-pipeline/on-demand -p params_path=params.yaml -p evaluate=false
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A temporary Prefect server (no PREFECT_API_URL) needs more than Prefect's default 20 s to start on a
# small loaded machine; effective when this module is imported before prefect (scripts/env.sh sets it too).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, serve, task  # noqa: E402
from prefect.artifacts import create_markdown_artifact  # noqa: E402

from augment.ops.scheduling import ScheduledRunError, scheduled_run  # noqa: E402


def _retry_unless_refused(task, task_run, state) -> bool:
    """Retry a step that talks to the remote (``dvc pull``/``push``: it may have been unreachable),
    not a refusal (lock held, uncommitted sources) nor a failed ``dvc repro``: a stage that refused
    its input would refuse it again, after re-running everything before it."""
    try:
        state.result()
    except ScheduledRunError as exc:
        return exc.retryable
    except Exception:
        return True
    return False


@task(name="dvc-scheduled-run", retries=1, retry_delay_seconds=30, retry_condition_fn=_retry_unless_refused,
      persist_result=False)
def dvc_scheduled_run_task(repo: str, pull: bool, push: bool, commit: bool) -> dict:
    logger = get_run_logger()
    res = scheduled_run(repo, pull=pull, push=push, commit=commit, echo=logger.info)
    return {k: v for k, v in res.to_dict().items() if k != "log"}


@flow(name="augment-nightly", log_prints=True)
def nightly_dvc_run(repo: str = ".", pull: bool = True, push: bool = True, commit: bool = True) -> dict:
    """Reproduce the DVC pipeline in ``repo`` and publish it: pull, repro, push, commit dvc.lock."""
    out = dvc_scheduled_run_task(repo, pull, push, commit)
    create_markdown_artifact(
        key="augment-nightly",
        description="What the scheduled run did",
        markdown=(f"## Scheduled run in `{repo}`\n\n"
                  f"* stages run: {', '.join(out['stages_run']) or 'none (all up to date)'}\n"
                  f"* pulled: {out['pulled']}, pushed: {out['pushed']}"
                  + (f" (skipped: {', '.join(out['skipped'])})" if out.get("skipped") else "") + "\n"
                  f"* commit: {out['committed'] or 'nothing changed'}\n"
                  f"* dvc status clean: {out['status_clean']}\n"
                  + (f"* left uncommitted: {'; '.join(out['uncommitted'])}\n" if out.get("uncommitted") else "")),
    )
    if not out["status_clean"]:
        raise RuntimeError(f"dvc status is not clean after the scheduled run in {repo}")
    if out.get("uncommitted"):
        raise RuntimeError(f"tracked files left uncommitted after the scheduled run in {repo}: "
                           f"{'; '.join(out['uncommitted'])}; the next run will refuse to start until they are committed")
    return out


def deployments(repo: str, cron: str, timezone: str | None, params_path: str, workdir: str):
    from prefect.schedules import Cron

    from augment.flows.augment_flow import augment_pipeline

    nightly = nightly_dvc_run.to_deployment(
        name="nightly", schedule=Cron(cron, timezone=timezone), parameters={"repo": repo}, tags=["augment"],
        description="dvc pull -> dvc repro -> dvc push -> commit dvc.lock, on a cron schedule",
    )
    on_demand = augment_pipeline.to_deployment(
        name="on-demand", parameters={"params_path": params_path, "workdir": workdir}, tags=["augment"],
        description="the augmentation pipeline as a Prefect flow (cached per stage)",
    )
    return nightly, on_demand


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Serve the nightly DVC run (cron) and the on-demand pipeline")
    ap.add_argument("--repo", default=".", help="git + DVC repository the nightly run works in")
    ap.add_argument("--cron", default="0 2 * * *", help='cron schedule (default "0 2 * * *": 02:00 every day)')
    ap.add_argument("--timezone", default=None, help="IANA timezone of the cron schedule (default UTC)")
    ap.add_argument("--params", default="params.yaml", help="on-demand pipeline: params file")
    ap.add_argument("--workdir", default=None,
                    help="on-demand pipeline: workspace (default: --repo; resolved now, not in the serving process's folder)")
    a = ap.parse_args(argv)
    if not os.environ.get("PREFECT_API_URL"):
        print("warning: PREFECT_API_URL is not set; schedules need a running server "
              "(prefect server start, then export PREFECT_API_URL=http://127.0.0.1:4200/api)", file=sys.stderr)
    repo = str(Path(a.repo).resolve())
    serve(*deployments(repo, a.cron, a.timezone, a.params, str(Path(a.workdir or repo).resolve())), limit=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
