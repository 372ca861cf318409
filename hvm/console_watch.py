"""Reads a guest console as it streams past, for what the VMM must act on: a Linux kernel panic.

Linux ends every panic with "Kernel panic - not syncing: <reason>" on its consoles and then spins
forever (panic=0, the default); hvm ends the run there with a crash report instead of leaving the
user in front of a silent VM. Only a bounded tail of the output is kept.
"""
from __future__ import annotations

from typing import Callable

PANIC_MARKER = b"Kernel panic - not syncing: "
_KEEP = 4096


class PanicWatch:
    """Calls ``on_panic(reason)`` once, when a complete panic line has been seen."""

    def __init__(self, on_panic: Callable[[str], None]):
        self._on_panic = on_panic
        self._tail = b""
        self.fired = False

    def feed(self, data: bytes) -> None:
        if self.fired:
            return
        self._tail = (self._tail + data)[-_KEEP:]
        at = self._tail.find(PANIC_MARKER)
        if at < 0:
            return
        end = self._tail.find(b"\n", at)
        if end < 0:
            return  # the reason is still arriving
        self.fired = True
        reason = self._tail[at + len(PANIC_MARKER):end].decode(errors="replace").strip()
        self._on_panic(reason)


def last_lines(text: str, count: int) -> list[str]:
    """The last ``count`` non-empty lines of console ``text``, carriage returns dropped."""
    lines = [line.rstrip("\r") for line in text.splitlines()]
    return [line for line in lines if line.strip()][-count:]
