"""Guest RAM: host mappings, the PC layout around the 4 GiB hole, and bounds-checked access.

Every address and length that reaches this module may come from the guest, so every access is
checked against the region it falls in; nothing here ever forms a host pointer from a guest value.
"""
from __future__ import annotations

import bisect
import mmap
import os
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kvmffi import ffi

if TYPE_CHECKING:
    from .readahead import ReadAhead

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30

# RAM below 4 GiB stops here; the rest of the first 4 GiB is left for MMIO (PCI holes, IOAPIC,
# LAPIC, firmware), as on QEMU's pc machine when RAM is large.
LOWMEM_LIMIT = 3 * GiB
HIGHMEM_BASE = 4 * GiB

_U16, _U32, _U64 = struct.Struct("<H"), struct.Struct("<I"), struct.Struct("<Q")

# madvise(2) advice that allocates the range's pages for writing (Linux 5.14; Python's mmap
# module has no name for it).
_MADV_POPULATE_WRITE = 23
_POPULATE_FROM = 1 * MiB


class GuestMemoryError(ValueError):
    """A guest-physical access fell outside RAM (or straddled a region boundary)."""

    def __init__(self, gpa: int, length: int, reason: str = "outside guest RAM"):
        super().__init__(f"guest access [{gpa:#x}, +{length:#x}) {reason}")
        self.gpa, self.length = gpa, length


@dataclass
class Region:
    """One contiguous piece of guest RAM backed by one anonymous host mapping."""

    gpa: int
    size: int
    mapping: mmap.mmap = field(repr=False)
    view: memoryview = field(repr=False)
    host_addr: int = 0

    @property
    def end(self) -> int:
        """First guest-physical address past this region."""
        return self.gpa + self.size


def pc_layout(size: int) -> list[tuple[int, int]]:
    """Split ``size`` bytes of RAM into (gpa, size) pieces around the 32-bit MMIO hole."""
    if size <= 0:
        raise ValueError("memory size must be positive")
    low = min(size, LOWMEM_LIMIT)
    layout = [(0, low)]
    if size > low:
        layout.append((HIGHMEM_BASE, size - low))
    return layout


