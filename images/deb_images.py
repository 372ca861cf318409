"""Recipes for bootable images Debian ships ready-made inside a package: one file taken out of a
.deb as it is, verified against apt's index, cached. Each boots on the PC board, e.g.
``hvmrun -M pc --cdrom $(python3 -m images grub-rescue) --boot d``.
"""
from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from . import NotBuilt, Recipe, VerificationError, cache_root, locked
from . import apt
from .linux import members


@dataclass(frozen=True)
class DebImage:
    """``member`` (a path in ``package``'s file system, e.g. ``./usr/lib/ipxe/ipxe.iso``) is the image."""

    name: str
    package: str
    member: str
    summary: str

    def directory(self, cache: Path | None = None) -> Path:
        """Where the recipe keeps its download and the image."""
        return cache_root(cache) / self.name

    def built_path(self, cache: Path | None = None) -> Path:
        """The image if it has been built; raises NotBuilt otherwise."""
        path = self.directory(cache) / Path(self.member).name
        if not path.is_file():
            raise NotBuilt(f"the {self.name} image is not built yet; run `python3 -m images {self.name}` "
                           f"(would be at {path})")
        return path

    def build(self, cache: Path | None = None) -> Path:
        """Fetch and verify the package; returns the image's path."""
        workdir = self.directory(cache)
        file_name = Path(self.member).name
        with locked(workdir):
            deb = apt.fetch([self.package], workdir / "debs")[self.package]
            inputs = hashlib.sha256(f"{deb.package} {deb.version} {deb.sha256} {self.member}\n"
                                    f"{Path(__file__).read_text()}".encode()).hexdigest()
            image, stamp = workdir / file_name, workdir / (file_name + ".inputs")
            if not (image.is_file() and stamp.is_file() and stamp.read_text().strip() == inputs):
                tmp = workdir / "unpack.tmp"
                shutil.rmtree(tmp, ignore_errors=True)
                tmp.mkdir()
                prefix = self.member.rsplit("/", 1)[0] + "/"
                found = [p for p in members(deb.path(workdir / "debs"), prefix, tmp) if p.name == file_name]
                if not found:
                    raise VerificationError(f"{deb.filename}: no {self.member.lstrip('.')}")
                found[0].replace(image)
                shutil.rmtree(tmp)
                stamp.write_text(inputs + "\n")
        return image

    def recipe(self) -> Recipe:
        return Recipe(name=self.name, summary=self.summary, build=self.build, path=self.built_path)


GRUB_RESCUE = DebImage("grub-rescue", "grub-rescue-pc", "./usr/lib/grub-rescue/grub-rescue-cdrom.iso",
                       "Debian's GRUB rescue CD (grub-rescue-pc), booted from CD on -M pc")
IPXE = DebImage("ipxe", "ipxe", "./usr/lib/ipxe/ipxe.iso", "Debian's iPXE network boot CD, booted on -M pc")
MEMTEST = DebImage("memtest86+", "memtest86+", "./usr/lib/memtest86+/memtest86+x64.iso",
                   "memtest86+ 6 (64-bit) as a BIOS-bootable CD, booted on -M pc")
RECIPES = [GRUB_RESCUE.recipe(), IPXE.recipe(), MEMTEST.recipe()]

__all__ = ["DebImage", "GRUB_RESCUE", "IPXE", "MEMTEST", "RECIPES"]
