"""QEMU's pc-testdev, the ISA device kvm-unit-tests drives (QEMU hw/misc/pc-testdev.c):

- 0xE0-0xE3: a 32-bit scratch register, accessed at any width and offset (a byte written at 0xE1
  lands in bits 8-15; a word read at 0xE2 returns bits 16-31);
- 0xE4: "flush page": QEMU drops its host mapping of the written address's page so KVM must fault
  it in again; hvm maps guest RAM once and for good, so there is nothing to drop;
- 0xE8-0xEB: the same register through byte-wide accesses (a wider one is split into bytes);
- 0x2000-0x2017: interrupt lines: a byte written at 0x2000+n sets GSI n to (byte != 0);
- 0xFF000000, 64 KiB: plain read/write memory reached through MMIO exits.
"""
from __future__ import annotations

import threading
from typing import Callable

from .base import Device

SCRATCH_PORT = 0xE0
FLUSH_PORT = 0xE4
BYTE_PORT = 0xE8
IRQ_PORT = 0x2000
IRQ_LINES = 24
IOMEM_BASE = 0xFF000000
IOMEM_SIZE = 0x10000


class _Scratch(Device):
    name = "pc-testdev"

    def __init__(self, dev: "PcTestdev", bytewise: bool):
        self.dev, self.bytewise = dev, bytewise

    def read(self, offset: int, size: int) -> int:
        if not self.bytewise:
            return self.dev.scratch_read(offset, size)
        return sum(self.dev.scratch_read(offset + i, 1) << (8 * i) for i in range(size))

    def write(self, offset: int, size: int, value: int) -> None:
        if not self.bytewise:
            self.dev.scratch_write(offset, size, value)
            return
        for i in range(size):
            self.dev.scratch_write(offset + i, 1, value >> (8 * i) & 0xFF)


class _Flush(Device):
    name = "pc-testdev"

    def read(self, offset: int, size: int) -> int:
        return 0


class _IrqLines(Device):
    name = "pc-testdev"

    def __init__(self, set_line: Callable[[int, bool], None]):
        self.set_line = set_line

    def read(self, offset: int, size: int) -> int:
        return 0

    def write(self, offset: int, size: int, value: int) -> None:
        # QEMU splits a wider write into byte writes to consecutive lines (the region's largest
        # valid access is one byte): `outl $1` at line n raises n and lowers n+1..n+3.
        for i in range(size):
            if offset + i < IRQ_LINES:
                self.set_line(offset + i, bool(value >> (8 * i) & 0xFF))


class _IoMem(Device):
    name = "pc-testdev-iomem"

    def __init__(self) -> None:
        self.buffer = bytearray(IOMEM_SIZE)

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.buffer[offset:offset + size], "little")

    def write(self, offset: int, size: int, value: int) -> None:
        # An access running past the window's end keeps the part inside it.
        chunk = value.to_bytes(size, "little")[:IOMEM_SIZE - offset]
        self.buffer[offset:offset + len(chunk)] = chunk


class PcTestdev:
    """The device; ``set_line(n, level)`` drives GSI n (0-23)."""

    def __init__(self, set_line: Callable[[int, bool], None]):
        self._lock = threading.Lock()
        self.value = 0
        self.scratch = _Scratch(self, bytewise=False)
        self.byte_port = _Scratch(self, bytewise=True)
        self.flush = _Flush()
        self.irq_lines = _IrqLines(set_line)
        self.iomem = _IoMem()

    def scratch_read(self, offset: int, size: int) -> int:
        shift = (offset & 3) * 8
        return (self.value >> shift) & ((1 << (8 * size)) - 1)

    def scratch_write(self, offset: int, size: int, value: int) -> None:
        # QEMU works in a uint32_t: what would land above bit 31 is lost.
        shift = (offset & 3) * 8
        mask = (((1 << (8 * size)) - 1) << shift) & 0xFFFFFFFF
        with self._lock:
            self.value = (self.value & ~mask | (value << shift) & mask) & 0xFFFFFFFF

    def attach(self, add_port: Callable, add_mmio: Callable) -> None:
        """Register every range with ``add_port(base, length, device, name)`` / ``add_mmio(...)``."""
        add_port(SCRATCH_PORT, 4, self.scratch, "pc-testdev")
        add_port(FLUSH_PORT, 4, self.flush, "pc-testdev")
        add_port(BYTE_PORT, 4, self.byte_port, "pc-testdev")
        add_port(IRQ_PORT, IRQ_LINES, self.irq_lines, "pc-testdev")
        add_mmio(IOMEM_BASE, IOMEM_SIZE, self.iomem, "pc-testdev-iomem")
