"""Scheduled runs stream the DVC output as it happens and say when pull/push are skipped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from augment.ops.scheduling import _run, scheduled_run
from tests.conftest import ROOT


def test_output_is_passed_on_line_by_line_as_it_is_printed(tmp_path: Path):
    """The command prints 'first', then waits until the callback has seen it (a flag file) before
    printing 'second': if lines reached the callback only when the command ended, it would give
    up waiting and print 'late'."""
    flag = tmp_path / "first-seen"
    seen: list[str] = []

    def echo(line: str) -> None:
        seen.append(line.strip())
        if line.strip() == "first":
            flag.touch()

    code = ("import os, time; print('first', flush=True); t = time.monotonic()\n"
            f"while not os.path.exists({str(flag)!r}) and time.monotonic() - t < 60: time.sleep(0.01)\n"
            f"print('second' if os.path.exists({str(flag)!r}) else 'late', flush=True)")
    out = _run([sys.executable, "-c", code], tmp_path, [], echo)
    assert seen[1:] == ["first", "second"] and out == "first\nsecond"


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
