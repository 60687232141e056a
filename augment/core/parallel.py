"""Independent jobs over CPU processes: the cross-fitting folds and the evaluation's models.

The networks sized for a scarce dataset are too small to split across OpenMP threads (one
thread trains them faster than two on a 2-core machine; docs/performance.md), so a stage that
trains several independent models uses the machine's cores by running them in separate
processes, each with its share of the parent's torch threads (one thread per worker when the
parent runs with ``OMP_NUM_THREADS=1``, as ``scripts/run_default.sh`` does).

Every job is a pure function of its arguments (its own seeds) and the caller places each result
by its job, not by arrival, so the outputs do not depend on the number of workers as long as each
job gets the same number of torch threads (one, under ``OMP_NUM_THREADS=1``). With one worker, or
on CUDA (one device, one process), jobs run in this process.
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
    import signal
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except OSError:
            pass


class _InlineExecutor(Executor):
    """Runs each job at ``submit`` in this process (one worker, or CUDA)."""

    def submit(self, fn, /, *args, **kwargs) -> Future:
        fut: Future = Future()
        try:
            fut.set_result(fn(*args, **kwargs))
        except BaseException as exc:  # noqa: BLE001 -- handed to the caller by result()
            fut.set_exception(exc)
        return fut


@contextmanager
def process_pool(workers: int) -> Iterator[Executor]:
    """An executor over ``workers`` processes (inline when 1). Submitted functions and their
    arguments must be picklable: module-level functions and plain data. A script that calls the
    pipeline must guard its entry point with ``if __name__ == "__main__":`` (spawned workers
    import it), or set the stage's ``workers: 1``."""
    if workers <= 1:
        with _InlineExecutor() as ex:
            yield ex
        return
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
