"""QEMU's firmware configuration device (fw_cfg) at ports 0x510-0x511 with DMA at 0x514.

Firmware (SeaBIOS) and test kernels (kvm-unit-tests reads the CPU count from it) find the
machine's configuration here: numbered items and named files, read a byte at a time through the
data port or copied into guest memory by a DMA descriptor the guest writes. Behaviour follows
QEMU's docs/specs/fw_cfg.rst and hw/nvram/fw_cfg.c: a 16-bit write to either port selects an item
and rewinds it; reads past an item's end (or of an unknown item) give 0; the DMA address register
is big-endian, its low half triggers the transfer, and it reads as "QEMU CFG". The DMA descriptor,
its address and length are the guest's: every access goes through GuestMemory, and one that falls
outside RAM sets the error bit instead of touching anything. No item is writable."""
from __future__ import annotations

import struct
import threading
from typing import Callable

from ..formats import fw_cfg as f
from ..memory import GuestMemory, GuestMemoryError
from .base import Device

BASE_PORT = 0x510          # selector (16-bit write), data at +1 (8-bit)
DMA_PORT = 0x514           # 8 bytes: address high half at +0, low half (the trigger) at +4
DMA_LENGTH = 8
# A zero-filling DMA read (past an item's end) writes guest RAM in pieces of this size, so a
# 4 GiB length costs the host no 4 GiB buffer.
FILL_CHUNK = 1 << 20
_ENTRY_MASK = ~f.WRITE_CHANNEL & 0xFFFF


class _Selector(Device):
    name = "fw_cfg"

    def __init__(self, cfg: "FwCfg"):
        self.cfg = cfg

    def read(self, offset: int, size: int) -> int:
        # Both ports read the data register, one byte at a time (QEMU's fw_cfg_comb_valid).
        return self.cfg.read_data() if size == 1 else 0

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 2:
            self.cfg.select(value)


