"""Scheduled (nightly) runs of the DVC pipeline: pull -> repro -> push -> commit ``dvc.lock``.

    augment scheduled-run                 # in the git+DVC repository, e.g. from cron or Prefect

What one run does, in the repository ``repo``:

1. takes ``.dvc/tmp/augment-scheduled.lock`` (``flock``, non-blocking): a second scheduled run
   is refused at once with the holder named; an interactive ``dvc repro`` running meanwhile is
   refused by DVC's own rwlock;
2. refuses to start when tracked files have uncommitted changes (``dvc.lock`` is only meaningful
   committed together with the ``dvc.yaml``, ``params.yaml`` and code it was made from);
3. ``dvc pull --allow-missing`` from the default remote (data changed upstream; cached stage
   outputs so unchanged stages are not recomputed);
4. ``dvc repro`` (stages whose deps/params did not change are skipped);
5. ``dvc push`` of every output to the remote;
6. ``git commit`` of ``dvc.lock``, the un-cached metrics/plots files and the ``.gitignore`` entries
   DVC added for outputs -- only when they changed;
7. checks ``dvc status`` is clean and returns a summary.

The flow wrapper (``flows/scheduled.py``) runs the same function on a Prefect cron schedule.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from augment.core.locking import flock_exclusive
from augment.errors import AugmentError, LockBusyError

LOCK_RELPATH = ".dvc/tmp/augment-scheduled.lock"


class ScheduledRunError(AugmentError, RuntimeError):
    """A scheduled run could not start or a step failed; the message says which and why."""


class ScheduledRunRefused(ScheduledRunError):
    """The run refused to start (another run holds the lock, uncommitted changes, not a repo):
    retrying will not help."""


@dataclass
class ScheduledRunResult:
    stages_run: list[str] = field(default_factory=list)
    """Stages ``dvc repro`` ran (the rest were unchanged and skipped)."""
    pulled: bool = False
    pushed: bool = False
    committed: str | None = None
    """The new commit's sha, or ``None`` when nothing changed."""
    status_clean: bool = False
    """``dvc status`` reports nothing to do after the run."""
    skipped: list[str] = field(default_factory=list)
    """Steps skipped and why (``"pull: no remote"``, ``"push: no remote"``)."""
    log: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@contextlib.contextmanager
def run_lock(repo: str | Path) -> Iterator[Path]:
    """Hold the scheduled-run lock of ``repo`` or raise :class:`ScheduledRunError` at once."""
    path = Path(repo) / LOCK_RELPATH
    try:
        with flock_exclusive(path, f"pid {os.getpid()}"):
            yield path
    except LockBusyError as exc:
        if exc.path != path:
            raise
        raise ScheduledRunRefused(f"another scheduled run holds {path} ({exc.holder}); refusing to run concurrently") from None


def _env() -> dict[str, str]:
    # PYTHONUNBUFFERED: the stage commands (`augment ...`) print their summaries as they happen
    # even though their output is a pipe.
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "NO_ALBUMENTATIONS_UPDATE": "1", "PYTHONUNBUFFERED": "1"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    return env


def _run(cmd: list[str], repo: Path, log: list[str], echo: Callable[[str], None], check: bool = True) -> str:
    """Run ``cmd``, passing every output line to ``echo`` as it is printed (not at the end: a
    ``dvc repro`` of several minutes shows each stage as it starts and what it prints)."""
    echo("$ " + " ".join(cmd))
    lines: list[str] = []
    with subprocess.Popen(cmd, cwd=repo, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                          stdin=subprocess.DEVNULL, text=True, bufsize=1, errors="replace") as proc:
        assert proc.stdout is not None
        for raw in proc.stdout:
            line = raw.rstrip("\r\n")
            lines.append(line)
            if line.strip():
                echo("  " + line)
        returncode = proc.wait()
    out = "\n".join(lines).strip()
    log.append(f"$ {' '.join(cmd)}\n{out}")
    if check and returncode != 0:
        raise ScheduledRunError(f"`{' '.join(cmd)}` failed in {repo} (exit {returncode}):\n{out}")
    return out


