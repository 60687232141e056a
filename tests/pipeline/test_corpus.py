"""A corpus of bad inputs: each one ends in a clean CLI exit (code 2, the file or key named) or a
documented skip that is counted and reported -- never a traceback from deep inside a library.

Every case goes through ``augment.cli.main`` exactly as a user (or ``dvc repro``) would. The table
in ``docs/reliability.md`` lists the same cases and outcomes.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import yaml
from PIL import Image

from augment.cli import main
from tests.conftest import make_image_folder, write_params

RAW = Path("data/raw")


# ------------------------------------------------------------------------------------ helpers


def png(arr: np.ndarray) -> bytes:
    from augment.core.images import png_bytes

    return png_bytes(arr)


def pil_bytes(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def bomb_png(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG whose header claims ``width x height`` pixels (a decompression bomb's header)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 1024)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def set_params(overrides: dict) -> None:
    write_params(Path("params.yaml"), overrides)


def first_image(cls: str = "class_0") -> Path:
    return sorted((RAW / cls).glob("*.png"))[0]


def report() -> dict:
    return json.loads(Path("data/prepared/report.json").read_text())


@dataclass
class Case:
    id: str
    setup: Callable[[Path], None]
    command: str = "prepare"
    needle: str | None = None  # expected in stderr (exit 2); None = expected to succeed (exit 0)
    check: Callable[[Path], None] | None = None  # extra assertions after the command
    needs_checkpoint: bool = False


# ----------------------------------------------------------------------------- data setups


def _mode_image(mode: str) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        rng = np.random.default_rng(1)
        base = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        img = Image.fromarray(base, "RGB")
        if mode == "I;16":
            img = Image.fromarray(rng.integers(0, 65535, (8, 8)).astype(np.uint16))  # mode I;16
        elif mode == "CMYK":
            (RAW / "class_0" / "cmyk.jpg").write_bytes(pil_bytes(img.convert("CMYK"), "JPEG"))
            return
        else:
            img = img.convert(mode)
        (RAW / "class_0" / f"mode_{mode.replace(';', '_')}.png").write_bytes(pil_bytes(img))

    return setup


def _expect_channels(c: int) -> Callable[[Path], None]:
    def check(ws: Path) -> None:
        r = report()
        assert r["image_shape"][2] == c and not r["skipped"]
        assert sum(r["counts"][s]["class_0"] for s in r["counts"]) == 9  # the extra image is used

    return check


def _truncate(ws: Path) -> None:
    p = first_image()
    p.write_bytes(p.read_bytes()[:40])


def _zero_byte(ws: Path) -> None:
    first_image().write_bytes(b"")


def _skip_policy(setup: Callable[[Path], None]) -> Callable[[Path], None]:
    def wrapped(ws: Path) -> None:
        setup(ws)
        set_params({"prepare": {"on_bad_file": "skip"}})

    return wrapped


def _skipped_named(name: str) -> Callable[[Path], None]:
    def check(ws: Path) -> None:
        skipped = report()["skipped"]
        assert any(name in s["file"] for s in skipped), skipped
        assert all(s["reason"] for s in skipped)

    return check


def _duplicate_into_every_split(ws: Path) -> None:
    # Many copies of one image in one class: with a stratified split some land in train and some
    # in val/test (a leak), whatever the seed.
    data = first_image("class_1").read_bytes()
    for i in range(6):
        (RAW / "class_1" / f"copy_{i}.png").write_bytes(data)


def _check_dropped(ws: Path) -> None:
    dup = report()["duplicates"]
    assert dup["policy"] == "drop" and dup["dropped"] and dup["exact_cross_split"] == 0
    manifest = Path("data/prepared/manifest.csv").read_text()
    for d in dup["dropped"]:
        assert d["file"] not in manifest  # dropped copies are gone from every split


def _check_warned(ws: Path) -> None:
    dup = report()["duplicates"]
    assert dup["exact_cross_split"] > 0 and not dup["dropped"]


def _odd_class_names(ws: Path) -> None:
    for old, new in [("class_0", "with space"), ("class_1", "ünïcødé ✓"), ("class_2", "-leading-dash")]:
        (RAW / old).rename(RAW / new)
    shutil.copytree(RAW / "with space", RAW / "..hidden-not-a-class")


def _check_odd_names(ws: Path) -> None:
    r = report()
    assert r["class_names"] == sorted(["with space", "ünïcødé ✓", "-leading-dash"])
    assert any("..hidden-not-a-class" in s["file"] and "hidden folder" in s["reason"] for s in r["skipped"])


def _symlink_file_outside(ws: Path) -> None:
    outside = ws / "outside.png"
    outside.write_bytes(first_image().read_bytes())
    (RAW / "class_0" / "link.png").symlink_to(outside)


def _symlink_class_outside(ws: Path) -> None:
    shutil.copytree(RAW / "class_2", ws / "elsewhere")
    shutil.rmtree(RAW / "class_2")
    (RAW / "class_2").symlink_to(ws / "elsewhere", target_is_directory=True)


def _many_classes(ws: Path) -> None:
    shutil.rmtree(RAW)
    make_image_folder(RAW, num_classes=120, per_class=3, size=4)


def _test_dir(extra: bool) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        make_image_folder(ws / "data/test", num_classes=4 if extra else 3, per_class=2, seed=5)
        set_params({"prepare": {"test_dir": "data/test"}})

    return setup


def _write_text(rel: str, text: str) -> Callable[[Path], None]:
    return lambda ws: (ws / rel).write_text(text)


# ------------------------------------------------------------------- checkpoint / order setups


def _install_checkpoint(ws: Path, trained: Path) -> None:
    shutil.copytree(trained / "models", ws / "models")


def _prepare_other_dataset(num_classes: int, size: int) -> Callable[[Path], None]:
    def setup(ws: Path) -> None:
        shutil.rmtree(RAW)
        make_image_folder(RAW, num_classes=num_classes, size=size)
        assert main(["prepare", "--quiet"]) == 0

    return setup


CKPT = Path("models/generator.safetensors")


def _truncate_checkpoint(ws: Path) -> None:
    CKPT.write_bytes(CKPT.read_bytes()[: CKPT.stat().st_size // 2])


def _flip_weight_byte(ws: Path) -> None:
    data = bytearray(CKPT.read_bytes())
    data[-100] ^= 0xFF  # inside the tensor data, after the header: safetensors alone would not notice
    CKPT.write_bytes(bytes(data))


def _tamper_header(ws: Path) -> None:
    data = bytearray(CKPT.read_bytes())
    n = struct.unpack("<Q", data[:8])[0]
    header = data[8 : 8 + n].decode()
    # Swap two dimensions of one tensor: the byte count still fits, so safetensors accepts it.
    m = next(m for m in re.finditer(r'"shape":\[(\d+),(\d+)', header) if m.group(1) != m.group(2))
    header = header[: m.start()] + f'"shape":[{m.group(2)},{m.group(1)}' + header[m.end() :]
    CKPT.write_bytes(struct.pack("<Q", len(header)) + header.encode() + bytes(data[8 + n :]))


def _unreadable_class(ws: Path) -> None:
    """A class folder whose every file is broken, with on_bad_file: skip: the error says they were
    skipped and why, not only that the folder holds no readable image."""
    (RAW / "class_3").mkdir()
    for i in range(2):
        (RAW / "class_3" / f"bad_{i}.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["prepare"]["on_bad_file"] = "skip"
    Path("params.yaml").write_text(yaml.safe_dump(params))


def _edit_metadata(ws: Path) -> None:
    """An edited training seed in the metadata: weights and shapes unchanged, so only the
    metadata's own digest can tell."""
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    with safe_open(str(CKPT), framework="pt") as fh:
        meta = json.loads(fh.metadata()["augment"])
    meta["train_config"]["seed"] += 1
    save_file(load_file(str(CKPT)), str(CKPT), metadata={"augment": json.dumps(meta, sort_keys=True)})


