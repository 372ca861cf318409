"""Port-I/O and MMIO buses: devices claim address ranges; lookups are O(log n).

Overlapping claims are refused at registration, so a lookup can never be ambiguous.
"""
from __future__ import annotations

import bisect
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

from .devices.base import Device
from .published import PublishedTable


class BusError(ValueError):
    """A registration that would overlap an existing range or is malformed."""


@dataclass(frozen=True)
class Mapping:
    """A device's claim on ``[base, base+length)``."""

    base: int
    length: int
    device: Device
    name: str
    hits: list[int] = field(default_factory=lambda: [0], compare=False, repr=False)  # for --stats

    @property
    def end(self) -> int:
        """First address past the range."""
        return self.base + self.length


_UNSEEN = object()
# A device may answer wider than the access (a 16-bit register read by byte): the reply is cut to
# the access size here, once, so every engine sees the same value and none can overflow.
# Indexed by size; KVM reports MMIO of any length up to 8, unicorn up to 16 for vector moves.
_MASK = tuple((1 << (8 * n)) - 1 for n in range(17))
# Lookups are cached per address; guest-chosen MMIO addresses must not grow the cache without bound.
CACHE_LIMIT = 4096


class Bus:
    """A set of non-overlapping address ranges, each served by one device."""

    kind = "bus"
    limit = 1 << 64

    def __init__(self) -> None:
        self._bases: list[int] = []
        self._maps: list[Mapping] = []
        self._lock = threading.Lock()
        self._cache: dict[int, Mapping | None] = {}
        self.unclaimed = 0

    @property
    def accesses(self) -> Counter[str]:
        """Accesses so far by device name (for --stats)."""
        counts: Counter[str] = Counter()
        for m in self._maps:
            n = m.hits[0] + self._served_elsewhere(m)
            if n:
                counts[m.name] += n
        return counts

    def _served_elsewhere(self, m: Mapping) -> int:
        return 0

    def register(self, base: int, length: int, device: Device, name: str | None = None) -> Mapping:
        """Claim ``[base, base+length)`` for ``device``; raises BusError on any overlap."""
        name = name or getattr(device, "name", type(device).__name__)
        if length <= 0 or base < 0 or base + length > self.limit:
            raise BusError(f"{self.kind}: bad range {base:#x}+{length:#x} for {name}")
        with self._lock:
            i = bisect.bisect_right(self._bases, base)
            prev = self._maps[i - 1] if i > 0 else None
            nxt = self._maps[i] if i < len(self._maps) else None
            for other in (prev, nxt):
                if other and base < other.end and other.base < base + length:
                    raise BusError(f"{self.kind}: {name} at {base:#x}+{length:#x} overlaps "
                                   f"{other.name} at {other.base:#x}+{other.length:#x}")
            m = Mapping(base, length, device, name)
            self._bases.insert(i, base)
            self._maps.insert(i, m)
            self._cache = {}
        self._attached(m)
        return m

    def _attached(self, m: Mapping) -> None:
        pass

    def _detached(self, m: Mapping) -> None:
        pass

    def unregister(self, base: int) -> None:
        """Release the range that starts at ``base``."""
        with self._lock:
            i = bisect.bisect_left(self._bases, base)
            if i == len(self._bases) or self._bases[i] != base:
                raise BusError(f"{self.kind}: nothing registered at {base:#x}")
            del self._bases[i]
            m = self._maps.pop(i)
            self._cache = {}
        self._detached(m)

    def lookup(self, addr: int) -> Mapping | None:
        """The mapping containing ``addr``, or None."""
        i = bisect.bisect_right(self._bases, addr) - 1
        if i >= 0:
            m = self._maps[i]
            if addr < m.base + m.length:
                return m
        return None

    def mappings(self) -> list[Mapping]:
        """All registrations, ordered by address."""
        return list(self._maps)

    def _resolve(self, addr: int) -> Mapping | None:
        cache = self._cache
        if len(cache) >= CACHE_LIMIT:
            cache.clear()
        m = cache[addr] = self.lookup(addr)
        return m

    def read(self, addr: int, size: int) -> int:
        """Dispatch a read; unclaimed addresses read as all ones, like an ISA bus with no device."""
        m = self._cache.get(addr, _UNSEEN)
        if m is _UNSEEN:
            m = self._resolve(addr)
        if m is None:
            self.unclaimed += 1
            return (1 << (size * 8)) - 1
        m.hits[0] += 1
        return m.device.read(addr - m.base, size) & _MASK[size]

    def write(self, addr: int, size: int, value: int) -> None:
        """Dispatch a write; writes to unclaimed addresses are dropped."""
        m = self._cache.get(addr, _UNSEEN)
        if m is _UNSEEN:
            m = self._resolve(addr)
        if m is None:
            self.unclaimed += 1
            return
        m.hits[0] += 1
        m.device.write(addr - m.base, size, value & _MASK[size])

    # String I/O: one call for a run of accesses to one address (REP INS/OUTS). The device may
    # serve fewer than asked (``Device.read_string``); each element counts as an access.
    def read_string(self, addr: int, size: int, count: int) -> bytes:
        """Up to ``count`` reads of ``size`` bytes at ``addr``, concatenated (at least one
        element); unclaimed addresses give all ones."""
        m = self._cache.get(addr, _UNSEEN)
        if m is _UNSEEN:
            m = self._resolve(addr)
        if m is None:
            self.unclaimed += count
            return b"\xff" * (size * count)
        device, offset = m.device, addr - m.base
        # A device that is no Device subclass (duck-typed) gets the element-by-element default.
        serve = getattr(device, "read_string", None)
        data = serve(offset, size, count) if serve else Device.read_string(device, offset, size, count)
        if not 0 < len(data) <= size * count or len(data) % size:
            raise BusError(f"{self.kind}: {m.name} returned {len(data)} bytes for {count} reads of "
                           f"{size} at {addr:#x}")
        m.hits[0] += len(data) // size
        return data

    def write_string(self, addr: int, size: int, data: bytes) -> int:
        """Write the ``size``-byte elements of ``data`` at ``addr`` in order; returns how many the
        device took (at least one); unclaimed addresses take them all."""
        count = len(data) // size
        m = self._cache.get(addr, _UNSEEN)
        if m is _UNSEEN:
            m = self._resolve(addr)
        if m is None:
            self.unclaimed += count
            return count
        device, offset = m.device, addr - m.base
        serve = getattr(device, "write_string", None)
        taken = serve(offset, size, data) if serve else Device.write_string(device, offset, size, data)
        if not 0 < taken <= count:
            raise BusError(f"{self.kind}: {m.name} took {taken} of {count} writes of {size} at {addr:#x}")
        m.hits[0] += taken
        return taken


