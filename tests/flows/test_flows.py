"""The pipeline as Prefect flows: caching, artifacts, the typed result, subflows, deployments."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

import pytest

from tests.conftest import ROOT


def _mtime(p: Path) -> int:
    return p.stat().st_mtime_ns


@pytest.mark.slow
def test_flow_caches_on_inputs_invalidates_on_deleted_output_and_returns_typed_result(workspace: Path, prefect_harness):
    from augment.flows.augment_flow import AugmentResult, augment_pipeline
    from augment.flows.train_downstream import downstream_training

    kw = dict(params_path=str(workspace / "params.yaml"), workdir=str(workspace), evaluate=False)
    first = augment_pipeline(**kw)
    ckpt, decisions = workspace / "models/generator.safetensors", workspace / "data/filtered/decisions.npz"
    stamps = {p: _mtime(p) for p in (ckpt, decisions, workspace / "data/prepared/dataset.npz")}

    # Same data, same params: every stage is cached, nothing on disk is rewritten.
    second = augment_pipeline(**kw)
    assert {p: _mtime(p) for p in stamps} == stamps
    assert second == first

    # A deleted output invalidates that stage's cache (and only what depends on its bytes).
    shutil.rmtree(workspace / "data/filtered")
    augment_pipeline(**kw)
    assert decisions.is_file() and _mtime(ckpt) == stamps[ckpt]

    # The typed result a downstream flow gets back.
    assert isinstance(first, AugmentResult)
    assert Path(first.manifest).is_file() and Path(first.checkpoint).is_file()
    assert first.class_names == ["class_0", "class_1", "class_2"]
    assert first.real_images > 0 and first.synthetic_images >= 0
    assert first.filter_report["generated"] == 30 and first.metrics == {} and first.report is None
    json.dumps(first.to_dict())  # small and JSON-able: no arrays, no models
    # What the run used, on disk: a params file that repeats it, whatever params.yaml says later.
    from augment.config import load_config, load_params

    assert first.params == asdict(load_config(kw["params_path"])) and first.overrides is None
    assert asdict(load_params(workspace / "metrics/flow_params.yaml")) == first.params
    images, labels, synthetic, rows = first.load()
    assert len(images) == len(rows) == first.real_images + first.synthetic_images
    assert int(synthetic.sum()) == first.synthetic_images

    # A user's training flow calls the pipeline as a subflow (cached here) and trains on it.
    out = downstream_training(params_path=kw["params_path"], workdir=str(workspace), steps=10)
    assert 0.0 <= out["accuracy"] <= 1.0 and out["train_images"] == len(images)
    assert out["scored_on"] == "val" and out["scored_images"] > 0  # this workspace has a val split
    assert out["seed"] == 0  # not given: the first of evaluate.seeds (the config's, [0, 1] here)
    # the example's classifier uses the recipe the pipeline ran with, overrides included
    import augment.flows.train_downstream as example

    built = []
    real_resolve = example.resolve_model
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(example, "resolve_model", lambda name, where: built.append(name) or real_resolve(name, where))
        again = example.train_on_augmented.fn(first.augmented_dir, str(workspace / "data/prepared"), kw["params_path"],
                                              2, None, {"evaluate.model": "mlp", "evaluate.seeds": [7]})
    assert built == ["mlp"] and again["seed"] == 7

    # Artifacts a person opens: acceptance table, sample grid, score histogram.
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[
            "augment-acceptance", "augment-sample-grid", "augment-score-histogram"])))
    by_key = {a.key: a for a in arts}
    assert set(by_key) == {"augment-acceptance", "augment-sample-grid", "augment-score-histogram"}
    assert "data:image/png;base64," in by_key["augment-sample-grid"].data
    table = by_key["augment-acceptance"].data
    table = json.loads(table) if isinstance(table, str) else table
    assert {row["class"] for row in table} == set(first.class_names)
    # Keys whose latest version a person reads are published on every run, saying what this run did.
    with get_client(sync_client=True) as client:
        latest = {key: client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])),
                                             limit=1, sort="CREATED_DESC")[0].data
                  for key in ("augment-evaluation", "augment-warnings")}
    assert "not evaluated" in latest["augment-evaluation"]
    assert ("None in this run." in latest["augment-warnings"]) == (not first.warnings)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_cron_deployment_on_a_real_server_and_a_triggered_run_completes(workspace: Path, prefect_server: dict,
                                                                          tmp_path: Path):
    """`prefect server start` (fixture) + `python flows/scheduled.py` (serve) + `prefect deployment run`."""
    env = {**prefect_server, "PREFECT_RUNNER_POLL_FREQUENCY": "1"}
    log = tmp_path / "serve.log"
    serve = subprocess.Popen([sys.executable, str(ROOT / "flows/scheduled.py"), "--repo", str(workspace),
                              "--cron", "0 2 * * *", "--params", str(workspace / "params.yaml"),
                              "--workdir", str(workspace)],
                             env=env, cwd=workspace, stdout=open(log, "w"), stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 120  # serve() registers the deployments, then says so
        while "being served" not in log.read_text():
            assert serve.poll() is None and time.time() < deadline, "serve did not start:\n" + log.read_text()
            time.sleep(0.5)
        run = subprocess.run(["prefect", "deployment", "run", "augment-pipeline/on-demand", "-p", "evaluate=false",
                              "--watch", "--watch-interval", "1", "--watch-timeout", "240"],
                             env=env, cwd=workspace, capture_output=True, text=True, timeout=300)
        assert run.returncode == 0, run.stdout + run.stderr + log.read_text()
        assert "Completed" in run.stdout
        assert (workspace / "data/augmented/manifest.csv").is_file()  # the triggered run did the work

        inspect = subprocess.run(["prefect", "deployment", "inspect", "augment-nightly/nightly"],
                                 env=env, cwd=workspace, capture_output=True, text=True, timeout=60)
        assert inspect.returncode == 0, inspect.stderr
        assert "0 2 * * *" in inspect.stdout  # the nightly deployment carries its cron schedule
    finally:
        _stop(serve)