MARKER = "PWNED_BY_PICKLE"


class _Payload:
    """Unpickling this runs ``open(MARKER, 'w')``: the file appears only if something unpickles."""

    def __reduce__(self):
        return (open, (MARKER, "w"))


def _pickle_checkpoint(ws: Path) -> None:
    import torch

    torch.save({"weights": torch.zeros(3), "payload": _Payload()}, str(CKPT))


def _foreign_safetensors(ws: Path) -> None:
    import torch
    from safetensors.torch import save_file

    save_file({"w": torch.zeros(2)}, str(CKPT))


def _no_marker(ws: Path) -> None:
    assert not (ws / MARKER).exists(), "a pickle payload was executed"


def _pickled_dataset(ws: Path) -> None:
    assert main(["prepare", "--quiet"]) == 0
    obj = np.empty(1, dtype=object)
    obj[0] = _Payload()
    np.savez(ws / "data/prepared/dataset.npz", images=obj, labels=np.zeros(1), split=np.zeros(1),
             class_names=np.asarray(["a"]))


def _escaping_class_name(ws: Path) -> None:
    assert main(["prepare", "--quiet"]) == 0
    z = dict(np.load(ws / "data/prepared/dataset.npz"))
    z["class_names"] = np.asarray(["class_0", "../../escaped", "class_2"])
    np.savez(ws / "data/prepared/dataset.npz", **z)


