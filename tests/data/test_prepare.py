"""The prepare stage's split and duplicate logic (augment/data/prepare.py): stratified proportions
per class, every image in exactly one split, the same seed gives the same split; exact and near
duplicates are found; a copy that spans splits is dropped (test copy kept), refused or reported."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from augment.config import PrepareConfig
from augment.data.prepare import (
    SPLIT_CODE,
    SPLITS,
    find_duplicates,
    prepare_dataset,
    stratified_split,
)
from augment.errors import DataError
from tests.conftest import make_image_folder

TRAIN, VAL, TEST = (SPLIT_CODE[s] for s in SPLITS)


def labels_of(counts: list[int]) -> np.ndarray:
    return np.repeat(np.arange(len(counts)), counts)


def test_stratified_split_keeps_the_proportions_of_every_class():
    counts = [40, 20, 12, 7]
    labels = labels_of(counts)
    split = stratified_split(labels, val_fraction=0.2, test_fraction=0.25, seed=0)
    assert split.shape == labels.shape and set(np.unique(split)) <= {TRAIN, VAL, TEST}
    for c, n in enumerate(counts):
        mine = split[labels == c]
        assert (mine == TEST).sum() == max(1, round(n * 0.25)), c
        assert (mine == VAL).sum() == max(1, round(n * 0.2)), c
        assert (mine == TRAIN).sum() == n - max(1, round(n * 0.25)) - max(1, round(n * 0.2)), c


def test_tiny_classes_keep_a_training_image():
    labels = labels_of([3, 2, 1])
    split = stratified_split(labels, val_fraction=0.4, test_fraction=0.4, seed=0)
    assert sorted(split[labels == 0].tolist()) == [TRAIN, VAL, TEST]  # three images: one per split
    assert (split[labels >= 1] == TRAIN).all()  # fewer than three: all train


def test_stratified_split_is_determined_by_the_seed():
    labels = labels_of([30, 30, 30])
    a, b = (stratified_split(labels, 0.2, 0.2, seed=7) for _ in range(2))
    assert np.array_equal(a, b)
    c = stratified_split(labels, 0.2, 0.2, seed=8)
    assert not np.array_equal(a, c)
    assert np.bincount(a, minlength=3).tolist() == np.bincount(c, minlength=3).tolist()  # same sizes


def test_every_image_lands_in_exactly_one_split(tmp_path: Path):
    raw = make_image_folder(tmp_path / "raw", num_classes=3, counts=[9, 5, 14])
    ds, report = prepare_dataset(PrepareConfig(raw_dir=str(raw), val_fraction=0.2, test_fraction=0.2, seed=3))
    on_disk = sorted(str(p) for p in raw.rglob("*.png"))
    assert sorted(ds.files) == on_disk  # every file once: none lost, none in two splits
    assert len(ds.split) == len(ds.files) == len(ds.images)
    per_split = {s: {f for f, code in zip(ds.files, ds.split) if code == SPLIT_CODE[s]} for s in SPLITS}
    assert sum(len(v) for v in per_split.values()) == len(on_disk)
    assert sum(report["counts"][s][name] for s in SPLITS for name in ds.class_names) == len(on_disk)
    again, _ = prepare_dataset(PrepareConfig(raw_dir=str(raw), val_fraction=0.2, test_fraction=0.2, seed=3))
    assert again.files == ds.files and np.array_equal(again.split, ds.split)
    np.testing.assert_array_equal(again.images, ds.images)


def test_find_duplicates_tells_exact_from_near():
    rng = np.random.default_rng(0)
    base = rng.integers(0, 200, (8, 8, 1), dtype=np.uint8)
    near = base.copy()
    near[0, :4] += 8  # mean |diff| = 32 / 64 = 0.5 <= tolerance
    other = rng.integers(0, 200, (8, 8, 1), dtype=np.uint8)
    images = np.stack([base, base, near, other, base])
    hashes = ["h0", "h0", "h2", "h3", "h4"]  # image 4: other file bytes, same pixels -> still exact
    split = np.array([TRAIN, TEST, TRAIN, VAL, TRAIN], dtype=np.int8)
    dups = {(d["a"], d["b"]): d for d in find_duplicates(images, hashes, split, tolerance=2.0)}
    assert set(dups) == {(0, 1), (0, 2), (0, 4), (1, 2), (1, 4), (2, 4)}  # image 3 matches nothing
    assert {k for k, d in dups.items() if d["kind"] == "exact"} == {(0, 1), (0, 4), (1, 4)}
    assert dups[(0, 2)]["kind"] == "near" and dups[(0, 2)]["mean_abs_diff"] == pytest.approx(0.5)
    assert dups[(0, 1)]["cross_split"] and not dups[(0, 4)]["cross_split"]
    strict = find_duplicates(images, hashes, split, tolerance=0.0)  # exact ones at any tolerance
    assert {(d["a"], d["b"]) for d in strict} == {(0, 1), (0, 4), (1, 4)}


def _raw_with_copies(tmp_path: Path, copies: int = 5) -> Path:
    """Three classes; class_0 holds ``copies`` extra copies of one image, spread over the splits."""
    raw = make_image_folder(tmp_path / "raw", num_classes=3, per_class=10)
    for i in range(copies):
        shutil.copy(raw / "class_0/img_000.png", raw / f"class_0/copy_{i}.png")
    return raw


def _copies(files: list[str]) -> list[int]:
    """Indices of the original and its copies."""
    return [i for i, f in enumerate(files) if f.endswith(("class_0/img_000.png",)) or "/copy_" in f]


def test_cross_split_copies_are_reported_refused_or_dropped(tmp_path: Path):
    raw = _raw_with_copies(tmp_path)
    cfg = dict(raw_dir=str(raw), val_fraction=0.25, test_fraction=0.25, seed=0)

    warned, report = prepare_dataset(PrepareConfig(**cfg, on_cross_split_duplicate="warn"))
    copy_splits = {int(warned.split[i]) for i in _copies(warned.files)}
    assert len(copy_splits) > 1, "the seed must spread the copies over splits for this test"
    assert report["duplicates"]["exact_cross_split"] > 0 and not report["duplicates"]["dropped"]
    assert len(warned.files) == 35  # warn keeps every image

    with pytest.raises(DataError, match="identical image pair"):
        prepare_dataset(PrepareConfig(**cfg, on_cross_split_duplicate="error"))

    kept, report = prepare_dataset(PrepareConfig(**cfg, on_cross_split_duplicate="drop"))
    keep_split = TEST if TEST in copy_splits else TRAIN  # the test copy stays: the test set is fixed
    assert {int(kept.split[i]) for i in _copies(kept.files)} == {keep_split}
    dropped = report["duplicates"]["dropped"]
    n_copies = len(_copies(warned.files))
    assert len(dropped) == n_copies - len(_copies(kept.files)) > 0
    assert all(d["split"] != SPLITS[keep_split] for d in dropped)
    assert report["duplicates"]["exact_cross_split"] == 0
    assert len(kept.files) == 35 - len(dropped)
    assert all(f not in kept.files for f in (d["file"] for d in dropped))
    assert all(d["identical_to"] in kept.files for d in dropped)  # the copy kept is named
    from augment.pipeline.stages import get_stage

    stage = get_stage("prepare")
    assert f"({len(dropped)} identical dropped)" in stage.summary(report)
    assert f"= {dropped[0]['identical_to']}" in stage.warnings(report)[0]


def test_prepare_notes_what_the_common_shape_changed():
    """A resized image and a few colour files among grey ones are named in the stage's notes."""
    from augment.pipeline.stages import get_stage

    report = {"duplicates": {"exact_cross_split": 0, "near_cross_split": 0}, "image_shape": [24, 32, 3],
              "resized_files": [{"file": "raw/a/square.png", "from": [28, 28]}],
              "colour_images": 1, "colour_example": "raw/a/as_rgb.png", "images_read": 30}
    report["resized_files"] = [{"file": "raw/a/wide.png", "from": [28, 40]}]  # [height, width]
    resized, colour = get_stage("prepare").warnings(report)
    assert ("1 image(s) resized (stretched, not cropped) to the most common size 32x24 (width x height), "
            "e.g. raw/a/wide.png (40x28)") in resized
    assert "1 of 30 images are colour (e.g. raw/a/as_rgb.png), so every image is prepared as RGB" in colour
    assert get_stage("prepare").warnings({**report, "resized_files": [], "colour_images": 30}) == []
    large = get_stage("prepare").warnings({**report, "resized_files": [], "colour_images": 30,
                                           "image_shape": [300, 200, 3]})
    assert len(large) == 1 and "200x300 pixels" in large[0] and "8 to 128" in large[0]


