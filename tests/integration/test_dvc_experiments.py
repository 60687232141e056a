"""DVC experiments on the real pipeline: `dvc exp show --only-changed` readable in 120 columns,
dvclive writing during the run without touching dvc.yaml, its plots listed by `dvc plots show`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, copy_project, make_image_folder, write_params


def _sh(cmd: list[str], cwd: Path, **env: str) -> str:
    full = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1",
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t",
            "PYTHONPATH": str(cwd), **env}
    full["PATH"] = str(Path(sys.executable).parent) + os.pathsep + full.get("PATH", "")
    res = subprocess.run(cmd, cwd=cwd, env=full, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res.stdout


@pytest.mark.slow
def test_exp_show_fits_120_columns_and_dvclive_leaves_dvc_yaml_alone(tmp_path: Path):
    repo = copy_project(tmp_path / "repo")
    shutil.copy2(ROOT / ".gitignore", repo / ".gitignore")
    make_image_folder(repo / "data" / "raw", per_class=10)
    make_image_folder(repo / "data" / "test", per_class=4, seed=1)
    write_params(repo / "params.yaml", {"prepare": {"test_dir": "data/test"},
                                        "evaluate": {"seeds": [0, 1], "quality": False, "ablation": False}})
    _sh(["git", "init", "-q"], repo)
    _sh(["dvc", "init", "-q"], repo)
    _sh(["dvc", "add", "-q", "data/raw", "data/test"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-q", "-m", "project"], repo)
    dvc_yaml = (repo / "dvc.yaml").read_bytes()

    _sh(["dvc", "repro", "-q"], repo)
    _sh(["git", "add", "-A"], repo)
    _sh(["git", "commit", "-q", "-m", "baseline"], repo)
    _sh(["dvc", "exp", "run", "-q", "-S", "filter.top_fraction=0.3"], repo)
    _sh(["dvc", "exp", "run", "-q", "-S", "train.iterations=10"], repo)  # also re-runs train (dvclive)
    assert (repo / "dvc.yaml").read_bytes() == dvc_yaml  # dvclive did not rewrite it
    assert not list(repo.glob("metrics/**/dvc.yaml"))
    summary = json.loads((repo / "metrics/train_live/metrics.json").read_text())
    assert summary["step"] == 10 and "aug_p" in summary

    table = _sh(["dvc", "exp", "show", "--only-changed", "--no-pager"], repo, COLUMNS="120")
    lines = [ln.rstrip() for ln in table.splitlines() if ln.strip()]
    assert max(len(ln) for ln in lines) <= 120, table
    # Metrics and params are shown in full; DVC folds only what does not fit (the changed deps'
    # 36-character hashes) into one trailing "…" column -- no cell is cut.
    for ln in lines:
        assert ln.count("…") <= 1 and (ln.endswith("…") or "…" not in ln), table
    header = next(ln for ln in lines if "Experiment" in ln)
    for col in ("accepted", "merged", "filter.top_fraction", "train.iterations"):
        assert col in header.split(), (col, table)
    # The README's recipe without the dep hashes: nothing folded at all.
    table = _sh(["dvc", "exp", "show", "--only-changed", "--no-pager", "--drop", "data/|models/|augment"], repo,
                COLUMNS="120")
    assert "…" not in table and max(len(ln.rstrip()) for ln in table.splitlines()) <= 120, table

    metrics = json.loads(_sh(["dvc", "metrics", "show", "--json"], repo))
    (files,) = [v["data"] for v in metrics.values()]
    assert list(files) == ["metrics/evaluate.json"] and len(json.dumps(files)) < 400  # the headline only

    shown = json.loads(_sh(["dvc", "plots", "show", "--json", "-o", str(tmp_path / "plots")], repo))["data"]
    assert any("train_live/plots/metrics" in k and k.endswith("loss_d.tsv") for k in shown), sorted(shown)
    assert any("train_live/plots/images/samples" in k for k in shown), sorted(shown)
