"""File I/O shared by every stage: safe image decoding, atomic writes, hashing, safe arrays.

Outputs are never half-written: files go to a temporary sibling and are renamed into place;
directories are built next to their destination and swapped in with one rename.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from augment.errors import DataError


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_UMASK_LOCK = threading.Lock()


def current_umask() -> int:
    """The process's umask, read without changing it where the kernel reports it
    (``/proc/self/status``, Linux >= 4.7); elsewhere set and restored under a lock."""
    with contextlib.suppress(OSError, ValueError):
        with open("/proc/self/status", encoding="ascii", errors="replace") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    with _UMASK_LOCK:
        mask = os.umask(0o022)
        os.umask(mask)
    return mask


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp makes the file owner-only (0600); give it the mode any file the user writes gets
        # (0644 under the usual umask), so a job running as another user can read the outputs.
        os.chmod(tmp, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # Name the file (ENOSPC from write/fsync carries none); the destination is untouched.
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise


def atomic_write_files(files: dict[Path, bytes]) -> None:
    """Write several files as one output: every one is written and synced aside first, and only
    then are they renamed into place, so a failure while writing (a full disk) leaves every one of
    them as it was -- not some new and some old. A rename that fails midway (rare: the same
    folder) is rolled back: the files already renamed get their old contents back (kept as hard
    links until the end) or are removed if they did not exist, and no temporary file is left."""
    staged: list[tuple[str, Path]] = []
    path = Path()
    try:
        for path, data in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            staged.append((tmp, path))
            os.chmod(tmp, 0o666 & ~current_umask())
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
    except BaseException as exc:
        _unlink_all(tmp for tmp, _ in staged)
        if isinstance(exc, OSError) and exc.filename is None and exc.errno is not None:
            # Name the file being written (ENOSPC from write/fsync carries none).
            raise OSError(exc.errno, exc.strerror or os.strerror(exc.errno), str(path)) from None
        raise
    backups: dict[Path, str | None] = {}  # the old file of each target, None if there was none
    done: list[Path] = []
    try:
        for tmp, path in staged:
            backups[path] = _hard_link_aside(path)
        for tmp, path in staged:  # renames only from here on
            os.replace(tmp, path)
            done.append(path)
    except BaseException as exc:
        unrestored = []  # old files that could not be put back: kept aside, and named
        for path in reversed(done):  # put back what was there
            old = backups.get(path)
            try:
                if old is None:
                    os.unlink(path)
                else:
                    os.replace(old, path)
            except OSError:
                if old is not None:
                    unrestored.append(f"{path} (its previous contents: {old})")
                    backups[path] = None  # keep it
        _unlink_all([tmp for tmp, _ in staged] + [b for b in backups.values() if b is not None])
        if unrestored:
            raise OSError(getattr(exc, "errno", None) or 5,
                          f"writing {', '.join(str(p) for _, p in staged)} failed midway ({exc}) and "
                          f"could not put back {'; '.join(unrestored)}") from exc
        raise
    _unlink_all(b for b in backups.values() if b is not None)


def _hard_link_aside(path: Path) -> str | None:
    """A second name for ``path``'s current file (None when there is none), to restore it from."""
    if not path.exists():
        return None
    while True:
        aside = tempfile.mktemp(dir=path.parent, prefix=f".{path.name}.", suffix=".old")  # noqa: S306 -- link fails if taken
        try:
            os.link(path, aside)
        except FileExistsError:  # taken since mktemp chose it: another name
            continue
        except OSError:  # a file system without hard links: a copy does
            shutil.copyfile(path, aside)
        return aside