class _Dma(Device):
    name = "fw_cfg-dma"

    def __init__(self, cfg: "FwCfg"):
        self.cfg = cfg

    def read(self, offset: int, size: int) -> int:
        # String-preserving: the bytes of "QEMU CFG" at this offset, in address order.
        return int.from_bytes(f.DMA_SIGNATURE[offset:offset + size].ljust(size, b"\0"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        if size != 4 or offset not in (0, 4):
            return
        half = int.from_bytes(value.to_bytes(4, "little"), "big")
        self.cfg.dma_address_half(offset == 0, half)


class FwCfg:
    """The device's items and state; register ``ports`` at BASE_PORT (2) and ``dma`` at DMA_PORT (8)."""

    def __init__(self, memory: GuestMemory):
        self.memory = memory
        self._lock = threading.Lock()
        self._items: dict[int, bytes] = {}
        self._files: dict[str, bytes] = {}
        self._generators: dict[str, Callable[[], bytes]] = {}
        self._names: list[str] = []   # file names in directory (selector) order
        self._selected: bytes | None = None
        self._offset = 0
        self._dma_high = 0
        self.ports = _Selector(self)
        self.dma = _Dma(self)
        self.add_item(f.SIGNATURE, f.SIGNATURE_VALUE)
        self.add_item(f.ID, struct.pack("<I", f.ID_TRADITIONAL | f.ID_DMA))
        self._update_directory()

    # -- what the board puts in -------------------------------------------------------------------
    def add_item(self, key: int, data: bytes) -> None:
        """Item ``key`` (below FILE_FIRST, or an arch-local key) reads as ``data``."""
        if f.FILE_FIRST <= (key & ~f.ARCH_LOCAL) or key & f.WRITE_CHANNEL or not 0 <= key <= 0xFFFF:
            raise ValueError(f"fw_cfg key {key:#x} is not a numbered item's")
        self._items[key] = bytes(data)

    def add_u16(self, key: int, value: int) -> None:
        self.add_item(key, struct.pack("<H", value))

    def add_u32(self, key: int, value: int) -> None:
        self.add_item(key, struct.pack("<I", value))

    def add_u64(self, key: int, value: int) -> None:
        self.add_item(key, struct.pack("<Q", value))

    def add_file(self, name: str, data: bytes) -> None:
        """A named item, listed in the file directory; selectors follow the names' order, as QEMU's."""
        if not name or len(name.encode("ascii")) >= f.NAME_LENGTH:
            raise ValueError(f"fw_cfg file name {name!r}: 1 to {f.NAME_LENGTH - 1} ASCII characters")
        if name in self._files:
            raise ValueError(f"fw_cfg file {name!r} exists")
        self._files[name] = bytes(data)
        self._update_directory()

    def add_generated_file(self, name: str, generate: Callable[[], bytes]) -> None:
        """A named item whose bytes ``generate`` makes anew each time the guest selects it, so it
        can describe what the firmware has set up by then (QEMU builds its ACPI tables so). The
        directory lists the size of the first result; later ones must have that size."""
        self.add_file(name, generate())
        self._generators[name] = generate

    def has_file(self, name: str) -> bool:
        return name in self._files

    def key_of(self, name: str) -> int:
        """The selector of file ``name``."""
        return f.FILE_FIRST + self._names.index(name)

    def _update_directory(self) -> None:
        self._names = names = sorted(self._files)
        entries = [dict(size=len(self._files[n]), select=f.FILE_FIRST + i, name=n) for i, n in enumerate(names)]
        self._items[f.FILE_DIR] = f.FileDirectory.build(dict(count=len(entries), files=entries))

    def _item(self, key: int) -> bytes | None:
        key &= _ENTRY_MASK
        if f.FILE_FIRST <= key < f.ARCH_LOCAL:
            index = key - f.FILE_FIRST
            return self._files[self._names[index]] if index < len(self._names) else None
        return self._items.get(key)

    # -- the guest's side ---------------------------------------------------------------------------
    def select(self, key: int) -> None:
        with self._lock:
            self._select(key)

    def _select(self, key: int) -> None:
        self._selected = self._item(key)
        self._offset = 0
        index = (key & _ENTRY_MASK) - f.FILE_FIRST
        if self._generators and 0 <= index < len(self._names) and self._names[index] in self._generators:
            name = self._names[index]
            data = self._generators[name]()
            if len(data) != len(self._files[name]):
                raise RuntimeError(f"fw_cfg file {name} changed size from {len(self._files[name])} "
                                   f"to {len(data)} bytes (hvm bug: the directory already told the guest)")
            self._files[name] = self._selected = data

    def read_data(self) -> int:
        with self._lock:
            data, offset = self._selected, self._offset
            if data is None or offset >= len(data):
                return 0
            self._offset += 1
            return data[offset]

    def dma_address_half(self, high: bool, value: int) -> None:
        with self._lock:
            if high:
                self._dma_high = value
                return
            address, self._dma_high = self._dma_high << 32 | value, 0
            self._transfer(address)

    def _transfer(self, address: int) -> None:
        mem = self.memory
        try:
            request = f.DmaAccess.parse(mem.read(address, f.DmaAccess.sizeof()))
        except GuestMemoryError:
            self._report(address, f.DMA_ERROR)
            return
        control, length, target = request.control, request.length, request.address
        if control & f.DMA_SELECT:
            self._select(control >> 16)
        read = bool(control & f.DMA_READ)
        write = not read and bool(control & f.DMA_WRITE)
        if not (read or write or control & f.DMA_SKIP):
            length = 0
        status = 0
        data = self._selected
        while length and not status:
            offset = self._offset
            try:
                if data is None or offset >= len(data):
                    # Past the item's end: a read gets zeros, a write is refused (QEMU does both).
                    chunk = length
                    if read:
                        self._zero(target, chunk)
                    if write:
                        status = f.DMA_ERROR
                else:
                    chunk = min(length, len(data) - offset)
                    if read:
                        mem.write(target, data[offset:offset + chunk])
                    if write:
                        status = f.DMA_ERROR   # no item is writable
                    self._offset += chunk
            except GuestMemoryError:
                status = f.DMA_ERROR
            target += chunk
            length -= chunk
        self._report(address, status)

    def _zero(self, target: int, length: int) -> None:
        if not self.memory.contains(target, length):
            raise GuestMemoryError(target, length)
        for start in range(0, length, FILL_CHUNK):
            self.memory.fill(target + start, min(FILL_CHUNK, length - start))

    def _report(self, address: int, status: int) -> None:
        try:
            self.memory.write(address, struct.pack(">I", status))
        except GuestMemoryError:
            pass   # the descriptor lies outside RAM: there is nowhere to say so
