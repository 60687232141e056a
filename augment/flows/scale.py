"""Scale-out: the generate step sharded over the workers of a Dask cluster (prefect-dask).

Shard ``k`` of the generate output is drawn from a generator seeded by ``(seed, k)``
(:func:`augment.generation.generate.generate_shard`), so which worker makes which shard, and in which
order, does not matter: the shard files -- images, labels, discriminator scores -- are
byte-for-byte those of ``augment generate``, and so are the filter decisions made from them.
The expensive part of filtering (scoring every sample with the discriminator) happens inside
the shard tasks; the per-class accept decision (a top fraction per class needs every score of
the class) then runs once over the assembled scores through the normal filter stage.

    # a LocalCluster of 4 worker processes on this machine
    python flows/scale.py --params params.yaml --dask-workers 4
    # an existing cluster: its workers must see the same workdir (shared filesystem)
    python flows/scale.py --params params.yaml --dask-address tcp://scheduler:8786

Set ``PREFECT_API_URL`` to a running Prefect server (``prefect server start``) when using Dask:
without it every worker process starts its own temporary Prefect server.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# A temporary Prefect server (no PREFECT_API_URL) needs more than Prefect's default 20 s to start on a
# small loaded machine; effective when this module is imported before prefect (scripts/env.sh sets it too).
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")

from prefect import flow, get_run_logger, task, unmapped  # noqa: E402
from prefect.artifacts import create_progress_artifact, update_progress_artifact  # noqa: E402
from prefect.futures import as_completed  # noqa: E402
from tqdm.auto import tqdm  # noqa: E402

from augment.config import GenerateConfig, load_config, load_params, under_root  # noqa: E402
from augment.pipeline.paths import Paths  # noqa: E402


@functools.lru_cache(maxsize=2)
def _generator(checkpoint: str, sha256: str, device: str, precision: str, sampler: str = "prior",
               residual_scale: float = 1.0, deform=None):
    """One loaded generator per worker process (keyed by the checkpoint's hash and the sampler's
    parameters; ``deform``: a hashable :class:`~augment.generation.generate.DeformParams`)."""
    from augment.generation.generate import load_generator

    return load_generator(checkpoint, device, precision, sampler, residual_scale, deform)


@task(name="generate-shard", retries=2, retry_delay_seconds=1, persist_result=False)
def generate_shard_task(shard_id: int, checkpoint: str, checkpoint_sha256: str, cfg: GenerateConfig,
                        out_dir: str) -> dict[str, Any]:
    """Generate and score shard ``shard_id`` on a worker; write it to ``out_dir`` (shared FS)."""
    import torch

    from augment.core.files import atomic_save_npz, sha256_file
    from augment.generation.generate import DeformParams, generate_shard

    torch.set_num_threads(cfg.threads or max(1, int(os.environ.get("OMP_NUM_THREADS", "1"))))
    gen = _generator(checkpoint, checkpoint_sha256, cfg.device, cfg.precision, cfg.sampler, cfg.residual_scale,
                     DeformParams.of(cfg))
    arrays = generate_shard(gen, shard_id, len(gen.checkpoint.class_names), cfg)
    path = Path(out_dir) / f"shard_{shard_id:05d}.npz"
    atomic_save_npz(path, **arrays)
    return {"shard": shard_id, "file": path.name, "samples": int(len(arrays["index"])), "sha256": sha256_file(path),
            "device": str(gen.device), "precision": "bf16" if gen.autocast_dtype == torch.bfloat16 else "fp32"}


@flow(name="augment-generate-sharded", log_prints=True)
def generate_sharded(params_path: str = "params.yaml", workdir: str = ".", progress: bool = False,
                     overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The generate stage, one task per shard, on whatever task runner the flow runs with."""
    from augment.core.files import atomic_directory, atomic_write_json, sha256_file, workspace_relative
    from augment.data.prepare import load_prepared
    from augment.generation.generate import generation_summary, num_shards
    from augment.models.checkpoint import Checkpoint

    logger = get_run_logger()
    from augment.config import root_config
    from augment.pipeline.stages import check_same_prepared, check_stage_paths, get_stage

    full = load_config(params_path, overrides)
    cfg = full.generate
    paths = Paths().rooted(workdir)
    # the same output-vs-input check as the single-process stage, before anything is swapped
    check_stage_paths(get_stage("generate"), root_config(full, workdir), paths)
    ckpt = Checkpoint(paths.checkpoint)
    if Path(paths.prepared, "dataset.npz").is_file():
        ds = load_prepared(paths.prepared)
        ckpt.check_compatible(ds.image_shape, ds.class_names)
        check_same_prepared(ckpt.extra.get("prepared_sha256"), ds, paths.checkpoint, "train", paths.prepared)
    sha = sha256_file(paths.checkpoint)
    n = num_shards(len(ckpt.class_names), cfg)
    with atomic_directory(paths.generated) as tmp:
        futures = generate_shard_task.map(list(range(n)), unmapped(str(Path(paths.checkpoint).resolve())),
                                          unmapped(sha), unmapped(cfg), unmapped(str(tmp.resolve())))
        # A terminal progress bar and a Prefect progress artifact, advanced as shards finish.
        progress_id = create_progress_artifact(0.0, key="augment-generate-progress", description="shards generated")
        shards = []
        for fut in tqdm(as_completed(futures), total=n, desc="generate (dask)", unit="shard", disable=not progress):
            shards.append(fut.result())
            update_progress_artifact(progress_id, 100.0 * len(shards) / max(n, 1))
        shards.sort(key=lambda s: s["shard"])
        import torch

        dtype = torch.bfloat16 if shards and shards[0]["precision"] == "bf16" else None
        summary = generation_summary(ckpt, workspace_relative(paths.checkpoint, paths.workspace), sha, cfg, shards[0]["device"] if shards else "cpu",
                                     dtype, shards)
        atomic_write_json(tmp / "generate.json", summary)
    logger.info("generated %d samples in %d shard(s) on the task runner's workers -> %s",
                sum(s["samples"] for s in shards), n, paths.generated)
    return summary


