"""Multiboot v1 loading into real guest RAM, with images built byte by byte in the tests.

The images are packed with ``struct`` straight from the ELF and multiboot specifications rather
than with hvm's own format declarations, so a mistake in those declarations shows up here.
"""
from __future__ import annotations

import struct

import pytest

from hvm.boot.detect import detect_format
from hvm.boot.entry import Mode
from hvm.boot.multiboot import find_header, load_multiboot
from hvm.errors import ImageError
from hvm.memory import GuestMemory

MiB = 1 << 20
MAGIC = 0x1BADB002
E820 = [(0, 0x9FC00, 1), (0x9FC00, 0x400, 2), (0xF0000, 0x10000, 2), (0x100000, 63 * MiB, 1)]
PAYLOAD = bytes((i * 7 + 3) & 0xFF for i in range(0x1800))


# --- image builders ---------------------------------------------------------------------------

def mb_header(flags: int = 0, *, checksum: int | None = None, addr: tuple[int, ...] | None = None,
              video: tuple[int, int, int, int] | None = None) -> bytes:
    """A multiboot header as spec §3.1.1 lays it out."""
    if checksum is None:
        checksum = (-(MAGIC + flags)) & 0xFFFFFFFF
    out = struct.pack("<III", MAGIC, flags, checksum)
    if addr is not None or video is not None:
        out += struct.pack("<5I", *(addr or (0,) * 5))
    if video is not None:
        out += struct.pack("<4I", *video)
    return out


