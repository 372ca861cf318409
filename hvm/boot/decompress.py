"""Host-side decompression of a bzImage's payload into the kernel ELF it wraps (``vmlinux``).

The payload (setup header ``payload_offset``/``payload_length``, boot.rst) is the stripped vmlinux,
compressed as the kernel was configured, with its relocation table appended; all formats but gzip
carry the uncompressed size in 4 trailing bytes (the kernel's ``size_append``), which the
decompressors here leave unread. The format is told by its magic bytes, as the kernel's own
decompressor selection (lib/decompress.c) does. Running this in the guest instead is what the
kernel's decompressor does: on an emulating host that takes minutes (measured), here seconds.
Results are cached by payload hash, so the second boot of a kernel pays nothing.
"""
from __future__ import annotations

import bz2
import hashlib
import lzma
import os
import tempfile
import zlib
from pathlib import Path

from ..cache import cache_root
from ..errors import ImageError

# Without a guest to size it by (the crash-report symbolizer), the output is still bounded: no
# x86 kernel comes near this, and a decompression bomb must not take the host's memory.
DEFAULT_LIMIT = 1 << 30
LZ4_LEGACY_MAGIC = b"\x02\x21\x4c\x18"
LZ4_LEGACY_BLOCK = 8 << 20  # lz4 -l writes blocks of at most 8 MiB of output
MAGICS = [  # (magic, name), as lib/decompress.c lists them
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x5d\x00\x00", "lzma"),
    (b"BZh", "bzip2"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (LZ4_LEGACY_MAGIC, "lz4"),
    (b"\x89LZO", "lzo"),
]


def payload_format(payload: bytes) -> str | None:
    """The compression the payload's magic names, or None."""
    return next((name for magic, name in MAGICS if payload.startswith(magic)), None)


class _TooBig(Exception):
    """The output passed the limit; raised before more of it is produced."""


def _lz4_legacy(payload: bytes, limit: int) -> bytes:
    import lz4.block

    out, total, cursor = [], 0, len(LZ4_LEGACY_MAGIC)
    while cursor + 4 <= len(payload):
        size = int.from_bytes(payload[cursor:cursor + 4], "little")
        if payload[cursor:cursor + 4] == LZ4_LEGACY_MAGIC:  # concatenated frames
            cursor += 4
            continue
        if size == 0 or cursor + 4 + size > len(payload):
            break  # the size_append trailer (or garbage) after the last block
        try:
            block = lz4.block.decompress(payload[cursor + 4:cursor + 4 + size],
                                         uncompressed_size=LZ4_LEGACY_BLOCK)
        except lz4.block.LZ4BlockError as exc:
            raise ValueError(str(exc)) from None
        total += len(block)
        if total > limit:  # each block is at most 8 MiB, so this bounds the overshoot
            raise _TooBig
        out.append(block)
        cursor += 4 + size
    return b"".join(out)


def _stream(decompressor, payload: bytes, limit: int) -> bytes:
    """Run a streaming decompressor over the payload, never producing more than one byte past
    ``limit``; a stream that does not reach its end marker is truncated (the size trailer after
    the end is left in ``unused_data``)."""
    out = decompressor.decompress(payload, limit + 1)
    if len(out) > limit:
        raise _TooBig
    if not decompressor.eof:
        raise EOFError("the compressed stream ends early (truncated file?)")
    return out


def _zstd(payload: bytes, limit: int) -> bytes:
    """zstd has no bounded streaming call, and its one-shot call allocates whatever size the frame
    header declares: so first count the output in bounded pieces, then decompress for real."""
    import zstandard

    # The kernel compresses with --ultra -22, whose window exceeds zstd's default limit.
    dctx = zstandard.ZstdDecompressor(max_window_size=1 << 31)
    try:
        total = 0
        for piece in dctx.read_to_iter(payload, write_size=1 << 20):
            total += len(piece)
            if total > limit:
                raise _TooBig
        obj = dctx.decompressobj()
        out = obj.decompress(payload)
    except zstandard.ZstdError as exc:
        raise ValueError(str(exc)) from None
    if not obj.eof:
        raise EOFError("the compressed stream ends early (truncated file?)")
    return out


def _decompressor(fmt: str):
    if fmt == "gzip":
        return zlib.decompressobj(16 + zlib.MAX_WBITS)
    if fmt == "xz":
        return lzma.LZMADecompressor(lzma.FORMAT_XZ)
    if fmt == "lzma":
        return lzma.LZMADecompressor(lzma.FORMAT_ALONE)
    return bz2.BZ2Decompressor()


def decompress(path: str, payload: bytes, limit: int = DEFAULT_LIMIT, what: str = "kernel payload") -> bytes:
    """The decompressed payload; ImageError for an unknown or damaged compression, or for output
    longer than ``limit`` bytes (refused before it is all in host memory). ``what`` names the
    payload in those errors."""
    fmt = payload_format(payload)
    if fmt is None:
        raise ImageError(path, f"unknown compression of the {what} (first bytes "
                               f"{payload[:6].hex(' ')})")
    if fmt == "lzo":
        raise ImageError(path, "the kernel payload is lzo-compressed, which hvm cannot decompress on "
                               "the host; boot it with --decompress guest")
    try:
        if fmt == "lz4":
            return _lz4_legacy(payload, limit)
        if fmt == "zstd":
            return _zstd(payload, limit)
        return _stream(_decompressor(fmt), payload, limit)
    except _TooBig:
        raise ImageError(path, f"the {fmt}-compressed {what} decompresses to more than "
                               f"{limit} bytes: too big for guest RAM") from None
    except (OSError, EOFError, lzma.LZMAError, zlib.error, ValueError, RuntimeError) as exc:
        raise ImageError(path, f"the {fmt}-compressed {what} is damaged ({exc})") from None


def vmlinux(path: str, payload: bytes, cache: Path | None = None, limit: int = DEFAULT_LIMIT) -> bytes:
    """The ELF kernel inside ``payload`` (at most ``limit`` bytes), from the cache when this
    payload was seen before."""
    digest = hashlib.sha256(payload).hexdigest()[:32]
    directory = cache_root(cache) / "vmlinux"
    cached = directory / f"{digest}.elf"
    try:
        if cached.stat().st_size <= limit:  # else decompress() says why it is refused
            return cached.read_bytes()
    except OSError:
        pass
    elf = decompress(path, payload, limit)
    if not elf.startswith(b"\x7fELF"):
        raise ImageError(path, "the decompressed kernel payload is not an ELF file")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, delete=False, suffix=".tmp") as f:
            f.write(elf)
        os.replace(f.name, cached)  # atomic: a concurrent boot sees all of it or nothing
    except OSError:
        pass  # an unwritable cache costs the next boot a decompression, nothing more
    return elf
