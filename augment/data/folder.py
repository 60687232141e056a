"""Scanning ``<root>/<class_name>/<image>`` folders (the user's dataset layout)."""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from augment.core.images import IMAGE_SUFFIXES
from augment.errors import DataError


@dataclass
class ScanResult:
    files: list[Path]
    labels: list[int]
    class_names: list[str]
    skipped: list[dict[str, str]] = field(default_factory=list)


def _confined(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
        return True
    except ValueError:
        return False


def scan_image_folder(root: str | Path, class_names: list[str] | None = None) -> ScanResult:
    """List ``root/<class>/<image>`` files. Class order is sorted folder names (or given).

    Hidden files and folders are ignored. Symlinks that resolve outside ``root`` are refused.
    Files with a non-image suffix are reported as skipped, never silently used.
    """
    root = Path(root)
    if not root.exists():
        raise DataError(f"dataset folder {root} does not exist (set prepare.raw_dir)")
    if not root.is_dir():
        raise DataError(f"dataset folder {root} is not a directory")
    found = sorted(
        p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
    )
    stray = sorted(p.name for p in root.iterdir() if p.is_file() and not p.name.startswith("."))
    hidden = sorted(p.name for p in root.iterdir() if p.is_dir() and p.name.startswith("."))
    if class_names is None:
        class_names = found
        if not class_names:
            hint = f" (found loose files such as {stray[0]!r})" if stray else ""
            raise DataError(
                f"dataset folder {root} has no class sub-folders{hint}; expected "
                f"{root}/<class_name>/<image files>"
            )
    else:
        extra = sorted(set(found) - set(class_names))
        if extra:
            raise DataError(f"{root}: class folder(s) {extra} are not in the training classes {class_names}")
    files: list[Path] = []
    labels: list[int] = []
    # Hidden folders (".cache", "..old") are not classes; say so rather than drop them silently.
    skipped: list[dict[str, str]] = [
        {"file": str(root / h), "reason": "hidden folder (name starts with '.'), not used as a class"}
        for h in hidden
    ]
    # Every other entry of the root that is not a class folder is listed too, never dropped silently.
    for entry in sorted(root.iterdir(), key=lambda p: p.name):
        if entry.name in class_names or entry.name in hidden:
            continue
        if entry.is_dir() and class_names is not None and entry.name not in class_names:
            continue  # refused above for a test folder; cannot happen for the raw folder
        skipped.append({"file": str(entry), "reason": _root_reason(entry)})
    for label, name in enumerate(class_names):
        cdir = root / name
        if not cdir.is_dir():
            continue
        if not _confined(cdir, root):
            raise DataError(f"{cdir}: class folder is a link pointing outside {root}; refusing to follow it")
        for p, reason in _walk(cdir):
            if reason is not None:
                skipped.append({"file": str(p), "reason": reason})
                continue
            if p.is_symlink() and not _confined(p, root):
                raise DataError(f"{p}: link points outside the dataset folder {root}; refusing to follow it")
            kind = _kind(p)
            if kind != "file":
                skipped.append({"file": str(p), "reason": f"not a regular file ({kind}); never opened"})
                continue
            if p.suffix.lower() not in IMAGE_SUFFIXES:
                skipped.append({"file": str(p), "reason": f"not an image suffix ({p.suffix or 'none'})"})
                continue
            files.append(p)
            labels.append(label)
    return ScanResult(files=files, labels=labels, class_names=list(class_names), skipped=skipped)


def _kind(p: Path) -> str:
    """What ``p`` is, following a (confined) link, without opening it."""
    try:
        mode = p.stat().st_mode
    except OSError:
        return "broken link" if p.is_symlink() else "unreadable"
    if stat.S_ISREG(mode):
        return "file"
    if stat.S_ISDIR(mode):
        return "folder"
    if stat.S_ISFIFO(mode):
        return "FIFO"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "special file"


def _root_reason(entry: Path) -> str:
    kind = _kind(entry)
    if entry.name.startswith("."):
        return f"hidden {kind} in the dataset folder, not in a class folder"
    if kind == "file":
        return "loose file in the dataset folder, not in a class folder"
    return f"{kind} in the dataset folder, not a class folder; never opened"


def _walk(cdir: Path):
    """Yield ``(path, None)`` for every non-hidden entry below ``cdir`` that is not a folder, and
    ``(path, reason)`` for each hidden file or folder (not entered). Sorted, links to folders not
    followed."""
    try:
        entries = sorted(os.scandir(cdir), key=lambda e: e.name)
    except OSError as exc:
        yield cdir, f"folder not readable ({exc.strerror})"
        return
    for e in entries:
        p = Path(e.path)
        if e.name.startswith("."):
            yield p, "hidden (name starts with '.'), not used"
            continue
        if e.is_dir(follow_symlinks=False):
            yield from _walk(p)
        else:
            yield p, None
