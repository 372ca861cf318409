"""Recipe ``linux-iso``: a bootable CD (and hard disk) image hvm builds itself from Debian's
packages: GRUB for BIOS PCs (``grub-pc-bin``) starting Debian's stock kernel with the busybox
initramfs of the ``linux`` recipe, the console on COM1. A real OS from CD to user space on the PC
board: ``hvmrun -M pc --accel auto --cdrom $(python3 -m images linux-iso) --boot d``.

The image is ISO 9660 with Rock Ridge names and an El Torito "no emulation" boot entry holding
GRUB's ``i386-pc-eltorito`` core (with its boot information table, as GRUB's CD boot code
needs), written with pycdlib. Its first sector also holds GRUB's disk boot sector (``boot.img``)
pointing at a copy of GRUB's ``i386-pc`` core stored contiguously in the ISO, so the same file
boots as a hard disk (``--disk``, ``--boot c``): grub-install's job, done here for one file.
GRUB finds its files by searching for a marker file, so the same configuration works from (cd)
and from (hd0).
"""
from __future__ import annotations

import hashlib
import io
import struct
import sys
from pathlib import Path

from . import NotBuilt, Recipe, RecipeError, ToolMissing, cache_root, linux, locked
from . import apt
from .grub import mkimage

PACKAGES = ["grub-pc-bin", "grub-common"]
IMAGE_NAME = "hvm-linux.iso"
MARKER = "/hvm-linux.id"
MODULES = ["biosdisk", "iso9660", "search", "search_fs_file", "linux", "serial", "terminal", "echo"]
# The kernel's command line: the console on COM1 (and the screen); no hvm.run=, so the initramfs
# starts a shell, whose exit powers off. tsc=reliable: see the README (PIT ticks under unicorn).
CMDLINE = "console=tty0 console=ttyS0,115200 tsc=reliable"
# Runs in GRUB's rescue parser (no "normal" module): one command per line.
CONFIG = f"""\
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
search --no-floppy --set=root --file {MARKER}
echo "GRUB: starting Debian's kernel from hvm's ISO"
linux /vmlinuz {CMDLINE}
initrd /initramfs.cpio
boot
"""
SECTOR = 512
# GRUB's boot sector (boot.img, grub-core/boot/i386/pc/boot.S): the code is the first 440 bytes;
# the 64-bit LBA of core.img's first sector lives at 0x5C, the boot drive at 0x64 (0xFF: the one
# the BIOS booted), and 0x66 holds a drive check grub-install replaces with two NOPs for disks.
BOOT_CODE, KERNEL_SECTOR, BOOT_DRIVE, DRIVE_CHECK = 440, 0x5C, 0x64, 0x66
# diskboot.img (core.img's first sector) ends with a block list of the sectors that follow it:
# start LBA (u64), sector count (u16), load segment (u16), read from 0x1F4 downwards.
BLOCKLIST, CORE_SEGMENT = 0x1F4, 0x820
PADDING = 300 * 1024


