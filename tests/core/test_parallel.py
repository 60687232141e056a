"""Worker processes for independent jobs: how many, and errors reach the caller."""

from __future__ import annotations

import pytest
import torch

from augment.config import CrossfitConfig, EvaluateConfig
from augment.core.parallel import job_threads, process_pool, resolve_workers, usable_cpus
from augment.errors import ConfigError, DataError


def test_auto_is_one_per_cpu_capped_by_jobs_and_one_on_cuda(monkeypatch):
    import augment.core.parallel as parallel

    cpu = torch.device("cpu")
    assert resolve_workers(None, 1000, cpu) == usable_cpus()
    monkeypatch.setattr(parallel, "usable_cpus", lambda: 6)  # whatever CPUs this runner has
    assert resolve_workers(None, 1000, cpu) == 6
    assert resolve_workers(None, 4, cpu) == 4
    assert resolve_workers(None, 1, cpu) == 1
    assert resolve_workers(4, 3, cpu) == 3
    assert resolve_workers(4, 3, torch.device("cuda")) == 1


@pytest.mark.parametrize("cls,name", [(CrossfitConfig, "crossfit.workers"), (EvaluateConfig, "evaluate.workers")])
def test_zero_workers_is_a_config_error_naming_the_parameter(cls, name):
    with pytest.raises(ConfigError, match=name):
        cls(workers=0).validate()


def _threads() -> int:
    return torch.get_num_threads()


def test_jobs_get_the_same_threads_whatever_the_workers_setting(monkeypatch):
    """A float sum split over another number of threads rounds differently: the cross-fitting
    choice and the evaluation must not depend on crossfit.workers / evaluate.workers."""
    import augment.core.parallel as parallel

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 2)
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # no OMP_NUM_THREADS=1: the parent has a thread per CPU
    try:
        threads = job_threads(6, torch.device("cpu"))
        seen = {}
        for workers in (1, 2):
            with process_pool(workers, threads) as pool:
                seen[workers] = {pool.submit(_threads).result() for _ in range(3)}
        assert torch.get_num_threads() == 2  # the inline jobs gave the parent its threads back
    finally:
        torch.set_num_threads(before)
    assert threads == 1 and seen == {1: {1}, 2: {1}}
    assert job_threads(1, torch.device("cpu")) == before  # one job: every thread this process has


def _fails(msg: str) -> None:
    raise DataError(msg)


@pytest.mark.parametrize("workers", [1, 2])
def test_a_jobs_error_reaches_the_caller(workers):
    with process_pool(workers) as pool:
        fut = pool.submit(_fails, "class 'b' has no images")
        with pytest.raises(DataError, match="class 'b' has no images"):
            fut.result()


def _sleep_and_report_pid(seconds: float) -> int:
    import os
    import time

    time.sleep(seconds)
    return os.getpid()


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_workers_die_with_a_killed_stage_process(tmp_path):
    """A stage process killed mid-job (DVC, Prefect or the user) leaves no worker running on."""
    import signal
    import subprocess
    import sys
    import textwrap
    import time

    pids = tmp_path / "pids"
    script = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(__import__('pathlib').Path(__file__).resolve().parents[2])!r})
        from augment.core.parallel import process_pool
        from tests.core.test_parallel import _sleep_and_report_pid
        if __name__ == "__main__":
            with process_pool(2) as pool:
                futs = [pool.submit(_sleep_and_report_pid, 0.0) for _ in range(4)]
                open({str(pids)!r}, "w").write(" ".join(str(f.result()) for f in futs))
                pool.submit(_sleep_and_report_pid, 600).result()
    """)
    proc = subprocess.Popen([sys.executable, "-c", script])
    deadline = time.time() + 120
    while not (pids.exists() and pids.read_text()) and time.time() < deadline:
        time.sleep(0.2)
    workers = {int(p) for p in pids.read_text().split()}
    time.sleep(1.0)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 30
    alive = set(workers)
    while alive and time.time() < deadline:
        alive = {p for p in alive if _alive(p)}
        time.sleep(0.2)
    assert not alive, f"workers {alive} outlived the killed stage process"


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie (exited, not yet reaped by init) is dead for our purpose
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def test_inference_threads_use_the_cpus_and_restore_the_setting(monkeypatch):
    """Generation and filter scoring run their large batches on every usable CPU (null) or the
    configured count, then give the process its thread setting back."""
    import torch

    import augment.core.parallel as parallel
    from augment.core.parallel import inference_threads

    monkeypatch.setattr(parallel, "usable_cpus", lambda: 6)  # not 1, whatever CPUs this runner has
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with inference_threads(None, torch.device("cpu")) as n:
            assert n == 6 == torch.get_num_threads()
        assert torch.get_num_threads() == 1
        with inference_threads(3, torch.device("cpu")):
            assert torch.get_num_threads() == 3
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


def test_a_worker_whose_stage_process_died_while_it_started_exits(monkeypatch):
    """The parent-death signal is set up in the worker's initializer; a stage killed before that
    (while the worker imported torch) must not leave the worker to run a job for nobody."""
    import multiprocessing
    import os

    from augment.core import parallel

    class _Parent:
        pid = os.getppid() + 1_000_000  # not this process's parent: the stage process is gone

    exits: list[int] = []
    monkeypatch.setattr("sys.platform", "not-linux")  # no parent-death signal for pytest itself
    monkeypatch.setattr(multiprocessing, "parent_process", lambda: _Parent())
    monkeypatch.setattr(os, "_exit", lambda code: exits.append(code))
    parallel._die_with_parent()
    assert exits == [1]

    class _Alive:
        pid = os.getppid()

    monkeypatch.setattr(multiprocessing, "parent_process", lambda: _Alive())
    parallel._die_with_parent()
    assert exits == [1]  # a live stage process: the worker carries on
