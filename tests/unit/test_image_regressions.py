"""One test per bug the format fuzzer (test_fuzz_formats.py) found: each image here once made a
parser raise something other than the typed error, or made the decompressor unbounded."""
from __future__ import annotations

import gzip
import struct
import sys
from types import SimpleNamespace

import pytest
import zstandard

from conftest import REPO
from test_decompress import _lz4_legacy
from test_fuzz_formats import bzimage
from test_kallsyms_panic import BASE, _image as kallsyms_image
from test_multiboot import E820, PAYLOAD, elf32, mb_header

from hvm.boot.decompress import decompress, vmlinux
from hvm.boot.loader import load_kernel
from hvm.config import MachineConfig
from hvm.boot.multiboot import load_multiboot
from hvm.errors import ImageError
from hvm.formats.elf import read_headers
from hvm.kallsyms import for_kernel, parse
from hvm.layout import e820_map
from hvm.memory import GuestMemory

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
from images import cpio  # noqa: E402


# --- ELF ---------------------------------------------------------------------------------------

def test_elf_with_no_program_headers_and_phentsize_zero(mem):
    """ValueError "range() arg 3 must not be zero": the table was walked in steps of e_phentsize
    even when e_phnum said there was nothing to walk."""
    img = bytearray(elf32([(0x100000, 0x100000, PAYLOAD, 0x3000)], 0x100010, header=mb_header(0x3)))
    struct.pack_into("<HH", img, 42, 0, 0)  # e_phentsize, e_phnum
    assert read_headers(bytes(img))[1] == []
    with pytest.raises(ImageError, match="k: ELF has no PT_LOAD segment"):
        load_multiboot(mem, "k", bytes(img), "", [], E820)


def test_elf_whose_load_segments_are_all_empty(mem):
    """ValueError "max() arg is an empty sequence": PT_LOAD headers with p_memsz 0 are skipped,
    which left no segment to find the image's end from."""
    img = elf32([(0x100000, 0x100000, b"", 0)], 0x100000, header=mb_header(0x3))
    with pytest.raises(ImageError, match="every p_memsz is 0"):
        load_multiboot(mem, "k", img, "", [], E820)


# --- decompression ------------------------------------------------------------------------------

def test_damaged_zstd_payload_is_an_image_error():
    """zstandard.ZstdError escaped: it is no OSError/ValueError, which were all that was caught."""
    payload = bytearray(zstandard.ZstdCompressor().compress(b"\x7fELF" + bytes(range(256)) * 64))
    payload[4] = 0xFF  # frame header descriptor: reserved bit set
    with pytest.raises(ImageError, match="zstd-compressed kernel payload is damaged"):
        decompress("k", bytes(payload))


def test_damaged_lz4_block_is_an_image_error():
    """lz4.block.LZ4BlockError escaped, for the same reason."""
    good = _lz4_legacy(b"\x7fELF" + bytes(range(256)) * 64)
    damaged = good[:8] + b"\xff" * (len(good) - 8)
    with pytest.raises(ImageError, match="lz4-compressed kernel payload is damaged"):
        decompress("k", damaged)


@pytest.mark.parametrize("payload", [
    gzip.compress(b"\x7fELF" + bytes(3 << 20)),
    zstandard.ZstdCompressor(write_content_size=False).compress(b"\x7fELF" + bytes(3 << 20)),
    # The one-shot zstd call would allocate what the frame header declares.
    zstandard.ZstdCompressor(write_content_size=True).compress(b"\x7fELF" + bytes(3 << 20)),
    _lz4_legacy(b"\x7fELF" + bytes(3 << 20)),
], ids=["gzip", "zstd", "zstd-declared-size", "lz4"])
def test_decompression_is_bounded(payload):
    """A payload was decompressed whole, whatever its size: a small bzImage could take the host's
    memory. Output past the limit (the guest's RAM at boot) is now refused."""
    with pytest.raises(ImageError, match="decompresses to more than 1048576 bytes"):
        decompress("bomb", payload, 1 << 20)


