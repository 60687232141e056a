"""DVC the way practitioners use it: a scheduled run (pull -> repro -> push -> commit dvc.lock),
a local remote, experiments with ``-S``, ``metrics diff``, ``plots show``, concurrent runs refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import copy_project, make_image_folder, write_params


def _sh(cmd: list[str], cwd: Path, ok: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1",
           "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    if ok:
        assert res.returncode == 0, f"{' '.join(cmd)} failed:\n{res.stdout}\n{res.stderr}"
    return res


@pytest.fixture(scope="module")
def repo(tmp_path_factory) -> Path:
    """A git + DVC repo with tiny data and params, a local remote, everything committed."""
    root = tmp_path_factory.mktemp("repo")
    copy_project(root)
    make_image_folder(root / "data" / "raw")
    make_image_folder(root / "data" / "test", per_class=4, seed=1)
    write_params(root / "params.yaml", {"prepare": {"test_dir": "data/test"},  # one seed, no extras: faster
                                        "evaluate": {"seeds": [0], "quality": False, "ablation": False}})
    _sh(["git", "init", "-q"], root)
    _sh(["dvc", "init", "-q"], root)
    _sh(["dvc", "config", "core.autostage", "true"], root)  # as this project's .dvc/config sets it
    _sh(["dvc", "remote", "add", "-d", "store", str(tmp_path_factory.mktemp("remote"))], root)
    _sh(["dvc", "add", "-q", "data/raw", "data/test"], root)
    _sh(["git", "add", "-A"], root)
    _sh(["git", "commit", "-q", "-m", "project"], root)
    return root


@pytest.mark.slow
def test_scheduled_run_reproduces_pushes_commits_and_leaves_dvc_status_clean(repo: Path, tmp_path: Path):
    first = _sh(["augment", "scheduled-run"], repo)
    assert "$ dvc repro" in first.stdout and "Running stage 'train'" in first.stdout
    assert "$ dvc push" in first.stdout and "committed" in first.stdout
    assert "dvc status: up to date" in first.stdout
    assert _sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout.strip() == ""
    assert "scheduled run: dvc repro" in _sh(["git", "log", "-1", "--format=%s"], repo).stdout

    # Nothing changed upstream: nothing re-runs, nothing to commit.
    second = _sh(["augment", "scheduled-run"], repo)
    assert "Running stage" not in second.stdout and "nothing to commit" in second.stdout

    # A second scheduled run while one holds the lock is refused at once (exit 2, holder named).
    from augment.ops.scheduling import run_lock

    with run_lock(repo):
        busy = _sh(["augment", "scheduled-run"], repo, ok=False)
    assert busy.returncode == 2 and "refusing to run concurrently" in busy.stderr

    # A run outside DVC (an on-demand flow, `augment evaluate`) rewrote a git-tracked metrics file:
    # the next nightly run is not blocked by it. The user's file is copied aside, not lost, and
    # `dvc repro` rewrites the output to match the committed params and code.
    metrics = repo / "metrics" / "evaluate.md"
    committed = metrics.read_text()
    metrics.write_text("an on-demand run's table\n")
    third = _sh(["augment", "scheduled-run"], repo)
    kept = list((repo / ".dvc/tmp/augment-displaced").glob("*/metrics/evaluate.md"))
    assert [p.read_text() for p in kept] == ["an on-demand run's table\n"]
    assert "Running stage 'evaluate'" in third.stdout and "Running stage 'train'" not in third.stdout
    assert metrics.read_text() == committed and "dvc status: up to date" in third.stdout
    assert _sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout.strip() == ""

    # The same for a DVC-cached output (the on-demand flow with other params rewrote data/generated):
    # `dvc pull` would refuse to overwrite it, every night. It is moved aside, not lost, and the
    # committed version is checked out again.
    meta = repo / "data" / "generated" / "generate.json"
    committed = meta.read_bytes()
    meta.write_text('{"an on-demand run": true}')
    fourth = _sh(["augment", "scheduled-run"], repo)
    moved = list((repo / ".dvc/tmp/augment-displaced").glob("*/data/generated/generate.json"))
    assert [p.read_text() for p in moved] == ['{"an on-demand run": true}']
    assert meta.read_bytes() == committed and "Running stage" not in fourth.stdout
    assert "dvc status: up to date" in fourth.stdout
    assert _sh(["git", "status", "--porcelain", "--untracked-files=no"], repo).stdout.strip() == ""

    # A changed source is still refused, named on one line, and nothing runs.
    params = repo / "params.yaml"
    before = params.read_text()
    params.write_text(before + "\n# edited\n")
    try:
        dirty = _sh(["augment", "scheduled-run"], repo, ok=False)
    finally:
        params.write_text(before)
    assert dirty.returncode == 2 and "uncommitted changes: params.yaml." in dirty.stderr
    assert "$ dvc repro" not in dirty.stdout

    # The remote holds everything: a fresh clone gets the data and outputs with `dvc pull`.
    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    _sh(["dvc", "pull", "-q"], clone)
    assert (clone / "data/augmented/manifest.csv").is_file() and (clone / "models/generator.safetensors").is_file()
    assert "up to date" in _sh(["dvc", "status"], clone).stdout


@pytest.mark.slow
def test_experiments_metrics_diff_and_plots(repo: Path, tmp_path: Path):
    if not (repo / "dvc.lock").is_file():  # run alone: reproduce once first
        _sh(["augment", "scheduled-run", "--no-push"], repo)
    exp = _sh(["dvc", "exp", "run", "-S", "filter.top_fraction=0.3"], repo)
    assert "Running stage 'filter'" in exp.stdout and "Running stage 'train'" not in exp.stdout

    diff = json.loads(_sh(["dvc", "metrics", "diff", "--all", "--json"], repo).stdout)
    assert "metrics/evaluate.json" in diff
    params = json.loads(_sh(["dvc", "params", "diff", "--json"], repo).stdout)
    changed = params["params.yaml"]["filter.top_fraction"]
    assert (changed["old"], changed["new"]) == (0.5, 0.3)
    header = _sh(["dvc", "exp", "show", "--csv"], repo).stdout.splitlines()[0]
    assert "filter.top_fraction" in header and "comb" in header.split(",")  # headline metrics (evaluate.json)

    out = tmp_path / "plots"
    shown = json.loads(_sh(["dvc", "plots", "show", "--json", "-o", str(out)], repo).stdout)["data"]
    for png in ("models/sample_grid.png", "data/filtered/score_histogram.png", "models/loss_curves.png"):
        assert png in shown and shown[png][0]["type"] == "image", png
    assert any(k.endswith("metrics/train_log.csv") and v for k, v in shown.items())
    _sh(["dvc", "plots", "show", "-o", str(out)], repo)
    html = (out / "index.html").read_text()
    assert "sample_grid.png" in html and any(out.rglob("*sample_grid.png"))  # images copied next to the HTML

    _sh(["git", "checkout", "-q", "--", "."], repo)  # leave the workspace as committed (params, dvc.lock, metrics)
    _sh(["dvc", "checkout", "-q", "--force"], repo)


@pytest.mark.slow
def test_nightly_prefect_flow_runs_the_scheduled_run(repo: Path, prefect_harness, monkeypatch):
    """The flow the cron deployment runs (flows/scheduled.py): same function, Prefect logging + artifact."""
    from augment.flows.scheduled import nightly_dvc_run

    monkeypatch.setenv("PATH", str(Path(sys.executable).parent) + os.pathsep + os.environ.get("PATH", ""))
    for k, v in {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                 "GIT_COMMITTER_EMAIL": "t@t"}.items():
        monkeypatch.setenv(k, v)
    out = nightly_dvc_run(repo=str(repo))
    assert out["status_clean"] and out["pulled"] and out["pushed"]
    assert "dvc.lock" not in _sh(["git", "status", "--porcelain"], repo).stdout


def test_nightly_retries_a_remote_step_not_a_refused_or_failed_repro(tmp_path: Path):
    """The nightly task retries once when `dvc pull`/`push` failed (the remote may be back), not
    when the run was refused or `dvc repro` failed: that re-runs every stage before the failed one
    and fails the same way."""
    from augment.ops.scheduling import ScheduledRunError, ScheduledRunRefused, _run
    from augment.flows.scheduled import _retry_unless_refused

    class State:
        def __init__(self, exc):
            self.exc = exc

        def result(self):
            raise self.exc

    def failure(cmd: list[str]) -> ScheduledRunError:  # tmp_path is no DVC project: every dvc command fails
        with pytest.raises(ScheduledRunError) as info:
            _run(cmd, tmp_path, [], lambda line: None)
        return info.value

    assert _retry_unless_refused(None, None, State(failure(["dvc", "push"]))) is True
    assert _retry_unless_refused(None, None, State(failure(["dvc", "repro"]))) is False
    assert _retry_unless_refused(None, None, State(ScheduledRunRefused("lock held"))) is False


def test_a_null_test_dir_with_its_dvc_yaml_line_left_in_is_named(tmp_path: Path):
    """DVC itself says only 'ERROR: unexpected error' here; the scheduled run names the line."""
    from augment.ops.scheduling import ScheduledRunRefused, check_dvc_yaml_params

    import shutil

    from tests.conftest import ROOT

    shutil.copy2(ROOT / "dvc.yaml", tmp_path / "dvc.yaml")
    write_params(tmp_path / "params.yaml", {"prepare": {"test_dir": None, "test_fraction": 0.2}})
    with pytest.raises(ScheduledRunRefused, match=r"dvc.yaml line \d+ still depends on \$\{prepare.test_dir\}"):
        check_dvc_yaml_params(tmp_path)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text("".join(line for line in dvc_yaml.read_text().splitlines(keepends=True)
                                if "${prepare.test_dir}" not in line))
    check_dvc_yaml_params(tmp_path)  # the line removed, as README step 3 says: accepted


def test_on_demand_deployment_runs_in_the_repo_not_the_serving_folder(tmp_path: Path, monkeypatch):
    """`python flows/scheduled.py --repo R` started from another folder (systemd: `/`): both
    deployments work in R, resolved when the server starts."""
    from augment.flows import scheduled

    seen = {}
    monkeypatch.setattr(scheduled, "deployments", lambda *args: seen.update(args=args) or ())
    monkeypatch.setattr(scheduled, "serve", lambda *a, **k: None)
    (tmp_path / "repo").mkdir()
    monkeypatch.chdir(tmp_path)
    scheduled.main(["--repo", "repo"])
    repo, _, _, params, workdir = seen["args"]
    assert repo == workdir == str((tmp_path / "repo").resolve()) and params == "params.yaml"
    scheduled.main(["--repo", "repo", "--workdir", "other"])
    assert seen["args"][4] == str((tmp_path / "other").resolve())
