"""Crash-report helpers: kallsyms tables found in a kernel image by their content, and the panic
line of a console caught while it streams past."""
from __future__ import annotations

import struct

import pytest

from hvm.console_watch import PANIC, RUN_INIT, LineWatch, last_lines
from hvm.kallsyms import parse

BASE = 0xFFFFFFFF81000000


def _image(symbols: list[tuple[int, str]], seqs: bool) -> bytes:
    """Tables laid out as scripts/kallsyms.c writes them, each name one token per character."""
    tokens = [bytes([i]) if 0x20 < i < 0x7F else b"~%02x~" % i for i in range(256)]
    align = lambda b: b + b"\0" * (-len(b) % 8)  # noqa: E731
    offsets = b"".join(struct.pack("<i", -(addr - BASE) - 1 if addr >= BASE else addr) for addr, _ in symbols)
    names, markers = b"", b""
    for i, (_, name) in enumerate(symbols):
        if i % 256 == 0:
            markers += struct.pack("<I", len(names))
        names += bytes([len(name)]) + name.encode()
    token_table = b"".join(t + b"\0" for t in tokens)
    index, off = b"", 0
    for t in tokens:
        index += struct.pack("<H", off)
        off += len(t) + 1
    blob = b"\xcc" * 64 + align(offsets) + struct.pack("<Q", BASE) + align(struct.pack("<I", len(symbols)))
    blob += align(names) + align(markers)
    if seqs:
        blob += align(b"\x00" * 3 * len(symbols))
    return blob + align(token_table) + index + b"\xcc" * 64


@pytest.mark.parametrize("seqs", [False, True])
def test_symbols_are_found_and_looked_up(seqs):
    syms = [(BASE + 0x100 * i, f"Tfunc_{i}") for i in range(1500)] + [(0x2000, "Aper_cpu_thing")]
    table = parse(_image(syms, seqs), BASE)
    assert table is not None and len(table.names) == 1500       # text symbols only
    assert table.lookup(BASE + 0x100 * 7 + 0x1F) == "func_7+0x1f"
    assert table.lookup(BASE - 1) is None


def test_no_tables_no_symbols():
    assert parse(b"\x7fELF" + bytes(4096), BASE) is None


def test_panic_line_is_caught_across_writes():
    seen = []
    watch = LineWatch(PANIC, seen.append)
    for chunk in (b"[ 1.0] boot\r\n[ 2.0] Kernel pan", b"ic - not syncing: Attempted to kill in", b"it!\r\n"):
        watch.feed(chunk)
    watch.feed(b"Kernel panic - not syncing: again\n")
    assert seen == ["Attempted to kill init!"]
    assert last_lines("a\r\n\r\nb\r\nc\r\n", 2) == ["b", "c"]


def test_init_line_is_caught():
    seen = []
    watch = LineWatch(RUN_INIT, seen.append)
    watch.feed(b"[    4.1] Run /init as init")
    assert seen == []
    watch.feed(b" process\r\n")
    assert seen == ["/init"]
