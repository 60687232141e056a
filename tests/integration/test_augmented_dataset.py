"""AugmentedDataset follows torchvision/albumentations conventions and refuses a bad manifest."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader, WeightedRandomSampler

from augment.core.files import atomic_write_csv
from augment.core.images import png_bytes
from augment.data.torch_dataset import AugmentedDataset
from augment.errors import DataError
from augment.selection.merge import MANIFEST_FIELDS

CLASSES = ["cat", "dog"]


def make_augmented(root: Path, rows_override: dict[int, dict] | None = None) -> Path:
    """A merge-like output: 3 real + 2 synthetic 4x4 RGB PNGs, manifest.csv and summary.json."""
    rng = np.random.default_rng(0)
    rows = []
    for i, (label, source) in enumerate([(0, "real"), (1, "real"), (0, "real"), (1, "synthetic"), (0, "synthetic")]):
        rel = f"{CLASSES[label]}/{source[:3]}_{i}.png"
        (root / CLASSES[label]).mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(png_bytes(rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)))
        rows.append({"file": rel, "class": CLASSES[label], "label": label, "source": source,
                     "weight": "0.1" if source == "real" else "0.35"})
    for i, change in (rows_override or {}).items():
        rows[i].update(change)
    atomic_write_csv(root / "manifest.csv", rows, MANIFEST_FIELDS)
    (root / "summary.json").write_text(json.dumps({"class_names": CLASSES}))
    return root


def test_imagefolder_attributes(tmp_path: Path):
    ds = AugmentedDataset(make_augmented(tmp_path))
    assert ds.classes == CLASSES and ds.class_to_idx == {"cat": 0, "dog": 1}
    assert ds.targets == [0, 1, 0, 1, 0] and isinstance(ds.targets, list)
    assert ds.samples[3] == (str(tmp_path / "dog/syn_3.png"), 1)
    assert ds.is_synthetic.tolist() == [False, False, False, True, True]
    x, y = ds[0]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 4, 4) and float(x.abs().max()) <= 1.0 and y == 0


def test_albumentations_compose_single_transform_and_plain_callable(tmp_path: Path):
    import albumentations as A

    ds0 = AugmentedDataset(make_augmented(tmp_path))
    img = ds0.image(1)
    flipped = img[:, ::-1]
    compose = AugmentedDataset(tmp_path, transform=A.Compose([A.HorizontalFlip(p=1.0)]))
    assert np.array_equal(compose[1][0], flipped)
    single = AugmentedDataset(tmp_path, transform=A.HorizontalFlip(p=1.0))
    assert np.array_equal(single[1][0], flipped)
    to_tensor = AugmentedDataset(tmp_path, transform=A.Compose([A.ToFloat(max_value=255), A.ToTensorV2()]),
                                 target_transform=lambda y: CLASSES[y])
    x, y = to_tensor[1]
    assert isinstance(x, torch.Tensor) and x.shape == (3, 4, 4) and y == "dog"
    plain = AugmentedDataset(tmp_path, transform=lambda a: a.mean(), return_meta=True)
    m, y, syn, w = plain[3]
    assert m == pytest.approx(ds0.image(3).mean()) and y == 1 and syn and w == pytest.approx(0.35)


def test_dataloader_with_weighted_sampler_draws_the_merged_share(tmp_path: Path):
    ds = AugmentedDataset(make_augmented(tmp_path))
    assert ds.weights[ds.is_synthetic].sum() / ds.weights.sum() == pytest.approx(0.7)
    sampler = WeightedRandomSampler(torch.as_tensor(ds.weights), num_samples=2000, replacement=True,
                                    generator=torch.Generator().manual_seed(0))
    idx = np.asarray(list(sampler))
    assert 0.65 < ds.is_synthetic[idx].mean() < 0.75
    batches = list(DataLoader(ds, batch_size=100, sampler=sampler))
    assert len(batches) == 20 and batches[0][0].shape == (100, 3, 4, 4) and batches[0][1].dtype == torch.int64


@pytest.mark.parametrize("change, needle", [
    ({"file": "/etc/passwd"}, "absolute path '/etc/passwd' refused"),
    ({"file": "../outside.png"}, "leaves the dataset folder"),
    ({"file": "cat/../../x.png"}, "leaves the dataset folder"),
    ({"file": "C:\\x.png"}, "absolute path"),
    ({"file": "", "shard": "../s.npz", "offset": "0"}, "leaves the dataset folder"),
    ({"file": ""}, "neither a file nor a shard"),
    ({"label": "2", "class": ""}, "label 2 is out of range [0, 2)"),
    ({"label": "-1", "class": ""}, "label -1 is out of range"),
    ({"label": "1.5"}, "label '1.5' is not an integer"),
    ({"label": "1"}, "class 'cat' does not match label 1"),
    ({"weight": "nan"}, "weight 'nan' must be finite and >= 0"),
    ({"weight": "inf"}, "weight 'inf' must be finite"),
    ({"weight": "-0.5"}, "weight '-0.5' must be finite and >= 0"),
    ({"weight": "heavy"}, "weight 'heavy' is not a number"),
])
def test_bad_manifest_row_is_refused_naming_the_line(tmp_path: Path, change, needle):
    make_augmented(tmp_path, {2: change})
    with pytest.raises(DataError) as exc:
        AugmentedDataset(tmp_path)
    assert needle in str(exc.value) and "manifest.csv line 4" in str(exc.value)


def test_npz_shards_are_read_once_under_random_access(tmp_path: Path, monkeypatch):
    """merge.format npz read through a shuffled or weighted sampler: each shard is decoded once
    (while it fits the cache), not once per item; a small cache still returns the right images."""
    from augment.core.files import atomic_save_npz
    from augment.data import torch_dataset

    rng = np.random.default_rng(0)
    shards = {f"s{k}.npz": rng.integers(0, 255, (6, 4, 4, 1), dtype=np.uint8) for k in range(3)}
    rows = []
    for name, images in shards.items():
        atomic_save_npz(tmp_path / name, images=images)
        rows += [{"shard": name, "offset": str(j), "class": CLASSES[j % 2], "label": j % 2, "source": "real",
                  "weight": "1"} for j in range(len(images))]
    atomic_write_csv(tmp_path / "manifest.csv", rows, MANIFEST_FIELDS)
    (tmp_path / "summary.json").write_text(json.dumps({"class_names": CLASSES}))
    loads = []
    real_load = torch_dataset.load_npz
    monkeypatch.setattr(torch_dataset, "load_npz", lambda p: loads.append(p) or real_load(p))
    order = rng.permutation(len(rows)).tolist() * 2
    for budget, most in ((1 << 20, 3), (1, None)):  # everything fits / only the shard in use
        loads.clear()
        ds = AugmentedDataset(tmp_path, shard_cache_bytes=budget)
        for i in order:
            np.testing.assert_array_equal(ds.image(i), shards[rows[i]["shard"]][int(rows[i]["offset"])])
        if most is not None:
            assert len(loads) == most
