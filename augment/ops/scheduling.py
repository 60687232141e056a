"""Scheduled (nightly) runs of the DVC pipeline: pull -> repro -> push -> commit ``dvc.lock``.

    augment scheduled-run                 # in the git+DVC repository, e.g. from cron or Prefect

What one run does, in the repository ``repo``:

1. takes ``.dvc/tmp/augment-scheduled.lock`` (``flock``, non-blocking): a second scheduled run
   is refused at once with the holder named; an interactive ``dvc repro`` running meanwhile is
   refused by DVC's own rwlock;
2. refuses to start when tracked files have uncommitted changes (``dvc.lock`` is only meaningful
   committed together with the ``dvc.yaml``, ``params.yaml`` and code it was made from); the
   git-tracked metrics/plots outputs of dvc.yaml are the exception: when a run outside DVC (the
   on-demand flow, ``augment run``) rewrote them, they are copied to
   ``.dvc/tmp/augment-displaced/<UTC time>/`` and ``dvc repro`` rewrites them; DVC-cached outputs
   (``data/generated``, ``models``, ...) that such a run rewrote are moved there too (DVC would
   refuse to pull over them) and the committed versions are checked out again;
3. ``dvc pull --allow-missing`` from the default remote (data changed upstream; cached stage
   outputs so unchanged stages are not recomputed);
4. ``dvc repro`` (stages whose deps/params did not change are skipped);
5. ``dvc push`` of every output to the remote;
6. ``git commit`` of ``dvc.lock``, the un-cached metrics/plots files and the ``.gitignore`` entries
   DVC added for outputs -- only when they changed;
7. checks ``dvc status`` is clean and that no tracked file is left uncommitted (the next run would
   refuse to start), and returns a summary.

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
DISPLACED_RELPATH = ".dvc/tmp/augment-displaced"  # ignored by git (.dvc/.gitignore)


class ScheduledRunError(AugmentError, RuntimeError):
    """A scheduled run could not start or a step failed; the message says which and why.
    ``retryable``: the failed step talks to a remote (``dvc pull``/``push``), so trying again later
    may succeed; a failed ``dvc repro`` (a stage refused its input) would fail the same way."""

    retryable: bool = False


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
    displaced: str | None = None
    """Where pipeline outputs a run outside DVC had changed were kept, if any."""
    uncommitted: list[str] = field(default_factory=list)
    """Tracked files still changed after the run's commit: the next run would refuse to start."""
    log: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """``dvc status`` is clean and nothing tracked is left uncommitted."""
        return self.status_clean and not self.uncommitted

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


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
        err = ScheduledRunError(f"`{' '.join(cmd)}` failed in {repo} (exit {returncode}):\n{out}")
        err.retryable = cmd[:2] in (["dvc", "pull"], ["dvc", "push"])
        raise err
    return out


def _quiet(cmd: list[str], repo: Path, log: list[str], check: bool = True) -> str:
    """Run a query (git status, dvc remote list, ...) and return its stdout; nothing echoed."""
    res = subprocess.run(cmd, cwd=repo, env=_env(), capture_output=True, text=True, stdin=subprocess.DEVNULL)
    out = (res.stdout + res.stderr).strip()
    log.append(f"$ {' '.join(cmd)}\n{out}")
    if check and res.returncode != 0:
        raise ScheduledRunError(f"`{' '.join(cmd)}` failed in {repo} (exit {res.returncode}):\n{out}")
    return res.stdout.strip()


