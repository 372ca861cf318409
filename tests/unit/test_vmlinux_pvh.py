"""ELF kernels that are not multiboot: PVH (entry note, hvm_start_info in EBX) and a Linux vmlinux
(64-bit entry with boot_params). Images and expected structures are packed with ``struct`` from
Xen's start_info.h and the kernel's zero-page.rst, not with hvm's declarations."""
from __future__ import annotations

import struct

import pytest

from hvm.boot.entry import Mode
from hvm.boot.vmlinux import load_vmlinux
from hvm.errors import ImageError

MiB = 1 << 20
E820 = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xE0000, 0x20000, 2), (0x100000, 63 * MiB, 1)]
TEXT = bytes((i * 13 + 5) & 0xFF for i in range(0x3000))


def _note(owner: bytes, kind: int, desc: bytes) -> bytes:
    name = owner + b"\0"
    pad = lambda b: b + b"\0" * (-len(b) % 4)  # noqa: E731
    return struct.pack("<III", len(name), len(desc), kind) + pad(name) + pad(desc)


def elf64(notes: bytes, paddr=0x1000000, vaddr=0xFFFFFFFF81000000, entry=0x1000000, memsz=0x5000) -> bytes:
    """ELF64 with one PT_LOAD (TEXT, then bss to memsz) and one PT_NOTE."""
    phoff, phnum = 64, 2
    text_off = 0x1000
    note_off = text_off + len(TEXT)
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 62, 1, entry, phoff, 0, 0,
                       64, 56, phnum, 64, 0, 0)
    load = struct.pack("<IIQQQQQQ", 1, 5, text_off, vaddr, paddr, len(TEXT), memsz, 0x200000)
    note = struct.pack("<IIQQQQQQ", 4, 4, note_off, 0, 0, len(notes), len(notes), 4)
    image = bytearray(note_off + len(notes))
    image[:64] = ehdr
    image[phoff:phoff + 112] = load + note
    image[text_off:note_off] = TEXT
    image[note_off:] = notes
    return bytes(image)


PVH_ENTRY = 0x1000850
PVH_NOTE = _note(b"Xen", 18, struct.pack("<Q", PVH_ENTRY))
LINUX_NOTE = _note(b"Linux", 0x100, b"6.1.0-test\0")


def test_pvh_start_info(mem):
    initrd = bytes(range(256)) * 64
    state = load_vmlinux(mem, "vmlinux", elf64(LINUX_NOTE + PVH_NOTE), "console=ttyS0 quiet",
                         ("initrd.cpio", initrd), E820, rsdp=0xE0000)
    assert state.mode == Mode.PROTECTED and state.entry == PVH_ENTRY
    info = state.regs["ebx"]
    magic, version, flags, nmods, modlist, cmdline, rsdp, memmap, nmemmap = struct.unpack(
        "<IIIIQQQQI", mem.read(info, 52))
    assert (magic, version, flags, nmods, rsdp) == (0x336EC578, 1, 0, 1, 0xE0000)
    assert mem.read(cmdline, 20) == b"console=ttyS0 quiet\0"
    paddr, size, mod_cmdline = struct.unpack("<QQQ", mem.read(modlist, 24))
    assert size == len(initrd) and mem.read(paddr, size) == initrd and paddr % 4096 == 0
    assert paddr + size <= 64 * MiB and mod_cmdline == 0
    entries = [struct.unpack("<QQI", mem.read(memmap + 24 * i, 20)) for i in range(nmemmap)]
    assert entries == E820
    assert mem.read(0x1000000, len(TEXT)) == TEXT and mem.read(0x1000000 + len(TEXT), 0x2000) == bytes(0x2000)


def test_vmlinux_without_pvh_note_boots_through_boot_params(mem):
    state = load_vmlinux(mem, "vmlinux", elf64(LINUX_NOTE), "root=/dev/vda", None, E820, rsdp=0xE0000)
    assert state.mode == Mode.LONG and state.entry == 0x1000000 and state.linux_selectors
    zp = state.regs["rsi"]
    assert mem.read(zp + 0x202, 4) == b"HdrS" and struct.unpack("<H", mem.read(zp + 0x1FE, 2))[0] == 0xAA55
    version, = struct.unpack("<H", mem.read(zp + 0x206, 2))
    cmd_line_ptr, = struct.unpack("<I", mem.read(zp + 0x228, 4))
    assert version >= 0x020C and mem.read(cmd_line_ptr, 14) == b"root=/dev/vda\0"
    assert mem.read(zp + 0x1E8, 1)[0] == len(E820)
    assert [struct.unpack("<QQI", mem.read(zp + 0x2D0 + 20 * i, 20)) for i in range(len(E820))] == E820
    assert struct.unpack("<Q", mem.read(zp + 0x070, 8))[0] == 0xE0000   # acpi_rsdp_addr
    assert mem.read(0x1000000, len(TEXT)) == TEXT


def test_elf_without_any_entry_note_is_refused(mem):
    with pytest.raises(ImageError, match="without an entry note"):
        load_vmlinux(mem, "/tmp/k.elf", elf64(_note(b"GNU", 3, b"\x01" * 20)), "", None, E820)


def test_pvh_entry_outside_ram_is_refused(mem):
    note = _note(b"Xen", 18, struct.pack("<I", 0xF0000000))
    with pytest.raises(ImageError, match="PVH entry point 0xf0000000 is outside guest RAM"):
        load_vmlinux(mem, "k", elf64(note), "", None, E820)
