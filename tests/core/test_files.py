"""Atomic file and folder writes, and lazy reads of saved arrays (augment/core/files.py)."""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from augment.core.files import atomic_save_npz, load_npz_keys
from augment.errors import DataError


def test_load_npz_keys_reads_only_the_asked_arrays(tmp_path: Path):
    f = tmp_path / "shard_00000.npz"
    atomic_save_npz(f, images=np.zeros((4, 2, 2, 1), np.uint8), scores=np.arange(4, dtype=np.float32))
    out = load_npz_keys(f, ("scores",))
    assert list(out) == ["scores"] and out["scores"].tolist() == [0, 1, 2, 3]
    with pytest.raises(DataError, match="missing array.*labels"):
        load_npz_keys(f, ("labels",))
    (tmp_path / "bad.npz").write_bytes(b"not a zip")
    with pytest.raises(DataError, match="bad.npz"):
        load_npz_keys(tmp_path / "bad.npz", ("scores",))


def test_atomic_directory_swap_never_leaves_the_path_missing(tmp_path: Path, monkeypatch):
    from augment.core.files import _exchange, atomic_directory

    probe_a, probe_b = tmp_path / "probe_a", tmp_path / "probe_b"
    probe_a.mkdir(), probe_b.mkdir()
    (probe_a / "a").touch()
    exchange_works = _exchange(probe_a, probe_b)
    if exchange_works:
        assert (probe_b / "a").exists() and not (probe_a / "a").exists()
    target = tmp_path / "out"
    with atomic_directory(target) as d:
        (d / "complete").write_text("0")
    moved_aside = []
    real_replace = os.replace

    def spy_replace(src, dst, *a, **k):
        if Path(src) == target:
            moved_aside.append(dst)  # the two-rename fallback: ``target`` missing until the next rename
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "replace", spy_replace)
    seen = {"missing": 0, "incomplete": 0, "reads": 0}
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            seen["reads"] += 1
            if not target.is_dir():
                seen["missing"] += 1
            elif not (target / "complete").is_file():
                seen["incomplete"] += 1

    t = threading.Thread(target=reader)
    t.start()
    try:
        for i in range(1, 100):
            with atomic_directory(target) as d:
                (d / "partial").write_bytes(np.zeros(10, np.uint8).tobytes())
                (d / "complete").write_text(str(i))
    finally:
        stop.set()
        t.join()
    assert seen["reads"] > 0 and seen["incomplete"] == 0
    assert (target / "complete").read_text() == "99"
    assert not list(tmp_path.glob(".out.*"))
    if exchange_works:  # Linux renameat2(RENAME_EXCHANGE) on this file system: one atomic swap
        assert not moved_aside and seen["missing"] == 0
    else:  # the two-rename fallback ran (the spy saw it); say so rather than pass without the check
        assert moved_aside
        if sys.platform.startswith("linux"):
            pytest.skip(f"renameat2(RENAME_EXCHANGE) is not supported on the file system of {tmp_path}: "
                        "only the fallback's 'never incomplete' was checked")


def test_workspace_relative_is_the_same_however_the_workspace_is_spelled(tmp_path: Path, monkeypatch):
    from augment.core.files import workspace_relative

    ws = tmp_path / "ws"
    (ws / "data/raw/a").mkdir(parents=True)
    link = tmp_path / "link"
    link.symlink_to(ws, target_is_directory=True)
    monkeypatch.chdir(ws)
    want = "data/raw/a/x.png"
    assert workspace_relative("data/raw/a/x.png", ".") == want
    assert workspace_relative(ws / "data/raw/a/x.png", ws) == want
    assert workspace_relative(link / "data/raw/a/x.png", link) == want
    assert workspace_relative("data/raw/a/x.png", link) == want  # through the link: the real paths agree
    assert workspace_relative("/elsewhere/x.png", ws) == "/elsewhere/x.png"  # outside: as given


@pytest.mark.parametrize("umask", [0o022, 0o077])
def test_outputs_get_the_users_umask_not_owner_only(tmp_path: Path, umask: int):
    """A training job running as another user must be able to read the outputs under the usual
    umask (022), and a private umask (077) is still honoured."""
    import stat

    from augment.core.files import atomic_directory, atomic_write_text, current_umask

    old = os.umask(umask)
    try:
        assert current_umask() == umask
        atomic_write_text(tmp_path / "metrics.json", "{}")
        with atomic_directory(tmp_path / "augmented") as d:
            (d / "a.png").write_bytes(b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "metrics.json").stat().st_mode) == 0o666 & ~umask
    assert stat.S_IMODE((tmp_path / "augmented").stat().st_mode) == 0o777 & ~umask


def test_a_read_only_image_becomes_a_tensor_without_a_warning():
    """Decoded images and memory-mapped shards are read-only arrays; torch would warn on each."""
    import warnings

    from augment.core.pixels import image_to_tensor

    img = np.full((4, 4, 1), 255, np.uint8)
    img.flags.writeable = False
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t = image_to_tensor(img)
    assert t.shape == (1, 4, 4) and float(t.max()) == 1.0


def test_a_rename_failing_midway_leaves_every_file_as_it_was(tmp_path: Path, monkeypatch):
    """evaluate writes its detail, summary and per-class files as one output: a rename that fails
    after the first one went through must not leave one new file beside two old ones."""
    import augment.core.files as files

    old = {tmp_path / "detail.json": b"old detail", tmp_path / "summary.json": b"old summary"}
    for f, data in old.items():
        f.write_bytes(data)
    new = {tmp_path / "detail.json": b"new", tmp_path / "per_class.csv": b"new", tmp_path / "summary.json": b"new"}
    real_replace, calls = os.replace, []

    def replace_failing_third(src, dst):
        calls.append(dst)
        if len(calls) == 3:
            raise OSError(5, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", replace_failing_third)
    with pytest.raises(OSError, match="Input/output error"):
        files.atomic_write_files(new)
    monkeypatch.setattr(files.os, "replace", real_replace)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == {"detail.json": b"old detail",
                                                                  "summary.json": b"old summary"}
    files.atomic_write_files(new)  # and when nothing fails, every file is new and no temp is left
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == {f.name: b"new" for f in new}


def test_an_old_file_that_cannot_be_put_back_is_kept_and_named(tmp_path: Path, monkeypatch):
    import augment.core.files as files

    (tmp_path / "a.json").write_bytes(b"old a")
    real_replace, calls = os.replace, []

    def failing(src, dst):  # the second rename fails, and so does putting the first one back
        calls.append(dst)
        if len(calls) >= 2:
            raise OSError(5, "Input/output error", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", failing)
    with pytest.raises(OSError, match=r"could not put back .*a\.json \(its previous contents: .*\.old\)"):
        files.atomic_write_files({tmp_path / "a.json": b"new a", tmp_path / "b.json": b"new b"})
    kept = [f for f in tmp_path.iterdir() if f.name.endswith(".old")]
    assert [f.read_bytes() for f in kept] == [b"old a"]
    assert not [f for f in tmp_path.iterdir() if f.name.endswith(".tmp")]