def test_bzimage_payload_bigger_than_ram_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("HVM_CACHE", str(tmp_path / "cache"))
    kernel = tmp_path / "bomb"
    kernel.write_bytes(bzimage(zstandard.ZstdCompressor().compress(b"\x7fELF" + bytes(9 << 20))))
    mem = GuestMemory(8 << 20)
    try:
        with pytest.raises(ImageError, match="decompresses to more than 8388608 bytes"):
            load_kernel(mem, MachineConfig(memory=mem.size, kernel=str(kernel)), e820_map(mem),
                        host_decompress=True)
    finally:
        mem.close()


def test_cached_vmlinux_bigger_than_the_limit_is_not_served(tmp_path):
    payload = gzip.compress(b"\x7fELF" + bytes(2 << 20))
    assert len(vmlinux("k", payload, cache=tmp_path)) == (2 << 20) + 4
    with pytest.raises(ImageError, match="decompresses to more than"):
        vmlinux("k", payload, cache=tmp_path, limit=1 << 20)


# --- kallsyms (crash reports) --------------------------------------------------------------------

SYMS = [(BASE + 0x40 * i, f"Tfn_{i}") for i in range(1000)]


def test_kallsyms_token_index_cut_off_by_the_end_of_the_file():
    """struct.error: the token index was unpacked without checking that it lies in the file."""
    blob = kallsyms_image(SYMS, False)
    assert parse(blob[:len(blob) - 64 - 100], BASE) is None


def test_kallsyms_count_cut_off_by_the_end_of_the_file():
    """struct.error: kallsyms_num_syms was read past the end when the base is the file's tail."""
    assert parse(b"0\x00" * 300 + struct.pack("<Q", BASE), BASE) is None


def test_for_kernel_never_raises_on_a_damaged_kernel(tmp_path):
    blob = kallsyms_image(SYMS, False)
    ehdr = struct.pack("<4sBBBB8xHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 2, 62, 1, BASE, 64, 0, 0,
                       64, 56, 1, 64, 0, 0)
    phdr = struct.pack("<IIQQQQQQ", 1, 5, 0x1000, BASE, 0x1000000, len(blob), len(blob), 0x1000)
    kernel = tmp_path / "vmlinux"
    kernel.write_bytes((ehdr + phdr).ljust(0x1000, b"\0") + blob[:len(blob) - 64 - 100])
    assert for_kernel(str(kernel)) is None


def test_crash_report_survives_a_failing_symbolizer(monkeypatch):
    """The Machine looked symbols up unguarded: a symbolizer failure became hvm's traceback in
    place of the guest's crash report."""
    import hvm.kallsyms
    from hvm.machine import Machine

    def broken(path, limit=None):
        raise struct.error("hostile kernel")

    monkeypatch.setattr(hvm.kallsyms, "for_kernel", broken)
    crash = SimpleNamespace(regs=SimpleNamespace(rip=0xFFFFFFFF81000010), symbol=None, console=["x"])
    machine = SimpleNamespace(vcpus=[], serial_ports=[], memory=SimpleNamespace(size=64 << 20),
                              config=SimpleNamespace(kernel="/boot/vmlinuz", verbose=0))
    Machine._complete_report(machine, crash)
    assert crash.symbol is None


# --- cpio ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("data", [
    b"",                                                     # construct's StreamError
    b"070701" + b"\xff" * 8 + b"0" * 96,                     # construct's StringError
    cpio.archive([cpio.file("\u00e9", b"")]).replace("\u00e9".encode(), b"\xff\xfe"),  # UnicodeDecodeError
    cpio.archive([cpio.file("abc", b"xyz")])[:118],          # data cut off
    cpio.archive([cpio.file("abc", b"xyz")]).replace(b"00000003", b"-0000003", 1),  # int() took a sign
])
def test_cpio_reader_refuses_what_is_not_an_archive(data):
    with pytest.raises(cpio.CpioFormatError):
        cpio.entries_of(data)


@pytest.mark.parametrize("entry", [
    cpio.Entry("x", 0o100644, rdev=(1 << 32, 0)),   # construct's PaddingError: 9 hex digits
    cpio.Entry("x", -1),                             # OverflowError from stat.S_ISDIR
    cpio.file("a\0b", b""),                          # the kernel would read "a"
    cpio.file("TRAILER!!!", b""),                    # would end the archive there
])
def test_cpio_writer_refuses_what_it_cannot_write(entry):
    with pytest.raises(ValueError):
        cpio.archive([entry, cpio.file("after", b"lost?")])
