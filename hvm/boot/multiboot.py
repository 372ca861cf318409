"""Multiboot v1 (spec 0.6.96), behaving like QEMU's ``-kernel`` loader for multiboot images.

The kernel is loaded either by the header's a.out-kludge address fields (flag bit 16, which wins
even for ELF files, as in QEMU) or by its ELF program headers.  hvm then lays out, above the
highest kernel byte and page aligned:

    info structure | module list | memory map | strings (cmdline, module strings, loader name)

followed by each module on its own page boundary.  Nothing is written until every range has been
checked, so a refused image leaves guest RAM untouched.
"""
from __future__ import annotations

import sys
from collections.abc import Iterator
from dataclasses import dataclass

from ..errors import ImageError
from ..formats import ConstructError
from ..formats.elf import EM_386, EM_X86_64
from ..formats.multiboot import (
    HDR_AOUT_KLUDGE, HDR_MEMORY_INFO, HDR_PAGE_ALIGN, HDR_REQUIRED_MASK, HDR_VIDEO_MODE,
    MBI_BOOT_DEVICE, MBI_BOOT_LOADER_NAME, MBI_CMDLINE, MBI_MEMORY, MBI_MMAP, MBI_MODS,
    MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_HEADER_ALIGN, MULTIBOOT_HEADER_MAGIC, MULTIBOOT_SEARCH,
    MultibootAddressFields, MultibootHeader as _HeaderFormat, MultibootHeaderCore, MultibootInfo, MultibootMmapEntry,
    MultibootModule,
)
from ..formats.e820 import E820_RAM
from ..layout import EBDA_START
from ..memory import HIGHMEM_BASE, GuestMemory
from .elf_segments import Chunk, check_chunks, elf_chunks, write_chunks
from .entry import EntryState, Mode
from .flat import require_ram


PAGE = 0x1000
# "No BIOS drive, no partitions": what QEMU reports, since the kernel did not come from a disk.
BOOT_DEVICE_NONE = 0x8000FFFF
# 0x9FC00-0xFFFFF holds the EBDA, VGA memory and the ROMs; info and modules skip over it.
LEGACY_HOLE = (EBDA_START, 0x100000)
_SUPPORTED_REQUIRED = HDR_PAGE_ALIGN | HDR_MEMORY_INFO | HDR_VIDEO_MODE
_X86_MACHINES = (EM_386, 6, EM_X86_64)  # 6: EM_486, which some old i486 kernels still carry


@dataclass(frozen=True)
class MultibootHeader:
    """A multiboot v1 header found in an image; address/video fields are None when absent."""

    offset: int                       # file offset of the magic
    flags: int
    checksum: int
    header_addr: int | None = None
    load_addr: int | None = None
    load_end_addr: int | None = None
    bss_end_addr: int | None = None
    entry_addr: int | None = None
    video: tuple[int, int, int, int] | None = None   # mode_type, width, height, depth

    @property
    def has_address_fields(self) -> bool:
        """True when flag bit 16 asks for a.out-kludge loading."""
        return bool(self.flags & HDR_AOUT_KLUDGE)


def _candidates(data: bytes) -> Iterator[int]:
    """File offsets of 4-byte-aligned magic words whose 12-byte core lies in the search window."""
    window = min(len(data), MULTIBOOT_SEARCH)
    magic = MULTIBOOT_HEADER_MAGIC.to_bytes(4, "little")
    pos = data.find(magic, 0, window)
    while pos != -1:
        if pos % MULTIBOOT_HEADER_ALIGN == 0 and pos + MultibootHeaderCore.sizeof() <= window:
            yield pos
        pos = data.find(magic, pos + 1, window)


def _checksum_ok(flags: int, checksum: int) -> bool:
    return (MULTIBOOT_HEADER_MAGIC + flags + checksum) & 0xFFFFFFFF == 0


