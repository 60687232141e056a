"""Scheduled runs stream the DVC output as it happens and say when pull/push are skipped."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from augment.ops.scheduling import _run, scheduled_run
from tests.conftest import ROOT


def test_output_is_passed_on_line_by_line_as_it_is_printed(tmp_path: Path):
    seen: list[tuple[float, str]] = []
    t0 = time.monotonic()
    code = "import time; print('first', flush=True); time.sleep(2.5); print('second', flush=True)"
    out = _run([sys.executable, "-c", code], tmp_path, [], lambda s: seen.append((time.monotonic() - t0, s)))
    lines = [s.strip() for _, s in seen]
    assert lines[1:] == ["first", "second"] and out == "first\nsecond"
    first_at, second_at = seen[1][0], seen[2][0]
    assert second_at - first_at > 1.5  # 'first' arrived while the command was still running


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", *args], cwd=repo, check=True,
                   capture_output=True)


def test_skipped_pull_and_push_are_logged_without_a_remote(tmp_path: Path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text("stages:\n  hello:\n    cmd: python -c \"open('out.txt','w').write('hi')\"\n"
                                   "    outs: [out.txt]\n")
    (repo / ".gitignore").write_text((ROOT / ".gitignore").read_text())
    _git(repo, "add", "-A")
    _git(repo, "commit", "-q", "-m", "init")
    echoed: list[str] = []
    res = scheduled_run(repo, commit=False, echo=echoed.append)
    assert any(e.startswith("dvc pull skipped: no DVC remote is configured") for e in echoed), echoed
    assert any(e.startswith("dvc push skipped: no DVC remote is configured") for e in echoed), echoed
    assert res.skipped == ["pull: no remote", "push: no remote"] and not res.pulled and not res.pushed
    assert res.stages_run == ["hello"] and any("Running stage 'hello'" in e for e in echoed)
    assert res.status_clean
