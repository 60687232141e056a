"""metrics/evaluate.json is a small headline; a class left without synthetic samples is warned
about at every stage and flagged in the metrics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from augment.cli import main
from augment.evaluation.evaluate import (
    ci95,
    classes_without_synthetic,
    headline_metrics,
)
from augment.pipeline.stages import get_stage
from tests.conftest import write_params


def _detail(per_seed: dict[str, list[float]], synthetic_images: int = 7, empty: list[str] | None = None) -> dict:
    return {"variants": {k: {"mean": float(np.mean(v)), "per_seed": v} for k, v in per_seed.items()},
            "synthetic_images": synthetic_images, "synthetic_share": 0.25,
            "classes_without_synthetic": empty or []}


def test_headline_shape_and_ci():
    seeds = {"real": [0.5, 0.6, 0.7], "classical": [0.6, 0.6, 0.6], "synthetic": [0.7, 0.8, 0.9],
             "combined": [0.55, 0.65, 0.75]}
    h = headline_metrics(_detail(seeds, empty=["b"]), accepted=9)
    assert list(h) == ["real", "real_ci", "classic", "classic_ci", "syn", "syn_ci", "comb", "comb_ci",
                       "share", "accepted", "merged", "no_syn"]
    assert h["real"] == 0.6 and h["classic_ci"] == 0.0
    # t(0.975, 2) = 4.3027; std 0.1; n = 3 -> 0.2484
    assert h["syn_ci"] == pytest.approx(0.2484, abs=1e-4)
    assert (h["share"], h["accepted"], h["merged"], h["no_syn"]) == (0.25, 9, 7, 1)
    assert all(isinstance(v, (int, float)) for v in h.values())  # flat numbers: one dvc column each
    assert ci95([0.5]) is None
    # Short keys, short values: the widest changed-columns set stays narrow.
    assert max(len(k) for k in h) <= 10 and len(json.dumps(h)) < 300


def test_classes_without_synthetic():
    assert classes_without_synthetic(np.array([0, 0, 2]), ["a", "b", "c"]) == ["b"]
    assert classes_without_synthetic(np.array([], np.int64), ["a", "b"]) == ["a", "b"]


def test_stage_warnings_name_the_empty_classes():
    report = {"filters": ["discriminator", "label"], "per_class": {
        "a": {"generated": 10, "accepted": 3, "accepted_by_discriminator": 5, "accepted_by_label": 6},
        "b": {"generated": 10, "accepted": 0, "accepted_by_discriminator": 5, "accepted_by_label": 0}}}
    (line,) = get_stage("filter").warnings(report)
    assert "left 1 of 2 class(es) with no synthetic sample: b" in line and "b: label accepted none of 10" in line
    report["per_class"]["b"]["accepted"] = 1
    assert get_stage("filter").warnings(report) == []
    merged = {"synthetic": 3, "per_class": {"a": {"real": 4, "synthetic": 3}, "b": {"real": 4, "synthetic": 0}}}
    assert "b" in get_stage("merge").warnings(merged)[0]
    assert "no_syn" in get_stage("evaluate").warnings({"classes_without_synthetic": ["b"]})[0]
    assert get_stage("evaluate").warnings({"classes_without_synthetic": []}) == []
    # cross-fitting chose to merge nothing: a decision (merge said why), not classes left empty
    chose_none = {"classes_without_synthetic": ["a", "b"], "synthetic_images": 0, "synthetic_share": 0.0,
                  "filter_accepted_per_class": {"a": 5, "b": 7}}
    (note,) = get_stage("evaluate").warnings(chose_none)
    assert note.startswith("note: the merge stage chose no synthetic sample") and "WARNING" not in note
    chose_none["filter_accepted_per_class"] = {"a": 0, "b": 0}  # nothing to choose from: still a warning
    assert "no_syn" in get_stage("evaluate").warnings(chose_none)[0]


def test_zero_accepted_filter_warns_and_flags_the_metrics(workspace: Path, capsys):
    """A filter that accepts nothing: the CLI prints the warning, evaluate flags every class and
    says so under its table instead of printing (c) = (a) as if nothing happened."""
    write_params(workspace / "params.yaml", {
        "filter": {"mode": "threshold", "threshold": 1.0},
        "evaluate": {"quality": False, "ablation": False, "seeds": [0], "steps": 3}})
    for stage in ("prepare", "train", "generate", "filter"):
        assert main([stage, "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "WARNING: the filter (discriminator) left 3 of 3 class(es) with no synthetic sample" in err
    assert main(["merge", "--quiet"]) == 0 and main(["evaluate", "--quiet"]) == 0
    err = capsys.readouterr().err
    assert "merge left every class with no synthetic sample" in err and "class_0, class_1, class_2" in err
    head = json.loads(Path("metrics/evaluate.json").read_text())
    assert head["accepted"] == 0 and head["merged"] == 0 and head["no_syn"] == 3
    detail = json.loads(Path("metrics/evaluate_detail.json").read_text())
    assert detail["classes_without_synthetic"] == ["class_0", "class_1", "class_2"]
    assert "WARNING: no synthetic sample for class(es)" in Path("metrics/evaluate.md").read_text()
