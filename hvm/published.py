"""Published registers: status registers an engine may answer without calling into Python.

A guest polling a status register (a UART's line status while it prints, say) costs one exit per
read, and on a nested host the Python part of that exit is a sixth of its price. A device whose
register reads have no side effects in some state publishes the register's current value here
and keeps it current; the KVM engine's run loop (kvmffi, ``hvm_run_served``) then answers a
one-byte IN of that port in C and goes straight back into the guest. While a read would change
the device (clear latched errors, pop a FIFO) the device hides the value and reads go to Python.

The table is one small buffer shared by every vCPU; its layout is the C side's ``hvm_published``.
Under the unicorn engine the same table is answered by a C IN hook (``hvm.engine._ucstop``),
which also reads channel 2 of the software PIT from ``PublishedTimer2``.

The other way round, a device may let an engine queue one-byte writes to a port while such a
write needs nothing from the device but to happen, in order (``QueuedWrites``: a UART's THR, whose
byte goes straight out): unicorn's C OUT hook queues them, and the device takes them before it
handles any other access and at the end of each slice.
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


class PublishedTimer2:
    """Channel 2 of a software 8254 and port 0x61, for the unicorn engine's C IN hook: while
    ``publish`` holds (mode 0, binary, LSB then MSB, nothing latched) C computes the count from the
    monotonic clock and flips the read flip-flop and 0x61's refresh bit itself; ``reclaim`` takes
    those two back before the Python model handles any access. Layout: ``hvm_timer2``."""

    # active, read_hi, start_ns, offset, reload, port61, refresh, pad; then reads served of 0x42, 0x61
    _LAYOUT = struct.Struct("<iiqqIBBH")
    _HITS = struct.Struct("<QQ")

    def __init__(self) -> None:
        self.buffer = bytearray(self._LAYOUT.size + self._HITS.size)

    def publish(self, read_hi: bool, start_ns: int, offset: int, reload: int, port61: int,
                refresh: bool) -> None:
        self._LAYOUT.pack_into(self.buffer, 0, 1, read_hi, start_ns, offset, reload, port61, refresh, 0)

    def reclaim(self) -> tuple[bool, bool] | None:
        """(read flip-flop, refresh bit) as C left them, or None if nothing was published."""
        active, read_hi, _, _, _, _, refresh, _ = self._LAYOUT.unpack_from(self.buffer)
        if not active:
            return None
        self.buffer[0:4] = bytes(4)
        return bool(read_hi), bool(refresh)

    def hits(self, base: int, length: int) -> int:
        """Reads of ports 0x42 and 0x61 in ``[base, base+length)`` answered in C."""
        h42, h61 = self._HITS.unpack_from(self.buffer, self._LAYOUT.size)
        return (h42 if base <= 0x42 < base + length else 0) + (h61 if base <= 0x61 < base + length else 0)


QUEUE_SLOTS = 4    # the C OUT hook scans this many
QUEUE_CAP = 1024   # bytes a queue holds (HVM_QUEUED_CAP)
_QUEUE = struct.Struct("<HHIIIQ")  # port, enabled, lock, count, pad, total; then QUEUE_CAP bytes
_QUEUE_SIZE = _QUEUE.size + QUEUE_CAP


class QueuedWrites:
    """One port whose one-byte writes an engine may queue for ``device`` while ``enable``d; the
    device takes them (``take``, in order) before it handles any other access, and the table's
    ``drain`` hands them to it (``device.take_queued()``) at the end of each unicorn slice.
    Layout: ``hvm_queued``."""

    __slots__ = ("port", "device", "_enabled", "_count", "_total", "_ptr", "_out", "_ffi", "_take")

    def __init__(self, table: "PublishedTable", slot: int, port: int, device) -> None:
        from .engine._ucstop import ffi, lib

        self.port, self.device = port, device
        base = slot * _QUEUE_SIZE
        view = memoryview(table.queued)
        self._enabled = view[base + 2:base + 4].cast("H")   # one aligned 16-bit store
        self._count = view[base + 8:base + 12].cast("I")
        self._total = view[base + 16:base + 24].cast("Q")
        self._ptr = ffi.cast("hvm_queued *", ffi.from_buffer(table.queued)) + slot
        self._out = ffi.new("uint8_t[]", QUEUE_CAP)
        self._ffi, self._take = ffi, lib.hvm_queued_take

    def enable(self, on: bool) -> None:
        """Let writes be queued (or not) from now on; queued ones stay until taken."""
        self._enabled[0] = int(on)

    def take(self) -> bytes:
        """The writes queued so far, oldest first, and the queue empty."""
        if not self._count[0]:
            return b""
        n = self._take(self._ptr, self._out)
        return self._ffi.buffer(self._out, n)[:]

    @property
    def total(self) -> int:
        """Writes queued so far."""
        return self._total[0]


class PublishedTable:
    """The port bus's published registers (at most SLOTS of them), the PIT's channel 2, and the
    ports whose writes may be queued (at most QUEUE_SLOTS)."""

    def __init__(self) -> None:
        self.buffer = bytearray(SLOTS * _SLOT.size)
        self.entries: list[Published] = []
        self.timer2 = PublishedTimer2()
        self.queued = bytearray(QUEUE_SLOTS * _QUEUE_SIZE)
        self.queues: list[QueuedWrites] = []

    def queue(self, port: int, device) -> QueuedWrites | None:
        """A disabled queue of writes to ``port`` for ``device``; None when all slots are taken."""
        for q in self.queues:
            if q.port == port:
                q.enable(False)
                q.device = device
                return q
        if len(self.queues) == QUEUE_SLOTS:
            return None
        _QUEUE.pack_into(self.queued, len(self.queues) * _QUEUE_SIZE, port, 0, 0, 0, 0, 0)
        q = QueuedWrites(self, len(self.queues), port, device)
        self.queues.append(q)
        return q

    def waiting(self) -> bool:
        """Whether any queue holds writes (a racy look: the engines may be adding some)."""
        return any(q._count[0] for q in self.queues)

    def drain(self) -> None:
        """Hand every device the writes queued for it (the unicorn engine, at each slice's end)."""
        for q in self.queues:
            if q._count[0] and q.device is not None:
                q.device.take_queued()

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
        """Reads answered from the table (and the PIT's channel 2) for ports in ``[base, base+length)``."""
        return sum(e.hits for e in self.entries if base <= e.port < base + length) + \
            sum(q.total for q in self.queues if base <= q.port < base + length) + \
            self.timer2.hits(base, length)
