"""Faults a scheduled run meets: a worker killed mid-stage, a full disk, two runs at once.

- ``kill -9`` during train: the re-run resumes from ``runs/resume/train_state.safetensors`` and
  ends with the same checkpoint, byte for byte, as an uninterrupted run.
- ``kill -9`` during generate: the consumer-visible folder is still the previous complete one;
  the re-run completes and sweeps the half-built temporary away.
- A crash during merge leaves the previous merged folder untouched.
- ENOSPC while writing: a clear message naming the file, previous outputs intact.
- Two runs on one workspace: the second is refused at once (exit 75), never interleaved; a
  ``kill -9``'d holder leaves no stale lock.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from augment.cli import EXIT_LOCKED, main
from tests.conftest import ROOT, make_image_folder, write_params

WAIT_S = 240  # generous: the CI machine may be shared; nothing here is timed


def tree_digest(path: str | Path) -> dict[str, str]:
    path = Path(path)
    return {str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(path.rglob("*")) if p.is_file()}


def sub_env() -> dict[str, str]:
    import torch

    env = dict(os.environ)
    # Same thread count as this process: float reductions then run in the same order, so a run
    # split across processes can be compared bit for bit with one run in this process.
    env["OMP_NUM_THREADS"] = str(torch.get_num_threads())
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    env.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    return env


def start(args: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "augment.cli", *args, "--quiet"], cwd=cwd, env=sub_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(pred, proc: subprocess.Popen, what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not pred():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"process ended (rc {proc.returncode}) before {what}:\n{out}\n{err}")
        if time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"gave up waiting for {what}")
        time.sleep(0.02)


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGKILL


def run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


# ---------------------------------------------------------------------------------- kill -9


@pytest.mark.slow
def test_kill9_during_train_resumes_to_the_same_checkpoint(tmp_path: Path, monkeypatch, capsys):
    from safetensors.torch import load_file

    # Long enough that the kill lands mid-run even on a fast machine (the first resume state is at 10).
    train = {"iterations": 400, "checkpoint_every": 10, "sample_every": 60, "log_every": 5}
    ws = {}
    for name in ("killed", "clean"):
        ws[name] = tmp_path / name
        make_image_folder(ws[name] / "data/raw")
        write_params(ws[name] / "params.yaml", {"train": train})
        monkeypatch.chdir(ws[name])
        run("prepare")

    resume = ws["killed"] / "runs/resume/train_state.safetensors"
    proc = start(["train"], ws["killed"])
    wait_for(resume.is_file, proc, "the first resume checkpoint")
    # While it runs, the workspace is locked: a second command is refused, not interleaved.
    monkeypatch.chdir(ws["killed"])
    capsys.readouterr()
    assert main(["generate", "--quiet"]) == EXIT_LOCKED
    assert "another run holds the lock" in capsys.readouterr().err
    kill9(proc)
    assert not (ws["killed"] / "models/generator.safetensors").exists()
    assert resume.is_file()

    run("train")  # the re-run, in the killed workspace
    assert "resumed from iteration" in capsys.readouterr().out
    assert not resume.exists()  # finished: the resume state is cleaned up
    monkeypatch.chdir(ws["clean"])
    run("train")  # an uninterrupted run in this process

    a = load_file(ws["killed"] / "models/generator.safetensors")
    b = load_file(ws["clean"] / "models/generator.safetensors")
    assert a.keys() == b.keys()
    different = [k for k in a if not (a[k].dtype == b[k].dtype and a[k].shape == b[k].shape and (a[k] == b[k]).all())]
    assert not different, f"tensors differ after resume: {different[:5]}"
    assert tree_digest(ws["killed"] / "models")["generator.safetensors"] == \
        tree_digest(ws["clean"] / "models")["generator.safetensors"]
    assert (ws["killed"] / "metrics/train_log.csv").read_text() == (ws["clean"] / "metrics/train_log.csv").read_text()


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("faults")
    make_image_folder(root / "data/raw")
    write_params(root / "params.yaml")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        run("prepare")
        run("train")
        run("generate")
    finally:
        os.chdir(cwd)
    return root


def clone(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


@pytest.mark.slow
def test_kill9_during_generate_never_exposes_partial_output(trained: Path, tmp_path: Path, monkeypatch):
    from augment.generation.shards import iter_shards

    ws = clone(trained, tmp_path / "ws")
    before = tree_digest(ws / "data/generated")
    # Many small shards, so the kill lands mid-way.
    write_params(ws / "params.yaml", {"generate": {"n_per_class": 2000, "shard_size": 50, "batch_size": 50}})
    proc = start(["generate"], ws)
    wait_for(lambda: any(ws.glob("data/.generated.tmp-*/shard_00003.npz")), proc, "a few shards")
    kill9(proc)
    assert tree_digest(ws / "data/generated") == before  # the consumer still sees the old, complete output
    assert any(ws.glob("data/.generated.tmp-*"))  # the half-built one is hidden aside

    monkeypatch.chdir(ws)
    run("generate")  # the re-run completes
    meta = json.loads((ws / "data/generated/generate.json").read_text())
    assert meta["num_shards"] == 120 and len(list((ws / "data/generated").glob("shard_*.npz"))) == 120
    assert sum(len(s["labels"]) for s in iter_shards(ws / "data/generated", keys=("labels",))) == 6000
    assert not any(ws.glob("data/.generated.tmp-*"))  # stale temporaries swept


class Crash(Exception):
    pass


def test_crash_during_merge_keeps_the_previous_merged_folder(trained: Path, tmp_path: Path, monkeypatch):
    from PIL import Image

    from augment.config import load_params
    from augment.pipeline import stages

    ws = clone(trained, tmp_path / "ws")
    monkeypatch.chdir(ws)
    run("filter")
    run("merge")
    before = tree_digest("data/augmented")
    calls = {"n": 0}
    real_save = Image.Image.save

    def crashing_save(self, *args, **kwargs):  # every PNG merge writes goes through PIL
        calls["n"] += 1
        if calls["n"] > 3:
            raise Crash("simulated crash mid-merge")
        return real_save(self, *args, **kwargs)

    monkeypatch.setattr(Image.Image, "save", crashing_save)
    with pytest.raises(Crash):
        stages.run_merge(load_params("params.yaml").merge, stages.Paths())
    assert calls["n"] > 3
    assert tree_digest("data/augmented") == before
    assert not list(Path("data").glob(".augmented.tmp-*"))


# ------------------------------------------------------------------------------ full disk


def _enospc(*_a, **_k):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


@pytest.mark.parametrize("stage, out_dir", [("prepare", "data/prepared"), ("train", "models"),
                                            ("generate", "data/generated")])
def test_full_disk_is_reported_and_previous_outputs_survive(stage, out_dir, trained: Path, tmp_path: Path,
                                                            monkeypatch, capsys):
    ws = clone(trained, tmp_path / "ws")
    monkeypatch.chdir(ws)
    write_params(ws / "params.yaml", {"prepare": {"seed": 7}, "train": {"seed": 7}, "generate": {"seed": 7}})
    before = {d: tree_digest(d) for d in ("data/prepared", "models", "data/generated")}
    monkeypatch.setattr(os, "fsync", _enospc)  # every atomic write fsyncs before its rename
    capsys.readouterr()
    assert main([stage, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.startswith(f"augment {stage}: error: No space left on device (")
    assert "free some space and re-run" in err and "previous outputs are left as they were" in err
    assert {d: tree_digest(d) for d in before} == before
    assert not list(ws.rglob(".*tmp*"))  # no half-written file or folder left behind


def _digest(path: str) -> dict[str, str]:
    p = Path(path)
    return tree_digest(p) if p.is_dir() else {path: hashlib.sha256(p.read_bytes()).hexdigest()}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="tells the files apart by /proc/self/fd")
@pytest.mark.parametrize("stage, last, outputs, change", [
    ("train", "train_log.csv", ("models", "metrics/train_log.csv"), {"train": {"seed": 7}}),
    ("merge", "tuning.csv", ("data/augmented", "metrics/tuning.csv"), {"merge": {"quota": "count", "synthetic_count": 2}}),
    ("evaluate", "evaluate.md", ("metrics/evaluate_detail.json", "metrics/evaluate.json", "metrics/evaluate.md"),
     {"evaluate": {"seeds": [5]}}),
])
def test_a_full_disk_on_a_stages_last_file_leaves_all_its_outputs_as_they_were(
        stage, last, outputs, change, trained: Path, tmp_path: Path, monkeypatch, capsys):
    """A stage with several outputs (a folder and a metrics file, or three metrics files) changes
    none of them when writing the last one fails: the message's 'previous outputs are left as
    they were' holds for all of them, not only the one that failed."""
    ws = clone(trained, tmp_path / "ws")
    monkeypatch.chdir(ws)
    for s in ("filter", "merge", "evaluate"):
        run(s)
    write_params(ws / "params.yaml", change)  # the re-run would write other outputs
    before = {o: _digest(o) for o in outputs}
    real_fsync = os.fsync

    def fsync(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(f".{last}."):
            _enospc()
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    capsys.readouterr()
    assert main([stage, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"augment {stage}: error: No space left on device (") and last in err
    assert {o: _digest(o) for o in outputs} == before
    assert not list(ws.rglob(".*tmp*"))


# ----------------------------------------------------------------------------------- locking


def test_second_run_on_a_locked_workspace_is_refused_and_kill9_frees_the_lock(workspace: Path, capsys):
    # A holder process that only takes the lock (cheap to start); `augment` commands take the same one.
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import time; from augment.core.locking import workspace_lock\n"
         "with workspace_lock('.', what='holder'):\n    print('held', flush=True); time.sleep(600)"],
        cwd=workspace, env=sub_env(), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in workspace.rglob("*"))
        assert main(["prepare", "--quiet"]) == EXIT_LOCKED
        err = capsys.readouterr().err
        assert "another run holds the lock" in err and f"pid {holder.pid}" in err
        assert sorted(p.name for p in workspace.rglob("*")) == before  # it did nothing at all
        # The same from a second process, as a scheduler would start it.
        second = subprocess.run([sys.executable, "-m", "augment.cli", "train", "--quiet"], cwd=workspace,
                                env=sub_env(), capture_output=True, text=True, timeout=WAIT_S)
        assert second.returncode == EXIT_LOCKED and "another run holds the lock" in second.stderr
        assert "Traceback" not in second.stderr
    finally:
        kill9(holder)
    assert main(["prepare", "--quiet"]) == 0  # the kernel released the dead holder's lock


def test_lock_is_reentrant_within_one_process(workspace: Path):
    from augment.core.locking import workspace_lock

    with workspace_lock("."):
        with workspace_lock("."):
            pass
        run("prepare")  # a flow holding the lock can still call the stages
