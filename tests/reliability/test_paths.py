"""Class 1 -- no output can destroy an input: every stage refuses, before it deletes or swaps
anything, an output that is, contains or lies inside an input dataset, another stage's output or
the workspace; the lock file is never followed through a link nor truncated."""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

import pytest

from tests.conftest import make_image_folder, write_params
from tests.reliability.helpers import assert_one_line_error, run_cli, tree_hash


def _snapshot(ws: Path) -> dict[str, str]:
    return {k: v for k, v in tree_hash(ws).items() if k != ".augment.lock"}


# (command, flags, words the message must hold)
COLLISIONS = [
    ("merge", ["--augmented", "data/raw"], ["--augmented = data/raw", "is prepare.raw_dir"]),
    ("merge", ["--augmented", "data/raw/class_0"], ["lies inside prepare.raw_dir"]),
    ("merge", ["--augmented", "data"], ["contains prepare.raw_dir"]),
    ("merge", ["--augmented", "data/prepared"], ["is --prepared"]),
    ("prepare", ["--prepared", "data/raw"], ["--prepared = data/raw", "is prepare.raw_dir"]),
    ("prepare", ["--prepared", "."], ["workspace"]),
    ("prepare", ["--prepared", ".."], ["workspace"]),
    ("generate", ["--generated", "data"], ["contains prepare.raw_dir"]),
    ("generate", ["--generated", "models"], ["is --model-dir"]),
    ("generate", ["--generated", "data/filtered"], ["is --filtered"]),
    ("filter", ["--filtered", "data/generated"], ["is --generated"]),
    ("filter", ["--filtered", "data/raw/class_1/sub"], ["lies inside prepare.raw_dir"]),
    ("train", ["--model-dir", "data/prepared"], ["--model-dir = data/prepared", "is --prepared"]),
    ("train", ["--metrics-dir", "data/raw"], ["lies inside prepare.raw_dir"]),
    ("train", ["--resume", "data/raw/class_0/img_000.png"], ["--resume", "lies inside prepare.raw_dir"]),
    ("train", ["--metrics-dir", "models"], ["overlap"]),
    ("evaluate", ["--metrics-dir", "data/raw/class_2"], ["lies inside prepare.raw_dir"]),
    ("run", ["--generated", "data/raw"], ["--generated = data/raw"]),
]


@pytest.mark.parametrize("command,flags,needles", COLLISIONS,
                         ids=[f"{c}{'_'.join(f)}" for c, f, _ in COLLISIONS])
def test_output_over_an_input_is_refused(built, capsys, command, flags, needles):
    before = _snapshot(built)
    rc, out, err = run_cli(capsys, command, "--quiet", *flags)
    assert_one_line_error(rc, err, *needles, "choose another path")
    assert _snapshot(built) == before  # nothing written, nothing deleted, raw data byte-identical


def test_absolute_and_dotted_spellings_are_the_same_folder(built, capsys):
    before = _snapshot(built)
    rc, _, err = run_cli(capsys, "merge", "--quiet", "--augmented", f"{built}/data/./raw/../raw")
    assert_one_line_error(rc, err, "is prepare.raw_dir")
    assert _snapshot(built) == before


def test_a_link_to_the_raw_folder_is_the_raw_folder(built, capsys):
    os.symlink("raw", built / "data" / "alias")
    before = _snapshot(built)
    rc, _, err = run_cli(capsys, "merge", "--quiet", "--augmented", "data/alias")
    assert_one_line_error(rc, err, "data/alias", "is prepare.raw_dir")
    assert _snapshot(built) == before


