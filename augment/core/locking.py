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
import errno
import os
import stat
import threading
from pathlib import Path
from typing import Iterator

from augment.errors import AugmentError, LockBusyError


class LockFileError(AugmentError):
    """The lock file is a link, a hard link or not a regular file: refused, nothing written."""

LOCK_NAME = ".augment.lock"


_held: dict[str, int] = {}  # resolved lock path -> depth held by this process


_guard = threading.Lock()


# The holder's note is written at offset 0, padded to a fixed width: the file is never truncated
# (a lock file someone replaced by a link or a hard link to another file is refused before that).
NOTE_WIDTH = 256


def _read_holder(path: Path) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError:
        return "unknown"
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return "unknown"
        text = os.pread(fd, NOTE_WIDTH, 0).decode("utf-8", "replace")
    except OSError:
        return "unknown"
    finally:
        os.close(fd)
    return text.replace("\x00", "").strip() or "unknown"


def open_lock_file(path: Path) -> int:
    """Open (creating) ``path`` for locking without following a link, and refuse anything that is
    not a plain file of its own (a FIFO, a device, a folder, a hard link to another file)."""
    flags = os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags, 0o644)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise LockFileError(f"{path} is a symbolic link; refusing to use it as the lock file "
                                "(it could point at a file of yours); remove the link and re-run") from None
        if exc.errno == errno.EISDIR:
            raise LockFileError(f"{path} is a folder, not a lock file; remove it and re-run") from None
        raise
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise LockFileError(f"{path} is not a regular file; remove it and re-run")
        if st.st_nlink > 1:
            raise LockFileError(f"{path} is a hard link shared with another file; refusing to write to it "
                                "(remove it and re-run)")
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextlib.contextmanager
def flock_exclusive(path: Path, note: str) -> Iterator[Path]:
    """Hold ``flock(LOCK_EX | LOCK_NB)`` on ``path`` (created if missing) for the block.

    Raises :class:`LockBusyError` at once if another process holds it. ``note`` (who holds it) is
    written into the file for that message; the lock itself is the flock, which the kernel drops
    when the holder dies, even by ``kill -9``. The file is opened without following links and
    never truncated (see :func:`open_lock_file`).
    """
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    fd = open_lock_file(path)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(path)
            raise LockBusyError(f"{path} is held by {holder}", path, holder) from None
        record = note.encode("utf-8", "replace")[: NOTE_WIDTH - 1] + b"\n"
        os.pwrite(fd, record.ljust(NOTE_WIDTH, b" "), 0)
        try:
            yield path
        finally:
            with contextlib.suppress(OSError):
                os.pwrite(fd, b" " * NOTE_WIDTH, 0)
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
    # Resolve the folder only: the lock file itself is never followed if it is a link.
    path = Path(workspace).resolve() / LOCK_NAME
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
