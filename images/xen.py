"""Recipe ``xen``: Debian's Xen 4.17 hypervisor, as Debian ships it (a gzip-compressed multiboot
kernel), to boot with the ``linux`` recipe's stock kernel and initramfs as its dom0.

``python3 -m images xen`` builds both and prints, on stderr, the hvmrun command that boots them
(the same one tests/machine/test_xen.py runs), and on stdout the hypervisor's path.
"""
from __future__ import annotations

import hashlib
import shlex
import shutil
import sys
from pathlib import Path

from . import NotBuilt, Recipe, VerificationError, cache_root, linux, locked
from . import apt

PACKAGE = "xen-hypervisor-4.17-amd64"
IMAGE_NAME = "xen-4.17-amd64.gz"
XEN_CMDLINE = "console=com1 com1=115200 dom0_mem=512M"


def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its download and the hypervisor."""
    return cache_root(cache) / "xen"


def built_path(cache: Path | None = None) -> Path:
    """The hypervisor's path if it has been built; raises NotBuilt otherwise."""
    path = recipe_dir(cache) / IMAGE_NAME
    if not path.is_file():
        raise NotBuilt(f"the xen image is not built yet; run `python3 -m images xen` (would be at {path})")
    return path


def command(xen: Path, dom0: Path, run: str | None = None) -> list[str]:
    """hvmrun's arguments booting ``xen`` with the linux recipe's directory ``dom0`` as dom0;
    ``run`` is the dom0 initramfs's hvm.run= command (a shell without it)."""
    dom0_args = "console=hvc0" + (f" hvm.run='{run}'" if run else "")
    return ["--accel", "auto", "-m", "1024M", "-c", "2", "--kernel", str(xen), "--append", XEN_CMDLINE,
            "--module", f"{dom0 / linux.KERNEL_NAME},{dom0_args}", "--module", str(dom0 / linux.INITRAMFS_NAME)]


def build(cache: Path | None = None) -> Path:
    """Fetch and verify Xen (and build the linux recipe for dom0); returns the hypervisor's path."""
    dom0 = linux.build(cache)
    workdir = recipe_dir(cache)
    with locked(workdir):
        debs = apt.fetch([PACKAGE], workdir / "debs")
        deb = debs[PACKAGE]
        inputs = hashlib.sha256(f"{deb.package} {deb.version} {deb.sha256}\n{Path(__file__).read_text()}"
                                .encode()).hexdigest()
        image, stamp = workdir / IMAGE_NAME, workdir / (IMAGE_NAME + ".inputs")
        if not (image.is_file() and stamp.is_file() and stamp.read_text().strip() == inputs):
            tmp = workdir / "boot.tmp"
            shutil.rmtree(tmp, ignore_errors=True)
            tmp.mkdir()
            found = [p for p in linux.members(deb.path(workdir / "debs"), "./boot/", tmp) if p.name == IMAGE_NAME]
            if not found:
                raise VerificationError(f"{deb.filename}: no /boot/{IMAGE_NAME}")
            found[0].replace(image)
            shutil.rmtree(tmp)
            stamp.write_text(inputs + "\n")
    print("images: boot it with: hvmrun " + shlex.join(command(image, dom0)), file=sys.stderr, flush=True)
    return image


RECIPE = Recipe(
    name="xen",
    summary="Debian's Xen 4.17 hypervisor, to boot with the linux recipe as dom0",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "build", "built_path", "command"]
