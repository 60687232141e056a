"""Worker processes for independent jobs: how many, and errors reach the caller."""

from __future__ import annotations

import pytest
import torch

from augment.config import CrossfitConfig, EvaluateConfig
from augment.core.parallel import process_pool, resolve_workers, usable_cpus
from augment.errors import ConfigError, DataError


def test_auto_is_one_per_cpu_capped_by_jobs_and_one_on_cuda():
    cpu = torch.device("cpu")
    assert resolve_workers(None, 1000, cpu) == usable_cpus()
    assert resolve_workers(None, 1, cpu) == 1
    assert resolve_workers(4, 3, cpu) == 3
    assert resolve_workers(4, 3, torch.device("cuda")) == 1


@pytest.mark.parametrize("cls,name", [(CrossfitConfig, "crossfit.workers"), (EvaluateConfig, "evaluate.workers")])
def test_zero_workers_is_a_config_error_naming_the_parameter(cls, name):
    with pytest.raises(ConfigError, match=name):
        cls(workers=0).validate()


def _fails(msg: str) -> None:
    raise DataError(msg)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_jobs_error_reaches_the_caller(workers):
    with process_pool(workers) as pool:
        fut = pool.submit(_fails, "class 'b' has no images")
        with pytest.raises(DataError, match="class 'b' has no images"):
            fut.result()
