"""Symbols of a Linux kernel from the kallsyms tables it carries, for crash reports: "func+0x1f".

A distribution's vmlinux is stripped, but a kernel built with CONFIG_KALLSYMS keeps a compressed
symbol table in .rodata for its own oops messages. Its layout is what scripts/kallsyms.c writes
(read here for Linux 5.x-6.1 with CONFIG_KALLSYMS_BASE_RELATIVE, as x86-64 builds it), each part
8-byte aligned, in this order:

    kallsyms_offsets        s32[N]: a symbol's address relative to the base (negative: base - 1
                            - offset; non-negative: absolute, for per-CPU symbols)
    kallsyms_relative_base  u64: the lowest address, _text
    kallsyms_num_syms       u32 N
    kallsyms_names          per symbol: a length (one byte, two when bit 7 is set: since 6.1)
                            and that many token numbers; the first character is the type
    kallsyms_markers        u32 per 256 symbols: where in names each group starts
    (kallsyms_seqs_of_names 3 bytes per symbol, since 6.2 and in some stable 6.1 kernels)
    kallsyms_token_table    256 NUL-terminated strings
    kallsyms_token_index    u16[256]: each token's offset in the table

None of it is labelled in a stripped file, so the tables are found by their content: the token
table by the digit tokens "0".."9" that every kernel's symbol names need, the base by the kernel's
lowest address followed by a plausible count, and the result is accepted only if the names
decode to exactly the markers' end.
"""
from __future__ import annotations

import bisect
import struct
from dataclasses import dataclass

_DIGITS = b"".join(bytes([c]) + b"\0" for c in range(ord("0"), ord("9") + 1))
_MIN_SYMS, _MAX_SYMS = 1000, 2_000_000
_TEXT_TYPES = frozenset("tTwW")


def _align8(n: int) -> int:
    return (n + 7) & ~7


def _unpack(fmt: str, data: bytes, at: int) -> tuple | None:
    """``struct.unpack_from``, or None where the bytes run past the end (the tables are found by
    guessing, and a damaged or hostile kernel file must cost a crash report its symbol only)."""
    if at < 0 or at + struct.calcsize(fmt) > len(data):
        return None
    return struct.unpack_from(fmt, data, at)


@dataclass
class Kallsyms:
    """Sorted (address, name) of the kernel's text symbols."""

    addresses: list[int]
    names: list[str]

    def lookup(self, address: int) -> str | None:
        """``name+0xoff`` of the text symbol containing ``address``, or None outside the kernel."""
        i = bisect.bisect_right(self.addresses, address) - 1
        if i < 0 or address - self.addresses[i] > 0x100000:
            return None
        return f"{self.names[i]}+{address - self.addresses[i]:#x}"


def _token_table(data: bytes) -> tuple[int, list[bytes]] | None:
    """(start, tokens) of a token table whose index follows it and agrees."""
    at = data.find(_DIGITS)
    while at >= 0:
        found = _token_table_at(data, at)
        if found is not None:
            return found
        at = data.find(_DIGITS, at + 1)
    return None


def _token_table_at(data: bytes, zero: int) -> tuple[int, list[bytes]] | None:
    start = zero
    for _ in range(ord("0")):  # walk back over tokens 0x2f .. 0x00, none of them empty
        prev_end = start - 1                        # the NUL that ends the previous token
        prev_nul = data.rfind(b"\0", 0, prev_end)
        if prev_end < 0 or data[prev_end] != 0 or prev_nul < 0 or prev_end - prev_nul < 2:
            return None
        start = prev_nul + 1
    tokens, cursor = [], start
    for _ in range(256):
        end = data.find(b"\0", cursor)
        if end <= cursor:
            return None
        tokens.append(data[cursor:end])
        cursor = end + 1
    index = _unpack("<256H", data, _align8(cursor))
    if index is None:
        return None
    offsets, off = [], 0
    for t in tokens:
        offsets.append(off)
        off += len(t) + 1
    if list(index) != offsets:
        return None
    return start, tokens


def parse(data: bytes, text_base: int) -> Kallsyms | None:
    """The kallsyms of the kernel ELF ``data`` whose lowest text address is ``text_base``; None
    when the tables are absent or not recognised."""
    table = _token_table(data)
    if table is None:
        return None
    token_start, tokens = table
    base = struct.pack("<Q", text_base)
    at = data.rfind(base, 0, token_start)
    while at >= 0:
        found = _tables_at(data, at, token_start, tokens) if at % 8 == 0 else None
        if found is not None:
            return found
        at = data.rfind(base, 0, at)
    return None


def _tables_at(data: bytes, base_at: int, token_start: int, tokens: list[bytes]) -> Kallsyms | None:
    count = (_unpack("<I", data, base_at + 8) or (0,))[0]
    if not _MIN_SYMS <= count <= _MAX_SYMS:
        return None
    names_at = _align8(base_at + 12)
    offsets_at = (base_at - 4 * count) & ~7
    if offsets_at < 0:
        return None
    names, cursor = [], names_at
    try:
        for _ in range(count):
            length = data[cursor]
            cursor += 1
            if length & 0x80:
                length = (length & 0x7F) | data[cursor] << 7
                cursor += 1
            names.append(b"".join(tokens[b] for b in data[cursor:cursor + length]))
            cursor += length
    except IndexError:
        return None
    markers_at = _align8(cursor)
    markers_end = markers_at + 4 * ((count + 255) // 256)
    # 6.2 put kallsyms_seqs_of_names (3 bytes per symbol) between markers and tokens, and stable
    # kernels carry it back (Debian's 6.1 does): either layout ends exactly at the token table.
    ends = (_align8(markers_end), _align8(_align8(markers_end) + 3 * count))
    if token_start not in ends or _unpack("<I", data, markers_at) != (0,):
        return None
    relative_base = _unpack("<Q", data, base_at)[0]
    offsets = _unpack(f"<{count}i", data, offsets_at)
    if offsets is None:
        return None
    symbols = []
    for offset, raw in zip(offsets, names):
        kind = chr(raw[0]) if raw else "?"
        if kind not in _TEXT_TYPES:
            continue
        address = offset if offset >= 0 else relative_base - 1 - offset
        symbols.append((address, raw[1:].decode(errors="replace")))
    symbols.sort()
    return Kallsyms([a for a, _ in symbols], [n for _, n in symbols])


def for_kernel(path: str, limit: int | None = None) -> Kallsyms | None:
    """The kallsyms of the Linux kernel in ``path`` (a bzImage, whose payload is decompressed
    through the same cache as a boot, but to at most ``limit`` bytes, or an ELF vmlinux); None
    for anything else, never an exception: it serves crash reports, which must not fail."""
    from .boot.decompress import DEFAULT_LIMIT, vmlinux
    from .boot.detect import detect_format
    from .boot.linux import bzimage_payload
    from .errors import HvmError
    from .formats.elf import PT_LOAD, ElfFormatError, read_headers

    try:
        with open(path, "rb") as f:
            data = f.read()
        fmt = detect_format(path, data)
        if fmt == "bzimage":
            data = vmlinux(path, bzimage_payload(path, data), limit=limit or DEFAULT_LIMIT)
        elif fmt != "elf":
            return None
        _, phdrs = read_headers(data)
        high = [ph.p_vaddr for ph in phdrs if ph.p_type == PT_LOAD and ph.p_vaddr >= 1 << 63]
        return parse(data, min(high)) if high else None
    except (OSError, HvmError, ElfFormatError, ValueError, struct.error):
        return None
