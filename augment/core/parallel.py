"""Independent jobs over CPU processes: the cross-fitting folds and the evaluation's models.

The networks sized for a scarce dataset are too small to split across OpenMP threads (one
thread trains them faster than two on a 2-core machine; docs/performance.md), so a stage that
trains several independent models uses the machine's cores by running them in separate
processes, each with its share of the parent's torch threads (one thread per worker when the
parent runs with ``OMP_NUM_THREADS=1``, as ``scripts/run_default.sh`` does).

Every job is a pure function of its arguments (its own seeds) and the caller places each result
by its job, not by arrival. Each job runs on :func:`job_threads` torch threads, a number that does
not depend on how many workers the user asked for -- a float sum split over another number of
threads rounds differently -- so the outputs do not depend on the ``workers`` setting. With one
worker, or on CUDA (one device, one process), jobs run in this process.
"""

from __future__ import annotations

import multiprocessing
import os
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from contextlib import contextmanager
from typing import Iterator, Optional

import torch


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask, e.g. a container's cpuset), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def resolve_workers(workers: Optional[int], jobs: int, device: torch.device) -> int:
    """Processes for ``jobs`` independent jobs: ``workers`` (None = auto: one per usable CPU),
    at most one per job; 1 on CUDA."""
    if device.type != "cpu":
        return 1
    wanted = usable_cpus() if workers is None else workers
    return max(1, min(wanted, jobs))


def job_threads(jobs: int, device: torch.device) -> int:
    """Torch threads for each of ``jobs`` independent jobs: this process's threads shared over the
    workers the auto setting would start (one per usable CPU, at most one per job). It depends on
    the machine and the job count, never on the ``workers`` parameter: fewer workers run the same
    jobs on the same threads, more slowly, and give the same numbers. On CUDA: this process's."""
    if device.type != "cpu":
        return torch.get_num_threads()
    return max(1, torch.get_num_threads() // resolve_workers(None, jobs, device))


_IN_WORKER = False  # set in a process_pool worker: its thread share is already decided


def _init_worker(threads: int) -> None:
    global _IN_WORKER
    _IN_WORKER = True
    torch.set_num_threads(threads)
    _die_with_parent()


@contextmanager
def inference_threads(threads: Optional[int], device: torch.device) -> Iterator[int]:
    """Torch threads for a stage's batched inference (generation, filter scoring): ``threads``, or
    None = one per usable CPU -- large batches split well over threads, unlike the training of
    small networks -- except inside a pool worker, which keeps its share. Restored afterwards."""
    before = torch.get_num_threads()
    if device.type != "cpu":
        yield before
        return
    wanted = threads if threads is not None else (before if _IN_WORKER else usable_cpus())
    if wanted != before:
        torch.set_num_threads(wanted)
    try:
        yield wanted
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)


def _die_with_parent() -> None:
    """Linux: SIGTERM this worker when the stage process dies (killed by DVC, Prefect or the user),
    instead of finishing a job nobody will read. Elsewhere, workers exit after their current job."""
    import ctypes
    import multiprocessing
    import os
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except OSError:
            pass
    # The signal only covers a parent that dies after the prctl above. A stage killed while this
    # worker was still starting (importing torch takes seconds) has already left it to init, and
    # the worker would run a whole job for nobody (seen: a killed benchmark's fold workers).
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)


class _InlineExecutor(Executor):
    """Runs each job at ``submit`` in this process (one worker, or CUDA), on ``threads`` torch
    threads when given (restored after each job)."""

    def __init__(self, threads: Optional[int] = None) -> None:
        self._threads = threads

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        before = torch.get_num_threads()
        try:
            if self._threads is not None and self._threads != before:
                torch.set_num_threads(self._threads)
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller by result()
            fut.set_exception(exc)
        finally:
            if torch.get_num_threads() != before:
                torch.set_num_threads(before)
        return fut


@contextmanager
def process_pool(workers: int, threads: Optional[int] = None) -> Iterator[Executor]:
    """An executor over ``workers`` processes (inline when 1), each job on ``threads`` torch
    threads (None: this process's threads split over the workers; pass :func:`job_threads` for
    outputs that do not depend on ``workers``). Submitted functions and their arguments must be
    picklable: module-level functions and plain data. A script that calls the pipeline must guard
    its entry point with ``if __name__ == "__main__":`` (spawned workers import it), or set the
    stage's ``workers: 1``."""
    if workers <= 1:
        with _InlineExecutor(threads) as ex:
            yield ex
        return
    if threads is None:
        threads = max(1, torch.get_num_threads() // workers)
    # spawn, not fork: the parent may hold OpenMP / torch / Prefect threads that a forked child
    # would inherit in a broken state.
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                             initargs=(threads,)) as pool:
        try:
            yield pool
        except BaseException:
            pool.shutdown(wait=False, cancel_futures=True)
            raise