def _quiet(cmd: list[str], repo: Path, log: list[str], check: bool = True) -> str:
    """Run a query (git status, dvc remote list, ...) and return its stdout; nothing echoed."""
    res = subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    out = (res.stdout + res.stderr).strip()
    log.append(f"$ {' '.join(cmd)}\n{out}")
    if check and res.returncode != 0:
        raise ScheduledRunError(f"`{' '.join(cmd)}` failed in {repo} (exit {res.returncode}):\n{out}")
    return res.stdout.strip()


def uncached_outputs(repo: Path) -> list[str]:
    """Metrics/plots/outs declared ``cache: false`` in dvc.yaml: they live in git, next to dvc.lock."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text()) or {}
    paths: list[str] = []
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                if isinstance(entry, dict):
                    for p, opts in entry.items():
                        if isinstance(opts, dict) and opts.get("cache") is False:
                            paths.append(p)
    return [p for p in paths if (repo / p).exists()]


def scheduled_run(repo: str | Path = ".", pull: bool = True, push: bool = True, commit: bool = True,
                  allow_dirty: bool = False, message: str = "scheduled run: dvc repro",
                  echo: Callable[[str], None] = print) -> ScheduledRunResult:
    """One scheduled run in ``repo`` (see the module docstring). Raises ScheduledRunError."""
    repo = Path(repo).resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / ".dvc").is_dir():
        raise ScheduledRunRefused(f"{repo} is not a DVC project (no dvc.yaml / .dvc): run `dvc init` there first")
    if not (repo / ".git").exists():
        raise ScheduledRunRefused(f"{repo} is not a git repository: scheduled runs commit dvc.lock")
    result = ScheduledRunResult()
    log = result.log
    with run_lock(repo):
        if not allow_dirty:
            dirty = _quiet(["git", "status", "--porcelain", "--untracked-files=no"], repo, log)
            if dirty.strip():
                raise ScheduledRunRefused("tracked files have uncommitted changes; commit them first (dvc.lock must match "
                                        f"the committed dvc.yaml, params.yaml and code), or pass --allow-dirty:\n{dirty}")
        has_remote = bool(_quiet(["dvc", "remote", "list"], repo, log).strip())
        no_remote = "no DVC remote is configured (add one: dvc remote add -d NAME URL)"
        if pull and has_remote:
            _run(["dvc", "pull", "--allow-missing"], repo, log, echo)
            result.pulled = True
        elif pull:
            echo(f"dvc pull skipped: {no_remote}")
            result.skipped.append("pull: no remote")
        out = _run(["dvc", "repro"], repo, log, echo)
        result.stages_run = re.findall(r"Running stage '([^']+)'", out)
        if push and has_remote:
            _run(["dvc", "push"], repo, log, echo)
            result.pushed = True
        elif push:
            echo(f"dvc push skipped: {no_remote}; the outputs stay in this repository's cache only")
            result.skipped.append("push: no remote")
        if commit:
            # DVC also adds its outputs to .gitignore files: commit those with dvc.lock.
            changed = _quiet(["git", "ls-files", "--modified", "--others", "--exclude-standard"], repo, log)
            ignores = sorted({f.strip() for f in changed.splitlines() if f.strip().endswith(".gitignore")})
            files = ["dvc.lock"] + uncached_outputs(repo) + ignores
            files = [f for f in files if (repo / f).exists()]
            _quiet(["git", "add", "--", *files], repo, log)
            staged = _quiet(["git", "diff", "--cached", "--name-only", "--", *files], repo, log)
            if staged.strip():
                summary = ", ".join(result.stages_run) or "no stage"
                _run(["git", "commit", "-q", "-m", f"{message} ({summary})", "--", *files], repo, log, echo)
                result.committed = _quiet(["git", "rev-parse", "HEAD"], repo, log).strip()
                echo(f"committed {', '.join(staged.split())} as {result.committed[:10]}")
            else:
                echo("dvc.lock unchanged: nothing to commit")
        status = _quiet(["dvc", "status"], repo, log)
        result.status_clean = "up to date" in status or not status.strip()
        echo("dvc status: " + ("up to date" if result.status_clean else status))
    return result
