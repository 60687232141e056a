"""Shared helpers for the reliability tests: run the CLI in-process, hash what the user owns."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
from pathlib import Path

from augment.cli import main


def tree_hash(root: str | Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed) -> a content digest or its kind."""
    root = Path(root)
    out: dict[str, str] = {}
    if not root.exists() and not root.is_symlink():
        return out
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in sorted(dirnames + filenames):
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                out[rel] = "link:" + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
            elif stat.S_ISDIR(st.st_mode):
                out[rel] = "dir"
            else:
                out[rel] = f"special:{stat.S_IFMT(st.st_mode)}"
    return out


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``augment <argv>`` in this process -> (exit code, stdout, stderr)."""
    capsys.readouterr()
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc: int, err: str, *needles: str, code: int = 2) -> str:
    """Exit ``code``, and stderr is exactly one line holding every needle."""
    assert rc == code, f"exit {rc}, stderr: {err}"
    lines = err.strip("\n").split("\n")
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}: {err!r}"
    for n in needles:
        assert n in lines[0], f"{n!r} not in {lines[0]!r}"
    assert "Traceback" not in err
    return lines[0]


def copy_workspace(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst
