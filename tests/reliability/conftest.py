"""A workspace with every stage up to merge already run once (tiny data, ~10 s), copied per test."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from augment.cli import main
from tests.conftest import make_image_folder, write_params
from tests.reliability.helpers import copy_workspace


@pytest.fixture(scope="session")
def built_workspace(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("built")
    make_image_folder(root / "data" / "raw")
    write_params(root / "params.yaml")
    cwd = os.getcwd()
    os.chdir(root)
    try:
        for stage in ("prepare", "train", "generate", "filter", "merge"):
            assert main([stage, "--quiet"]) == 0, stage
    finally:
        os.chdir(cwd)
    (root / ".augment.lock").unlink(missing_ok=True)
    return root


@pytest.fixture
def built(built_workspace: Path, tmp_path: Path, monkeypatch) -> Path:
    """A private copy of the built workspace, as the cwd."""
    ws = copy_workspace(built_workspace, tmp_path / "ws")
    monkeypatch.chdir(ws)
    return ws