def test_16_bit_images_keep_their_intensities_relative_to_each_other(tmp_path: Path):
    """16-bit images are mapped to 8 bits by one mapping for the whole dataset, not each stretched
    to its own 0..255: a dark image stays darker than a bright one (absolute intensities carry
    the class signal in inspection and medical images), a flat one does not turn black, and the
    report lists the mapping for each file. The test folder never sets the range."""
    from PIL import Image

    raw, test = tmp_path / "raw", tmp_path / "test"
    levels = {"dark": [1000, 1200, 1400], "bright": [3000, 3500, 4000]}
    for c, values in levels.items():
        for folder in (raw, test):
            (folder / c).mkdir(parents=True)
        for i, v in enumerate(values):
            img = np.full((8, 8), v, np.uint16)
            img[0, 0] = v + 8  # not flat
            Image.fromarray(img).save(raw / c / f"{i}.png")
        Image.fromarray(np.full((8, 8), 60000, np.uint16)).save(test / c / "t.png")  # brighter than any raw
    ds, report = prepare_dataset(PrepareConfig(raw_dir=str(raw), test_dir=str(test), val_fraction=0.0))
    mean = {Path(f).parent.name + "/" + Path(f).name: float(ds.images[i].mean()) for i, f in enumerate(ds.files)}
    assert mean["dark/0.png"] < mean["dark/2.png"] < mean["bright/0.png"] < mean["bright/2.png"]
    assert mean["dark/0.png"] == pytest.approx(0.0, abs=1.0) and mean["bright/2.png"] == pytest.approx(255.0, abs=1.0)
    assert mean["dark/1.png"] == pytest.approx(255 * (1200 - 1000) / (4008 - 1000), abs=1.0)
    assert mean["dark/t.png"] == 255.0  # clipped: the raw images' range, not the test image's
    noted = [a for a in report["altered"] if "high-bit-depth" in a["note"]]
    assert len(noted) == len(ds.files) and "1000..4008" in noted[0]["note"]


def _write(path: Path, arr: np.ndarray, fmt: str = "PNG") -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, format=fmt)


def test_grey_images_saved_as_rgb_are_prepared_as_grey(tmp_path: Path):
    """Grey digits exported as RGB files (R = G = B; a JPEG's rounding included) carry no colour:
    prepared as one channel with the grey values unchanged, counted in the report and named in a
    note -- a generator and a classifier would otherwise learn three copies of one channel, and a
    colour jitter would put colour into grey data. ``prepare.channels: rgb`` keeps 3 channels."""
    from augment.pipeline.stages import get_stage

    rng = np.random.default_rng(0)
    grey = {}
    for c in ("a", "b"):
        for i in range(4):
            g = rng.integers(0, 256, (8, 8), dtype=np.uint8)
            grey[f"{c}/{i}.png"] = g
            _write(tmp_path / "raw" / c / f"{i}.png", np.repeat(g[..., None], 3, axis=2))
    _write(tmp_path / "raw" / "a" / "j.jpg", np.full((8, 8, 3), 120, np.uint8), "JPEG")
    _write(tmp_path / "raw" / "b" / "l.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))  # mode L beside them
    cfg = PrepareConfig(raw_dir=str(tmp_path / "raw"), val_fraction=0.0, test_fraction=0.3)
    ds, report = prepare_dataset(cfg)
    assert ds.images.shape[1:] == (8, 8, 1) and report["image_shape"] == [8, 8, 1]
    for i, f in enumerate(ds.files):
        key = f"{Path(f).parent.name}/{Path(f).name}"
        if key in grey:
            assert np.array_equal(ds.images[i, ..., 0], grey[key]), key  # the same grey values
    assert report["grey_rgb_images"] == 9 and report["colour_images"] == 0
    note = [w for w in get_stage("prepare").warnings(report) if "hold grey pixels" in w]
    assert len(note) == 1 and "9 RGB file(s)" in note[0] and "prepare.channels: rgb" in note[0]

    ds3, report3 = prepare_dataset(PrepareConfig(**{**cfg.__dict__, "channels": "rgb"}))
    assert ds3.images.shape[1:] == (8, 8, 3) and not get_stage("prepare").warnings(report3)


def test_one_colour_image_keeps_the_set_rgb_and_grey_converts_it(tmp_path: Path):
    """A real colour image among grey-as-RGB files makes the set RGB (auto) and is the one counted
    as colour; ``prepare.channels: grey`` converts it by luminance, as PIL's convert("L") does."""
    from PIL import Image

    from augment.pipeline.stages import get_stage

    rng = np.random.default_rng(1)
    for c in ("a", "b"):
        for i in range(4):
            _write(tmp_path / "raw" / c / f"{i}.png", np.repeat(rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), 3, 2))
    colour = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    _write(tmp_path / "raw" / "b" / "colour.png", colour)
    cfg = PrepareConfig(raw_dir=str(tmp_path / "raw"), val_fraction=0.0, test_fraction=0.3)
    ds, report = prepare_dataset(cfg)
    assert ds.images.shape[-1] == 3 and report["colour_images"] == 1 and report["grey_rgb_images"] == 8
    assert any("1 of 9 images are colour" in w and "prepare.channels: grey" in w
               for w in get_stage("prepare").warnings(report))
    # the grey files that became RGB are named too, not only the colour one
    assert report["grey_example"] in ds.files and report["grey_example"].endswith(("0.png", "1.png", "2.png", "3.png"))
    assert any(f"the 8 grey one(s) (e.g. {report['grey_example']})" in w for w in get_stage("prepare").warnings(report))

    ds1, report1 = prepare_dataset(PrepareConfig(**{**cfg.__dict__, "channels": "grey"}))
    assert ds1.images.shape[-1] == 1
    i = [Path(f).name for f in ds1.files].index("colour.png")
    expected = np.asarray(Image.fromarray(colour).convert("L"))
    assert np.array_equal(ds1.images[i, ..., 0], expected)
    assert any("1 colour image(s) converted to grey" in w for w in get_stage("prepare").warnings(report1))


