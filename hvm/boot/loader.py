"""Choose the boot protocol from the image's content (never its name) and load it."""
from __future__ import annotations

import os

from ..config import MachineConfig
from ..errors import ImageError, MissingFileError
from ..memory import GuestMemory
from .decompress import decompress, payload_format
from .detect import detect_format
from .entry import EntryState, Mode
from .flat import load_flat
from .linux import load_bzimage
from .vmlinux import load_vmlinux
from .multiboot import load_multiboot


def _read(path: str, limit: int) -> bytes:
    try:
        size = os.path.getsize(path)
        if size > limit:
            raise ImageError(path, f"too big for RAM ({size} bytes, the guest has {limit} bytes)")
        with open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise MissingFileError(path) from None
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not an image") from None
    except PermissionError:
        raise ImageError(path, "permission denied") from None


# Whole-file compressions GRUB opens transparently (its gzio and xzio filters) and that kernels
# are shipped in: Debian's Xen is xen-<version>.gz. Modules are never decompressed (the kernel
# decides what its modules are), and neither is an image the user declared raw (--flat-mode).
WHOLE_FILE_COMPRESSIONS = ("gzip", "xz")


def load_kernel(mem: GuestMemory, cfg: MachineConfig, e820: list[tuple[int, int, int]],
                rsdp: int | None = None, host_decompress: bool = False,
                linux_cmdline_additions: tuple[str, ...] = ()) -> EntryState:
    """Load ``cfg.kernel`` (and its modules) into guest memory; returns where the CPU starts.
    ``rsdp`` is where the machine's ACPI tables start, for the protocols that pass it on;
    ``host_decompress`` makes a bzImage's payload decompressed here rather than by the guest;
    ``linux_cmdline_additions`` are appended to a Linux kernel's command line (the caller says so)."""
    path = cfg.kernel
    data = _read(path, mem.size)
    if not data:
        raise ImageError(path, "file is empty")
    if cfg.flat_mode is None and payload_format(data) in WHOLE_FILE_COMPRESSIONS:
        data = decompress(path, data, mem.size, what="kernel image")
    fmt = detect_format(path, data)
    if fmt == "multiboot":
        modules = [(m.path, _read(m.path, mem.size), m.args) for m in cfg.modules]
        if cfg.initrd:
            modules.insert(0, (cfg.initrd, _read(cfg.initrd, mem.size), ""))
        return load_multiboot(mem, path, data, cfg.append, modules, e820)
    if cfg.modules:
        raise ImageError(path, "--module needs a multiboot kernel, and this image has no multiboot header")
    if fmt in ("elf", "bzimage"):
        initrd = (cfg.initrd, _read(cfg.initrd, mem.size)) if cfg.initrd else None
        cmdline = " ".join([cfg.append, *linux_cmdline_additions]).strip()
        if fmt == "elf":
            return load_vmlinux(mem, path, data, cmdline, initrd, e820, rsdp)
        return load_bzimage(mem, path, data, cmdline, initrd, e820, rsdp, host_decompress)
    if fmt == "unknown" and cfg.flat_mode is None:
        # QEMU's -kernel refuses what it cannot identify; running arbitrary bytes as code would
        # turn a wrong path into a hang until the timeout.
        raise ImageError(path, "not a bootable image: no multiboot header, ELF header, Linux "
                               "bzImage header or boot-sector signature (55 AA at byte 510); "
                               "give --flat-mode to run it as a raw binary")
    if cfg.initrd:
        raise ImageError(path, "--initrd needs a kernel that takes one; a flat binary does not")
    return load_flat(mem, path, data, cfg.flat_mode or Mode.REAL, cfg.load_addr)
