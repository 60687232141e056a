"""Class 6 -- the exit contract: a user-caused error is exit 2 and one line on stderr (a newline in a
file name cannot split it); Ctrl-C is exit 130, one line, and the resume state stays intact."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from augment.core.images import png_bytes
from tests.conftest import ROOT, write_params
from tests.reliability.helpers import assert_one_line_error, run_cli, tree_hash

RAW = Path("data/raw")


def test_newline_in_a_file_name_stays_one_line(workspace, capsys):
    bad = RAW / "class_0" / "evil\nname.png"
    bad.write_bytes(png_bytes(np.zeros((8, 8, 1), np.uint8))[:30])
    before = tree_hash(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    line = assert_one_line_error(rc, err, "evil\\nname.png", "not a readable image")
    assert line.startswith("augment prepare: error:")
    after = tree_hash(workspace)
    after.pop(".augment.lock", None)
    assert after == before


def test_carriage_return_in_a_class_name_stays_one_line(workspace, capsys):
    d = RAW / "two\rlines"
    d.mkdir()
    (d / "a.png").write_bytes(png_bytes(np.zeros((8, 8, 1), np.uint8)))
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "two\\rlines", "fewer than 3 images")


def test_newline_in_an_output_path_stays_one_line(workspace, capsys):
    rc, _, err = run_cli(capsys, "merge", "--quiet", "--augmented", "data/raw/x\ny")
    assert_one_line_error(rc, err, "x\\ny", "lies inside prepare.raw_dir")


def test_warnings_with_a_newline_stay_one_line_each(workspace, capsys):
    import shutil

    shutil.copy(RAW / "class_0" / "img_000.png", RAW / "class_1" / "dup\nlicate.png")
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert rc == 0
    assert "dup\\nlicate.png" in err  # the label-conflict warning names it, escaped
    assert not any(line.startswith("licate") for line in err.splitlines())


def test_os_error_is_exit_2_naming_the_file(workspace, capsys):
    Path("notes.txt").write_text("a file where a folder is needed")
    rc, _, err = run_cli(capsys, "prepare", "--quiet", "--prepared", "notes.txt/prepared")
    assert_one_line_error(rc, err, "notes.txt", "previous outputs are left as they were")


def test_an_output_inside_the_params_file_is_refused(workspace, capsys):
    rc, _, err = run_cli(capsys, "prepare", "--quiet", "--prepared", "params.yaml/prepared")
    assert_one_line_error(rc, err, "--prepared = params.yaml/prepared", "lies inside --params = params.yaml")


def test_default_dataset_over_a_file(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    Path("data").mkdir()
    Path("data/raw").write_text("a file")
    rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "3")
    assert_one_line_error(rc, err, "data/raw exists and is not a folder")
    assert Path("data/raw").read_text() == "a file"


def test_default_dataset_checks_its_arguments_before_writing_anything(tmp_path, monkeypatch, capsys):
    """A --per-class that is not scarce, or that leaves no test image of a digit, and a test folder
    under a file are refused before anything is written (before: data/raw was written, then the
    message said the previous outputs were left as they were)."""
    monkeypatch.chdir(tmp_path)
    for n in ("-5", "0", "1", "174"):  # the rarest digit has 174 images: 174 would leave no test image
        rc, _, err = run_cli(capsys, "default-dataset", "--per-class", n)  # 1: prepare would refuse it
        assert_one_line_error(rc, err, f"--per-class = {n}: choose 2 to 173 labelled images per digit")
    rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "2", "--test-dir", "")  # no test folder:
    assert_one_line_error(rc, err, "--per-class = 2: choose 3 to 174 labelled images per digit")  # + a test split
    Path("afile").write_text("x")
    rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "3", "--test-dir", "afile/test")
    assert_one_line_error(rc, err, "afile/test: afile is a file, not a folder")
    assert not Path("data").exists()  # nothing written, not even data/raw
    for raw, test in (("raw", "raw/test"), ("t2/test", "t2")):  # one inside the other: would lose one
        rc, _, err = run_cli(capsys, "default-dataset", "--per-class", "3", "--raw-dir", raw, "--test-dir", test)
        assert_one_line_error(rc, err, "lie one inside the other")
    assert not Path("raw").exists() and not Path("t2").exists()
    rc, _, _ = run_cli(capsys, "default-dataset", "--per-class", "173")
    assert rc == 0 and min(len(list(d.iterdir())) for d in Path("data/test").iterdir()) == 1  # the rarest: 1 left


def test_keyboard_interrupt_in_process(workspace, capsys, monkeypatch):
    import augment.data.prepare as prep

    def interrupted(cfg):
        raise KeyboardInterrupt

    monkeypatch.setattr(prep, "prepare_dataset", interrupted)
    before = tree_hash(workspace)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    assert_one_line_error(rc, err, "interrupted", code=130)
    after = tree_hash(workspace)
    after.pop(".augment.lock", None)
    assert after == before


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}


def test_ctrl_c_during_train_exits_130_with_resume_state_intact(workspace):
    write_params(workspace / "params.yaml", {"train": {"iterations": 20000, "checkpoint_every": 3}})
    assert subprocess.run([sys.executable, "-m", "augment.cli", "prepare", "--quiet"], env=_env(),
                          capture_output=True).returncode == 0
    raw_before = tree_hash(workspace / "data" / "raw")
    resume = workspace / "runs" / "resume" / "train_state.safetensors"
    # SIG_DFL in the child: an ignored SIGINT is inherited through exec, and a library earlier in the
    # test session (in-process dvc) may have left it ignored in this process -- Ctrl-C in a terminal
    # reaches train with the default disposition.
    proc = subprocess.Popen([sys.executable, "-m", "augment.cli", "train", "--quiet"], env=_env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.monotonic() + 120
    while not resume.is_file() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.05)
    assert resume.is_file(), "train wrote no resume state"
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert_one_line_error(proc.returncode, err, "augment train: interrupted", "resumes", code=130)
    assert not (workspace / "models").exists()  # nothing half-written in place
    from augment.models.checkpoint import Checkpoint

    ck = Checkpoint(resume)  # still a complete, verified state
    assert int(ck.extra["iteration"]) >= 3
    assert not list(resume.parent.glob(".*.tmp"))  # no temporary left behind
    assert tree_hash(workspace / "data" / "raw") == raw_before


def test_resumed_train_keeps_the_sample_grids_of_before_the_interruption(tmp_path):
    """A run interrupted after its resume state was written, then resumed, ends with the same sample
    grids (and log) as an uninterrupted run -- the grid drawn before the interruption included."""
    import pytest

    from augment.config import TrainConfig
    from augment.core.images import decode_image
    from augment.data.folder import scan_image_folder
    from augment.training.loop import train_generator
    from tests.conftest import make_image_folder

    make_image_folder(tmp_path / "raw", per_class=4)
    scan = scan_image_folder(tmp_path / "raw")
    x = np.stack([decode_image(p.read_bytes(), str(p)) for p in scan.files])
    y = np.asarray(scan.labels)
    cfg = TrainConfig(iterations=12, batch_size=6, z_dim=4, g_channels=4, d_channels=4, checkpoint_every=5,
                      sample_every=3, log_every=2, device="cpu")
    clean = train_generator(x, y, scan.class_names, cfg, resume_path=tmp_path / "a.safetensors", progress=False)

    def stop_at_8(row):
        if row["iteration"] == 8:
            raise KeyboardInterrupt

    resume = tmp_path / "b.safetensors"
    with pytest.raises(KeyboardInterrupt):
        train_generator(x, y, scan.class_names, cfg, resume_path=resume, progress=False, on_log=stop_at_8)
    resumed = train_generator(x, y, scan.class_names, cfg, resume_path=resume, progress=False)
    assert resumed.resumed_from == 5
    assert sorted(resumed.grids) == sorted(clean.grids) == [3, 6, 9, 12]
    for it in clean.grids:
        assert np.array_equal(resumed.grids[it], clean.grids[it]), it
    assert resumed.log == clean.log


def test_too_many_folds_for_the_data_fails_right_after_prepare(workspace, capsys):
    """`augment run` checks crossfit.folds against the prepared classes before the generator
    trains: the error names the classes and the fix, and no model is written."""
    write_params(Path("params.yaml"), {"crossfit": {"folds": 20}, "merge": {"quota": "crossfit"}})
    rc, _, err = run_cli(capsys, "run", "--quiet")
    assert_one_line_error(rc, err, "crossfit.folds = 20 needs at least 20 labelled images in every class",
                          "class_0", "lower crossfit.folds")
    assert Path("data/prepared/dataset.npz").is_file() and not Path("models/generator.safetensors").exists()
    # dvc repro runs each stage alone: `augment train` checks the folds before it trains
    rc, _, err = run_cli(capsys, "train", "--quiet")
    assert_one_line_error(rc, err, "crossfit.folds = 20 needs at least 20 labelled images in every class")
    assert not Path("models/generator.safetensors").exists()