def elf32(segments, entry: int, *, header: bytes | None = None, header_off: int = 0x100,
          machine: int = 3, data_off: int = 0x1000) -> bytes:
    """ELF32 executable; segments are (paddr, vaddr, payload, memsz), payloads laid from data_off."""
    phoff, phnum = 52, len(segments)
    ehdr = b"\x7fELF" + bytes([1, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIIIIIHHHHHH", 2, machine, 1, entry, phoff, 0, 0, 52, 32, phnum, 40, 0, 0)
    phdrs, body, off = b"", b"", data_off
    for paddr, vaddr, payload, memsz in segments:
        phdrs += struct.pack("<8I", 1, off, vaddr, paddr, len(payload), memsz, 7, 0x1000)
        body += payload
        off += len(payload)
    image = bytearray(ehdr + phdrs)
    if header is not None:
        image[len(image):header_off] = bytes(header_off - len(image))
        image[header_off:header_off + len(header)] = header
    image[len(image):data_off] = bytes(data_off - len(image))
    return bytes(image) + body


def elf64(segments, entry: int, *, header: bytes | None = None, header_off: int = 0x100,
          data_off: int = 0x1000) -> bytes:
    """ELF64 x86-64 executable, same conventions as elf32."""
    phoff, phnum = 64, len(segments)
    ehdr = b"\x7fELF" + bytes([2, 1, 1]) + bytes(9)
    ehdr += struct.pack("<HHIQQQIHHHHHH", 2, 62, 1, entry, phoff, 0, 0, 64, 56, phnum, 64, 0, 0)
    phdrs, body, off = b"", b"", data_off
    for paddr, vaddr, payload, memsz in segments:
        phdrs += struct.pack("<IIQQQQQQ", 1, 7, off, vaddr, paddr, len(payload), memsz, 0x1000)
        body += payload
        off += len(payload)
    image = bytearray(ehdr + phdrs)
    if header is not None:
        image[len(image):header_off] = bytes(header_off - len(image))
        image[header_off:header_off + len(header)] = header
    image[len(image):data_off] = bytes(data_off - len(image))
    return bytes(image) + body


def aout_image(*, load_addr: int = 0x100000, header_off: int = 0x40, load_end: int | None = None,
               bss_end: int = 0, entry: int = 0x100080, size: int = 0x2000, flags: int = 1 << 16) -> bytes:
    """A flat binary whose multiboot header carries a.out-kludge address fields."""
    image = bytearray((i * 13 + 5) & 0xFF for i in range(size))
    header_addr = load_addr + header_off
    if load_end is None:
        load_end = load_addr + size
    image[header_off:header_off + 32] = mb_header(flags, addr=(header_addr, load_addr, load_end, bss_end, entry))
    return bytes(image)


def cstr(mem: GuestMemory, addr: int) -> str:
    """Read a NUL-terminated string from guest RAM."""
    out = bytearray()
    while (b := mem.read_u8(addr + len(out))) != 0:
        out.append(b)
    return out.decode()


def simple_elf(**kw) -> bytes:
    return elf32([(0x100000, 0x100000, PAYLOAD, 0x3000)], 0x100010, header=mb_header(0x3), **kw)


# --- find_header ------------------------------------------------------------------------------

def test_find_header_aligned_within_8k():
    data = bytes(0x200) + mb_header(0x3) + bytes(64)
    hdr = find_header(data)
    assert hdr is not None and hdr.offset == 0x200 and hdr.flags == 3
    assert not hdr.has_address_fields and hdr.load_addr is None


def test_find_header_ignores_unaligned_and_late_and_bad_checksum():
    assert find_header(bytes(0x202) + mb_header() + bytes(16)) is None          # not 4-byte aligned
    assert find_header(bytes(8192) + mb_header() + bytes(16)) is None           # past 8 KiB
    assert find_header(bytes(8192 - 8) + mb_header()) is None                   # straddles 8 KiB
    assert find_header(bytes(0x100) + mb_header(checksum=0x1234) + bytes(16)) is None
    # A bad candidate does not hide a good one after it.
    data = mb_header(checksum=1) + bytes(4) + mb_header(0x2) + bytes(16)
    assert find_header(data).offset == 16


def test_find_header_address_and_video_fields():
    hdr = find_header(mb_header((1 << 16) | 4, addr=(1, 2, 3, 4, 5), video=(1, 80, 25, 0)))
    assert (hdr.header_addr, hdr.load_addr, hdr.load_end_addr, hdr.bss_end_addr, hdr.entry_addr) == (1, 2, 3, 4, 5)
    assert hdr.video == (1, 80, 25, 0)
    # Video flag alone: the video words still live at offset 32.
    hdr = find_header(mb_header(4, video=(0, 1024, 768, 32)))
    assert hdr.video == (0, 1024, 768, 32) and hdr.header_addr is None
    # File ends inside the video words: the whole address fields are still reported.
    hdr = find_header(mb_header((1 << 16) | 4, addr=(1, 2, 3, 4, 5), video=(1, 80, 25, 0))[:40])
    assert hdr.entry_addr == 5 and hdr.video is None
    # File ends inside the address fields: header found, fields absent.
    hdr = find_header(mb_header(1 << 16, addr=(1, 2, 3, 4, 5))[:24])
    assert hdr.has_address_fields and hdr.header_addr is None


def test_truncated_header_address_fields(mem):
    with pytest.raises(ImageError, match="truncated file: multiboot header"):
        load_multiboot(mem, "t", mb_header(1 << 16, addr=(1, 2, 3, 4, 5))[:24], "", [], E820)


# --- ELF loading ------------------------------------------------------------------------------

def test_elf32_segment_bss_entry_and_registers(mem):
    mem.fill(0x100000, 0x4000, 0xAA)                 # so that bss zeroing is observable
    st = load_multiboot(mem, "/boot/kern", simple_elf(), "console=ttyS0", [], E820)
    assert st.mode == Mode.PROTECTED
    assert st.entry == 0x100010
    assert st.description == "multiboot v1 ELF32"
    assert st.regs["eax"] == 0x2BADB002
    assert mem.read(0x100000, len(PAYLOAD)) == PAYLOAD
    assert mem.read(0x100000 + len(PAYLOAD), 0x3000 - len(PAYLOAD)) == bytes(0x3000 - len(PAYLOAD))
    assert st.regs["ebx"] == 0x103000               # info area: first page after the bss


def test_info_structure_fields(mem):
    mods = [("/m/initrd", b"I" * 5000, "root=1"), ("/m/empty", b"", ""), ("/m/x", b"xyz", "")]
    st = load_multiboot(mem, "/boot/kern", simple_elf(), "console=ttyS0 quiet", mods, E820,
                        bootloader_name="hvm-test")
    info = st.regs["ebx"]
    flags = mem.read_u32(info)
    assert flags == (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 6) | (1 << 9)
    assert mem.read_u32(info + 4) == 639            # RAM below the EBDA in the map
    assert mem.read_u32(info + 8) == 64 * 1024 - 1024
    assert mem.read_u32(info + 12) == 0x8000FFFF
    assert cstr(mem, mem.read_u32(info + 16)) == "/boot/kern console=ttyS0 quiet"
    assert cstr(mem, mem.read_u32(info + 64)) == "hvm-test"

    assert mem.read_u32(info + 20) == 3
    mods_addr = mem.read_u32(info + 24)
    entries = [struct.unpack("<4I", mem.read(mods_addr + 16 * i, 16)) for i in range(3)]
    prev_end = info
    for (start, end, string, reserved), (mpath, mdata, args) in zip(entries, mods):
        assert start % 0x1000 == 0 and start >= prev_end
        assert end - start == len(mdata)
        assert mem.read(start, len(mdata)) == mdata
        assert cstr(mem, string) == (f"{mpath} {args}" if args else mpath)
        assert reserved == 0
        prev_end = end
    assert cstr(mem, entries[0][2]) == "/m/initrd root=1"
    assert cstr(mem, entries[2][2]) == "/m/x"

    mmap_len, mmap_addr = mem.read_u32(info + 44), mem.read_u32(info + 48)
    assert mmap_len == 24 * len(E820)
    got = [struct.unpack("<IQQI", mem.read(mmap_addr + 24 * i, 24)) for i in range(len(E820))]
    assert got == [(20, a, s, t) for a, s, t in E820]
    # Every piece of the info area lies inside the page(s) before the first module.
    for addr in (mods_addr, mmap_addr, mem.read_u32(info + 16), mem.read_u32(info + 64)):
        assert info <= addr < entries[0][0]


def test_cmdline_empty_keeps_trailing_space_like_qemu(mem):
    st = load_multiboot(mem, "kernel.elf", simple_elf(), "", [], E820)
    info = st.regs["ebx"]
    assert cstr(mem, mem.read_u32(info + 16)) == "kernel.elf "
    assert mem.read_u32(info + 20) == 0


def test_higher_half_entry_is_converted_to_physical(mem):
    img = elf32([(0x200000, 0xC0200000, PAYLOAD, len(PAYLOAD))], 0xC0200020, header=mb_header())
    st = load_multiboot(mem, "k", img, "", [], E820)
    assert st.entry == 0x200020
    assert mem.read(0x200000, 16) == PAYLOAD[:16]


def test_physical_entry_of_higher_half_kernel_kept(mem):
    img = elf32([(0x200000, 0xC0200000, PAYLOAD, len(PAYLOAD))], 0x200040, header=mb_header())
    assert load_multiboot(mem, "k", img, "", [], E820).entry == 0x200040


def test_two_segments_info_above_highest(mem):
    img = elf32([(0x100000, 0x100000, PAYLOAD[:0x100], 0x100),
                 (0x300000, 0x300000, PAYLOAD[:0x200], 0x5000)], 0x100000, header=mb_header())
    st = load_multiboot(mem, "k", img, "", [], E820)
    assert mem.read(0x300000, 0x200) == PAYLOAD[:0x200]
    assert st.regs["ebx"] == 0x305000


def test_elf64_accepted(mem):
    img = elf64([(0x100000, 0xFFFFFFFF80100000, PAYLOAD, 0x2000)], 0xFFFFFFFF80100004, header=mb_header(2))
    mem.fill(0x100000 + len(PAYLOAD), 0x800, 0x55)
    st = load_multiboot(mem, "k64", img, "", [], E820)
    assert st.description == "multiboot v1 ELF64"
    assert st.entry == 0x100004
    assert mem.read(0x100000, len(PAYLOAD)) == PAYLOAD
    assert mem.read(0x100000 + len(PAYLOAD), 0x800) == bytes(0x800)


def test_video_and_unknown_required_flags_still_boot(mem, capsys):
    hdr = mb_header(4 | (1 << 5), video=(0, 1024, 768, 32))
    img = elf32([(0x100000, 0x100000, PAYLOAD, len(PAYLOAD))], 0x100000, header=hdr)
    st = load_multiboot(mem, "k", img, "", [], E820)
    assert st.entry == 0x100000
    assert "0x20" in capsys.readouterr().err         # the unknown bit 5 is named, on stderr


def test_empty_e820_drops_mmap_flag(mem):
    st = load_multiboot(mem, "k", simple_elf(), "", [], [])
    assert not mem.read_u32(st.regs["ebx"]) & (1 << 6)


def test_info_skips_legacy_hole(mem):
    # A kernel ending just below the EBDA: the info area must not land in 0x9FC00-0xFFFFF.
    img = elf32([(0x90000, 0x90000, PAYLOAD, 0xFB00)], 0x90000, header=mb_header())
    st = load_multiboot(mem, "k", img, "", [("m", b"m" * 100, "")], E820)
    assert st.regs["ebx"] == 0x100000


# --- a.out kludge -----------------------------------------------------------------------------

def test_aout_kludge_load_and_bss(mem):
    img = aout_image(load_end=0x101000, bss_end=0x104000, entry=0x100080)
    mem.fill(0x101000, 0x3000, 0xAA)
    st = load_multiboot(mem, "aout", img, "a b", [], E820)
    assert st.description == "multiboot v1 a.out kludge"
    assert st.entry == 0x100080
    assert mem.read(0x100000, 0x1000) == img[:0x1000]
    assert mem.read(0x101000, 0x3000) == bytes(0x3000)
    assert st.regs["ebx"] == 0x104000
    assert cstr(mem, mem.read_u32(st.regs["ebx"] + 16)) == "aout a b"


def test_aout_kludge_file_offset_and_load_to_eof(mem):
    # header at file offset 0x240 says it lives at 0x200040 and loading starts at 0x200000, so
    # the file is loaded from offset 0x200, to the end of the file (load_end_addr 0).
    img = bytes(0x200) + aout_image(load_addr=0x200000, header_off=0x40, load_end=0, entry=0x200000)
    st = load_multiboot(mem, "aout", img, "", [], E820)
    assert mem.read(0x200000, len(img) - 0x200) == img[0x200:]
    assert st.entry == 0x200000


def test_aout_kludge_wins_over_elf(mem):
    hdr = mb_header(1 << 16, addr=(0x500100, 0x500000, 0, 0, 0x500010))
    img = elf32([(0x100000, 0x100000, PAYLOAD, len(PAYLOAD))], 0x100000, header=hdr, header_off=0x100)
    st = load_multiboot(mem, "k", img, "", [], E820)
    assert st.entry == 0x500010 and st.description == "multiboot v1 a.out kludge"
    assert mem.read(0x500000, 0x100) == img[:0x100]


# --- refusals ---------------------------------------------------------------------------------

def reason(mem, data, modules=(), path="img"):
    with pytest.raises(ImageError) as exc:
        load_multiboot(mem, path, data, "", list(modules), E820)
    assert exc.value.path == path
    return exc.value.reason


def test_no_header(mem):
    assert reason(mem, b"\x90" * 9000) == "no multiboot header found in the first 8 KiB"


def test_bad_checksum_named(mem):
    r = reason(mem, bytes(8) + mb_header(checksum=0xDEAD) + bytes(64))
    assert "no multiboot header" in r and "bad checksum" in r and "0x8" in r


def test_not_elf_without_address_fields(mem):
    assert "not ELF and no multiboot address fields" in reason(mem, mb_header() + bytes(100))


def test_elf_without_pt_load(mem):
    assert reason(mem, elf32([], 0x100000, header=mb_header())) == "ELF has no PT_LOAD segment"


def test_truncated_elf_segment(mem):
    img = simple_elf()[:-100]
    assert "truncated file" in reason(mem, img)


def test_truncated_program_headers(mem):
    img = elf32([(0x100000, 0x100000, PAYLOAD, len(PAYLOAD))], 0x100000, header=mb_header())
    hacked = bytearray(img)
    struct.pack_into("<H", hacked, 44, 200)          # e_phnum far past the end of the file
    hacked = bytes(hacked[:0x400])
    assert "truncated file" in reason(mem, hacked)


def test_truncated_aout_range(mem):
    img = aout_image(load_end=0x100000 + 0x3000, size=0x2000)
    assert "truncated file" in reason(mem, img)


def test_aout_invalid_addresses(mem):
    hdr = mb_header(1 << 16, addr=(0xF0000, 0x100000, 0, 0, 0x100000))
    assert "invalid multiboot load_addr" in reason(mem, hdr + bytes(0x100))
    # header_addr - load_addr larger than the header's file offset: load would start before byte 0
    hdr = mb_header(1 << 16, addr=(0x101000, 0x100000, 0, 0, 0x100000))
    assert "invalid multiboot header_addr" in reason(mem, hdr + bytes(0x100))
    hdr = mb_header(1 << 16, addr=(0x100000, 0x100000, 0x100010, 0x100008, 0x100000))
    assert "invalid multiboot bss_end_addr" in reason(mem, hdr + bytes(0x100))


def test_too_big_for_ram_segment(mem):
    img = elf32([(63 * MiB, 63 * MiB, PAYLOAD, 2 * MiB)], 63 * MiB, header=mb_header())
    r = reason(mem, img)
    assert "too big for RAM (65 MiB needed, 64 MiB available)" in r and "ELF segment 0" in r


def test_too_big_for_ram_above_4g(mem):
    img = elf64([(0x1_0000_0000, 0x1_0000_0000, PAYLOAD, len(PAYLOAD))], 0x1_0000_0000, header=mb_header())
    assert "too big for RAM" in reason(mem, img)


def test_too_big_for_ram_bss(mem):
    img = aout_image(bss_end=0x100000 + 80 * MiB)
    assert "too big for RAM (81 MiB needed, 64 MiB available)" in reason(mem, img)


def test_too_big_for_ram_module(mem):
    r = reason(mem, simple_elf(), modules=[("big.mod", bytes(63 * MiB), "")])
    assert "module big.mod" in r and "too big for RAM" in r


def test_too_big_for_ram_info_structure(mem):
    # Kernel bss runs to the last page of RAM: there is no room left for the info structure.
    img = elf32([(0x100000, 0x100000, PAYLOAD, 63 * MiB)], 0x100000, header=mb_header())
    assert "multiboot info structure" in reason(mem, img)


def test_segment_over_boot_gdt_refused_but_low_memory_allowed(mem):
    img = elf32([(0x400, 0x400, PAYLOAD[:0x200], 0x200)], 0x400, header=mb_header())
    assert "boot GDT" in reason(mem, img)
    img = elf32([(0x8000, 0x8000, PAYLOAD[:0x200], 0x200)], 0x8000, header=mb_header())
    assert load_multiboot(mem, "k", img, "", [], E820).entry == 0x8000


def test_non_x86_elf_refused(mem):
    img = elf32([(0x100000, 0x100000, PAYLOAD, len(PAYLOAD))], 0x100000, header=mb_header(), machine=40)
    assert "not x86" in reason(mem, img)


def test_refusal_writes_nothing(mem):
    mem.fill(0x100000, 0x100, 0xAA)
    reason(mem, simple_elf(), modules=[("big.mod", bytes(63 * MiB), "")])
    assert mem.read(0x100000, 0x100) == b"\xAA" * 0x100


# --- format detection -------------------------------------------------------------------------

def test_detect_format_by_content():
    assert detect_format("x.bin", simple_elf()) == "multiboot"     # multiboot wins over ELF
    assert detect_format("x.mb", elf32([(0x100000, 0x100000, PAYLOAD, 0x100)], 0x100000)) == "elf"
    bz = bytearray(0x400)
    bz[0x202:0x206] = b"HdrS"
    assert detect_format("kernel.elf", bytes(bz)) == "bzimage"
    assert detect_format("bzImage", b"\xEB\xFE" + bytes(510)) == "unknown"   # no 55 AA: not a boot sector
    assert detect_format("x.img", b"\xEB\xFE" + bytes(508) + b"\x55\xaa") == "boot-sector"
    assert detect_format("a.elf", aout_image()) == "multiboot"
    assert detect_format("empty", b"") == "unknown"
