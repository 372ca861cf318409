"""Format fuzzing of every image parser hvm has, starting from valid images and mutating them.

Each property takes a seed the loader accepts (a multiboot ELF32/ELF64/a.out-kludge kernel, a PVH
or Linux vmlinux, a bzImage with every payload compression, kallsyms tables, a cpio archive),
overwrites header fields with values that tend to break parsers (0, 1, all ones, lengths just past
the file, ...), flips bytes, truncates and extends it, and feeds the result to the real loader.
The only acceptable outcomes are "loaded, every byte written inside guest RAM, entry point in
RAM" and the typed ImageError naming the file: any other exception is a bug in hvm.

The budget is HVM_FUZZ_EXAMPLES examples per property (default 200, a few seconds in all);
raise it for a longer run. CI (``CI`` set) derandomizes so a red build reproduces.
"""
from __future__ import annotations

import bz2
import gzip
import lzma
import os
import re
import stat
import struct
import sys
from unittest import mock

import pytest
import zstandard
from hypothesis import HealthCheck, event, given, settings, strategies as st

from conftest import REPO, require_tool
from test_decompress import _lz4_legacy
from test_kallsyms_panic import BASE as KALLSYMS_BASE, _image as kallsyms_image
from test_multiboot import PAYLOAD, aout_image, elf32 as mb_elf32, elf64 as mb_elf64, mb_header
from test_vmlinux_pvh import LINUX_NOTE, PVH_NOTE, _note, elf64 as vmlinux_elf64

from hvm.boot.decompress import decompress
from hvm.boot.loader import load_kernel
from hvm.boot.multiboot import find_header
from hvm.config import MachineConfig
from hvm.errors import ImageError
from hvm.kallsyms import Kallsyms, for_kernel, parse as kallsyms_parse
from hvm.layout import e820_map
from hvm.memory import GuestMemory

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from images import cpio  # noqa: E402