class GuestMemory:
    """Guest RAM in one or more regions; the only way hvm code reads or writes guest memory."""

    def __init__(self, size: int, layout: list[tuple[int, int]] | None = None):
        self.size = size
        self.regions: list[Region] = []
        for gpa, length in layout or pc_layout(size):
            if gpa % mmap.PAGESIZE or length % mmap.PAGESIZE:
                raise ValueError(f"region {gpa:#x}+{length:#x} is not page aligned")
            # Anonymous private pages cost host memory only once the guest touches them;
            # NORESERVE (when Python exposes it) also keeps large guests out of the commit charge.
            flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
            mapping = mmap.mmap(-1, length, flags=flags)
            view = memoryview(mapping)
            host_addr = int(ffi.cast("uintptr_t", ffi.from_buffer(mapping)))
            self.regions.append(Region(gpa, length, mapping, view, host_addr))
        self.regions.sort(key=lambda r: r.gpa)
        self._starts = [r.gpa for r in self.regions]
        self.readahead: ReadAhead | None = None

    @property
    def below_4g(self) -> int:
        """Bytes of RAM below 4 GiB."""
        return sum(min(r.end, HIGHMEM_BASE) - r.gpa for r in self.regions if r.gpa < HIGHMEM_BASE)

    @property
    def above_4g(self) -> int:
        """Bytes of RAM at or above 4 GiB."""
        return self.size - self.below_4g

    def _locate(self, gpa: int, length: int) -> tuple[Region, int]:
        if gpa < 0 or length < 0:
            raise GuestMemoryError(gpa, length, "has a negative address or length")
        i = bisect.bisect_right(self._starts, gpa) - 1
        if i >= 0:
            r = self.regions[i]
            off = gpa - r.gpa
            if off + length <= r.size:
                return r, off
        raise GuestMemoryError(gpa, length)

    def contains(self, gpa: int, length: int = 1) -> bool:
        """True when ``[gpa, gpa+length)`` lies inside one RAM region."""
        try:
            self._locate(gpa, length)
            return True
        except GuestMemoryError:
            return False

    def view(self, gpa: int, length: int) -> memoryview:
        """A writable zero-copy view of guest RAM; raises GuestMemoryError if out of range."""
        r, off = self._locate(gpa, length)
        return r.view[off:off + length]

    def read(self, gpa: int, length: int) -> bytes:
        """Copy ``length`` bytes out of guest RAM."""
        return bytes(self.view(gpa, length))

    def write(self, gpa: int, data) -> None:
        """Copy ``data`` into guest RAM."""
        data = memoryview(data).cast("B")
        view = self.view(gpa, len(data))
        if len(data) >= _POPULATE_FROM:
            self._populate(gpa, len(data))
        view[:] = data

    def _populate(self, gpa: int, length: int) -> None:
        """Fault in the pages of ``[gpa, gpa+length)`` (inside one region) with one system call:
        a kernel image copied page by page takes a fault per 4 KiB page, and each costs several
        microseconds on a nested host (57 MB of vmlinux: 30-120 ms against 20 ms populated)."""
        r, off = self._locate(gpa, length)
        start = off // mmap.PAGESIZE * mmap.PAGESIZE
        try:
            r.mapping.madvise(_MADV_POPULATE_WRITE, start, off + length - start)
        except OSError:
            pass  # before Linux 5.14 (EINVAL): the copy faults the pages in as before

    def fetch_or(self, gpa: int, bits: int) -> int:
        """Atomically OR ``bits`` into the aligned u64 at ``gpa``; returns the old value."""
        from .atomics import fetch_or

        return fetch_or(self._host_u64(gpa), bits)

    def fetch_and(self, gpa: int, bits: int) -> int:
        """Atomically AND ``bits`` into the aligned u64 at ``gpa``; returns the old value."""
        from .atomics import fetch_and

        return fetch_and(self._host_u64(gpa), bits)

    def _host_u64(self, gpa: int) -> int:
        if gpa % 8:
            raise GuestMemoryError(gpa, 8)
        r, off = self._locate(gpa, 8)
        return r.host_addr + off

    def fill(self, gpa: int, length: int, byte: int = 0) -> None:
        """Set ``length`` bytes of guest RAM to ``byte``."""
        self.view(gpa, length)[:] = bytes([byte]) * length

    def read_u8(self, gpa: int) -> int:
        """One byte."""
        return self.view(gpa, 1)[0]

    def read_u16(self, gpa: int) -> int:
        """A little-endian 16-bit value."""
        return _U16.unpack(self.view(gpa, 2))[0]

    def read_u32(self, gpa: int) -> int:
        """A little-endian 32-bit value."""
        return _U32.unpack(self.view(gpa, 4))[0]

    def read_u64(self, gpa: int) -> int:
        """A little-endian 64-bit value."""
        return _U64.unpack(self.view(gpa, 8))[0]

    def write_u8(self, gpa: int, value: int) -> None:
        """Store one byte."""
        self.view(gpa, 1)[0] = value & 0xFF

    def write_u16(self, gpa: int, value: int) -> None:
        """Store a little-endian 16-bit value."""
        _U16.pack_into(self.view(gpa, 2), 0, value & 0xFFFF)

    def write_u32(self, gpa: int, value: int) -> None:
        """Store a little-endian 32-bit value."""
        _U32.pack_into(self.view(gpa, 4), 0, value & 0xFFFFFFFF)

    def write_u64(self, gpa: int, value: int) -> None:
        """Store a little-endian 64-bit value."""
        _U64.pack_into(self.view(gpa, 8), 0, value & 0xFFFFFFFFFFFFFFFF)

    def start_readahead(self) -> None:
        """Populate RAM ahead of a guest sweeping through it, on another host CPU (hvm.readahead);
        what is resident now (what hvm loaded) is taken as the starting point. Nothing happens
        where this process may run on one CPU only: the populating would take the vCPU's time."""
        from .readahead import ReadAhead

        if self.readahead is None and len(os.sched_getaffinity(0)) > 1:
            self.readahead = ReadAhead([(r.host_addr, r.size) for r in self.regions])

    def close(self) -> None:
        """Unmap guest RAM (views handed out must be released first)."""
        if self.readahead is not None:
            self.readahead.close()  # before the ranges it touches go
            self.readahead = None
        for r in self.regions:
            r.view.release()
            try:
                r.mapping.close()
            except BufferError:
                pass  # an exported view is still alive; the mapping goes with the process
        self.regions = []
        self._starts = []
