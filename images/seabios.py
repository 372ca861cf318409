"""Recipe ``seabios``: Debian's SeaBIOS build, the firmware of hvm's PC board (``-M pc``): the
256 KiB BIOS QEMU's ``pc`` machine runs and the VGA BIOS for its standard VGA.

``python3 -m images seabios`` prints the directory holding ``bios-256k.bin`` and
``vgabios-stdvga.bin``; hvm looks there when ``--bios`` is not given.
"""
from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

from . import NotBuilt, Recipe, VerificationError, cache_root, locked
from . import apt
from .linux import members

PACKAGE = "seabios"
FILES = ("bios-256k.bin", "vgabios-stdvga.bin")


def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its download and the firmware files."""
    return cache_root(cache) / "seabios"


def built_path(cache: Path | None = None) -> Path:
    """The firmware directory if it has been built; raises NotBuilt otherwise."""
    directory = recipe_dir(cache) / "firmware"
    if not all((directory / name).is_file() for name in FILES):
        raise NotBuilt(f"the seabios image is not built yet; run `python3 -m images seabios` "
                       f"(would be at {directory})")
    return directory


def build(cache: Path | None = None) -> Path:
    """Fetch and verify Debian's seabios package; returns the directory of its firmware files."""
    workdir = recipe_dir(cache)
    with locked(workdir):
        deb = apt.fetch([PACKAGE], workdir / "debs")[PACKAGE]
        inputs = hashlib.sha256(f"{deb.package} {deb.version} {deb.sha256}\n{Path(__file__).read_text()}"
                                .encode()).hexdigest()
        out, stamp = workdir / "firmware", workdir / "firmware.inputs"
        if not (stamp.is_file() and stamp.read_text().strip() == inputs
                and all((out / name).is_file() for name in FILES)):
            tmp = workdir / "firmware.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            found = {p.name for p in members(deb.path(workdir / "debs"), "./usr/share/seabios/", tmp)}
            missing = [name for name in FILES if name not in found]
            if missing:
                raise VerificationError(f"{deb.filename}: no /usr/share/seabios/{missing[0]}")
            shutil.rmtree(out, ignore_errors=True)
            tmp.replace(out)
            stamp.write_text(inputs + "\n")
    return out


RECIPE = Recipe(
    name="seabios",
    summary="Debian's SeaBIOS (bios-256k.bin) and VGA BIOS, the PC board's firmware",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "FILES", "build", "built_path"]
