"""What a CPU sees at each guest-physical address: windows onto host memory, the rest MMIO.

A window shows host memory the engines map directly (KVM memory slots, unicorn ``mem_map_ptr``):
RAM, or read-only memory (a firmware ROM, RAM the chipset write-protects). A guest store into a
read-only window does not change it; the store reaches the MMIO bus at that address instead, where
the board puts what such a store means (nothing, or "write the RAM underneath" for the PC's PAM
setting that reads ROM and writes RAM). Addresses outside every window are MMIO.

The map changes while the guest runs (the PC chipset's PAM registers swap ROM and RAM below
1 MiB); engines subscribe and remap. ``GuestMemory`` stays the RAM itself: device DMA and the
loaders reach RAM whatever the CPU's view of it is.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable

from kvmffi import ffi

from .memory import HIGHMEM_BASE, GuestMemory


@dataclass(frozen=True)
class Window:
    """``size`` bytes of host memory at ``host_addr`` (kept alive by ``owner``) shown at ``gpa``."""

    gpa: int
    size: int
    host_addr: int
    readonly: bool = False
    name: str = "ram"
    owner: object = field(default=None, repr=False, compare=False)

    @property
    def end(self) -> int:
        return self.gpa + self.size


class Rom:
    """Read-only bytes the guest can execute: a page-aligned private copy of ``data``."""

    def __init__(self, data: bytes, name: str):
        import mmap

        self.name = name
        self.size = (len(data) + mmap.PAGESIZE - 1) // mmap.PAGESIZE * mmap.PAGESIZE
        self._map = mmap.mmap(-1, self.size)
        self._map[:len(data)] = data
        self.host_addr = int(ffi.cast("uintptr_t", ffi.from_buffer(self._map)))

    def window(self, gpa: int, offset: int = 0, size: int | None = None) -> Window:
        """A read-only window showing ``size`` bytes of the ROM from ``offset`` at ``gpa``."""
        size = self.size - offset if size is None else size
        if offset < 0 or offset + size > self.size:
            raise ValueError(f"{self.name}: window {offset:#x}+{size:#x} outside the ROM")
        return Window(gpa, size, self.host_addr + offset, readonly=True, name=self.name, owner=self)

    def read(self, offset: int, length: int) -> bytes:
        return bytes(self._map[offset:offset + length])


class PhysMap:
    """The windows, sorted and never overlapping; ``subscribe`` to hear of changes."""

    def __init__(self, memory: GuestMemory, windows: list[Window] | None = None):
        self.memory = memory
        self._lock = threading.Lock()
        self._windows = sorted(windows if windows is not None else self.ram_windows(memory),
                               key=lambda w: w.gpa)
        self._check(self._windows)
        self._listeners: list[Callable[[list[Window], list[Window]], None]] = []

    @staticmethod
    def ram_windows(memory: GuestMemory, holes: list[tuple[int, int]] = ()) -> list[Window]:
        """Writable windows over all of RAM, leaving out the ``holes`` (gpa, size)."""
        out = []
        for r in memory.regions:
            pieces = [(r.gpa, r.end)]
            for hole_at, hole_size in holes:
                nxt = []
                for lo, hi in pieces:
                    if hole_at >= hi or hole_at + hole_size <= lo:
                        nxt.append((lo, hi))
                        continue
                    if lo < hole_at:
                        nxt.append((lo, hole_at))
                    if hole_at + hole_size < hi:
                        nxt.append((hole_at + hole_size, hi))
                pieces = nxt
            out += [Window(lo, hi - lo, r.host_addr + (lo - r.gpa), owner=memory) for lo, hi in pieces]
        return out

    def ram_window(self, gpa: int, size: int, readonly: bool = False) -> Window:
        """A window showing the RAM at ``[gpa, gpa+size)`` (one region) at the same address."""
        view = self.memory.view(gpa, size)   # validates the range
        view.release()
        region = next(r for r in self.memory.regions if r.gpa <= gpa < r.end)
        return Window(gpa, size, region.host_addr + gpa - region.gpa, readonly=readonly,
                      name="ram" if not readonly else "ram-ro", owner=self.memory)

    @staticmethod
    def _check(windows: list[Window]) -> None:
        for a, b in zip(windows, windows[1:]):
            if a.end > b.gpa:
                raise ValueError(f"windows {a.name} at {a.gpa:#x} and {b.name} at {b.gpa:#x} overlap")

    def windows(self) -> list[Window]:
        """The current windows, by address."""
        return list(self._windows)

    def holes(self, limit: int = HIGHMEM_BASE) -> list[tuple[int, int]]:
        """(gpa, size) of the MMIO space below ``limit`` that no window covers. Windows that come
        and go do so in ranges that always hold one (``replace`` keeps the holes fixed)."""
        out, cursor = [], 0
        for w in self._windows:
            if w.gpa >= limit:
                break
            if w.gpa > cursor:
                out.append((cursor, w.gpa - cursor))
            cursor = max(cursor, w.end)
        if cursor < limit:
            out.append((cursor, limit - cursor))
        return out

    def subscribe(self, listener: Callable[[list[Window], list[Window]], None]) -> None:
        """Call ``listener(removed, added)`` on every change (on the changing thread)."""
        self._listeners.append(listener)

    def replace(self, new: list[Window]) -> None:
        """Swap the windows over exactly the range ``new`` covers (contiguous, and the same range
        the windows it replaces covered) for ``new``."""
        new = sorted(new, key=lambda w: w.gpa)
        self._check(new)
        lo, hi = new[0].gpa, new[-1].end
        with self._lock:
            old = [w for w in self._windows if w.gpa < hi and lo < w.end]
            if [(w.gpa, w.end) for w in old] and (old[0].gpa < lo or old[-1].end > hi):
                raise ValueError(f"replacement {lo:#x}-{hi:#x} cuts a window in two")
            if sum(w.size for w in old) != hi - lo or sum(w.size for w in new) != hi - lo:
                raise ValueError(f"replacement {lo:#x}-{hi:#x} would open or close MMIO space")
            removed = [w for w in old if w not in new]
            added = [w for w in new if w not in old]
            if not removed and not added:
                return
            self._windows = sorted([w for w in self._windows if w not in removed] + added,
                                   key=lambda w: w.gpa)
        for listener in self._listeners:
            listener(removed, added)

    def window_at(self, gpa: int) -> Window | None:
        """The window holding ``gpa``."""
        for w in self._windows:
            if w.gpa <= gpa < w.end:
                return w
        return None