def _unlink_all(paths) -> None:
    for p in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(p)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def json_bytes(obj: Any) -> bytes:
    """``obj`` as the JSON text every augment output uses (indented, numpy values as numbers)."""
    return (json.dumps(obj, indent=2, sort_keys=False, default=_json_default) + "\n").encode("utf-8")


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_bytes(path, json_bytes(obj))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def atomic_write_csv(path: str | Path, rows: Sequence[dict[str, Any]], fieldnames: Sequence[str]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    atomic_write_text(path, buf.getvalue())


def read_csv(path: str | Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def atomic_save_npz(path: str | Path, **arrays: np.ndarray) -> None:
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


def _rerun(producer: str | None) -> str:
    return f"; re-run the {producer} stage (augment {producer})" if producer else ""


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # an .npz is a zip archive (the second: an empty one)


def _npz_error(path: Path, exc: BaseException, producer: str | None) -> DataError:
    """One message per failure, never numpy's advice to load the file unsafely."""
    text = str(exc)
    if "pickle" in text.lower() or "object arrays" in text.lower():
        what = "refused to load (Object arrays cannot be loaded when allow_pickle=False): it holds pickled " \
               "Python objects, which are never loaded (tampered file?)"
    else:
        what = f"corrupt or truncated array file ({type(exc).__name__}: {text})"
    return DataError(f"{path}: {what}{_rerun(producer)}")


def _open_npz(path: Path, producer: str | None):
    if not path.is_file():
        raise DataError(f"{path} does not exist{_rerun(producer)}")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic not in _ZIP_MAGIC:
        raise DataError(f"{path}: not an .npz array archive (corrupt, truncated or replaced){_rerun(producer)}")
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise _npz_error(path, exc, producer) from None


def load_npz(path: str | Path, producer: str | None = None) -> dict[str, np.ndarray]:
    """Load an ``.npz`` without ever unpickling (object arrays are refused). ``producer``: the stage
    that writes it, named in the message."""
    path = Path(path)
    z = _open_npz(path, producer)
    try:
        with z:
            return {k: z[k] for k in z.files}
    except Exception as exc:
        raise _npz_error(path, exc, producer) from None


def load_npz_keys(path: str | Path, keys: Sequence[str], producer: str | None = None) -> dict[str, np.ndarray]:
    """Load only ``keys`` of an ``.npz`` (the other arrays are never read: a shard's images stay
    on disk when only its scores are wanted). Never unpickles; a missing key is a DataError."""
    path = Path(path)
    z = _open_npz(path, producer)
    try:
        with z:
            missing = [k for k in keys if k not in z.files]
            if missing:
                raise DataError(f"{path}: missing array(s) {missing}; it holds {sorted(z.files)}{_rerun(producer)}")
            return {k: z[k] for k in keys}
    except DataError:
        raise
    except Exception as exc:
        raise _npz_error(path, exc, producer) from None


# ------------------------------------------------------------------ schema checks of intermediates

_KINDS = {"int": "iu", "uint8": "u", "bool": "b", "float": "f", "str": "U", "number": "iuf"}


def check_arrays(path: str | Path, arrays: dict[str, np.ndarray], spec: dict[str, tuple[str, int]],
                 producer: str | None = None, same_length: Sequence[str] | None = None) -> int | None:
    """Check ``arrays`` (read from ``path``) against ``spec``: key -> (kind, ndim), kind one of
    int/uint8/bool/float/str/number. Arrays in ``same_length`` (default: every key in ``spec``)
    must have one length, returned. Float arrays must be finite. Raises DataError naming the file."""
    def bad(msg: str) -> DataError:
        return DataError(f"{path}: {msg}{_rerun(producer)}")

    for key, (kind, ndim) in spec.items():
        if key not in arrays:
            raise bad(f"missing array {key!r} (it holds {sorted(arrays)})")
        a = arrays[key]
        if a.dtype.kind not in _KINDS[kind] or (kind == "uint8" and a.dtype != np.uint8):
            raise bad(f"array {key!r} has dtype {a.dtype}, expected {kind}")
        if a.ndim != ndim:
            raise bad(f"array {key!r} has shape {list(a.shape)}, expected {ndim} dimension(s)")
        if a.dtype.kind == "f" and not np.isfinite(a).all():
            raise bad(f"array {key!r} holds NaN or infinite values")
    names = list(same_length if same_length is not None else spec)
    lengths = {k: len(arrays[k]) for k in names}
    if len(set(lengths.values())) > 1:
        raise bad(f"arrays have different lengths {lengths}")
    return next(iter(lengths.values()), None)


def read_json_checked(path: str | Path, required: dict[str, Any], producer: str | None = None) -> dict[str, Any]:
    """Read a JSON object written by stage ``producer`` and check its keys: ``required`` maps a key
    to a type or tuple of types (``int`` excludes ``bool``). Raises DataError naming the file."""
    path = Path(path)

    def bad(msg: str) -> DataError:
        return DataError(f"{path}: {msg}{_rerun(producer)}")

    if not path.is_file():
        raise DataError(f"{path} not found{_rerun(producer)}")
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise bad("not UTF-8 text") from None
    except ValueError as exc:
        raise bad(f"not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise bad(f"expected a JSON object, got {type(obj).__name__}")
    for key, types_ in required.items():
        if key not in obj:
            raise bad(f"missing key {key!r}")
        types_ = types_ if isinstance(types_, tuple) else (types_,)
        v = obj[key]
        ok = isinstance(v, types_) and not (isinstance(v, bool) and bool not in types_)
        if not ok:
            names = " or ".join("null" if t is type(None) else t.__name__ for t in types_)
            raise bad(f"key {key!r} = {v!r:.60} is not {names}")
    return obj


def read_csv_checked(path: str | Path, columns: Sequence[str], producer: str | None = None) -> list[dict[str, str]]:
    """Read a CSV written by stage ``producer``; every column in ``columns`` must be present."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path} not found{_rerun(producer)}")
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            header = reader.fieldnames or []
    except (UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"{path}: not a readable CSV file ({exc}){_rerun(producer)}") from None
    missing = [c for c in columns if c not in header]
    if missing:
        raise DataError(f"{path}: missing column(s) {missing}{_rerun(producer)}")
    for i, r in enumerate(rows):
        if None in r or any(r.get(c) is None for c in columns):
            raise DataError(f"{path}: row {i + 2} has the wrong number of fields{_rerun(producer)}")
    return rows


def workspace_relative(path: str | Path, workspace: str | Path) -> str:
    """``path`` as a run records it: relative to ``workspace`` (POSIX separators) when it lies inside
    it, else unchanged. The same file thus gets the same record however the workspace is spelled
    (``.``, an absolute path, a path through a link), so recorded outputs and cache keys do not
    depend on where the run was started from."""
    for norm in (os.path.abspath, os.path.realpath):
        try:
            return Path(norm(path)).relative_to(norm(workspace)).as_posix()
        except ValueError:
            continue
    return str(path)


def _remove(p: Path) -> None:
    """Delete a directory tree, or just the link when ``p`` is a symlink (never what it points to)."""
    if p.is_symlink():
        with contextlib.suppress(OSError):
            p.unlink()
    else:
        shutil.rmtree(p, ignore_errors=True)


_RENAME_EXCHANGE = 2  # linux/fs.h


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing paths with Linux ``renameat2(RENAME_EXCHANGE)``.

    Returns False where that is unavailable (the caller falls back to two renames)."""
    import sys

    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    rc = fn(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


@contextlib.contextmanager
def atomic_directory(path: str | Path) -> Iterator[Path]:
    """Build a directory next to ``path`` and swap it into place only on success.

    A consumer sees either the previous complete directory or the new complete one, never a
    half-written one. On failure the temporary directory is removed and ``path`` is untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~current_umask())  # mkdtemp's 0700 -> what mkdir gives (0755 usually)
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if (path.exists() or path.is_symlink()) and _exchange(tmp, path):
        # One atomic rename: ``path`` is never missing, not even for an instant; the previous
        # directory now sits at ``tmp``.
        _remove(tmp)  # the previous directory (or the symlink that stood at ``path``)
    else:
        old = None
        if path.exists() or path.is_symlink():
            # Fallback without renameat2 (non-Linux, old kernels, some file systems): two renames,
            # so a reader can find ``path`` missing between them (never half-written).
            old = path.parent / f".{path.name}.old-{os.getpid()}"
            if old.exists():
                shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
        os.replace(tmp, path)
        if old is not None:
            _remove(old)
    # Stale temporaries from earlier killed runs are swept away once we succeed.
    for stale in path.parent.glob(f".{path.name}.tmp-*"):
        _remove(stale)
