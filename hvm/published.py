"""Published registers: status registers an engine may answer without calling into Python.

A guest polling a status register (a UART's line status while it prints, say) costs one exit per
read, and on a nested host the Python part of that exit is a sixth of its price. A device whose
register reads have no side effects in some state publishes the register's current value here
and keeps it current; the KVM engine's run loop (kvmffi, ``hvm_run_served``) then answers a
one-byte IN of that port in C and goes straight back into the guest. While a read would change
the device (clear latched errors, pop a FIFO) the device hides the value and reads go to Python.

The table is one small buffer shared by every vCPU; its layout is the C side's ``hvm_published``.
"""
from __future__ import annotations

import struct

SLOTS = 8  # kvmffi's HVM_PUBLISHED_SLOTS: the C loop scans this many
_SLOT = struct.Struct("<HHIQ")  # port, state (0x100 | value, or 0 when hidden), pad, hits
_VISIBLE = 0x100


class Published:
    """One published register: ``show(value)`` while a read is side-effect free, else ``hide()``."""

    __slots__ = ("port", "_state", "_table", "_slot")

    def __init__(self, table: "PublishedTable", slot: int, port: int):
        self.port = port
        self._table, self._slot = table, slot
        # A 16-bit view: each store is one aligned 16-bit write, so C never sees half an update.
        self._state = memoryview(table.buffer)[slot * _SLOT.size + 2:slot * _SLOT.size + 4].cast("H")

    def show(self, value: int) -> None:
        """Reads of the port return ``value`` (a byte) until the next show or hide."""
        self._state[0] = _VISIBLE | (value & 0xFF)

    def hide(self) -> None:
        """Reads of the port go to the device again."""
        self._state[0] = 0

    @property
    def hits(self) -> int:
        """Reads answered from the table so far."""
        return _SLOT.unpack_from(self._table.buffer, self._slot * _SLOT.size)[3]


class PublishedTable:
    """The port bus's published registers (at most SLOTS of them)."""

    def __init__(self) -> None:
        self.buffer = bytearray(SLOTS * _SLOT.size)
        self.entries: list[Published] = []

    def publish(self, port: int) -> Published | None:
        """A hidden register for ``port``; None when the table is full (reads then stay in Python)."""
        for entry in self.entries:
            if entry.port == port:  # withdrawn earlier (the C loop takes a port's first slot)
                entry.hide()
                return entry
        if len(self.entries) == SLOTS:
            return None
        entry = Published(self, len(self.entries), port)
        _SLOT.pack_into(self.buffer, entry._slot * _SLOT.size, port, 0, 0, 0)
        self.entries.append(entry)
        return entry

    def hits(self, base: int, length: int) -> int:
        """Reads answered from the table for ports in ``[base, base+length)``."""
        return sum(e.hits for e in self.entries if base <= e.port < base + length)
