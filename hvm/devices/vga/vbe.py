"""The Bochs VBE display interface ("DISPI"): the extension Bochs and QEMU's standard VGA put
beside the VGA so a VBE BIOS or a driver can set any resolution and depth with a few register
writes, and the screen then shows VRAM as a linear framebuffer.

Index port 0x1CE selects a 16-bit register and data port 0x1CF (0x1D0 as well, the alias non-x86
machines use) reads or writes it. Registers (Bochs ``vbe.h`` interface IDs 0xB0C0-0xB0C5):

ID, XRES, YRES, BPP, ENABLE, BANK, VIRT_WIDTH, VIRT_HEIGHT, X_OFFSET, Y_OFFSET, VIDEO_MEMORY_64K

- ID: a guest writes the newest interface version it knows and reads back what it got;
- ENABLE: ENABLED switches the display to VRAM (clearing the visible part unless NOCLEARMEM);
  GETCAPS makes XRES/YRES/BPP read as the maxima; 8BIT_DAC makes DAC entries 8 bits wide;
  LFB_ENABLED is only remembered (the framebuffer BAR decodes either way);
- BANK: which 64 KiB of VRAM shows at 0xA0000 while enabled;
- VIRT_WIDTH/X_OFFSET/Y_OFFSET: a virtual screen larger than the visible one and the visible
  window's place in it; VIRT_HEIGHT is derived from the VRAM size.
"""
from __future__ import annotations

from .memory import BANK_SIZE, VgaMemory
from .registers import VgaRegisters
from ..base import Device

INDEX_PORT = 0x1CE
PORT_COUNT = 3                 # 0x1CE index, 0x1CF data, 0x1D0 data

(INDEX_ID, INDEX_XRES, INDEX_YRES, INDEX_BPP, INDEX_ENABLE, INDEX_BANK, INDEX_VIRT_WIDTH,
 INDEX_VIRT_HEIGHT, INDEX_X_OFFSET, INDEX_Y_OFFSET, INDEX_VIDEO_MEMORY_64K) = range(11)
REGISTER_COUNT = 11

ID0, ID5 = 0xB0C0, 0xB0C5
ENABLED, GETCAPS, DAC_8BIT, LFB_ENABLED, NOCLEARMEM = 0x01, 0x02, 0x20, 0x40, 0x80
DEPTHS = (4, 8, 15, 16, 24, 32)
# The limits QEMU's standard VGA reports, so a BIOS filters its mode list the same way here.
MAX_XRES, MAX_YRES, MAX_BPP = 16000, 12000, 32


def bytes_per_line(width: int, bpp: int) -> int:
    """VRAM bytes one line of ``width`` pixels takes (4 bpp is planar: a nibble per pixel)."""
    return width // 2 if bpp == 4 else width * ((bpp + 7) // 8)


