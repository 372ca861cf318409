"""A standard VGA with the Bochs VBE extension, as QEMU's ``-device VGA`` (PCI 1234:1111).

The card owns 16 MiB of VRAM (``Vga.vram``, an anonymous page-aligned mapping a board may map
into the guest as the BAR0 framebuffer without copies). The legacy VGA's four planes are its first
256 KiB, interleaved (see memory.py). Guest-visible pieces:

- ports 0x3B4-0x3B5, 0x3BA, 0x3C0-0x3CF, 0x3D4-0x3D5, 0x3DA: the VGA registers (registers.py);
  0x3B0-0x3B3, 0x3BC-0x3BF (a parallel port's home), 0x3D0-0x3D3 and 0x3D8-0x3D9 are left to
  whoever owns them, as no VGA register lives there;
- ports 0x1CE-0x1D0: the Bochs DISPI interface (vbe.py);
- memory 0xA0000-0xBFFFF: the legacy window (memory.py);
- a PCI function (pci.py) with BAR0 (framebuffer), BAR2 (MMIO registers) and the VGA BIOS ROM.

``Vga.screen`` (screen.py) reads the display back as text or PNG.
"""
from __future__ import annotations

import mmap
from typing import Callable

from ..base import Device
from .memory import WINDOW_BASE, WINDOW_SIZE, VgaMemory
from .pci import VgaPciFunction
from .registers import VgaPorts, VgaRegisters
from .screen import Screen
from .vbe import INDEX_PORT, PORT_COUNT, BochsDispi

__all__ = ["Vga", "VgaRegisters", "VgaMemory", "BochsDispi", "VgaPciFunction", "Screen",
           "VRAM_SIZE", "PORT_RANGES"]

VRAM_SIZE = 16 << 20
# (base, length) of the VGA register ports; a 16-bit access at the last port of a range would
# run past it, but every VGA index/data pair sits inside one range.
PORT_RANGES = ((0x3B4, 2), (0x3BA, 1), (0x3C0, 16), (0x3D4, 2), (0x3DA, 1))

MapFn = Callable[[int, int, Device, str], None]


class Vga:
    """The whole card: register file, VRAM, DISPI, PCI function and screen reader."""

    def __init__(self, vram_size: int = VRAM_SIZE):
        if vram_size < 1 << 20 or vram_size & (vram_size - 1):
            raise ValueError(f"VRAM size {vram_size:#x} must be a power of two of at least 1 MiB")
        # Private, anonymous and unreserved like guest RAM: zero pages cost nothing until drawn on,
        # and the mapping is page-aligned so it can back a KVM memory slot as it is.
        flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
        self.vram = mmap.mmap(-1, vram_size, flags=flags)
        self.regs = VgaRegisters()
        self.memory = VgaMemory(self.vram, self.regs)
        self.dispi = BochsDispi(vram_size, self.regs, self.memory, clear=self._clear)
        self.pci = VgaPciFunction(self)
        self.screen = Screen(self.regs, self.vram, self.dispi)

    def _clear(self, start: int, length: int) -> None:
        self.vram[start:start + length] = bytes(length)

    def attach(self, map_port: MapFn, map_mmio: MapFn) -> None:
        """Register the fixed legacy ranges: VGA ports, DISPI ports and the 0xA0000 window.
        The PCI BARs are mapped by the host bridge when the firmware places them."""
        for base, length in PORT_RANGES:
            map_port(base, length, VgaPorts(self.regs, base), "vga")
        map_port(INDEX_PORT, PORT_COUNT, self.dispi, "bochs-dispi")
        map_mmio(WINDOW_BASE, WINDOW_SIZE, self.memory, "vga-memory")

    def set_bios(self, data: bytes) -> None:
        """Install the VGA BIOS image as the function's expansion ROM."""
        self.pci.set_rom(data)