EXAMPLES = int(os.environ.get("HVM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

RAM = 32 << 20  # small enough that "too big for RAM" is reachable by a mutated length
MB_MAGIC = 0x1BADB002

# Values that sit on the edges parsers get wrong: zero, one, sign bits, all ones, RAM edges.
INTERESTING = (0, 1, 2, 3, 4, 7, 8, 0x10, 0x20, 0x34, 0x38, 0x40, 0x7F, 0x80, 0xFF, 0x100, 0x200,
               0x1000, 0x7FFF, 0x8000, 0xFFFF, 0x10000, 0x9FC00, 0xA0000, 0x100000, 0x1000000,
               RAM - 1, RAM, 0x7FFFFFFF, 0x80000000, 0xFFFFF000, 0xFFFFFFFF, 1 << 32,
               (1 << 63) - 1, 1 << 63, (1 << 64) - 1)
_KINDS = ("field", "field", "field", "flip", "truncate", "extend", "zero")


# --- mutations --------------------------------------------------------------------------------

def le(offset: int, size: int) -> tuple[int, int, str]:
    """A little-endian integer field of ``size`` bytes at ``offset``."""
    return offset, size, "le"


@st.composite
def mutated(draw, seed: bytes, fields=(), fixup=None, max_mutations: int = 4) -> bytes:
    """``seed`` with 1..max_mutations mutations; ``fixup`` (e.g. a checksum) may be redone after."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_mutations))):
        kind = draw(st.sampled_from(_KINDS if fields else _KINDS[3:]))
        if kind == "field":
            off, size, enc = draw(st.sampled_from(fields))
            if off + size > len(data):
                continue
            raw = bytes(data[off:off + size])
            old = int(raw, 16) if enc == "hex" and all(c in b"0123456789abcdefABCDEF" for c in raw) \
                else int.from_bytes(raw, "little")
            value = draw(st.one_of(st.sampled_from(INTERESTING), st.integers(0, (1 << 8 * size) - 1),
                                   st.integers(-8, 8).map(lambda d: old + d),
                                   st.integers(-8, 8).map(lambda d: len(data) + d)))
            if enc == "hex":
                data[off:off + size] = f"{value % (1 << 4 * size):0{size}X}".encode()
            else:
                data[off:off + size] = (value % (1 << 8 * size)).to_bytes(size, "little")
        elif kind == "flip" and data:
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        elif kind == "truncate":
            del data[draw(st.integers(0, len(data))):]
        elif kind == "extend":
            data += draw(st.one_of(st.binary(max_size=64), st.integers(1, 0x4000).map(bytes)))
        elif kind == "zero" and data:
            start = draw(st.integers(0, len(data) - 1))
            n = draw(st.integers(1, 256))
            data[start:start + n] = bytes(len(data[start:start + n]))
    if fixup is not None and draw(st.booleans()):
        fixup(data)
    return bytes(data)


def elf_fields(data: bytes, base: int = 0) -> list[tuple[int, int, str]]:
    """The file header, program header and note fields of the valid ELF ``data`` (at ``base``)."""
    fields = [(4, 1), (5, 1), (16, 2), (18, 2)]
    if data[4] == 1:
        phoff, = struct.unpack_from("<I", data, 28)
        phentsize, phnum = struct.unpack_from("<HH", data, 42)
        fields += [(24, 4), (28, 4), (42, 2), (44, 2)]
        ph = [(0, 4), (4, 4), (8, 4), (12, 4), (16, 4), (20, 4)]
        word, p_offset_at, p_filesz_at = "<I", 4, 16
    else:
        phoff, = struct.unpack_from("<Q", data, 32)
        phentsize, phnum = struct.unpack_from("<HH", data, 54)
        fields += [(24, 8), (32, 8), (54, 2), (56, 2)]
        ph = [(0, 4), (8, 8), (16, 8), (24, 8), (32, 8), (40, 8)]
        word, p_offset_at, p_filesz_at = "<Q", 8, 32
    for i in range(phnum):
        at = phoff + i * phentsize
        fields += [(at + o, s) for o, s in ph]
        if struct.unpack_from("<I", data, at)[0] == 4:  # PT_NOTE: each note's sizes and type
            cursor, = struct.unpack_from(word, data, at + p_offset_at)
            end = cursor + struct.unpack_from(word, data, at + p_filesz_at)[0]
            while cursor + 12 <= end:
                namesz, descsz, _ = struct.unpack_from("<III", data, cursor)
                fields += [(cursor, 4), (cursor + 4, 4), (cursor + 8, 4)]
                desc = cursor + 12 + (-(-namesz // 4) * 4)
                if descsz >= 4:
                    fields.append((desc, 4))
                cursor = desc + (-(-descsz // 4) * 4)
    return [le(base + o, s) for o, s in fields]


def multiboot_fields(data: bytes) -> tuple[list[tuple[int, int, str]], object]:
    """The multiboot header's flags, checksum and address fields, and a fixup that makes the
    checksum valid again (so mutated flags reach the loader instead of failing detection)."""
    off = next(i for i in range(0, 8192, 4) if struct.unpack_from("<I", data, i)[0] == MB_MAGIC)

    def fix_checksum(buf: bytearray) -> None:
        if off + 12 <= len(buf):
            flags, = struct.unpack_from("<I", buf, off + 4)
            struct.pack_into("<I", buf, off + 8, -(MB_MAGIC + flags) & 0xFFFFFFFF)

    return [le(off + 4 * i, 4) for i in range(1, 12)], fix_checksum


# --- the rig: guest RAM that records writes, and the real loader entry point ---------------------

class WatchedMemory(GuestMemory):
    """Guest RAM that remembers every range written, so the test can check it independently."""

    def __init__(self, size: int):
        super().__init__(size)
        self.writes: list[tuple[int, int]] = []

    def write(self, gpa, data):
        self.writes.append((gpa, memoryview(data).nbytes))
        super().write(gpa, data)

    def fill(self, gpa, length, byte=0):
        self.writes.append((gpa, length))
        super().fill(gpa, length, byte)

    def _u(self, gpa, n):
        self.writes.append((gpa, n))

    def write_u8(self, gpa, value):
        self._u(gpa, 1)
        super().write_u8(gpa, value)

    def write_u16(self, gpa, value):
        self._u(gpa, 2)
        super().write_u16(gpa, value)

    def write_u32(self, gpa, value):
        self._u(gpa, 4)
        super().write_u32(gpa, value)

    def write_u64(self, gpa, value):
        self._u(gpa, 8)
        super().write_u64(gpa, value)


def outcome(text: str) -> None:
    """Count what the examples came to (pytest --hypothesis-show-statistics), numbers and byte
    strings folded so that the same reason counts once: shows what the mutations reach."""
    event(re.sub(r"0x[0-9a-f]+|\d+|b'.*?'|'.*?'", "N", text)[:100])


class Rig:
    """One guest RAM and one kernel file, reused by every example of a module."""

    def __init__(self, workdir):
        self.mem = WatchedMemory(RAM)
        self.e820 = e820_map(self.mem)
        self.kernel = workdir / "kernel"

    def load(self, data: bytes, host_decompress: bool = False, count: bool = True):
        """Load ``data`` through load_kernel: the EntryState, or the ImageError it raised
        (``count``: record the outcome as a hypothesis event, which only a @given test may)."""
        say = outcome if count else (lambda text: None)
        self.kernel.write_bytes(data)
        self.mem.writes.clear()
        cfg = MachineConfig(memory=RAM, kernel=str(self.kernel))
        try:
            state = load_kernel(self.mem, cfg, self.e820, rsdp=0xE0000, host_decompress=host_decompress)
        except ImageError as exc:
            assert exc.path == str(self.kernel) and str(exc) == f"{self.kernel}: {exc.reason}"
            say(f"refused: {exc.reason}")
            return exc
        for gpa, n in self.mem.writes:
            assert n == 0 or self.mem.contains(gpa, n), f"wrote [{gpa:#x}, +{n:#x}) outside RAM"
        assert self.mem.contains(state.entry), f"entry {state.entry:#x} outside RAM"
        say(f"loaded: {state.description}")
        return state


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    # Host decompression caches every vmlinux it produces: keep the fuzzer's out of ~/.cache.
    with mock.patch.dict(os.environ, {"HVM_CACHE": str(cache)}):
        r = Rig(tmp_path_factory.mktemp("fuzz"))
        yield r
        r.mem.close()


# --- multiboot: ELF32, ELF64 and the a.out kludge --------------------------------------------------

def _mb_seeds() -> dict[str, bytes]:
    mb = mb_header(0x3)
    aout_addr = (0x100100, 0x100000, 0x101000, 0x104000, 0x100100)
    return {
        "elf32": mb_elf32([(0x100000, 0x100000, PAYLOAD, 0x3000)], 0x100010, header=mb),
        "elf32-higher-half": mb_elf32([(0x200000, 0xC0200000, PAYLOAD[:0x100], 0x100),
                                       (0x300000, 0xC0300000, PAYLOAD[:0x200], 0x5000)], 0xC0200020, header=mb),
        "elf64": mb_elf64([(0x100000, 0xFFFFFFFF80100000, PAYLOAD, 0x2000)], 0xFFFFFFFF80100004, header=mb),
        "aout": aout_image(load_end=0x101000, bss_end=0x104000, entry=0x100080),
        "aout-in-elf": mb_elf32([(0x100000, 0x100000, PAYLOAD, 0x3000)], 0x100010,
                                header=mb_header(0x10003, addr=aout_addr)),
    }


MB_SEEDS = _mb_seeds()


def _mb_case(seed: bytes):
    fields, fixup = multiboot_fields(seed)
    if seed[:4] == b"\x7fELF":
        fields = fields + elf_fields(seed)
    return mutated(seed, fields, fixup)


@FUZZ
@given(st.sampled_from(sorted(MB_SEEDS)).flatmap(lambda name: _mb_case(MB_SEEDS[name])))
def test_multiboot_images(rig, image):
    result = rig.load(image)
    if isinstance(result, ImageError) and find_header(image) is not None:
        # hvm.boot.multiboot checks every range before writing anything.
        assert rig.mem.writes == []


def test_seeds_are_valid(rig):
    """Every seed loads as-is, so the fuzzer mutates images that really reach the loaders."""
    for name, seed in [*MB_SEEDS.items(), *VMLINUX_SEEDS.items()]:
        assert not isinstance(rig.load(seed, count=False), ImageError), name
    for fmt in PAYLOAD_FORMATS:
        assert not isinstance(rig.load(BZIMAGES[fmt], host_decompress=True, count=False), ImageError), fmt
    assert not isinstance(rig.load(BZIMAGES["gzip"], count=False), ImageError)


@FUZZ
@given(data=st.data())
def test_built_test_guests(rig, guests, data):
    """The real multiboot test guests, as GNU as/ld lay them out."""
    require_tool("as", "binutils")
    seed = guests(data.draw(st.sampled_from(["multiboot", "smp"]))).read_bytes()
    rig.load(data.draw(_mb_case(seed)))


# --- ELF kernels: PVH (ELF32 and ELF64) and a Linux vmlinux ---------------------------------------

def _pvh_elf32() -> bytes:
    """An ELF32 kernel whose only entry is the PVH note (as a 32-bit Xen-style kernel has)."""
    note = _note(b"Xen", 18, struct.pack("<I", 0x100040))
    text = PAYLOAD[:0x800]
    phoff, text_off = 52, 0x200
    note_off = text_off + len(text)
    ehdr = struct.pack("<4sBBBB8xHHIIIIIHHHHHH", b"\x7fELF", 1, 1, 1, 0, 2, 3, 1, 0x100040, phoff, 0, 0,
                       52, 32, 2, 40, 0, 0)
    phdrs = struct.pack("<8I", 1, text_off, 0x100000, 0x100000, len(text), 0x2000, 5, 0x1000)
    phdrs += struct.pack("<8I", 4, note_off, 0, 0, len(note), len(note), 4, 4)
    image = bytearray(note_off + len(note))
    image[:52 + 64] = ehdr + phdrs
    image[text_off:note_off] = text
    image[note_off:] = note
    return bytes(image)


VMLINUX_SEEDS = {
    "pvh64": vmlinux_elf64(LINUX_NOTE + PVH_NOTE),
    "pvh32": _pvh_elf32(),
    "linux64": vmlinux_elf64(LINUX_NOTE),
}


@FUZZ
@given(st.sampled_from(sorted(VMLINUX_SEEDS)).flatmap(
    lambda name: mutated(VMLINUX_SEEDS[name], elf_fields(VMLINUX_SEEDS[name]))))
def test_elf_kernels(rig, image):
    rig.load(image)


# --- bzImage: the setup header, and host decompression of every payload compression -------------

def compress(fmt: str, data: bytes) -> bytes:
    """``data`` compressed as the kernel's build does it, size trailer included."""
    trailer = len(data).to_bytes(4, "little")
    if fmt == "gzip":
        return gzip.compress(data, mtime=0)  # gzip's own trailer holds the size
    if fmt == "xz":
        return lzma.compress(data, format=lzma.FORMAT_XZ, check=lzma.CHECK_CRC32) + trailer
    if fmt == "lzma":
        return lzma.compress(data, format=lzma.FORMAT_ALONE) + trailer
    if fmt == "bzip2":
        return bz2.compress(data) + trailer
    if fmt == "zstd":
        return zstandard.ZstdCompressor(level=3).compress(data) + trailer
    return _lz4_legacy(data) + trailer


PAYLOAD_FORMATS = ("gzip", "xz", "lzma", "bzip2", "zstd", "lz4")
VMLINUX = VMLINUX_SEEDS["linux64"]
PAYLOADS = {fmt: compress(fmt, VMLINUX) for fmt in PAYLOAD_FORMATS}
PM_OFFSET = (1 + 1) * 512  # one setup sector after the boot sector
PAYLOAD_OFFSET = 0x400     # inside the protected-mode part, after where startup_32/64 would be

# Boot protocol fields (Documentation/arch/x86/boot.rst) as (offset, size).
BZ_FIELDS = [le(o, s) for o, s in (
    (0x1F1, 1), (0x1F4, 4), (0x1FE, 2), (0x201, 1), (0x206, 2), (0x211, 1), (0x214, 4),
    (0x22C, 4), (0x230, 4), (0x234, 1), (0x236, 2), (0x238, 4), (0x248, 4), (0x24C, 4),
    (0x250, 8), (0x258, 8), (0x260, 4), (0x264, 4), (0x268, 4))]


def bzimage(payload: bytes, init_size: int = 0x200000) -> bytes:
    """A minimal bzImage: boot sector and one setup sector holding the setup header, then the
    protected-mode part with ``payload`` at PAYLOAD_OFFSET."""
    setup = bytearray(PM_OFFSET)
    pm = bytearray(b"\x90" * PAYLOAD_OFFSET) + payload
    pm += bytes(-len(pm) % 16)
    setup[0x1F1] = 1                                    # setup_sects
    struct.pack_into("<I", setup, 0x1F4, len(pm) // 16)  # syssize
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x206] = b"\xeb\x6aHdrS"                 # the jump's byte says where the header ends
    struct.pack_into("<H", setup, 0x206, 0x020F)
    setup[0x211] = 0x01                                  # LOADED_HIGH
    struct.pack_into("<I", setup, 0x214, 0x100000)
    struct.pack_into("<III", setup, 0x22C, 0x7FFFFFFF, 0x200000, 1)
    struct.pack_into("<HI", setup, 0x236, 0x3, 2047)     # XLF_KERNEL_64 | CAN_BE_LOADED_ABOVE_4G
    struct.pack_into("<II", setup, 0x248, PAYLOAD_OFFSET, len(payload))
    struct.pack_into("<QI", setup, 0x258, 0x1000000, init_size)
    return bytes(setup + pm)


BZIMAGES = {fmt: bzimage(p) for fmt, p in PAYLOADS.items()}
# Where the compressed streams keep sizes and flags a decoder trusts.
STREAM_FIELDS = {
    "gzip": [le(3, 1), le(-8, 4), le(-4, 4)],
    "xz": [le(6, 2), le(12, 1), le(-4, 4)],
    "lzma": [le(0, 1), le(1, 4), le(5, 8), le(-4, 4)],
    "bzip2": [le(3, 1), le(-4, 4)],
    "zstd": [le(4, 1), le(5, 1), le(-4, 4)],
    "lz4": [le(4, 4), le(-4, 4)],
}


def _stream_fields(fmt: str, payload: bytes, base: int = 0):
    return [le(base + (o if o >= 0 else len(payload) + o), s) for o, s, _ in STREAM_FIELDS[fmt]]


@st.composite
def bzimage_cases(draw):
    """(image, host_decompress): a bzImage mutated in its header, its compressed stream, or the
    vmlinux inside the stream (recompressed, so the ELF checks after decompression are reached)."""
    fmt = draw(st.sampled_from(PAYLOAD_FORMATS))
    host = draw(st.booleans())
    target = draw(st.sampled_from(["header", "stream", "vmlinux"]))
    if target == "vmlinux":
        return bzimage(compress(fmt, draw(mutated(VMLINUX, elf_fields(VMLINUX))))), host
    if target == "stream":
        return bzimage(draw(mutated(PAYLOADS[fmt], _stream_fields(fmt, PAYLOADS[fmt])))), host
    seed = BZIMAGES[fmt]
    return draw(mutated(seed, BZ_FIELDS + _stream_fields(fmt, PAYLOADS[fmt], PM_OFFSET + PAYLOAD_OFFSET))), host


@FUZZ
@given(bzimage_cases())
def test_bzimages(rig, case):
    image, host_decompress = case
    rig.load(image, host_decompress=host_decompress)


@FUZZ
@given(st.sampled_from(PAYLOAD_FORMATS).flatmap(
    lambda fmt: mutated(PAYLOADS[fmt], _stream_fields(fmt, PAYLOADS[fmt]))))
def test_decompress_damaged_streams(payload):
    limit = len(VMLINUX) + 0x1000
    try:
        out = decompress("/boot/vmlinuz-fuzz", payload, limit)
    except ImageError as exc:
        assert exc.path == "/boot/vmlinuz-fuzz"
    else:
        assert len(out) <= limit


# --- kallsyms: the crash-report symbolizer ---------------------------------------------------------

KALLSYMS_SYMS = [(KALLSYMS_BASE + 0x40 * i, f"Tfn_{i}") for i in range(1000)]


def _kallsyms_fields(seqs: bool) -> tuple[bytes, list[tuple[int, int, str]]]:
    blob = kallsyms_image(KALLSYMS_SYMS, seqs)
    align = lambda n: (n + 7) & ~7  # noqa: E731
    base_at = 64 + align(4 * len(KALLSYMS_SYMS))
    names_at = base_at + 16
    names_len = sum(1 + len(n) for _, n in KALLSYMS_SYMS)
    markers_at = names_at + align(names_len)
    index_at = len(blob) - 64 - 512
    fields = [le(64, 4), le(base_at - 4, 4), le(base_at, 8), le(base_at + 8, 4), le(names_at, 1),
              le(names_at + 7, 1), le(markers_at, 4), le(markers_at + 4, 4)]
    fields += [le(index_at + 2 * i, 2) for i in (0, 1, 47, 48, 57, 255)]
    fields += [le(blob.find(b"~00~\0"), 1), le(blob.find(b"0\x001\x00"), 1)]
    return blob, fields


KALLSYMS_SEEDS = {seqs: _kallsyms_fields(seqs) for seqs in (False, True)}


def _check_symbols(table, address: int) -> None:
    assert table is None or isinstance(table, Kallsyms)
    if table is not None:
        name = table.lookup(address)
        assert name is None or isinstance(name, str)


@FUZZ
@given(st.booleans().flatmap(lambda seqs: mutated(*KALLSYMS_SEEDS[seqs])),
       st.integers(0, (1 << 64) - 1))
def test_kallsyms_tables(blob, address):
    _check_symbols(kallsyms_parse(blob, KALLSYMS_BASE), address)


def _kallsyms_vmlinux() -> bytes:
    """An ELF64 vmlinux whose one PT_LOAD (at the kernel's text base) carries kallsyms tables."""
    blob = KALLSYMS_SEEDS[True][0]
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 62, 1, KALLSYMS_BASE, 64, 0, 0,
                       64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, KALLSYMS_BASE, 0x1000000, len(blob), len(blob), 0x1000)
    return (ehdr + phdr).ljust(0x1000, b"\0") + blob


KALLSYMS_VMLINUX = _kallsyms_vmlinux()


@FUZZ
@given(mutated(KALLSYMS_VMLINUX, elf_fields(KALLSYMS_VMLINUX) + [
    le(0x1000 + o, s) for o, s, _ in KALLSYMS_SEEDS[True][1]]), st.booleans(), st.integers(0, (1 << 64) - 1))
def test_kallsyms_for_kernel_file(rig, image, wrap, address):
    """for_kernel serves a crash report: whatever the file holds, it answers a table or None."""
    if wrap:
        image = bzimage(compress("gzip", image))
    rig.kernel.write_bytes(image)
    _check_symbols(for_kernel(str(rig.kernel)), address)


def test_kallsyms_seed_is_found(rig):
    rig.kernel.write_bytes(KALLSYMS_VMLINUX)
    assert for_kernel(str(rig.kernel)).lookup(KALLSYMS_BASE + 0x45) == "fn_1+0x5"


# --- cpio: the newc reader, and the writer's inputs ----------------------------------------------

CPIO_ENTRIES = [cpio.directory("bin"), cpio.file("bin/x", b"12345", 0o755), cpio.symlink("bin/sh", "x"),
                cpio.char_device("dev/console", 5, 1), cpio.file("empty", b"")]
CPIO_SEED = cpio.archive(CPIO_ENTRIES)


def _cpio_fields() -> list[tuple[int, int, str]]:
    fields, pos = [], 0
    while pos + 110 <= len(CPIO_SEED):
        fields += [(pos + 6 + 8 * i, 8, "hex") for i in range(13)]
        namesize, filesize = int(CPIO_SEED[pos + 94:pos + 102], 16), int(CPIO_SEED[pos + 54:pos + 62], 16)
        pos += 110 + namesize
        pos += -pos % 4 + filesize
        pos += -pos % 4
    return fields


@FUZZ
@given(mutated(CPIO_SEED, _cpio_fields()))
def test_cpio_reader(archive):
    try:
        entries = cpio.entries_of(archive)
    except cpio.CpioFormatError:
        return
    assert all(isinstance(n, str) and isinstance(m, int) and isinstance(d, bytes) for n, m, d in entries)


_names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=40)
_entries = st.lists(st.builds(
    cpio.Entry, _names, st.one_of(st.integers(0, 0xFFFFFFFF), st.integers(-1, 1 << 33)),
    st.binary(max_size=300), st.tuples(st.integers(-1, 1 << 33), st.integers(0, 0xFFFFFFFF))), max_size=6)


@FUZZ
@given(_entries)
def test_cpio_writer_round_trips_or_refuses(entries):
    """What the writer writes, the reader reads back unchanged; what it cannot write, it refuses."""
    try:
        data = cpio.archive(entries)
    except ValueError:
        return
    assert len(data) % 4 == 0
    back = cpio.entries_of(data)
    assert back == [(e.name.lstrip("/"), e.mode, e.data) for e in entries]
    assert all(stat.S_IFMT(m) == stat.S_IFMT(e.mode) for (_, m, _), e in zip(back, entries))
