"""What a practitioner does (issue 14): their own flow file, outside this repository, imports the
pipeline, runs it as a subflow on a workspace elsewhere -- from a third working directory -- with
a parameter override, trains a model on the result through a DataLoader with the weighted
sampler; the second run is fully cached. Plus: bad params and bad input are not retried, and a
filter that empties a class publishes a warning artifact."""

from __future__ import annotations

import importlib.util
import json
import textwrap
from pathlib import Path

import pytest
import yaml

from augment.pipeline.stages import STAGE_NAMES
from tests.conftest import ROOT, make_image_folder, write_params

CONSUMER_FLOW = textwrap.dedent('''
    """A practitioner's training flow (lives in their own project, not in this repository)."""
    import torch
    from prefect import flow, task
    from torch.utils.data import DataLoader, WeightedRandomSampler

    from augment.data.torch_dataset import AugmentedDataset
    from augment.flows.augment_flow import AugmentResult, augment_pipeline


    @task
    def train_tiny(augmented_dir: str, steps: int = 4) -> dict:
        ds = AugmentedDataset(augmented_dir)
        sampler = WeightedRandomSampler(torch.as_tensor(ds.weights), num_samples=8 * steps, replacement=True,
                                        generator=torch.Generator().manual_seed(0))
        loader = DataLoader(ds, batch_size=8, sampler=sampler)
        c, h, w = ds[0][0].shape
        torch.manual_seed(0)
        model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(c * h * w, len(ds.classes)))
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        losses = []
        for x, y in loader:
            loss = torch.nn.functional.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss))
        return {"batches": len(losses), "last_loss": losses[-1], "classes": ds.classes,
                "synthetic_in_set": int(ds.is_synthetic.sum())}


    @flow(name="practitioner-training")
    def my_training(workdir: str, top_fraction: float) -> dict:
        state = augment_pipeline(workdir=workdir, overrides={"filter.top_fraction": top_fraction},
                                 return_state=True)
        result: AugmentResult = state.result()
        return {"subflow_run_id": str(state.state_details.flow_run_id), "result": result.to_dict(),
                "trained": train_tiny(result.augmented_dir)}
''')


def _load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _task_states(flow_run_id: str) -> dict[str, list]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
    return {r.name: [r.state.name, r.run_count] for r in runs}


def _workspace(root: Path, **param_overrides) -> Path:
    make_image_folder(root / "data" / "raw")
    write_params(root / "params.yaml", {"evaluate": {"quality": False, "ablation": False, "seeds": [0, 1]},
                                        **param_overrides})
    return root


@pytest.mark.slow
def test_flow_outside_the_repo_runs_the_pipeline_as_a_subflow_and_trains_on_it(tmp_path: Path, prefect_harness,
                                                                                monkeypatch):
    ws = _workspace(tmp_path / "workspace")
    params_before = (ws / "params.yaml").read_bytes()
    consumer = tmp_path / "their_project" / "my_training_flow.py"
    consumer.parent.mkdir()
    consumer.write_text(CONSUMER_FLOW)
    assert ROOT not in consumer.parents
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # neither the repository nor the workspace

    mod = _load(consumer)
    first = mod.my_training(workdir=str(ws), top_fraction=0.3)

    res = first["result"]
    # The override took effect (top 30% of 10 per class = 3) without touching params.yaml.
    assert res["filter_report"]["top_fraction"] == 0.3 and res["filter_report"]["accepted"] == 9
    assert (ws / "params.yaml").read_bytes() == params_before
    # Every path rooted at the workspace: data read from ws/data/raw, outputs under ws.
    assert Path(res["augmented_dir"]) == ws / "data/augmented" and Path(res["manifest"]).is_file()
    assert sorted(p.name for p in elsewhere.iterdir()) == []  # nothing written in the cwd (no dvc.yaml)
    # Headline metrics reach the caller; detail and live training metrics are on disk.
    m = res["metrics"]
    assert set(m) >= {"real", "real_ci", "syn", "comb", "accepted", "merged", "no_syn"}
    assert m["accepted"] == 9 and m["merged"] == res["synthetic_images"] and m["no_syn"] == 0
    assert json.loads((ws / "metrics/evaluate.json").read_text()) == m
    assert "per_seed" in json.loads(Path(res["metrics_detail"]).read_text())["variants"]["real"]
    assert (ws / "metrics/train_live/plots/metrics/loss_d.tsv").is_file()
    assert res["classes_without_synthetic"] == [] and not any("no synthetic" in w for w in res["warnings"])
    # The model trained through a DataLoader with the weighted sampler.
    trained = first["trained"]
    assert trained["batches"] == 4 and trained["classes"] == res["class_names"]
    assert trained["synthetic_in_set"] == res["synthetic_images"] == 9
    states = _task_states(first["subflow_run_id"])
    assert sorted(states) == sorted(STAGE_NAMES)
    assert all(s == ["Completed", 1] for s in states.values()), states

    # Second run, same data, same params, same override: every stage task is Cached.
    stamps = {p: p.stat().st_mtime_ns for p in (ws / "models/generator.safetensors", ws / "metrics/evaluate.json")}
    second = mod.my_training(workdir=str(ws), top_fraction=0.3)
    states = _task_states(second["subflow_run_id"])
    assert len(states) == len(STAGE_NAMES) and all(s[0] == "Cached" for s in states.values()), states
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    assert second["result"] == first["result"] and second["trained"] == first["trained"]


@pytest.mark.slow
def test_bad_params_and_bad_input_fail_at_once_without_retries(tmp_path: Path, prefect_harness, monkeypatch):
    from augment.errors import ConfigError, DataError
    from augment.flows.augment_flow import augment_pipeline

    ws = tmp_path / "ws"
    ws.mkdir()
    write_params(ws / "params.yaml")  # but no data/raw
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="filter.top_fractoin"):
        augment_pipeline(workdir=str(ws), overrides={"filter.top_fractoin": 0.3})
    state = augment_pipeline(workdir=str(ws), return_state=True)
    assert state.is_failed()
    with pytest.raises(DataError, match="data/raw"):
        state.result()
    states = _task_states(str(state.state_details.flow_run_id))
    assert states == {"prepare": ["Failed", 1]}  # a DataError is not retried


@pytest.mark.slow
def test_a_filter_that_empties_a_class_publishes_a_warning_artifact(tmp_path: Path, prefect_harness, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from augment.flows.augment_flow import augment_pipeline

    ws = _workspace(tmp_path / "ws")
    monkeypatch.chdir(tmp_path)
    # threshold 1.0 on the calibrated confidence: nothing passes -> every class left empty
    result = augment_pipeline(workdir=str(ws), evaluate=False,
                              overrides={"filter.mode": "threshold", "filter.threshold": 1.0})
    assert result.synthetic_images == 0
    assert result.classes_without_synthetic == ["class_0", "class_1", "class_2"]
    assert any(w.startswith("filter: WARNING: the filter (discriminator) left 3 of 3") for w in result.warnings)
    with get_client(sync_client=True) as client:
        (art,) = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=["augment-warnings"])),
                                       limit=1, sort="CREATED_DESC")
    assert "no synthetic sample" in art.data and "class_0, class_1, class_2" in art.data
    assert yaml.safe_load((ws / "params.yaml").read_text())["filter"]["mode"] == "top_fraction"
