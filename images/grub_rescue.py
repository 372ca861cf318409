"""Recipe ``grub-rescue``: Debian's GRUB rescue CD image (package ``grub-rescue-pc``), a BIOS-
bootable El Torito ISO that brings up GRUB's command line on the screen. It boots on the PC
board: ``hvmrun -M pc --cdrom $(python3 -m images grub-rescue) --boot d``.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from . import NotBuilt, Recipe, VerificationError, cache_root, locked
from . import apt
from .linux import members

PACKAGE = "grub-rescue-pc"
IMAGE_NAME = "grub-rescue-cdrom.iso"


def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its download and the ISO."""
    return cache_root(cache) / "grub-rescue"


def built_path(cache: Path | None = None) -> Path:
    """The ISO if it has been built; raises NotBuilt otherwise."""
    path = recipe_dir(cache) / IMAGE_NAME
    if not path.is_file():
        raise NotBuilt(f"the grub-rescue image is not built yet; run `python3 -m images grub-rescue` "
                       f"(would be at {path})")
    return path


def build(cache: Path | None = None) -> Path:
    """Fetch and verify grub-rescue-pc; returns its CD image's path."""
    workdir = recipe_dir(cache)
    with locked(workdir):
        deb = apt.fetch([PACKAGE], workdir / "debs")[PACKAGE]
        inputs = hashlib.sha256(f"{deb.package} {deb.version} {deb.sha256}\n{Path(__file__).read_text()}"
                                .encode()).hexdigest()
        image, stamp = workdir / IMAGE_NAME, workdir / (IMAGE_NAME + ".inputs")
        if not (image.is_file() and stamp.is_file() and stamp.read_text().strip() == inputs):
            tmp = workdir / "iso.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            found = [p for p in members(deb.path(workdir / "debs"), "./usr/lib/grub-rescue/", tmp)
                     if p.name == IMAGE_NAME]
            if not found:
                raise VerificationError(f"{deb.filename}: no /usr/lib/grub-rescue/{IMAGE_NAME}")
            found[0].replace(image)
            shutil.rmtree(tmp)
            stamp.write_text(inputs + "\n")
    return image


RECIPE = Recipe(
    name="grub-rescue",
    summary="Debian's GRUB rescue CD (grub-rescue-pc), booted from CD on -M pc",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "build", "built_path"]