def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its downloads and the image."""
    return cache_root(cache) / "linux-iso"


def built_path(cache: Path | None = None) -> Path:
    """The ISO if it has been built; raises NotBuilt otherwise."""
    path = recipe_dir(cache) / IMAGE_NAME
    if not path.is_file():
        raise NotBuilt(f"the linux-iso image is not built yet; run `python3 -m images linux-iso` "
                       f"(would be at {path})")
    return path


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def write_iso(out: Path, files: dict[str, bytes], eltorito: bytes, disk_core: bytes, boot_img: bytes) -> None:
    """An ISO 9660 + Rock Ridge image of ``files`` (name -> contents, at the root) that boots
    from CD through ``eltorito`` and from a hard disk through ``boot_img`` + ``disk_core``."""
    try:
        import pycdlib
    except ImportError:
        raise ToolMissing("pycdlib is not installed (pip install pycdlib): it writes the ISO") from None
    iso = pycdlib.PyCdlib()
    iso.new(interchange_level=3, rock_ridge="1.09")

    def add(name: str, data: bytes) -> str:
        path = "/" + name.upper().replace("-", "_").replace(".", "_")[:30] + ".;1"
        iso.add_fp(io.BytesIO(data), len(data), path, rr_name=name)
        return path

    for name, data in files.items():
        add(name, data)
    add(MARKER.lstrip("/"), b"hvm\n")
    core_path = add("core.img", disk_core)
    boot_path = add("eltorito.img", eltorito)
    iso.add_eltorito(boot_path, bootcatfile="/BOOT.CAT;1", media_name="noemul", boot_load_size=4,
                     boot_info_table=True)
    buffer = io.BytesIO()
    iso.write_fp(buffer)
    record = iso.get_record(iso_path=core_path)
    core_lba = record.extent_location() * (2048 // SECTOR)
    iso.close()
    image = bytearray(buffer.getvalue())
    # The disk boot path: boot.img in the (otherwise unused) system area's first sector, aimed
    # at core.img, whose own block list then names the rest of it.
    sectors = (len(disk_core) + SECTOR - 1) // SECTOR
    at = core_lba * SECTOR
    struct.pack_into("<QHH", image, at + BLOCKLIST, core_lba + 1, sectors - 1, CORE_SEGMENT)
    mbr = bytearray(boot_img[:BOOT_CODE])
    struct.pack_into("<Q", mbr, KERNEL_SECTOR, core_lba)
    mbr[BOOT_DRIVE] = 0xFF
    mbr[DRIVE_CHECK:DRIVE_CHECK + 2] = b"\x90\x90"
    image[:BOOT_CODE] = mbr
    image[510:512] = b"\x55\xaa"
    # Zeros after the volume, as xorriso writes by default: GRUB reads a CD in 8-sector blocks,
    # and one that runs past the end of the disc fails (measured: the kernel's last 7 sectors
    # arrived as zeros).
    out.write_bytes(image + bytes(PADDING))


def build(cache: Path | None = None) -> Path:
    """Build (or reuse) the ISO from the linux recipe's kernel and initramfs; returns its path."""
    kernel_dir = linux.build(cache)
    workdir = recipe_dir(cache)
    with locked(workdir):
        debs = apt.fetch(PACKAGES, workdir / "debs")
        files = {"vmlinuz": (kernel_dir / linux.KERNEL_NAME), "initramfs.cpio": (kernel_dir / linux.INITRAMFS_NAME)}
        inputs = hashlib.sha256("\n".join([
            *(f"{d.package} {d.version} {d.sha256}" for d in debs.values()),
            *(f"{name} {path.stat().st_size} {path.stat().st_mtime_ns}" for name, path in files.items()),
            Path(__file__).read_text(),
        ]).encode()).hexdigest()
        image, stamp = workdir / IMAGE_NAME, workdir / (IMAGE_NAME + ".inputs")
        if image.is_file() and stamp.is_file() and stamp.read_text().strip() == inputs:
            return image
        root = apt.extract(list(debs.values()), workdir / "debs", workdir / "root")
        config = workdir / "grub.cfg"
        config.write_text(CONFIG)
        eltorito, disk_core = workdir / "eltorito.img", workdir / "core.img"
        mkimage(root, "i386-pc-eltorito", config, eltorito, MODULES, prefix="/boot/grub")
        mkimage(root, "i386-pc", config, disk_core, MODULES, prefix="/boot/grub")
        boot_img = (root / "usr/lib/grub/i386-pc/boot.img").read_bytes()
        if len(boot_img) != SECTOR:
            raise RecipeError(f"{root}/usr/lib/grub/i386-pc/boot.img is not one sector")
        tmp = image.with_name(image.name + ".tmp")
        write_iso(tmp, {name: path.read_bytes() for name, path in files.items()}, eltorito.read_bytes(),
                  disk_core.read_bytes(), boot_img)
        tmp.replace(image)
        stamp.write_text(inputs + "\n")
        _log(f"built {image} ({image.stat().st_size} bytes)")
        return image


RECIPE = Recipe(
    name="linux-iso",
    summary="a CD/disk image hvm builds: GRUB (BIOS) starting Debian's kernel and the busybox initramfs",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "build", "built_path"]
