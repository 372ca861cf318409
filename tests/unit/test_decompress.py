"""Host-side decompression of bzImage payloads: every format the kernel can be built with, the
trailing size the kernel's build appends, and clear refusals (naming the file) otherwise."""
from __future__ import annotations

import bz2
import gzip
import lzma
import os

import lz4.block
import pytest
import zstandard

from hvm.boot.decompress import LZ4_LEGACY_MAGIC, decompress, payload_format, vmlinux
from hvm.errors import ImageError

ELF = b"\x7fELF" + os.urandom(3000) + b"kernel text " * 5000


def _size_append(data: bytes) -> bytes:
    return len(ELF).to_bytes(4, "little")  # what scripts/Makefile.lib's size_append writes


def _lz4_legacy(data: bytes, block: int = 1 << 14) -> bytes:
    out = LZ4_LEGACY_MAGIC
    for i in range(0, len(data), block):
        chunk = lz4.block.compress(data[i:i + block], store_size=False)
        out += len(chunk).to_bytes(4, "little") + chunk
    return out


PAYLOADS = {
    "gzip": gzip.compress(ELF),
    "xz": lzma.compress(ELF, format=lzma.FORMAT_XZ) + _size_append(ELF),
    "lzma": lzma.compress(ELF, format=lzma.FORMAT_ALONE) + _size_append(ELF),
    "bzip2": bz2.compress(ELF) + _size_append(ELF),
    "zstd": zstandard.ZstdCompressor(level=19).compress(ELF) + _size_append(ELF),
    "lz4": _lz4_legacy(ELF) + _size_append(ELF),
}


@pytest.mark.parametrize("fmt", sorted(PAYLOADS))
def test_every_kernel_compression_round_trips(fmt):
    assert payload_format(PAYLOADS[fmt]) == fmt
    assert decompress("k", PAYLOADS[fmt]) == ELF


def test_result_is_cached_by_payload(tmp_path):
    assert vmlinux("k", PAYLOADS["xz"], cache=tmp_path) == ELF
    [cached] = (tmp_path / "vmlinux").iterdir()
    cached.write_bytes(b"\x7fELF from the cache")
    assert vmlinux("k", PAYLOADS["xz"], cache=tmp_path) == b"\x7fELF from the cache"


@pytest.mark.parametrize("payload,reason", [
    (b"\x00\x11\x22 plain bytes", "unknown compression"),
    (b"\x89LZO\x00\x0d\x0a\x1a\x0a", "lzo-compressed, which hvm cannot decompress"),
    (PAYLOADS["gzip"][:100], "gzip-compressed kernel payload is damaged"),
    (b"BZh9" + b"\x00" * 40, "bzip2-compressed kernel payload is damaged"),
])
def test_refusals_name_the_file_and_the_reason(payload, reason):
    with pytest.raises(ImageError) as exc:
        decompress("/boot/vmlinuz-x", payload)
    assert "/boot/vmlinuz-x" in str(exc.value) and reason in str(exc.value)


def test_payload_that_is_not_elf_is_refused(tmp_path):
    with pytest.raises(ImageError, match="not an ELF file"):
        vmlinux("k", gzip.compress(b"just text"), cache=tmp_path)
