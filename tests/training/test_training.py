"""Training both generator families (conditional GAN, conditional VAE): any data shape, resume =
uninterrupted run, adaptive augmentation, mode-seeking term, CPU path untouched by the CUDA-only
precision options. Shapes read from data and rebuilding from a checkpoint: tests/models."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from augment.cli import main
from augment.config import TrainConfig, from_dict
from augment.errors import ConfigError
from augment.generation.shards import iter_shards
from augment.models.checkpoint import Checkpoint, save_checkpoint
from augment.training.common import (
    Precision,
    ada_update,
    mode_seeking_loss,
    paired_labels,
)
from augment.training.families import FAMILIES
from augment.training.loop import train_generator
from tests.conftest import make_image_folder, write_params

TINY = TrainConfig(iterations=10, batch_size=8, z_dim=8, g_channels=8, d_channels=8, checkpoint_every=4,
                   sample_every=5, log_every=1, device="cpu", ada_rate=0.05, vae_kl_warmup=5)


def run(*args: str) -> None:
    assert main([*args, "--quiet"]) == 0


@pytest.mark.parametrize("family, arch", [("gan", "small"), ("gan", "resnet"), ("vae", "auto"), ("vae", "small")])
@pytest.mark.parametrize(
    "size, channels, counts",
    [(8, 1, None), (28, 1, [12, 4, 7]), (32, 3, None), (64, 3, [5, 12, 6])],
    ids=["8px-grey", "28px-grey-imbalanced", "32px-rgb", "64px-rgb-imbalanced"],
)
def test_train_then_generate_on_any_shape(tmp_path: Path, monkeypatch, family, arch, size, channels, counts):
    make_image_folder(tmp_path / "data" / "raw", num_classes=3, per_class=8, size=size, channels=channels, counts=counts)
    write_params(tmp_path / "params.yaml", {
        "train": {"family": family, "arch": arch, "iterations": 3, "checkpoint_every": 2, "sample_every": 3,
                  "log_every": 1},
        "generate": {"n_per_class": 4, "batch_size": 5, "shard_size": 16, "seed": 0, "device": "cpu"},
    })
    monkeypatch.chdir(tmp_path)
    run("prepare")
    run("train")
    ck = Checkpoint("models/generator.safetensors")
    assert ck.family == family and ck.image_shape == (size, size, channels)
    assert Path("models/sample_grid.png").is_file() and list(Path("models/samples").glob("iter_*.png"))
    run("generate")
    shards = list(iter_shards("data/generated"))
    images = np.concatenate([s["images"] for s in shards])
    labels = np.concatenate([s["labels"] for s in shards])
    scores = np.concatenate([s["scores"] for s in shards])
    assert images.shape == (12, size, size, channels) and images.dtype == np.uint8
    assert np.bincount(labels).tolist() == [4, 4, 4]  # every class, rare ones included
    assert np.isfinite(scores).all()  # the discriminator scores every sample (filter input)


class Interrupt(Exception):
    pass


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_resumed_run_matches_uninterrupted_run_bit_exactly(tmp_path: Path, family: str):
    rng = np.random.default_rng(1)
    x = rng.integers(0, 255, (18, 8, 8, 1), dtype=np.uint8)
    y = np.array([0] * 10 + [1] * 5 + [2] * 3)
    names = ["a", "b", "c"]
    cfg = dataclasses.replace(TINY, family=family, ada_target=-1.0)  # p moves as soon as D likes a real

    full = train_generator(x, y, names, cfg, progress=False)

    resume = tmp_path / "resume.safetensors"

    def crash(row):
        if row["iteration"] == 7:  # after the checkpoint at iteration 4
            raise Interrupt

    with pytest.raises(Interrupt):
        train_generator(x, y, names, cfg, resume_path=resume, progress=False, on_log=crash)
    assert resume.is_file()
    resumed = train_generator(x, y, names, cfg, resume_path=resume, progress=False)
    assert resumed.resumed_from == 4

    shape = (8, 8, 1)
    save_checkpoint(tmp_path / "full.safetensors", full.trainer.modules(), full.cfg, shape, names)
    save_checkpoint(tmp_path / "resumed.safetensors", resumed.trainer.modules(), resumed.cfg, shape, names)
    a, b = Checkpoint(tmp_path / "full.safetensors").tensors, Checkpoint(tmp_path / "resumed.safetensors").tensors
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert full.trainer.extra_state() == resumed.trainer.extra_state()
    assert full.log == resumed.log
    assert len({row["aug_p"] for row in full.log}) > 1  # ADA moved p, and the resume carried it over


def test_ada_strength_follows_the_overfitting_signal():
    cfg = TrainConfig(ada_target=0.6, ada_rate=0.1)
    assert ada_update(0.5, 1.0, cfg) == pytest.approx(0.6)  # D sure of every real: more augmentation
    assert ada_update(0.5, 0.0, cfg) == pytest.approx(0.4)
    assert ada_update(0.95, 1.0, cfg) == 1.0 and ada_update(0.05, -1.0, cfg) == 0.0
    fixed = TrainConfig(ada_target=None)
    assert ada_update(1.0, 1.0, fixed) == 1.0


def test_mode_seeking_term_penalises_collapse():
    z = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    varied = torch.randn(8, 1, 8, 8, generator=torch.Generator().manual_seed(1))
    collapsed = varied[:1].expand(8, -1, -1, -1)
    assert mode_seeking_loss(collapsed, z) > 100 * mode_seeking_loss(varied, z)
    assert paired_labels(torch.tensor([3, 1, 2, 0, 5])).tolist() == [3, 1, 3, 1, 5]


def test_cuda_options_leave_the_cpu_path_unchanged():
    prec = Precision(TrainConfig(amp="fp16", channels_last=True), torch.device("cpu"))
    assert prec.dtype is None and prec.scaler is None and not prec.channels_last


@pytest.mark.parametrize(
    "raw, needle",
    [({"vae_beta": -1.0}, "train.vae_beta"), ({"ada_target": 2.0}, "train.ada_target"),
     ({"ms_weight": -0.1}, "train.ms_weight"), ({"amp": "fp8"}, "train.amp"),
     ({"vae_kl_warmup": -5}, "train.vae_kl_warmup")],
)
def test_new_train_params_are_validated(raw, needle):
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        from_dict(TrainConfig, raw, "train").validate()
