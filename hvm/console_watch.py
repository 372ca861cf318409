"""Reads a guest console as it streams past, for the lines the VMM must act on.

Linux ends every panic with "Kernel panic - not syncing: <reason>" on its consoles and then spins
forever (panic=0, the default); hvm ends the run there with a crash report instead of leaving the
user in front of a silent VM. On a host that cannot run guest user space, "Run /init as init
process" is the last thing the kernel can do there. Only a bounded tail of the output is kept.
"""
from __future__ import annotations

import re
from typing import Callable

PANIC = re.compile(rb"Kernel panic - not syncing: ([^\r\n]*)\r?\n")
RUN_INIT = re.compile(rb"Run (\S+) as init process\r?\n")
_KEEP = 4096


class LineWatch:
    """Calls ``on_match(group 1)`` once, when a complete line matching ``pattern`` has been seen."""

    def __init__(self, pattern: re.Pattern[bytes], on_match: Callable[[str], None]):
        self.pattern, self._on_match = pattern, on_match
        self._tail = bytearray()   # the line being written (its last _KEEP bytes)
        self.fired = False

    def feed(self, data: bytes) -> None:
        # A match ends with a newline and holds no other: the search waits for one, and what it
        # did not match before the last newline can be dropped (guests write their console a
        # byte at a time; searching the whole tail per byte cost ~2 us each).
        if self.fired:
            return
        tail = self._tail
        tail += data
        if b"\n" not in data:
            if len(tail) > _KEEP:
                del tail[:-_KEEP]
            return
        m = self.pattern.search(tail)
        if m is None:
            del tail[:tail.rfind(b"\n") + 1]
            return
        self.fired = True
        self._on_match(m.group(1).decode(errors="replace").strip())


def last_lines(text: str, count: int) -> list[str]:
    """The last ``count`` non-empty lines of console ``text``, carriage returns dropped."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    return [line for line in lines if line.strip()][-count:]
