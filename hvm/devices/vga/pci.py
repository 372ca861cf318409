"""The standard VGA as a PCI function, as QEMU's ``-device VGA`` presents it (QEMU
docs/specs/standard-vga.rst):

- ID 1234:1111, class 0x030000 (VGA-compatible display controller), subsystem 1af4:1100;
- BAR0: the framebuffer, all of VRAM, 32-bit prefetchable memory;
- BAR2: 4 KiB of registers: 0x400-0x41F are the VGA ports 0x3C0-0x3DF one to one (a 16-bit write
  at an index port sets index and data in one exit), 0x500-0x515 the Bochs DISPI registers flat
  at ``index * 2``, 0x600-0x607 QEMU's extended registers (region size, framebuffer endianness),
  which revision 2 announces; 0x000-0x3FF would hold an EDID blob and reads as zeros (no EDID);
- an expansion ROM the board fills with the VGA BIOS (``vgabios-stdvga.bin``).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..base import Device
from ..pci.config import PciFunction

if TYPE_CHECKING:
    from . import Vga

VENDOR_ID, DEVICE_ID = 0x1234, 0x1111
CLASS_VGA = 0x030000
SUBSYSTEM = (0x1AF4, 0x1100)
REVISION = 2                   # announces the QEMU extended registers at 0x600
MMIO_SIZE = 0x1000
MMIO_PORTS, MMIO_PORTS_END = 0x400, 0x420
MMIO_DISPI, MMIO_DISPI_END = 0x500, 0x516
MMIO_QEXT, MMIO_QEXT_SIZE = 0x600, 8
LITTLE_ENDIAN_FB = 0x1E1E1E1E


class LinearFramebuffer(Device):
    """BAR0 through MMIO exits: the fallback when the board does not map ``vga.vram`` into the
    guest directly."""

    name = "vga-lfb"

    def __init__(self, vram):
        self.vram = memoryview(vram)

    def read(self, offset: int, size: int) -> int:
        """Bytes of VRAM; past its end reads as all ones."""
        chunk = bytes(self.vram[offset:offset + size])
        return int.from_bytes(chunk.ljust(size, b"\xff"), "little")

    def write(self, offset: int, size: int, value: int) -> None:
        """Bytes into VRAM; whatever falls past its end is dropped."""
        end = min(offset + size, len(self.vram))
        if offset < end:
            self.vram[offset:end] = value.to_bytes(size, "little")[:end - offset]


class StdVgaMmio(Device):
    """BAR2: VGA ports and DISPI registers without index/data round trips."""

    name = "vga-mmio"

    def __init__(self, vga: "Vga"):
        self.vga = vga

    def read(self, offset: int, size: int) -> int:
        """Register bytes, little-endian; holes read as zero."""
        with self.vga.regs.lock:
            return sum(self._read_byte(offset + i) << (8 * i) for i in range(size))

    def write(self, offset: int, size: int, value: int) -> None:
        """Register writes; VGA ports byte by byte (index first), DISPI registers as 16-bit
        values (a wider write sets consecutive registers, a byte write at an odd offset updates
        the high byte)."""
        with self.vga.regs.lock:
            if MMIO_PORTS <= offset < MMIO_PORTS_END:
                for i in range(size):
                    if offset + i < MMIO_PORTS_END:
                        self.vga.regs.write_port(0x3C0 + offset + i - MMIO_PORTS, value >> (8 * i))
            elif MMIO_DISPI <= offset < MMIO_DISPI_END:
                self._write_dispi(offset, size, value)
            # QEXT: the size is fixed and the framebuffer stays little-endian (an x86 host has
            # no use for the byte-swapped variant), so writes there change nothing.

    def _read_byte(self, offset: int) -> int:
        vga = self.vga
        if MMIO_PORTS <= offset < MMIO_PORTS_END:
            return vga.regs.read_port(0x3C0 + offset - MMIO_PORTS)
        if MMIO_DISPI <= offset < MMIO_DISPI_END:
            index, high = divmod(offset - MMIO_DISPI, 2)
            return vga.dispi.read_register(index) >> (8 * high) & 0xFF
        if MMIO_QEXT <= offset < MMIO_QEXT + MMIO_QEXT_SIZE:
            reg, byte = divmod(offset - MMIO_QEXT, 4)
            value = MMIO_QEXT_SIZE if reg == 0 else LITTLE_ENDIAN_FB
            return value >> (8 * byte) & 0xFF
        return 0

    def _write_dispi(self, offset: int, size: int, value: int) -> None:
        dispi = self.vga.dispi
        pos = offset - MMIO_DISPI
        data = value.to_bytes(size, "little")
        i = 0
        while i < size and pos + i < MMIO_DISPI_END - MMIO_DISPI:
            index, high = divmod(pos + i, 2)
            if not high and i + 1 < size:
                dispi.write_register(index, data[i] | data[i + 1] << 8)
                i += 2
                continue
            old = dispi.read_register(index)
            if high:
                new = (old & 0x00FF) | data[i] << 8
            else:
                new = (old & 0xFF00) | data[i]
            dispi.write_register(index, new)
            i += 1


class VgaPciFunction(PciFunction):
    """The standard VGA's configuration space and its two BARs."""

    name = "vga"

    def __init__(self, vga: "Vga"):
        super().__init__(VENDOR_ID, DEVICE_ID, CLASS_VGA, revision=REVISION, subsystem=SUBSYSTEM)
        self.framebuffer = LinearFramebuffer(vga.vram)
        self.mmio = StdVgaMmio(vga)
        self.add_bar(0, len(vga.vram), "mem", self.framebuffer, prefetch=True, name="vga-lfb")
        self.add_bar(2, MMIO_SIZE, "mem", self.mmio, name="vga-mmio")
