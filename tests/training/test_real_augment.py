"""train.real_augment: the generator learns from classically augmented reals, reproducibly."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from augment.config import ClassicalConfig, TrainConfig
from augment.training.loop import train_generator

CFG = TrainConfig(iterations=6, batch_size=8, z_dim=8, g_channels=8, d_channels=8, checkpoint_every=3,
                  sample_every=6, log_every=1, device="cpu", arch="small", real_augment="none")


def _data():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 50, (12, 16, 16, 1), dtype=np.uint8)
    x[:, 4:12, 6:10] = 220
    return x, np.repeat(np.arange(3), 4)


def _weights(r):
    return torch.cat([p.detach().flatten() for p in r.trainer.modules()["G"].parameters()])


def test_real_augment_is_seeded_and_changes_what_the_generator_sees():
    x, y = _data()
    aug = dataclasses.replace(CFG, real_augment="classical")
    a = train_generator(x, y, ["a", "b", "c"], aug, progress=False, classical=ClassicalConfig())
    b = train_generator(x, y, ["a", "b", "c"], aug, progress=False, classical=ClassicalConfig())
    plain = train_generator(x, y, ["a", "b", "c"], CFG, progress=False)
    assert torch.equal(_weights(a), _weights(b))  # same seed, same path: identical on CPU
    assert not torch.equal(_weights(a), _weights(plain))


def test_real_augment_resumes_to_the_same_weights(tmp_path):
    x, y = _data()
    aug = dataclasses.replace(CFG, real_augment="classical")
    full = train_generator(x, y, ["a", "b", "c"], aug, progress=False, classical=ClassicalConfig())
    resume = tmp_path / "state.safetensors"
    # the first run is interrupted at iteration 4 (its resume state is from iteration 3)
    def stop(row):
        if row["iteration"] == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_generator(x, y, ["a", "b", "c"], aug, resume_path=resume, progress=False,
                        classical=ClassicalConfig(), on_log=stop)
    assert resume.is_file()
    resumed = train_generator(x, y, ["a", "b", "c"], aug, resume_path=resume, progress=False,
                              classical=ClassicalConfig())
    assert resumed.resumed_from == 3
    assert torch.equal(_weights(full), _weights(resumed))