def dask_runner(address: str | None = None, workers: int = 2):
    """A DaskTaskRunner: the existing cluster at ``address``, else a LocalCluster of ``workers``
    single-threaded processes."""
    from prefect_dask import DaskTaskRunner

    if address:
        return DaskTaskRunner(address=address)
    return DaskTaskRunner(cluster_class="distributed.LocalCluster",
                          cluster_kwargs={"n_workers": workers, "threads_per_worker": 1, "processes": True,
                                          "dashboard_address": None, "host": "127.0.0.1"})


def sharded_flow(fl, address: str | None = None, workers: int = 2):
    """``fl`` with a Dask task runner (a subflow uses its own task runner)."""
    return fl.with_options(task_runner=dask_runner(address, workers))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Generate sharded over a Dask cluster, then filter")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--workdir", default=".")
    ap.add_argument("--dask-address", default=None, help="tcp://host:8786 of an existing cluster")
    ap.add_argument("--dask-workers", type=int, default=2, help="LocalCluster size when no address")
    ap.add_argument("--no-filter", action="store_true")
    ap.add_argument("--quiet", action="store_true", help="no progress bar")
    a = ap.parse_args(argv)
    from augment.core.locking import workspace_lock

    from augment.config import root_config
    from augment.errors import AugmentError
    from augment.pipeline.stages import get_stage

    # A relative --params is read under --workdir, as flows/augment_flow.py reads it.
    params_file = under_root(a.params, a.workdir)
    try:
        cfg = load_params(params_file)  # bad params fail here, before any cluster starts
        with workspace_lock(a.workdir, what="flows/scale.py"):
            sharded = sharded_flow(generate_sharded, a.dask_address, a.dask_workers)
            out = sharded(params_path=params_file, workdir=a.workdir, progress=not a.quiet)
            print(json.dumps({k: v for k, v in out.items() if k != "shards"}))
            if not a.no_filter:  # the filter stage with its output checks, as `augment filter` runs it
                report = get_stage("filter")(root_config(cfg, a.workdir), Paths().rooted(a.workdir),
                                             progress=not a.quiet, protect={"--params": params_file})
                print(f"filter ({report['mode']}): accepted {report['accepted']} of {report['generated']}")
    except AugmentError as exc:
        print(f"{ap.prog}: error: {' '.join(str(exc).splitlines())}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