class BochsDispi(Device):
    """The DISPI registers, as ports (offset 0 index, 1 and 2 data) and as an indexed file for
    the PCI MMIO BAR."""

    name = "bochs-dispi"

    def __init__(self, vram_size: int, regs: VgaRegisters, memory: VgaMemory, clear=None):
        self.vram_size = vram_size
        self.regs = regs
        self.memory = memory
        self._clear = clear or (lambda start, length: None)
        self.index = 0
        self.id = ID5
        self.xres, self.yres, self.bpp = 640, 480, 8
        self.enable = 0
        self.bank = 0
        self.virt_width = 640
        self.x_offset = self.y_offset = 0

    # -- what the screen needs -------------------------------------------------------------------
    @property
    def enabled(self) -> bool:
        """The display shows VRAM through the DISPI layout rather than the VGA's CRTC."""
        return bool(self.enable & ENABLED)

    @property
    def line_offset(self) -> int:
        """Bytes from one line to the next in VRAM."""
        return bytes_per_line(max(self.virt_width, self.xres), self.bpp)

    @property
    def virt_height(self) -> int:
        """How many lines of the virtual width fit in VRAM (a 16-bit register)."""
        stride = self.line_offset
        return min(self.vram_size // stride, 0xFFFF) if stride else 0

    @property
    def start(self) -> int:
        """VRAM byte where the visible window's top-left pixel is."""
        x = self.x_offset // 2 if self.bpp == 4 else self.x_offset * ((self.bpp + 7) // 8)
        return self.y_offset * self.line_offset + x

    # -- the register file -----------------------------------------------------------------------
    def read_register(self, index: int) -> int:
        """The 16-bit value of DISPI register ``index`` (caller holds the lock)."""
        if self.enable & GETCAPS and index in (INDEX_XRES, INDEX_YRES, INDEX_BPP):
            return {INDEX_XRES: MAX_XRES, INDEX_YRES: MAX_YRES, INDEX_BPP: MAX_BPP}[index]
        if index == INDEX_ID:
            return self.id
        if index == INDEX_XRES:
            return self.xres
        if index == INDEX_YRES:
            return self.yres
        if index == INDEX_BPP:
            return self.bpp
        if index == INDEX_ENABLE:
            return self.enable
        if index == INDEX_BANK:
            return self.bank
        if index == INDEX_VIRT_WIDTH:
            return max(self.virt_width, self.xres)
        if index == INDEX_VIRT_HEIGHT:
            return self.virt_height
        if index == INDEX_X_OFFSET:
            return self.x_offset
        if index == INDEX_Y_OFFSET:
            return self.y_offset
        if index == INDEX_VIDEO_MEMORY_64K:
            return self.vram_size >> 16
        return 0

    def write_register(self, index: int, value: int) -> None:
        """Write DISPI register ``index`` (caller holds the lock). Out-of-range values are
        refused and the register keeps its value, so a guest that reads back (as SeaBIOS does
        for the bank) learns that the request failed."""
        value &= 0xFFFF
        if index == INDEX_ID:
            if ID0 <= value <= ID5:
                self.id = value
        elif index == INDEX_XRES:
            if 0 < value <= MAX_XRES:
                self.xres = value
        elif index == INDEX_YRES:
            if 0 < value <= MAX_YRES:
                self.yres = value
        elif index == INDEX_BPP:
            value = value or 8             # Bochs treats 0 as the 8-bit default
            if value in DEPTHS:
                self.bpp = value
        elif index == INDEX_ENABLE:
            self._write_enable(value)
        elif index == INDEX_BANK:
            if value * BANK_SIZE < self.vram_size:
                self.bank = value
        elif index == INDEX_VIRT_WIDTH:
            if 0 < value <= MAX_XRES and bytes_per_line(value, self.bpp) * self.yres <= self.vram_size:
                self.virt_width = value
        elif index == INDEX_X_OFFSET:
            self.x_offset = value
        elif index == INDEX_Y_OFFSET:
            self.y_offset = value
        # VIRT_HEIGHT and VIDEO_MEMORY_64K are derived and read-only.
        self._update_window()

    def _write_enable(self, value: int) -> None:
        rising = value & ENABLED and not self.enable & ENABLED
        self.enable = value & (ENABLED | GETCAPS | DAC_8BIT | LFB_ENABLED | NOCLEARMEM)
        self.regs.dac_8bit = bool(value & DAC_8BIT)
        if rising:
            # A mode set: the new mode starts with its own geometry at the top of VRAM.
            self.virt_width = self.xres
            self.x_offset = self.y_offset = 0
            self.bank = 0
            if not value & NOCLEARMEM:
                self._clear(0, min(self.line_offset * self.yres, self.vram_size))

    def _update_window(self) -> None:
        """Point the legacy window at the current bank (or give it back to the VGA)."""
        memory = self.memory
        if not self.enabled:
            memory.linear_bank, memory.planar_bank = None, 0
        elif self.bpp == 4:
            # Planar: the bank moves the plane offset; the VGA's latches and masks still apply.
            memory.linear_bank, memory.planar_bank = None, self.bank * BANK_SIZE
        else:
            memory.linear_bank, memory.planar_bank = self.bank * BANK_SIZE, 0

    # -- ports -----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """Offset 0 reads the index, 1 and 2 the selected register; a 32-bit read at the index
        port returns both (index in the low half)."""
        with self.regs.lock:
            if offset == 0:
                value = self.index
                if size == 4:
                    value |= self.read_register(self.index) << 16
                return value
            return self.read_register(self.index)

    def write(self, offset: int, size: int, value: int) -> None:
        """Offset 0 selects the register (a 32-bit write there also writes it), 1 and 2 write it.
        Byte accesses are taken as the whole 16-bit value with a zero high byte."""
        with self.regs.lock:
            if offset == 0:
                self.index = value & 0xFFFF
                if size == 4:
                    self.write_register(self.index, value >> 16)
            else:
                self.write_register(self.index, value)
