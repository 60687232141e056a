"""dvclive for training: live per-step metrics and sample grids through train_generator's
callbacks, dvc.yaml left alone, and the library working without dvclive."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from augment.config import TrainConfig
from augment.training.live import LiveLogger
from augment.training.loop import train_generator

TINY = TrainConfig(iterations=6, batch_size=4, z_dim=4, g_channels=4, d_channels=4, log_every=2, sample_every=3,
                   checkpoint_every=100, device="cpu")


def _data():
    rng = np.random.default_rng(0)
    return rng.integers(0, 255, (12, 8, 8, 1), dtype=np.uint8), np.arange(12) % 3


def test_train_generator_calls_on_log_and_on_grid_as_it_goes():
    seen: list[tuple[str, int]] = []
    x, y = _data()
    train_generator(x, y, ["a", "b", "c"], TINY, progress=False,
                    on_log=lambda row: seen.append(("log", row["iteration"])),
                    on_grid=lambda it, grid: seen.append(("grid", it)) if grid.dtype == np.uint8 else None)
    assert seen == [("log", 2), ("grid", 3), ("log", 4), ("log", 6), ("grid", 6)]


def test_live_logger_writes_each_step_at_once_and_leaves_dvc_yaml_alone(tmp_path: Path, monkeypatch):
    pytest.importorskip("dvclive")
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    dvc_yaml = tmp_path / "dvc.yaml"
    dvc_yaml.write_text("stages: {}\n# hand-written, must stay as it is\n")
    before = dvc_yaml.read_bytes()
    monkeypatch.chdir(tmp_path)
    # A repository without a commit yet: dvclive fails to start; the same files are written anyway
    # (dvc.yaml declares them as outputs).
    with LiveLogger(tmp_path / "early") as early:
        assert early.live is None
        early.on_log({"iteration": 2, "loss_d": 1.0})
    assert json.loads((tmp_path / "early/metrics.json").read_text()) == {"loss_d": 1.0, "step": 2}
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"],
                   cwd=tmp_path, check=True)
    out = tmp_path / "metrics" / "train_live"
    with LiveLogger(out) as live:
        live.on_log({"iteration": 2, "loss_d": 1.5, "loss_g": 0.5, "aug_p": 0.1})
        # written now, not when training ends
        assert json.loads((out / "metrics.json").read_text())["aug_p"] == 0.1
        assert (out / "plots/metrics/loss_d.tsv").read_text().splitlines()[1].split("\t") == ["2", "1.5"]
        live.on_log({"iteration": 4, "loss_d": 1.25, "loss_g": 0.75, "aug_p": 0.2})
        live.on_grid(3, np.zeros((10, 20, 1), np.uint8))
        live.on_grid(6, np.zeros((10, 20, 3), np.uint8))
    assert (out / "plots/metrics/aug_p.tsv").read_text().splitlines()[1:] == ["2\t0.1", "4\t0.2"]
    assert sorted(p.name for p in (out / "plots/images/samples").iterdir()) == ["iter_0000003.png", "iter_0000006.png"]
    assert dvc_yaml.read_bytes() == before
    assert not list(out.rglob("dvc.yaml")) and not (tmp_path / "metrics" / "dvc.yaml").exists()


def test_resume_keeps_what_was_logged(tmp_path: Path, monkeypatch):
    pytest.importorskip("dvclive")
    monkeypatch.chdir(tmp_path)
    with LiveLogger(tmp_path / "live") as live:
        live.on_log({"iteration": 2, "loss_d": 1.0})
    with LiveLogger(tmp_path / "live", resume=True) as live:
        live.on_log({"iteration": 4, "loss_d": 2.0})
    assert (tmp_path / "live/plots/metrics/loss_d.tsv").read_text().splitlines()[1:] == ["2\t1.0", "4\t2.0"]
    assert not (tmp_path / "dvc.yaml").exists()  # none created in the current directory either


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_without_dvclive_the_same_files_are_written(tmp_path: Path, monkeypatch):
    """Library works without dvclive: the files dvc.yaml declares exist, in dvclive's layout."""
    pytest.importorskip("dvclive")
    monkeypatch.chdir(tmp_path)
    rows = [{"iteration": 2, "loss_d": 1.5, "aug_p": 0.0}, {"iteration": 4, "loss_d": 1.25, "aug_p": 0.125}]
    grid = np.arange(60, dtype=np.uint8).reshape(6, 10, 1)
    for name, block in (("with", False), ("without", True)):
        if block:
            monkeypatch.setitem(sys.modules, "dvclive", None)  # `import dvclive` raises ImportError
        with LiveLogger(tmp_path / name) as live:
            assert (live.live is None) == block
            for row in rows:
                live.on_log(row)
            live.on_grid(6, grid)
    a, b = _tree(tmp_path / "with"), _tree(tmp_path / "without")
    assert sorted(a) == sorted(b) == ["metrics.json", "plots/images/samples/iter_0000006.png",
                                      "plots/metrics/aug_p.tsv", "plots/metrics/loss_d.tsv"]
    for name in ("plots/metrics/aug_p.tsv", "plots/metrics/loss_d.tsv"):
        assert a[name] == b[name]
    assert json.loads(a["metrics.json"]) == json.loads(b["metrics.json"]) == {"loss_d": 1.25, "aug_p": 0.125, "step": 4}
    # resume keeps earlier rows without dvclive too
    with LiveLogger(tmp_path / "without", resume=True) as live:
        live.on_log({"iteration": 6, "loss_d": 1.0, "aug_p": 0.25})
    assert (tmp_path / "without/plots/metrics/loss_d.tsv").read_text().splitlines()[1:] == ["2\t1.5", "4\t1.25", "6\t1.0"]


