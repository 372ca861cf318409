"""Real guest images for hvm, built from Debian packages into a local cache (never committed).

Each recipe fetches what it needs with the system's own ``apt-get download`` (no system install),
verifies it against apt's index, builds a bootable image under ``${HVM_CACHE:-~/.cache/hvm}`` and
returns its path.  Building is idempotent: a second run reuses the cached result.
"""
from __future__ import annotations

import fcntl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from hvm.cache import cache_root

# Exit codes of ``python3 -m images``, distinct per failure so scripts and CI can tell them apart
# (the sysexits.h values, as hvm's own CLI uses).
EXIT_NOT_BUILT = 1        # "path" asked for an image that has not been built yet
EXIT_USAGE = 64           # bad command line
EXIT_VERIFY = 65          # a download did not match apt's SHA256, or a package had an unexpected layout
EXIT_APT = 69             # apt or the network is unusable
EXIT_BUILD = 70           # a build step (dpkg-deb, grub-mkimage, image wrapping) failed
EXIT_TOOL = 72            # a host tool the recipe needs (apt-get, dpkg-deb) is not installed


class RecipeError(Exception):
    """A recipe failed; ``exit_code`` says how, for the command line."""

    exit_code = EXIT_BUILD


class AptUnavailable(RecipeError):
    """apt-cache/apt-get could not deliver a package: no index, no network, or no such package."""

    exit_code = EXIT_APT


class VerificationError(RecipeError):
    """A fetched file is not what apt's index promised."""

    exit_code = EXIT_VERIFY


class ToolMissing(RecipeError):
    """A host program the recipe runs is not installed."""

    exit_code = EXIT_TOOL


class NotBuilt(RecipeError):
    """The image was asked for by path but has not been built."""

    exit_code = EXIT_NOT_BUILT


@dataclass(frozen=True)
class Recipe:
    """One buildable image: ``build`` makes it (cached) and ``path`` says where it lands."""

    name: str
    summary: str
    build: Callable[[Path | None], Path]
    path: Callable[[Path | None], Path]


@contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``directory`` so two builds of one recipe never interleave."""
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def recipes() -> dict[str, Recipe]:
    """Every known recipe by name."""
    # Imported here so that ``import images`` stays cheap and free of import cycles.
    from . import deb_images, grub, linux, linux_iso, seabios, unicorn, xen

    return {r.name: r for r in (grub.RECIPE, linux.RECIPE, linux_iso.RECIPE, seabios.RECIPE, unicorn.RECIPE, xen.RECIPE,
                                *deb_images.RECIPES)}


def build(name: str, cache: Path | None = None) -> Path:
    """Build (or reuse) the image of recipe ``name``; returns the bootable file's path."""
    return recipes()[name].build(cache)


__all__ = ["Recipe", "RecipeError", "AptUnavailable", "VerificationError", "ToolMissing", "NotBuilt",
           "cache_root", "locked", "recipes", "build"]
