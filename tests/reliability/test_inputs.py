"""Classes 2 and 5 -- nothing blocks, inputs never silently altered: only regular files are read
(FIFOs, sockets, devices listed, never opened); EXIF orientation applied; multi-frame images,
non-finite pixels, label conflicts and every skipped file listed. The raw folder is never changed."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import socket
import stat
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from augment.core.images import decode_image, png_bytes
from tests.conftest import write_params
from tests.reliability.helpers import assert_one_line_error, run_cli, tree_hash

RAW = Path("data/raw")


@pytest.fixture(autouse=True)
def no_hang():
    """A test that blocks (a FIFO opened for reading) fails after 30 s instead of hanging the run."""
    def boom(*_):
        raise TimeoutError("blocked for 30 s")
    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(30)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def _report() -> dict:
    return json.loads(Path("data/prepared/report.json").read_text())


def _skipped(reason_word: str) -> list[str]:
    return [s["file"] for s in _report()["skipped"] if reason_word in s["reason"]]


def _prepare_ok(ws: Path, capsys) -> str:
    before = tree_hash(ws / "data" / "raw")
    rc, out, err = run_cli(capsys, "prepare", "--quiet")
    assert rc == 0, err
    assert tree_hash(ws / "data" / "raw") == before  # prepare never changes the user's data
    return err


def _prepare_refused(ws: Path, capsys, *needles: str) -> str:
    before = tree_hash(ws)
    rc, _, err = run_cli(capsys, "prepare", "--quiet")
    line = assert_one_line_error(rc, err, *needles)
    after = tree_hash(ws)
    after.pop(".augment.lock", None)
    assert after == before
    return line


def _bytes(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


# ------------------------------------------------------------------------ non-regular files


@pytest.mark.parametrize("policy", ["error", "skip"])
def test_fifo_in_a_class_folder_is_listed_never_opened(workspace, capsys, policy):
    write_params(workspace / "params.yaml", {"prepare": {"on_bad_file": policy}})
    os.mkfifo(RAW / "class_0" / "pipe.png")
    _prepare_ok(workspace, capsys)
    assert _skipped("FIFO") == [str(RAW / "class_0" / "pipe.png")]


def test_fifo_in_the_dataset_root_is_listed(workspace, capsys):
    os.mkfifo(RAW / "pipe.png")
    _prepare_ok(workspace, capsys)
    assert _skipped("FIFO") == [str(RAW / "pipe.png")]


def test_fifo_in_the_test_dir_is_listed(workspace, capsys):
    from tests.conftest import make_image_folder

    make_image_folder(workspace / "data" / "test", per_class=3, seed=9)
    os.mkfifo(workspace / "data" / "test" / "class_1" / "pipe.jpg")
    write_params(workspace / "params.yaml", {"prepare": {"test_dir": "data/test"}})
    _prepare_ok(workspace, capsys)
    assert _skipped("FIFO") == ["data/test/class_1/pipe.jpg"]


def test_socket_in_a_class_folder_is_listed(workspace, capsys):
    s = socket.socket(socket.AF_UNIX)
    try:
        s.bind(str(RAW / "class_2" / "sock.png"))
        _prepare_ok(workspace, capsys)
        assert _skipped("socket") == [str(RAW / "class_2" / "sock.png")]
    finally:
        s.close()


def test_character_device_is_listed(workspace, capsys):
    try:
        os.mknod(RAW / "class_1" / "dev.png", stat.S_IFCHR | 0o600, os.makedev(1, 3))
    except PermissionError:
        pytest.skip("creating a device node needs root")
    _prepare_ok(workspace, capsys)
    assert _skipped("device") == [str(RAW / "class_1" / "dev.png")]


def test_link_to_a_folder_inside_a_class_is_listed_not_followed(workspace, capsys):
    os.symlink("../class_1", RAW / "class_0" / "more.png")
    _prepare_ok(workspace, capsys)
    assert _skipped("folder") == [str(RAW / "class_0" / "more.png")]
    assert _report()["counts"]["train"]["class_0"] + _report()["counts"]["val"]["class_0"] \
        + _report()["counts"]["test"]["class_0"] == 8


def test_a_fifo_swapped_in_after_the_scan_is_not_read(workspace):
    from augment.data.prepare import read_regular_file
    from augment.errors import DataError

    os.mkfifo(workspace / "late.png")
    with pytest.raises(DataError, match="not a regular file"):
        read_regular_file(workspace / "late.png")


# ----------------------------------------------------------------------- every skip listed


def test_loose_file_in_the_root_is_listed(workspace, capsys):
    (RAW / "README.txt").write_text("my notes")
    (RAW / "stray.png").write_bytes(png_bytes(np.zeros((8, 8, 1), np.uint8)))
    _prepare_ok(workspace, capsys)
    assert sorted(_skipped("loose file")) == [str(RAW / "README.txt"), str(RAW / "stray.png")]


def test_hidden_files_are_listed(workspace, capsys):
    (RAW / ".DS_Store").write_bytes(b"x")
    (RAW / "class_0" / ".thumb.png").write_bytes(b"x")
    (RAW / "class_1" / ".cache").mkdir()
    (RAW / "class_1" / ".cache" / "a.png").write_bytes(b"x")
    _prepare_ok(workspace, capsys)
    hidden = sorted(_skipped("hidden"))
    assert hidden == sorted([str(RAW / ".DS_Store"), str(RAW / "class_0" / ".thumb.png"),
                             str(RAW / "class_1" / ".cache")])


# --------------------------------------------------------------------------- altered inputs


def _wide_folder(ws: Path) -> None:
    """Every image 8 high x 16 wide."""
    shutil.rmtree(RAW)
    rng = np.random.default_rng(0)
    for c in range(3):
        (RAW / f"c{c}").mkdir(parents=True)
        for i in range(5):
            img = rng.integers(0, 60, (8, 16, 1), dtype=np.uint8)
            img[:, c * 4] = 255
            (RAW / f"c{c}" / f"{i}.png").write_bytes(png_bytes(img))


def test_exif_orientation_is_applied_and_listed(workspace, capsys):
    _wide_folder(workspace)
    stored = Image.new("L", (8, 16))  # stored sideways: 8 wide, 16 high; EXIF says turn 90 degrees
    exif = Image.Exif()
    exif[0x0112] = 6
    (RAW / "c0" / "photo.jpg").write_bytes(_bytes(stored, "JPEG", exif=exif.tobytes()))
    _prepare_ok(workspace, capsys)
    r = _report()
    assert r["image_shape"] == [8, 16, 1] and r["resized"] == 0  # upright: not squashed
    assert [a["file"] for a in r["altered"]] == [str(RAW / "c0" / "photo.jpg")]
    assert "EXIF orientation 6" in r["altered"][0]["note"]


def test_decode_image_turns_by_exif():
    arr = np.zeros((16, 8), np.uint8)
    arr[0, :] = 255  # top row bright
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 clockwise to display
    notes: list[str] = []
    out = decode_image(_bytes(Image.fromarray(arr), "PNG", exif=exif.tobytes()), "x.png", notes=notes)
    assert out.shape == (8, 16, 1)
    assert (out[:, -1, 0] == 255).all()  # the top row is now the right-hand column
    assert notes and "EXIF" in notes[0]


@pytest.mark.parametrize("fmt,suffix", [("GIF", "gif"), ("TIFF", "tif")])
def test_multi_frame_first_frame_used_and_listed(workspace, capsys, fmt, suffix):
    frames = [Image.new("L", (8, 8), v) for v in (30, 200, 90)]
    name = RAW / "class_0" / f"anim.{suffix}"
    name.write_bytes(_bytes(frames[0], fmt, save_all=True, append_images=frames[1:]))
    err = _prepare_ok(workspace, capsys)
    altered = _report()["altered"]
    assert [a["file"] for a in altered] == [str(name)]
    assert "multi-frame image (3 frames)" in altered[0]["note"]
    assert "altered" in err


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_float_pixels_refused(workspace, capsys, bad):
    arr = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    arr[3, 4] = bad
    (RAW / "class_2" / "float.tif").write_bytes(_bytes(Image.fromarray(arr, mode="F"), "TIFF"))
    _prepare_refused(workspace, capsys, "class_2/float.tif", "1 pixel(s) are NaN or infinite",
                     "prepare.on_bad_file")


def test_non_finite_float_pixels_skipped_and_listed(workspace, capsys):
    write_params(workspace / "params.yaml", {"prepare": {"on_bad_file": "skip"}})
    arr = np.full((8, 8), np.nan, np.float32)
    (RAW / "class_2" / "float.tif").write_bytes(_bytes(Image.fromarray(arr, mode="F"), "TIFF"))
    _prepare_ok(workspace, capsys)
    assert _skipped("NaN or infinite") == [str(RAW / "class_2" / "float.tif")]


def test_finite_float_image_still_works(workspace, capsys):
    arr = np.linspace(-5, 5, 64, dtype=np.float32).reshape(8, 8)
    (RAW / "class_2" / "float.tif").write_bytes(_bytes(Image.fromarray(arr, mode="F"), "TIFF"))
    _prepare_ok(workspace, capsys)
    assert _report()["skipped"] == []


def test_same_image_under_two_labels_is_reported(workspace, capsys):
    shutil.copy(RAW / "class_0" / "img_000.png", RAW / "class_1" / "copy_of_0.png")
    err = _prepare_ok(workspace, capsys)
    conflicts = _report()["label_conflicts"]
    assert len(conflicts) == 1
    pair = {(conflicts[0]["a"], conflicts[0]["class_a"]), (conflicts[0]["b"], conflicts[0]["class_b"])}
    assert pair == {(str(RAW / "class_0" / "img_000.png"), "class_0"),
                    (str(RAW / "class_1" / "copy_of_0.png"), "class_1")}
    assert "two class labels" in err and "label_conflicts" in err


def test_label_conflict_between_raw_and_test_dir(workspace, capsys):
    from tests.conftest import make_image_folder

    make_image_folder(workspace / "data" / "test", per_class=3, seed=9)
    shutil.copy(RAW / "class_0" / "img_001.png", workspace / "data" / "test" / "class_2" / "x.png")
    write_params(workspace / "params.yaml", {"prepare": {"test_dir": "data/test"}})
    _prepare_ok(workspace, capsys)
    assert len(_report()["label_conflicts"]) == 1


def test_no_conflict_for_copies_within_one_class(workspace, capsys):
    shutil.copy(RAW / "class_0" / "img_000.png", RAW / "class_0" / "again.png")
    _prepare_ok(workspace, capsys)
    assert _report()["label_conflicts"] == []
