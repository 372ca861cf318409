"""Errors are values with a name; the CLI maps each to one exit code (see hvm.cli.EXIT_CODES)."""
from __future__ import annotations

from pathlib import Path


class HvmError(Exception):
    """Base of every error hvm reports to a user."""


class ConfigError(HvmError):
    """The user asked for something malformed or impossible (a usage error)."""


class ImageError(HvmError):
    """A guest image exists but cannot be used; the message names the file and the reason."""

    def __init__(self, path: str | Path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = str(path), reason


class MissingFileError(HvmError):
    """A file the user named does not exist or cannot be read."""

    def __init__(self, path: str | Path, what: str = "file"):
        super().__init__(f"{path}: no such {what}")
        self.path = str(path)


class HostError(HvmError):
    """The host cannot run guests: /dev/kvm absent, not permitted, or incompatible."""