def test_output_over_the_test_dir_is_refused(workspace, capsys):
    make_image_folder(workspace / "data" / "test", per_class=3, seed=5)
    write_params(workspace / "params.yaml", {"prepare": {"test_dir": "data/test"}})
    before = _snapshot(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet", "--prepared", "data/test")
    assert_one_line_error(rc, err, "is prepare.test_dir = data/test")
    assert _snapshot(workspace) == before


def test_raw_dir_inside_an_output_is_refused(workspace, capsys):
    (workspace / "data" / "raw").rename(workspace / "data" / "prepared")
    write_params(workspace / "params.yaml", {"prepare": {"raw_dir": "data/prepared/raw"}})
    (workspace / "data" / "prepared" / "raw").mkdir()
    before = _snapshot(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "contains prepare.raw_dir = data/prepared/raw")
    assert _snapshot(workspace) == before


def test_separate_outputs_still_work(workspace, capsys):
    rc, out, err = run_cli(capsys, "prepare", "--quiet", "--prepared", "elsewhere/prepared")
    assert rc == 0, err
    assert Path("elsewhere/prepared/dataset.npz").is_file()


# --------------------------------------------------------------------------------- lock file


def test_lock_symlink_is_refused_and_its_target_kept(workspace, capsys):
    victim = workspace.parent / "victim.txt"
    victim.write_text("keep\n")
    os.symlink(victim, workspace / ".augment.lock")
    before = _snapshot(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, ".augment.lock is a symbolic link")
    assert victim.read_text() == "keep\n"
    assert _snapshot(workspace) == before and not Path("data/prepared").exists()


def test_dangling_lock_symlink_is_refused_and_nothing_created(workspace, capsys):
    target = workspace.parent / "would-be-created.txt"
    os.symlink(target, workspace / ".augment.lock")
    rc, _, err = run_cli(capsys, "train", "--quiet")
    assert_one_line_error(rc, err, "symbolic link")
    assert not target.exists()


def test_lock_hard_link_is_refused_and_its_twin_kept(workspace, capsys):
    victim = workspace / "victim.txt"
    victim.write_text("keep\n")
    os.link(victim, workspace / ".augment.lock")
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "hard link")
    assert victim.read_text() == "keep\n"


def test_lock_fifo_is_refused_without_blocking(workspace, capsys):
    os.mkfifo(workspace / ".augment.lock")
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "not a regular file")


def test_lock_folder_is_refused(workspace, capsys):
    (workspace / ".augment.lock").mkdir()
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, ".augment.lock")


def test_lock_file_is_never_truncated(workspace, capsys):
    lock = workspace / ".augment.lock"
    lock.write_bytes(b"x" * 1000)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert rc == 0, err
    assert lock.stat().st_size == 1000


def test_holder_is_named_while_the_lock_is_held(workspace, capsys):
    fd = os.open(workspace / ".augment.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.write(fd, b"pid 4242 (augment train)\n")
        before = _snapshot(workspace)
        rc, _, err = run_cli(capsys, "prepare", "--quiet")
        assert_one_line_error(rc, err, "pid 4242 (augment train)", code=75)
        assert _snapshot(workspace) == before
    finally:
        os.close(fd)


# --------------------------------------------------------------------------- default-dataset


def test_default_dataset_refuses_a_non_empty_folder(workspace, capsys):
    (workspace / "data" / "raw" / "my_own_class").mkdir()
    (workspace / "data" / "raw" / "my_own_class" / "x.png").write_bytes(b"mine")
    before = _snapshot(workspace)
    rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "3")
    assert_one_line_error(rc, err, "data/raw already exists and is not empty", "--force")
    assert _snapshot(workspace) == before


def test_default_dataset_waits_for_no_one_while_the_lock_is_held(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    fd = os.open(tmp_path / ".augment.lock", os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "3")
        assert_one_line_error(rc, err, "another run holds the lock", code=75)
        assert not (tmp_path / "data").exists()
    finally:
        os.close(fd)


def test_an_output_that_is_the_flows_workdir_is_refused_from_any_current_folder(tmp_path, monkeypatch):
    """The flow's workspace is its workdir, not the caller's current folder: an output spelled as
    the workdir is refused even when the flow runs from elsewhere."""
    import dataclasses

    from augment.config import load_params, root_config
    from augment.errors import ConfigError
    from augment.pipeline.paths import Paths
    from augment.pipeline.stages import check_stage_paths, get_stage

    ws = tmp_path / "ws"
    make_image_folder(ws / "data" / "raw")
    write_params(ws / "params.yaml")
    monkeypatch.chdir(tmp_path)  # the caller's folder holds the workdir: not the workspace itself
    paths = dataclasses.replace(Paths().rooted(ws), generated=str(ws))
    with pytest.raises(ConfigError, match="is the workspace folder"):
        check_stage_paths(get_stage("generate"), root_config(load_params(ws / "params.yaml"), ws), paths)
    # merge writes two outputs; `--augmented .` also holds the other (metrics/): the workspace is
    # named, not the overlap, which is only a symptom
    paths = dataclasses.replace(Paths().rooted(ws), augmented=str(ws))
    with pytest.raises(ConfigError, match="augmented = .* is the workspace folder"):
        check_stage_paths(get_stage("merge"), root_config(load_params(ws / "params.yaml"), ws), paths)