class PortIOBus(Bus):
    """The 64 KiB x86 I/O port space, with the table of registers its devices publish."""

    kind = "pio"
    limit = 1 << 16

    def __init__(self) -> None:
        super().__init__()
        self.published = PublishedTable()
        # Set by an engine platform that can buffer writes (KVM's coalesced I/O):
        # ``coalesce(base, length, on)`` for each range of a device with ``coalesced_writes``.
        self.coalesce: Callable[[int, int, bool], None] | None = None

    def _attached(self, m: Mapping) -> None:
        # getattr: a bus also takes duck-typed devices (read/write only), which do neither.
        if getattr(m.device, "coalesced_writes", False) and self.coalesce is not None:
            self.coalesce(m.base, m.length, True)
        for offset in getattr(m.device, "published_offsets", ()):
            entry = self.published.publish(m.base + offset)
            if entry is not None:
                m.device.attach_published(offset, entry)
        for offset in getattr(m.device, "queued_offsets", ()):
            queue = self.published.queue(m.base + offset, m.device)
            if queue is not None:
                m.device.attach_queue(offset, queue)

    def _detached(self, m: Mapping) -> None:
        if getattr(m.device, "coalesced_writes", False) and self.coalesce is not None:
            self.coalesce(m.base, m.length, False)
        for entry in self.published.entries:
            if m.base <= entry.port < m.end:
                entry.hide()
        for offset in getattr(m.device, "published_offsets", ()):
            m.device.attach_published(offset, None)
        for offset in getattr(m.device, "queued_offsets", ()):
            m.device.attach_queue(offset, None)
        for queue in self.published.queues:
            if m.base <= queue.port < m.end:
                queue.device = None

    def _served_elsewhere(self, m: Mapping) -> int:
        return self.published.hits(m.base, m.length)


class MmioBus(Bus):
    """Guest-physical addresses not backed by RAM."""

    kind = "mmio"


StringRead = Callable[[int, int, int], bytes]
StringWrite = Callable[[int, int, bytes], int]


def string_io(read: Callable[[int, int], int],
              write: Callable[[int, int, int], None]) -> tuple[StringRead, StringWrite]:
    """The string counterparts of an engine's port ``read``/``write`` callables: the bus's own
    when they are a bus's methods (devices then serve whole runs), else loops over them."""
    bus = getattr(read, "__self__", None)
    if isinstance(bus, Bus) and read == bus.read and write == bus.write:
        return bus.read_string, bus.write_string

    def read_string(addr: int, size: int, count: int) -> bytes:
        mask = _MASK[size]
        return b"".join((read(addr, size) & mask).to_bytes(size, "little") for _ in range(count))

    def write_string(addr: int, size: int, data: bytes) -> int:
        for pos in range(0, len(data), size):
            write(addr, size, int.from_bytes(data[pos:pos + size], "little"))
        return len(data) // size

    return read_string, write_string
