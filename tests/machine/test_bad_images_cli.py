"""Damaged images through the real hvmrun: the ones the format fuzzer found crashing a parser,
and decompression bombs. Each must end in exit 65 with one line naming the file, never exit 1 or
70 with a traceback. The unicorn engine keeps the test independent of /dev/kvm; no image here
gets as far as running."""
from __future__ import annotations

import gzip
import struct
from pathlib import Path

import pytest
import zstandard

from conftest import hvmrun, require_tool


def _bzimage(payload: bytes, syssize: int | None = None) -> bytes:
    """A minimal bzImage (boot protocol 2.15, 64-bit entry): one setup sector, then ``payload``
    at the start of the protected-mode part."""
    setup = bytearray(2 * 512)
    pm = payload + bytes(-len(payload) % 16)
    setup[0x1F1] = 1
    struct.pack_into("<I", setup, 0x1F4, len(pm) // 16 if syssize is None else syssize)
    struct.pack_into("<H", setup, 0x1FE, 0xAA55)
    setup[0x200:0x206] = b"\xeb\x6aHdrS"
    struct.pack_into("<H", setup, 0x206, 0x020F)
    struct.pack_into("<I", setup, 0x22C, 0x7FFFFFFF)
    struct.pack_into("<HI", setup, 0x236, 0x1, 2047)
    struct.pack_into("<II", setup, 0x248, 0, len(payload))
    struct.pack_into("<I", setup, 0x260, 0x100000)
    return bytes(setup) + pm


def _elf32_fields(image: bytes, **fields: int) -> bytes:
    """``image`` (an ELF32) with file-header fields, or every program header's sizes
    (``p_memsz``: p_filesz and p_memsz), replaced."""
    out = bytearray(image)
    offsets = {"e_phentsize": 42, "e_phnum": 44}
    for name, value in fields.items():
        if name == "p_memsz":
            phoff, = struct.unpack_from("<I", out, 28)
            phentsize, phnum = struct.unpack_from("<HH", out, 42)
            for i in range(phnum):
                struct.pack_into("<II", out, phoff + i * phentsize + 16, value, value)
        else:
            struct.pack_into("<H", out, offsets[name], value)
    return bytes(out)


def _damaged_zstd() -> bytes:
    payload = bytearray(zstandard.ZstdCompressor().compress(b"\x7fELF" + bytes(range(256)) * 64))
    payload[4] = 0xFF  # the frame header descriptor's reserved bit
    return bytes(payload)


def _cases(multiboot: bytes) -> dict[str, tuple[bytes, tuple[str, ...], str]]:
    """name -> (image, extra hvmrun arguments, what the message must say)."""
    return {
        "phentsize-zero": (_elf32_fields(multiboot, e_phentsize=0, e_phnum=0), (), "no PT_LOAD segment"),
        "empty-segments": (_elf32_fields(multiboot, p_memsz=0), (), "every p_memsz is 0"),
        "truncated-bzimage": (_bzimage(gzip.compress(b"\x7fELF"), syssize=0x10000), (), "truncated bzImage"),
        "damaged-zstd": (_bzimage(_damaged_zstd()), ("--decompress", "host"), "payload is damaged"),
        "zstd-bomb": (_bzimage(zstandard.ZstdCompressor().compress(b"\x7fELF" + bytes(24 << 20))),
                      ("--decompress", "host"), "decompresses to more than"),
    }


CASES = ["phentsize-zero", "empty-segments", "truncated-bzimage", "damaged-zstd", "zstd-bomb"]


@pytest.mark.parametrize("name", CASES)
def test_rejected_image_exits_65_with_one_line(guests, tmp_path: Path, monkeypatch, name: str):
    require_tool("as", "binutils")
    image, extra, reason = _cases(guests("multiboot").read_bytes())[name]
    kernel = tmp_path / f"{name}.img"
    kernel.write_bytes(image)
    monkeypatch.setenv("HVM_CACHE", str(tmp_path / "cache"))  # keep ~/.cache out of it
    r = hvmrun("--accel", "unicorn", "-m", "16M", "--kernel", str(kernel), "--timeout", "10", *extra,
               timeout=60)
    err = r.stderr.decode()
    assert r.returncode == 65, err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and str(kernel) in lines[0] and reason in lines[0], err