def uncached_outputs(repo: Path, existing: bool = True) -> list[str]:
    """Metrics/plots/outs declared ``cache: false`` in dvc.yaml: they live in git, next to dvc.lock.
    With ``existing`` only those present on disk."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text()) or {}
    paths: list[str] = []
    for stage in (spec.get("stages") or {}).values():
        for kind in ("outs", "metrics", "plots"):
            for entry in stage.get(kind, []) or []:
                if isinstance(entry, dict):
                    for p, opts in entry.items():
                        if isinstance(opts, dict) and opts.get("cache") is False:
                            paths.append(p)
    return [p for p in paths if not existing or (repo / p).exists()]


def check_dvc_yaml_params(repo: Path) -> None:
    """A mistake DVC reports only as "ERROR: unexpected error": ``prepare.test_dir: null`` in
    params.yaml while dvc.yaml still lists ``${prepare.test_dir}`` as a dependency."""
    params_file = repo / "params.yaml"
    if not params_file.is_file():
        return
    try:
        prepare = (yaml.safe_load(params_file.read_text(encoding="utf-8")) or {}).get("prepare") or {}
    except (yaml.YAMLError, AttributeError, UnicodeDecodeError):
        return  # the prepare stage reports a broken params file itself, naming it
    if not isinstance(prepare, dict) or "test_dir" not in prepare or prepare["test_dir"] is not None:
        return
    for number, line in enumerate((repo / "dvc.yaml").read_text(encoding="utf-8").splitlines(), 1):
        if "${prepare.test_dir}" in line.split("#", 1)[0]:
            raise ScheduledRunRefused(
                f"params.yaml sets prepare.test_dir: null but dvc.yaml line {number} still depends on "
                "${prepare.test_dir} (DVC would fail with only 'ERROR: unexpected error'): delete that line "
                "from the prepare stage's deps, commit, and run again")


def _dirty_paths(repo: Path, log: list[str]) -> list[str]:
    """Tracked paths with uncommitted changes (staged or not), as git spells them."""
    res = subprocess.run(["git", "status", "--porcelain=v1", "-z", "--untracked-files=no"], cwd=repo, env=_env(),
                         capture_output=True, text=True, stdin=subprocess.DEVNULL)
    log.append(f"$ git status --porcelain=v1 -z --untracked-files=no\n{res.stdout.replace(chr(0), ' ')}{res.stderr}")
    if res.returncode != 0:
        raise ScheduledRunError(f"`git status` failed in {repo} (exit {res.returncode}):\n{res.stderr.strip()}")
    records, paths = res.stdout.split("\0"), []
    i = 0
    while i < len(records):
        rec = records[i]
        i += 1
        if len(rec) < 4:
            continue
        paths.append(rec[3:])
        if rec[0] in "RC":  # a rename or copy: the next record is the original path
            i += 1
    return paths


def _is_under(path: str, roots: list[str]) -> bool:
    return any(path == r.rstrip("/") or path.startswith(r.rstrip("/") + "/") for r in roots)


def _displaced_dir(repo: Path) -> Path:
    import time

    return repo / DISPLACED_RELPATH / time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())


def _set_aside(repo: Path, paths: list[str], echo: Callable[[str], None], dest: Path) -> Path:
    """Copy ``paths`` (git-tracked pipeline outputs a run outside DVC rewrote) to ``dest``
    (``.dvc/tmp/augment-displaced/<UTC time>/``) before ``dvc repro`` rewrites them."""
    import shutil

    for rel in paths:
        src = repo / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    echo(f"pipeline outputs changed by a run outside DVC ({'; '.join(paths)}): copies kept in {dest}; "
         "dvc repro rewrites them from the committed params and code")
    return dest


def modified_cached_outputs(repo: Path, log: list[str]) -> list[str]:
    """DVC-cached stage outputs whose files differ from ``dvc.lock`` (``dvc status``: "modified"):
    a run outside DVC (the on-demand flow, ``augment run``) rewrote them. ``dvc pull`` refuses to
    overwrite them ("unsaved files"), so a scheduled run would fail at every later night."""
    import json

    res = subprocess.run(["dvc", "status", "--json"], cwd=repo, env=_env(), capture_output=True, text=True,
                         stdin=subprocess.DEVNULL)
    log.append(f"$ dvc status --json\n{res.stdout}{res.stderr}")
    try:
        status = json.loads(res.stdout or "{}") if res.returncode == 0 else {}
    except json.JSONDecodeError:
        return []  # `dvc pull` / `dvc repro` report what is wrong themselves
    uncached = uncached_outputs(repo, existing=False)
    found = set()
    for entries in status.values() if isinstance(status, dict) else []:
        for entry in entries if isinstance(entries, list) else []:
            changed = entry.get("changed outs") if isinstance(entry, dict) else None
            for path, state in (changed or {}).items() if isinstance(changed, dict) else []:
                if state == "modified" and not _is_under(path, uncached) and (repo / path).exists():
                    found.add(path)
    return sorted(found)


def _move_aside(repo: Path, paths: list[str], echo: Callable[[str], None], dest: Path) -> Path:
    """Move ``paths`` (DVC-cached outputs a run outside DVC rewrote) into ``dest``: a rename in
    the same repository, so a large ``data/generated`` costs no copy, and nothing is lost."""
    for rel in paths:
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(repo / rel, dest / rel)
    echo(f"DVC outputs changed by a run outside DVC ({'; '.join(paths)}): moved to {dest}; the committed "
         "versions are checked out again (dvc checkout / pull)")
    return dest


def scheduled_run(repo: str | Path = ".", pull: bool = True, push: bool = True, commit: bool = True,
                  allow_dirty: bool = False, message: str = "scheduled run: dvc repro",
                  echo: Callable[[str], None] = print) -> ScheduledRunResult:
    """One scheduled run in ``repo`` (see the module docstring). Raises ScheduledRunError."""
    repo = Path(repo).resolve()
    if not (repo / "dvc.yaml").is_file() or not (repo / ".dvc").is_dir():
        raise ScheduledRunRefused(f"{repo} is not a DVC project (no dvc.yaml / .dvc): run `dvc init` there first")
    if not (repo / ".git").exists():
        raise ScheduledRunRefused(f"{repo} is not a git repository: scheduled runs commit dvc.lock")
    check_dvc_yaml_params(repo)
    result = ScheduledRunResult()
    log = result.log
    with run_lock(repo):
        dest = _displaced_dir(repo)
        if not allow_dirty:
            dirty = _dirty_paths(repo, log)
            # Metrics/plots that dvc.yaml declares (cache: false, so git tracks them) and that a run
            # outside DVC rewrote (an on-demand flow, `augment run`): not sources, and `dvc repro`
            # rewrites them to match dvc.lock. They are copied aside, so nothing is lost, and the
            # run goes on. A changed source (params, dvc.yaml, code) is refused.
            outputs = [p for p in dirty if _is_under(p, uncached_outputs(repo, existing=False))]
            sources = [p for p in dirty if p not in outputs]
            if sources:
                raise ScheduledRunRefused(
                    f"tracked files have uncommitted changes: {'; '.join(sources)}. dvc.lock must match the committed "
                    "dvc.yaml, params.yaml and code: commit these changes (or revert them) first, or pass --allow-dirty")
            if outputs:
                result.displaced = str(_set_aside(repo, outputs, echo, dest))
        # DVC-cached outputs such a run rewrote: `dvc pull` would refuse to overwrite them.
        cached = modified_cached_outputs(repo, log)
        if cached:
            result.displaced = str(_move_aside(repo, cached, echo, dest))
        has_remote = bool(_quiet(["dvc", "remote", "list"], repo, log).strip())
        no_remote = "no DVC remote is configured (add one: dvc remote add -d NAME URL)"
        if pull and has_remote:
            _run(["dvc", "pull", "--allow-missing"], repo, log, echo)
            result.pulled = True
        else:
            if pull:
                echo(f"dvc pull skipped: {no_remote}")
                result.skipped.append("pull: no remote")
            if result.displaced:  # the committed versions of what was moved, from the local cache
                _run(["dvc", "checkout", "--allow-missing"], repo, log, echo)
        out = _run(["dvc", "repro"], repo, log, echo)
        result.stages_run = re.findall(r"Running stage '([^']+)'", out)
        if push and has_remote:
            _run(["dvc", "push"], repo, log, echo)
            result.pushed = True
        elif push:
            echo(f"dvc push skipped: {no_remote}; the outputs stay in this repository's cache only")
            result.skipped.append("push: no remote")
        if commit:
            # DVC also adds its outputs to .gitignore files: commit those with dvc.lock -- new, changed,
            # or already staged (core.autostage, which this project's .dvc/config sets, stages them).
            changed = _dirty_paths(repo, log) + _quiet(["git", "ls-files", "--others", "--exclude-standard"],
                                                       repo, log).splitlines()
            ignores = sorted({f.strip() for f in changed if f.strip().endswith(".gitignore")})
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
        if commit and not allow_dirty:
            result.uncommitted = _dirty_paths(repo, log)
            if result.uncommitted:
                echo(f"tracked files left uncommitted: {'; '.join(result.uncommitted)}. The next scheduled run "
                     "will refuse to start until they are committed (or reverted)")
    return result