def test_test_images_never_decide_the_prepared_shape(tmp_path: Path):
    """The labelled images decide the size and the channels; a colour (or larger) test image is
    converted to them -- the generator is never built around the test split."""
    from augment.pipeline.stages import get_stage

    rng = np.random.default_rng(2)
    for c in ("a", "b"):
        for i in range(3):
            _write(tmp_path / "raw" / c / f"{i}.png", rng.integers(0, 256, (8, 8), dtype=np.uint8))
        for i in range(4):  # more test images than raw ones, all colour and 12x12
            _write(tmp_path / "test" / c / f"t{i}.png", rng.integers(0, 256, (12, 12, 3), dtype=np.uint8))
    ds, report = prepare_dataset(PrepareConfig(raw_dir=str(tmp_path / "raw"), test_dir=str(tmp_path / "test"),
                                               val_fraction=0.0))
    assert ds.images.shape[1:] == (8, 8, 1) and report["colour_images"] == 8
    assert any("8 colour image(s) converted to grey (the labelled images are grey" in w
               for w in get_stage("prepare").warnings(report))


def test_a_test_folder_without_a_class_of_the_raw_folder_is_refused(tmp_path: Path):
    """Evaluate needs test images of every class to score it: a class with no test folder (or an
    empty one) is named, with the param, instead of a run that ends in NaN per-class accuracy."""
    make_image_folder(tmp_path / "raw", num_classes=3, per_class=6)
    make_image_folder(tmp_path / "test", num_classes=2, per_class=3, seed=1)  # no class_2
    cfg = PrepareConfig(raw_dir=str(tmp_path / "raw"), test_dir=str(tmp_path / "test"), val_fraction=0.0)
    with pytest.raises(DataError, match=r"prepare.test_dir = .*test: no readable test image for class\(es\) \['class_2'\]"):
        prepare_dataset(cfg)
    (tmp_path / "test" / "class_2").mkdir()  # an empty folder is no better
    with pytest.raises(DataError, match=r"\['class_2'\]"):
        prepare_dataset(cfg)
    make_image_folder(tmp_path / "test", num_classes=3, per_class=3, seed=2)
    ds, _ = prepare_dataset(cfg)
    assert np.bincount(ds.labels[ds.split == 2]).tolist() == [3, 3, 3]


def test_images_too_small_for_the_generators_are_refused_at_prepare(tmp_path: Path):
    make_image_folder(tmp_path / "raw", per_class=6, size=3)
    with pytest.raises(DataError, match=r"raw: the images are 3x3 px .* at least 4 px a side"):
        prepare_dataset(PrepareConfig(raw_dir=str(tmp_path / "raw"), test_dir=None))
    make_image_folder(tmp_path / "raw4", per_class=6, size=4)  # the smallest that trains
    ds, _ = prepare_dataset(PrepareConfig(raw_dir=str(tmp_path / "raw4"), test_dir=None))
    assert ds.images.shape[1:3] == (4, 4)
