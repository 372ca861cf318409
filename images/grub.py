"""GRUB 2 from Debian as a multiboot v1 guest: ``python3 -m images grub``.

Why the coreboot build of GRUB, and why a shim
----------------------------------------------
Debian ships no ``i386-multiboot`` GRUB platform: ``grub-pc-bin`` has only ``i386-pc``, whose
kernel calls the BIOS (int 0x10/0x13/0x15) for its console, disks and memory map, and hvm has no
BIOS.  ``grub-coreboot-bin``'s ``i386-coreboot`` kernel is the same 32-bit protected-mode kernel
as the multiboot one (GRUB builds both from ``kern/i386/coreboot``): it drives hardware directly
and its ``kernel.img`` even carries a multiboot v1 header.  The one difference that matters is
where it learns the memory map: from coreboot's "LBIO" table, which it looks for at
0x500-0x1000 and 0xF0000-0x100000, never from the multiboot information structure.  Without
that table it stops with "No memory found" before printing anything to the serial port.

So this recipe wraps the unmodified ``grub-mkimage -O i386-coreboot`` output in a new ELF whose
first segment is a small shim (``grub_shim.S``, assembled and linked with binutils): it carries its own multiboot header,
converts the multiboot memory map (hvm's e820 map) into an LBIO table at 0x800, copies GRUB's
kernel down to its link address 0x9000 (it travels above 1 MiB, see ``wrap``), and jumps to it.
Every GRUB byte is Debian's; the only code of ours is the shim.

The embedded config sets up COM1, prints a banner and the memory map GRUB received, and powers
off through ACPI PM1a_CNT (port 0x604, SLP_EN with SLP_TYP 0), which hvm and QEMU's pc machine
both take as "power off".
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from . import NotBuilt, Recipe, RecipeError, ToolMissing, VerificationError, cache_root, locked
from . import apt

PACKAGES = ["grub-coreboot-bin", "grub-common"]
PLATFORM = "i386-coreboot"
MODULES = ["serial", "terminal", "echo", "iorw", "lsmmap"]
BANNER = "booted as a multiboot kernel"  # keep the echo line under GRUB's 80 columns
IMAGE_NAME = "grub-multiboot.elf"

# --- the embedded GRUB config ------------------------------------------------------------------
# It runs in GRUB's rescue parser (no "normal" module is included, to keep the image small and
# the boot short): one command per line, quotes work, no scripting.  Variables such as
# $grub_platform are set by the normal module only, so the platform is written in here instead.
CONFIG_TEMPLATE = """\
serial --unit=0 --speed=115200
terminal_input serial
terminal_output serial
echo "GRUB {version} ({platform}) {banner}"
echo "memory map handed over by the multiboot loader:"
lsmmap
echo "powering off: outw 0x604 0x2000 (ACPI PM1a_CNT, SLP_EN)"
outw 0x604 0x2000
echo "ACPI power-off did not take effect; leaving through isa-debug-exit"
outb 0xf4 0x7f
"""

# --- the multiboot-to-coreboot shim ------------------------------------------------------------
SHIM_SOURCE = Path(__file__).with_name("grub_shim.S")
HIGH_MEMORY = 0x100000                 # 1 MiB: segments from here up are left to the boot loader
LBIO_LIMIT = 0x1000                    # the shim's table lives below this
# GRUB keeps its scratch area and protected-mode stack at 0x68000-0x80000 (i386 memory_raw.h), so
# its kernel must fit below that; the shim itself uses no stack (multiboot leaves ESP undefined).
LOW_MEMORY_END = 0x68000
SHIM_ALIGN = 0x1000


@dataclass(frozen=True)
class Segment:
    """A PT_LOAD segment: ``data`` at physical ``addr``, zero-filled up to ``memsz``."""

    addr: int
    data: bytes
    memsz: int


def read_segments(path: Path) -> tuple[int, list[Segment]]:
    """Entry point and PT_LOAD segments of grub-mkimage's i386 ELF output."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.elffile import ELFFile

    try:
        with open(path, "rb") as f:
            elf = ELFFile(f)
            if elf.elfclass != 32 or elf["e_machine"] != "EM_386":
                raise RecipeError(f"{path}: grub-mkimage output is not an i386 ELF32 executable")
            segments = [Segment(seg["p_paddr"], seg.data(), seg["p_memsz"]) for seg in elf.iter_segments()
                        if seg["p_type"] == "PT_LOAD" and seg["p_memsz"]]
            return elf["e_entry"], segments
    except ELFError as exc:
        raise RecipeError(f"{path}: unreadable grub-mkimage output ({exc})") from None


