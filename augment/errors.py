"""Project-wide error types. Each message names the file, folder or parameter at fault.

The CLI turns every one of them into exit code 2 and one line on stderr (a held lock: exit 75).
"""

from __future__ import annotations

from pathlib import Path


class AugmentError(Exception):
    """Base of every error a user or a damaged file can cause (never a bug)."""


class DataError(AugmentError, ValueError):
    """Bad input data. The message names the file or folder and what to do about it."""


class ConfigError(AugmentError, ValueError):
    """A parameter is unknown, of the wrong type, or out of range. The message names it."""


class DeviceError(ConfigError, RuntimeError):
    """The requested device does not exist here (a ConfigError, so the CLI reports it cleanly)."""


class CheckpointError(AugmentError, ValueError):
    """A checkpoint is missing, corrupt, tampered with, or does not fit the data."""


class LockBusyError(AugmentError, RuntimeError):
    """Another process holds the lock file ``path``; ``holder`` is what it wrote there."""

    def __init__(self, message: str, path: Path | None = None, holder: str = "unknown"):
        super().__init__(message)
        self.path, self.holder = path, holder