def test_a_failing_dvclive_end_does_not_fail_training(tmp_path, monkeypatch, caplog):
    """dvclive's end() can fail outside our control (two DDP ranks removing the same signal file):
    the run logs a warning and goes on, as when dvclive cannot start."""
    from augment.training.live import LiveLogger

    pytest.importorskip("dvclive")
    # a repository with a commit, where dvclive starts (the first test shows it does not without one)
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", "init"],
                   cwd=tmp_path, check=True)
    monkeypatch.chdir(tmp_path)
    logger = LiveLogger(tmp_path / "train_live")
    assert logger.live is not None

    def boom():
        raise FileNotFoundError("DVCLIVE_STEP_COMPLETED")

    monkeypatch.setattr(logger.live, "end", boom)
    with caplog.at_level("WARNING"):
        logger.end()
    assert logger.live is None and "dvclive could not end cleanly" in caplog.text


def _live_tree(d: Path) -> dict[str, bytes]:
    return {k: v for k, v in _tree(d).items() if k != "metrics.json"} | {
        "metrics.json": json.dumps(json.loads((d / "metrics.json").read_text()), sort_keys=True).encode()}


def test_a_resumed_train_stage_logs_the_whole_run_even_when_its_live_folder_was_deleted(workspace: Path, monkeypatch):
    """`dvc repro` deletes a stage's outputs (metrics/train_live among them) before re-running it:
    the train stage resumed from runs/resume/ must still hold every row and grid of the run, as an
    uninterrupted run does, and a resume state that no longer matches must leave no old rows."""
    import shutil

    from augment.config import load_params
    from augment.pipeline import stages
    from augment.pipeline.paths import Paths

    monkeypatch.setitem(sys.modules, "dvclive", None)  # the same files either way (test above)
    cfg = load_params(workspace / "params.yaml")
    paths = Paths().rooted(workspace)
    stages.run_prepare(cfg.prepare, paths)
    live_dir = Path(paths.metrics_dir) / "train_live"
    stages.run_train(cfg.train, paths, progress=False)
    uninterrupted = _live_tree(live_dir)
    assert len(uninterrupted["plots/metrics/loss_d.tsv"].splitlines()) == 1 + 6  # header + iterations 2..12

    class Interrupt(Exception):
        pass

    real_on_log = LiveLogger.on_log

    def crash(self, row):
        if row["iteration"] == 8:  # after the resume state of iteration 5
            raise Interrupt
        real_on_log(self, row)

    monkeypatch.setattr(LiveLogger, "on_log", crash)
    with pytest.raises(Interrupt):
        stages.run_train(cfg.train, paths, progress=False)
    monkeypatch.setattr(LiveLogger, "on_log", real_on_log)
    assert Path(paths.resume).is_file()
    shutil.rmtree(live_dir)  # what dvc repro does before it runs the stage again
    out = stages.run_train(cfg.train, paths, progress=False)
    assert out["resumed_from"] == 5
    assert _live_tree(live_dir) == uninterrupted

    # A resume state from other params (another seed) is not used; the rows of its run are not kept.
    monkeypatch.setattr(LiveLogger, "on_log", crash)
    with pytest.raises(Interrupt):
        stages.run_train(dataclasses.replace(cfg.train, seed=7), paths, progress=False)
    monkeypatch.setattr(LiveLogger, "on_log", real_on_log)
    out = stages.run_train(cfg.train, paths, progress=False)
    assert out["resumed_from"] in (None, 0)
    assert _live_tree(live_dir) == uninterrupted