def _ram_kib_from(e820: list[tuple[int, int, int]], start: int, mem: GuestMemory) -> int:
    """KiB of RAM contiguous from ``start`` per the memory map, as the multiboot spec defines
    mem_lower (from 0) and mem_upper (from 1 MiB); QEMU's option ROM derives them the same way."""
    if not e820:
        return 640 if start == 0 else max(0, mem.below_4g // 1024 - 1024)
    end = start
    for addr, size, kind in sorted(e820):
        if kind == E820_RAM and addr <= end < addr + size:
            end = addr + size
    return (end - start) // 1024


def find_header(data: bytes) -> MultibootHeader | None:
    """The first valid multiboot v1 header in the first 8 KiB of ``data``, or None."""
    for off in _candidates(data):
        core = MultibootHeaderCore.parse(data[off:off + MultibootHeaderCore.sizeof()])
        if not _checksum_ok(core.flags, core.checksum):
            continue
        try:
            # 48 bytes is the longest header (core, address and video fields); the flags decide
            # how much of it is parsed.
            full = _HeaderFormat.parse(data[off:off + 48])
            addr, video = full.address, full.video
        except ConstructError:
            # The file ends inside the optional fields.  Keep whatever address fields are whole
            # (the video ones are ignored anyway) and let the loader report a truncated file.
            video, addr = None, None
            start = off + MultibootHeaderCore.sizeof()
            if core.flags & HDR_AOUT_KLUDGE and start + MultibootAddressFields.sizeof() <= len(data):
                addr = MultibootAddressFields.parse(data[start:start + MultibootAddressFields.sizeof()])
        return MultibootHeader(
            off, core.flags, core.checksum,
            *((addr.header_addr, addr.load_addr, addr.load_end_addr, addr.bss_end_addr,
               addr.entry_addr) if addr is not None else (None,) * 5),
            video=(video.mode_type, video.width, video.height, video.depth) if video is not None else None,
        )
    return None


def _no_header_reason(data: bytes) -> str:
    """Why find_header found nothing, naming a magic with a bad checksum when there is one."""
    for off in _candidates(data):
        core = MultibootHeaderCore.parse(data[off:off + MultibootHeaderCore.sizeof()])
        return (f"no multiboot header found in the first 8 KiB (magic at offset {off:#x} has a bad "
                f"checksum: {MULTIBOOT_HEADER_MAGIC:#x} + {core.flags:#x} + {core.checksum:#x} != 0)")
    return "no multiboot header found in the first 8 KiB"


def _aout_chunks(path: str, data: bytes, hdr: MultibootHeader) -> tuple[list[Chunk], int]:
    """The kernel image and entry point described by the header's address fields."""
    if hdr.header_addr is None:
        raise ImageError(path, f"truncated file: multiboot header at offset {hdr.offset:#x} sets "
                               f"the address-fields flag but the file ends before them")
    if hdr.header_addr < hdr.load_addr:
        raise ImageError(path, f"invalid multiboot load_addr {hdr.load_addr:#x}: above "
                               f"header_addr {hdr.header_addr:#x}")
    lead = hdr.header_addr - hdr.load_addr      # bytes loaded before the header
    if lead > hdr.offset:
        raise ImageError(path, f"invalid multiboot header_addr {hdr.header_addr:#x}: loading would "
                               f"start {lead - hdr.offset:#x} bytes before the beginning of the file")
    file_off = hdr.offset - lead
    if hdr.load_end_addr:
        if hdr.load_end_addr < hdr.load_addr:
            raise ImageError(path, f"invalid multiboot load_end_addr {hdr.load_end_addr:#x}: below "
                                   f"load_addr {hdr.load_addr:#x}")
        load_size = hdr.load_end_addr - hdr.load_addr
    else:
        load_size = len(data) - file_off          # 0 means "the rest of the file"
    if file_off + load_size > len(data):
        raise ImageError(path, f"truncated file: a.out-kludge load range [{file_off:#x}, "
                               f"{file_off + load_size:#x}) extends past the end of the file "
                               f"({len(data):#x} bytes)")
    memsz = load_size
    if hdr.bss_end_addr:
        if hdr.bss_end_addr < hdr.load_addr + load_size:
            raise ImageError(path, f"invalid multiboot bss_end_addr {hdr.bss_end_addr:#x}: below "
                                   f"the end of the loaded image {hdr.load_addr + load_size:#x}")
        memsz = hdr.bss_end_addr - hdr.load_addr
    chunk = Chunk(hdr.load_addr, memoryview(data)[file_off:file_off + load_size], memsz, "kernel image")
    return [chunk], hdr.entry_addr


def _align(value: int, alignment: int) -> int:
    return (value + alignment - 1) & ~(alignment - 1)


def _place(addr: int, size: int, alignment: int) -> int:
    """``addr`` aligned, moved to 1 MiB if the range would overlap the EBDA/VGA/ROM hole."""
    addr = _align(addr, alignment)
    if addr < LEGACY_HOLE[1] and addr + size > LEGACY_HOLE[0]:
        addr = LEGACY_HOLE[1]
    return addr


def _cstring(path: str, text: str, what: str) -> bytes:
    raw = text.encode("utf-8", "surrogateescape")
    if b"\0" in raw:
        raise ImageError(path, f"{what} contains a NUL byte")
    return raw + b"\0"


def load_multiboot(mem: GuestMemory, path: str, data: bytes, cmdline: str,
                   modules: list[tuple[str, bytes, str]], e820: list[tuple[int, int, int]], *,
                   bootloader_name: str = "hvm") -> EntryState:
    """Load a multiboot v1 kernel and its modules; EAX/EBX carry the magic and the info address."""
    hdr = find_header(data)
    if hdr is None:
        raise ImageError(path, _no_header_reason(data))
    # A video mode request (HDR_VIDEO_MODE) is ignored: hvm gives the kernel a text console.
    unknown = hdr.flags & HDR_REQUIRED_MASK & ~_SUPPORTED_REQUIRED
    if unknown:
        # The spec says to refuse; QEMU only warns and boots, and so do we.
        sys.stderr.write(f"hvm: {path}: multiboot header requires unknown features {unknown:#x}; booting anyway\n")

    elfclass = 0  # the a.out kludge says nothing of the kernel's width
    if hdr.has_address_fields:
        chunks, entry = _aout_chunks(path, data, hdr)
        description = "multiboot v1 a.out kludge"
    else:
        if data[:4] != b"\x7fELF":
            raise ImageError(path, "not ELF and no multiboot address fields (header flag bit 16)")
        chunks, entry, elfclass = elf_chunks(path, data, _X86_MACHINES)
        description = f"multiboot v1 ELF{elfclass}"

    # --- check the kernel ---------------------------------------------------------------------
    kernel_end = check_chunks(mem, path, chunks, Mode.PROTECTED)
    if not (0 <= entry < HIGHMEM_BASE and mem.contains(entry)):
        raise ImageError(path, f"entry point {entry:#x} is outside guest RAM below 4 GiB")

    # --- lay out the info area ---------------------------------------------------------------
    strings = [_cstring(path, f"{path} {cmdline}", "command line")]   # QEMU: "<kernel> <append>"
    for mod_path, _, args in modules:
        strings.append(_cstring(path, f"{mod_path} {args}" if args else mod_path, "module string"))
    strings.append(_cstring(path, bootloader_name, "boot loader name"))

    mods_off = _align(MultibootInfo.sizeof(), 8)
    mmap_off = mods_off + MultibootModule.sizeof() * len(modules)
    strings_off = mmap_off + MultibootMmapEntry.sizeof() * len(e820)
    info_size = strings_off + sum(len(s) for s in strings)
    info_addr = _place(kernel_end, info_size, PAGE)
    require_ram(mem, path, info_addr, info_size, "multiboot info structure")

    string_addrs, cursor = [], info_addr + strings_off
    for s in strings:
        string_addrs.append(cursor)
        cursor += len(s)

    # Modules are always page aligned: that satisfies header flag bit 0 and costs little.
    mod_addrs, cursor = [], info_addr + info_size
    for mod_path, mod_data, _ in modules:
        addr = _place(cursor, len(mod_data), PAGE)
        require_ram(mem, path, addr, len(mod_data), f"module {mod_path}")
        mod_addrs.append(addr)
        cursor = addr + len(mod_data)

    # --- write everything ----------------------------------------------------------------------
    write_chunks(mem, chunks)
    for (_, mod_data, _), addr in zip(modules, mod_addrs):
        mem.write(addr, mod_data)

    flags = MBI_MEMORY | MBI_BOOT_DEVICE | MBI_CMDLINE | MBI_MODS | MBI_BOOT_LOADER_NAME
    if e820:
        flags |= MBI_MMAP       # an empty map is better reported as absent than as zero-length
    info = MultibootInfo.build(dict(
        flags=flags,
        mem_lower=_ram_kib_from(e820, 0, mem),
        mem_upper=_ram_kib_from(e820, 0x100000, mem),
        boot_device=BOOT_DEVICE_NONE,
        cmdline=string_addrs[0],
        mods_count=len(modules),
        mods_addr=info_addr + mods_off,
        mmap_length=MultibootMmapEntry.sizeof() * len(e820) if e820 else 0,
        mmap_addr=info_addr + mmap_off if e820 else 0,
        boot_loader_name=string_addrs[-1],
    ))
    mods = b"".join(MultibootModule.build(dict(mod_start=addr, mod_end=addr + len(mod_data), string=s))
                    for (_, mod_data, _), addr, s in zip(modules, mod_addrs, string_addrs[1:-1]))
    mmap = b"".join(MultibootMmapEntry.build(dict(base_addr=base, length=size, type=kind))
                    for base, size, kind in e820)
    blob = info.ljust(mods_off, b"\0") + mods + mmap + b"".join(strings)
    assert len(blob) == info_size
    mem.write(info_addr, blob)

    return EntryState(Mode.PROTECTED, entry,
                      regs={"eax": MULTIBOOT_BOOTLOADER_MAGIC, "ebx": info_addr},
                      description=description)
