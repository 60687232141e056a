"""One run at a time per workspace: an advisory ``fcntl`` lock held for a whole command.

Two ``augment`` commands (or two Prefect pipeline runs) on the same workspace would otherwise
interleave: both build ``data/generated`` aside and swap it in, and ``merge`` could read one run's
shards with the other's filter decisions. The lock is taken with ``flock(LOCK_EX | LOCK_NB)`` on
``<workspace>/.augment.lock``: a second run is refused at once with the holder's pid, never
queued, never interleaved. The kernel drops the lock when the holder dies, even by ``kill -9``,
so there is never a stale lock to clean up (unlike a pid file or DVC's rwlock).

The lock is re-entrant within a process (a flow that holds it can call the stage functions).
"""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

from augment.errors import LockBusyError

LOCK_NAME = ".augment.lock"


_held: dict[str, int] = {}  # resolved lock path -> depth held by this process


_guard = threading.Lock()


def _read_holder(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8").strip() or "unknown"
    except OSError:
        return "unknown"


@contextlib.contextmanager
def flock_exclusive(path: Path, note: str) -> Iterator[Path]:
    """Hold ``flock(LOCK_EX | LOCK_NB)`` on ``path`` (created if missing) for the block.

    Raises :class:`LockBusyError` at once if another process holds it. ``note`` (who holds it) is
    written into the file for that message; the lock itself is the flock, which the kernel drops
    when the holder dies, even by ``kill -9``.
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            raise LockBusyError(f"{path} is held by {holder}", path, holder) from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{note}\n".encode())
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


@contextlib.contextmanager
def workspace_lock(workspace: str | Path = ".", what: str = "augment") -> Iterator[Path]:
    """Hold the workspace lock for the ``with`` block, or raise :class:`LockBusyError` at once."""
    try:
        import fcntl  # noqa: F401 - only to detect platforms without advisory locks
    except ImportError:  # pragma: no cover - Windows: no advisory locks; run one command at a time
        yield Path(workspace) / LOCK_NAME
        return
    path = (Path(workspace) / LOCK_NAME).resolve()
    key = str(path)
    with _guard:
        if _held.get(key):
            _held[key] += 1
            reentrant = True
        else:
            reentrant = False
    if reentrant:
        try:
            yield path
        finally:
            with _guard:
                _held[key] -= 1
        return
    try:
        with flock_exclusive(path, f"pid {os.getpid()} ({what})"):
            with _guard:
                _held[key] = 1
            try:
                yield path
            finally:
                with _guard:
                    _held.pop(key, None)
    except LockBusyError as exc:
        if exc.path != path:  # raised from inside the block, not by our own flock
            raise
        raise LockBusyError(
            f"another run holds the lock on this workspace ({path}; holder: {exc.holder}); "
            "wait for it to finish, or use a separate workspace (a clone or git worktree) per run",
            path, exc.holder,
        ) from None