def wrap(grub_elf: Path, workdir: Path, out: Path) -> None:
    """Assemble and link the shim around GRUB's i386-coreboot ELF: a multiboot v1 kernel."""
    entry, segments = read_segments(grub_elf)
    for seg in segments:
        low = seg.addr < HIGH_MEMORY
        if low and (seg.addr < LBIO_LIMIT or seg.addr + seg.memsz + 3 > LOW_MEMORY_END):
            raise RecipeError(f"{grub_elf}: GRUB segment at {seg.addr:#x}+{seg.memsz:#x} is not in "
                              "free conventional memory")
    build = workdir / "shim"
    build.mkdir(exist_ok=True)
    table, blobs = ["segments:"], []
    for i, seg in enumerate(segments):
        (build / f"grub-seg{i}.bin").write_bytes(seg.data)
        table.append(f"        .long seg{i}, {seg.addr:#x}, {len(seg.data):#x}, {seg.memsz:#x}")
        blobs += [f"seg{i}:", f'        .incbin "grub-seg{i}.bin"', "        .balign 4"]
    (build / "grub-segments.inc").write_text("\n".join(table + ["segments_end:"] + blobs) + "\n")
    # One segment, loaded above GRUB's highest byte, so no copy overwrites the shim; a single
    # PT_LOAD also keeps the multiboot header at the start of the file, where loaders look.
    top = max(s.addr + s.memsz for s in segments)
    base = -(-top // SHIM_ALIGN) * SHIM_ALIGN
    (build / "shim.ld").write_text(f"ENTRY(_start)\nSECTIONS\n{{\n    . = {base:#x};\n"
                                   "    .shim : { *(.shim) }\n}\n")
    _tool(["as", "--32", "--defsym", f"GRUB_ENTRY={entry:#x}", "-I", str(build),
           "-o", str(build / "shim.o"), str(SHIM_SOURCE)], build)
    _tool(["ld", "-m", "elf_i386", "-n", "--no-warn-rwx-segments", "-T", str(build / "shim.ld"),
           "-o", str(out), str(build / "shim.o")], build)


def _tool(cmd: list[str], cwd: Path) -> None:
    if shutil.which(cmd[0]) is None:
        raise ToolMissing(f"{cmd[0]} not found (install binutils)")
    r = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RecipeError(f"{cmd[0]} failed (exit {r.returncode}): {r.stderr.strip()}")


# --- the recipe --------------------------------------------------------------------------------
def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its downloads, the unpacked packages and the image."""
    return cache_root(cache) / "grub"


def image_path(cache: Path | None = None) -> Path:
    """Where the bootable image lands (it may not exist yet)."""
    return recipe_dir(cache) / IMAGE_NAME


def built_path(cache: Path | None = None) -> Path:
    """The image's path if it has been built; raises NotBuilt otherwise."""
    path = image_path(cache)
    if not path.is_file():
        raise NotBuilt(f"the grub image is not built yet; run `python3 -m images grub` (would be at {path})")
    return path


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def mkimage(root: Path, platform: str, config: Path, out: Path, modules: list[str], prefix: str = "/") -> None:
    """Run the unpacked grub-mkimage for ``platform`` with ``config`` embedded."""
    tool = root / "usr/bin/grub-mkimage"
    moddir = root / "usr/lib/grub" / platform.removesuffix("-eltorito")
    if not tool.is_file() or not (moddir / "kernel.img").is_file():
        raise VerificationError(f"unpacked packages lack {tool} or {moddir}/kernel.img")
    cmd = [str(tool), "-O", platform, "-d", str(moddir), "-c", str(config), "-p", prefix, "-o", str(out), *modules]
    _log(" ".join(["grub-mkimage", *cmd[1:]]))
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RecipeError(f"grub-mkimage failed (exit {r.returncode}): {r.stderr.strip()}")


def build(cache: Path | None = None) -> Path:
    """Fetch, verify and unpack Debian's GRUB, build the multiboot image; returns its path."""
    workdir = recipe_dir(cache)
    with locked(workdir):
        debs = apt.fetch(PACKAGES, workdir / "debs")
        coreboot = debs["grub-coreboot-bin"]
        config = CONFIG_TEMPLATE.format(version=coreboot.version, platform=PLATFORM, banner=BANNER)
        # Everything the image depends on; equal inputs mean the cached image is the same build.
        inputs = hashlib.sha256("\n".join([
            *(f"{d.package} {d.version} {d.sha256}" for d in debs.values()),
            # This file holds the module list and the config template; the shim is assembled.
            config, Path(__file__).read_text(), SHIM_SOURCE.read_text(),
        ]).encode()).hexdigest()
        image, stamp = image_path(cache), workdir / (IMAGE_NAME + ".inputs")
        if image.is_file() and stamp.is_file() and stamp.read_text().strip() == inputs:
            return image

        root = apt.extract(list(debs.values()), workdir / "debs", workdir / "root")
        cfg_path = workdir / "grub.cfg"
        cfg_path.write_text(config)
        coreboot_elf = workdir / "grub-coreboot.elf"
        mkimage(root, PLATFORM, cfg_path, coreboot_elf, MODULES)
        tmp = image.with_name(image.name + ".tmp")
        wrap(coreboot_elf, workdir, tmp)
        tmp.replace(image)
        stamp.write_text(inputs + "\n")
        _log(f"built {image} ({image.stat().st_size} bytes)")
        return image


def clean(cache: Path | None = None) -> None:
    """Remove everything this recipe cached."""
    shutil.rmtree(recipe_dir(cache), ignore_errors=True)


RECIPE = Recipe(
    name="grub",
    summary="GRUB 2 (Debian grub-coreboot-bin + a multiboot shim): serial banner, memory map, power-off",
    build=build,
    path=built_path,
)