def _generate_no_filter(ws: Path) -> None:
    assert main(["prepare", "--quiet"]) == 0
    assert main(["generate", "--quiet"]) == 0


def _prepared(ws: Path) -> None:
    assert main(["prepare", "--quiet"]) == 0


# ---------------------------------------------------------------------------------- the corpus

CASES = [
    # -- the dataset folder
    Case("raw_dir_missing", lambda ws: shutil.rmtree(RAW), needle="data/raw does not exist"),
    Case("raw_dir_is_a_file", lambda ws: (shutil.rmtree(RAW), RAW.write_bytes(b"x")), needle="is not a directory"),
    Case("empty_dataset", lambda ws: (shutil.rmtree(RAW), RAW.mkdir()), needle="has no class sub-folders"),
    Case("loose_files_no_classes", lambda ws: (shutil.rmtree(RAW), RAW.mkdir(), (RAW / "a.png").write_bytes(b"")),
         needle="found loose files such as 'a.png'"),
    Case("empty_class", lambda ws: (RAW / "class_3").mkdir(), needle="['class_3'] contain no readable images"),
    Case("class_of_unreadable_files_skipped", _unreadable_class, needle="class_3: 2 file(s) skipped, e.g. "),
    Case("single_class", lambda ws: (shutil.rmtree(RAW / "class_1"), shutil.rmtree(RAW / "class_2")),
         needle="need at least 2 class folders"),
    Case("class_with_one_image", lambda ws: (RAW / "class_3").mkdir() or shutil.copy(first_image(), RAW / "class_3"),
         needle="['class_3'] have fewer than 3 images"),
    Case("huge_class_count", _many_classes, check=lambda ws: report()["num_classes"] == 120 or pytest.fail()),
    Case("odd_class_folder_names", _odd_class_names, check=_check_odd_names),
    # -- individual files
    Case("non_image_file", lambda ws: (RAW / "class_0" / "notes.txt").write_text("hi"),
         check=_skipped_named("notes.txt")),
    Case("truncated_png", _truncate, needle="class_0/img_000.png: not a readable image"),
    Case("truncated_png_skipped", _skip_policy(_truncate), check=_skipped_named("img_000.png")),
    Case("corrupt_jpeg", lambda ws: (RAW / "class_0" / "bad.jpg").write_bytes(b"\xff\xd8\xff\xe0" + os.urandom(64)),
         needle="class_0/bad.jpg: not a readable image"),
    Case("zero_byte_file", _zero_byte, needle="class_0/img_000.png: not a readable image"),
    Case("zero_byte_file_skipped", _skip_policy(_zero_byte), check=_skipped_named("img_000.png")),
    Case("png_that_is_a_jpeg",
         lambda ws: (RAW / "class_0" / "really_jpeg.png").write_bytes(pil_bytes(Image.new("L", (8, 8), 90), "JPEG")),
         check=_expect_channels(1)),
    Case("mixed_sizes", lambda ws: (RAW / "class_0" / "big.png").write_bytes(png(np.zeros((13, 10, 1), np.uint8))),
         check=lambda ws: (report()["image_shape"] == [8, 8, 1] and report()["resized"] == 1
                           and [(Path(r["file"]).name, r["from"]) for r in report()["resized_files"]]
                           == [("big.png", [13, 10])]) or pytest.fail()),
    Case("decompression_bomb", lambda ws: (RAW / "class_0" / "bomb.png").write_bytes(bomb_png()),
         needle="class_0/bomb.png: refused as a possible decompression bomb"),
    Case("large_image_over_default_limit",
         lambda ws: (RAW / "class_0" / "huge.png").write_bytes(bomb_png(8_000, 7_000)),
         needle="class_0/huge.png: 8000x7000 pixels exceeds prepare.max_image_pixels=50000000"),
    Case("image_over_pixel_limit", lambda ws: set_params({"prepare": {"max_image_pixels": 10}}),
         needle="exceeds prepare.max_image_pixels=10"),
    Case("symlink_file_outside_dataset", _symlink_file_outside, needle="link.png: link points outside the dataset"),
    Case("symlink_class_folder_outside_dataset", _symlink_class_outside, needle="class folder is a link pointing outside"),
    # -- image modes (every one decodes; colour makes the whole set RGB)
    *[Case(f"mode_{m}", _mode_image(m), check=_expect_channels(c))
      for m, c in [("L", 1), ("RGB", 3), ("RGBA", 3), ("P", 3), ("I;16", 1), ("LA", 1), ("1", 1), ("CMYK", 3)]],
    Case("grey_saved_as_rgb_jpeg",  # R = G = B up to JPEG rounding: no colour, so the set stays grey
         lambda ws: (RAW / "class_0" / "grey_rgb.jpg").write_bytes(
             pil_bytes(Image.fromarray(np.random.default_rng(2).integers(0, 255, (8, 8), dtype=np.uint8)).convert("RGB"),
                       "JPEG")),
         check=lambda ws: (_expect_channels(1)(ws), report()["grey_rgb_images"] == 1 or pytest.fail())),
    # -- leakage
    Case("cross_split_duplicates_dropped", _duplicate_into_every_split, check=_check_dropped),
    Case("cross_split_duplicates_error",
         lambda ws: (_duplicate_into_every_split(ws), set_params({"prepare": {"on_cross_split_duplicate": "error"}})),
         needle="set prepare.on_cross_split_duplicate: drop"),
    Case("cross_split_duplicates_warn",
         lambda ws: (_duplicate_into_every_split(ws), set_params({"prepare": {"on_cross_split_duplicate": "warn"}})),
         check=_check_warned),
    Case("test_dir_with_unknown_class", _test_dir(extra=True), needle="['class_3'] are not in the training classes"),
    Case("test_dir_missing", lambda ws: set_params({"prepare": {"test_dir": "data/nope"}}),
         needle="data/nope does not exist"),
    Case("test_dir_inside_raw_dir",
         lambda ws: (make_image_folder(RAW / "test", num_classes=3, per_class=2, seed=5),
                     set_params({"prepare": {"test_dir": str(RAW / "test")}})),
         needle="prepare.test_dir = data/raw/test lies inside prepare.raw_dir = data/raw"),
    # -- params.yaml
    Case("params_missing", lambda ws: Path("params.yaml").unlink(), needle="params.yaml does not exist"),
    Case("params_not_yaml", _write_text("params.yaml", "train: [unclosed"), needle="not valid YAML"),
    Case("params_not_a_mapping", _write_text("params.yaml", "- 1\n- 2\n"), needle="expected a mapping"),
    Case("params_unknown_key", lambda ws: set_params({"prepare": {"raw_dri": "x"}}), needle="prepare.raw_dri"),
    Case("params_wrong_type", lambda ws: set_params({"train": {"iterations": "many"}}), needle="train.iterations"),
    Case("params_out_of_range", lambda ws: set_params({"generate": {"n_per_class": 0}}), needle="generate.n_per_class"),
    Case("params_bad_choice", lambda ws: set_params({"prepare": {"on_bad_file": "ignore"}}), needle="prepare.on_bad_file"),
    Case("params_bad_duplicate_policy", lambda ws: set_params({"prepare": {"on_cross_split_duplicate": "keep"}}),
         needle="prepare.on_cross_split_duplicate"),
    # -- stage order
    Case("train_before_prepare", lambda ws: None, command="train", needle="run the prepare stage first"),
    Case("generate_before_train", _prepared, command="generate", needle="run the train stage first"),
    Case("filter_before_generate", _prepared, command="filter", needle="run the generate stage first"),
    Case("merge_before_filter", _generate_no_filter, command="merge", needle="run the filter stage first",
         needs_checkpoint=True),
    # -- prepared data tampered with
    Case("prepared_npz_with_pickle_payload", _pickled_dataset, command="train", needle="refused to load",
         check=_no_marker),
    Case("prepared_class_name_escapes", _escaping_class_name, command="train", needle="is not a safe folder name"),
    # -- checkpoints
    Case("checkpoint_other_classes", _prepare_other_dataset(4, 8), command="generate",
         needle="was trained on classes", needs_checkpoint=True),
    Case("checkpoint_other_image_shape", _prepare_other_dataset(3, 12), command="generate",
         needle="was trained on images of shape [8, 8, 1]", needs_checkpoint=True),
    Case("checkpoint_truncated", _truncate_checkpoint, command="generate", needle="corrupt, truncated",
         needs_checkpoint=True),
    Case("checkpoint_weight_byte_flipped", _flip_weight_byte, command="generate", needle="integrity check",
         needs_checkpoint=True),
    Case("checkpoint_header_tampered", _tamper_header, command="generate", needle="integrity check",
         needs_checkpoint=True),
    Case("checkpoint_metadata_edited", _edit_metadata, command="generate", needle="its metadata",
         needs_checkpoint=True),
    Case("checkpoint_is_a_pickle_pt_file", _pickle_checkpoint, command="generate",
         needle="not a safetensors file", check=_no_marker, needs_checkpoint=True),
    Case("checkpoint_foreign_safetensors", _foreign_safetensors, command="generate", needle="unknown format",
         needs_checkpoint=True),
]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """One tiny trained checkpoint for every checkpoint case (train once, copy per case)."""
    root = tmp_path_factory.mktemp("trained")
    make_image_folder(root / "data/raw")
    write_params(root / "params.yaml")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        assert main(["prepare", "--quiet"]) == 0
        assert main(["train", "--quiet"]) == 0
    finally:
        os.chdir(cwd)
    return root


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_gives_clean_exit_or_reported_skip(case: Case, workspace: Path, capsys, request):
    if case.needs_checkpoint:
        _install_checkpoint(workspace, request.getfixturevalue("trained"))
    case.setup(workspace)
    capsys.readouterr()
    rc = main([case.command, "--quiet"])
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    if case.needle is None:
        assert rc == 0, err
    else:
        assert rc == 2, (out, err)
        assert err.startswith(f"augment {case.command}: error: ")
        assert case.needle in err, err
    if case.check:
        case.check(workspace)


def test_corpus_is_large_enough():
    assert len(CASES) >= 30


@pytest.mark.parametrize("stage", ["train", "generate"])
def test_device_not_present_is_a_clean_error(stage, workspace: Path, capsys, request):
    """``cuda:99`` exists nowhere: on a CPU machine CUDA is absent, on a GPU machine the index is."""
    _install_checkpoint(workspace, request.getfixturevalue("trained"))
    set_params({stage: {"device": "cuda:99"}})
    assert main(["prepare", "--quiet"]) == 0
    capsys.readouterr()
    assert main([stage, "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"augment {stage}: error: device 'cuda:99' requested") and "Traceback" not in err


def test_params_yaml_is_never_modified(workspace: Path):
    before = Path("params.yaml").read_bytes()
    assert main(["prepare", "--quiet"]) == 0
    assert Path("params.yaml").read_bytes() == before
    assert yaml.safe_load(before)["prepare"]["raw_dir"] == "data/raw"
