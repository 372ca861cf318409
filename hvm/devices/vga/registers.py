"""The VGA's register file: sequencer, graphics controller, attribute controller, CRT controller,
miscellaneous output, DAC and the input status registers, reached through ports 0x3C0-0x3CF and,
by the I/O address select bit of the miscellaneous output register, 0x3D4/0x3D5/0x3DA (colour) or
0x3B4/0x3B5/0x3BA (monochrome).

Register layout and read-back behaviour follow the IBM VGA Technical Reference and the FreeVGA
register pages. Bits a register does not implement read back as zero (the write masks below), so
a guest probing for an SVGA extension by writing and reading back sees plain VGA.
"""
from __future__ import annotations

import threading

from ..base import Device

# Port numbers (IBM VGA Technical Reference, "Register addresses").
ATTR_INDEX, ATTR_READ = 0x3C0, 0x3C1
STATUS0, MISC_WRITE = 0x3C2, 0x3C2
SUBSYS_ENABLE = 0x3C3
SEQ_INDEX, SEQ_DATA = 0x3C4, 0x3C5
PEL_MASK, DAC_READ_INDEX, DAC_STATE, DAC_WRITE_INDEX, DAC_DATA = 0x3C6, 0x3C7, 0x3C7, 0x3C8, 0x3C9
FEATURE_READ, MISC_READ = 0x3CA, 0x3CC
GC_INDEX, GC_DATA = 0x3CE, 0x3CF
CRTC_MONO, CRTC_COLOR = 0x3B4, 0x3D4
STATUS1_MONO, STATUS1_COLOR = 0x3BA, 0x3DA

# Implemented bits per register; the rest read as zero.
SEQ_MASK = (0x03, 0x3D, 0x0F, 0x3F, 0x0E)
GC_MASK = (0x0F, 0x0F, 0x0F, 0x1F, 0x03, 0x7B, 0x0F, 0x0F, 0xFF)
CRTC_COUNT = 0x19
ATTR_COUNT = 0x15
ATTR_MASK = (0x3F,) * 16 + (0xEF, 0xFF, 0x0F, 0x0F, 0x0F)

MISC_IO_COLOR = 0x01          # CRTC and status 1 at 0x3Dx rather than 0x3Bx
MISC_RAM_ENABLE = 0x02        # the CPU may reach display memory
ATTR_PAS = 0x20               # palette address source: 0 blanks the display
CRTC_PROTECT = 0x80           # CR11 bit 7 write-protects CR00-CR07 (except CR07 bit 4)

# Input status 1 (FreeVGA "Input Status #1"): bit 0 is set while the beam is outside the display
# area, bit 3 during vertical retrace. With no real beam, successive reads walk through a fixed
# cycle so that every polling loop a driver might write ("wait for retrace to end, then to start")
# terminates, deterministically.
STATUS1_CYCLE = 16
STATUS1_RETRACE_FROM = 12


class VgaRegisters:
    """All VGA register state and the byte-wide port protocol in front of it."""

    def __init__(self) -> None:
        # One lock for the whole card: an index/data pair, the attribute flip-flop and the DAC's
        # three-step cycle must not interleave between vCPUs, and the memory pipeline reads these.
        self.lock = threading.Lock()
        self.misc = 0
        self.feature = 0
        self.subsys_enable = 0
        self.seq_index = 0
        self.seq = bytearray(8)
        self.gc_index = 0
        self.gc = bytearray(16)
        self.crtc_index = 0
        self.crtc = bytearray(64)
        self.attr_index = 0                 # includes the PAS bit (0x20)
        self.attr = bytearray(32)
        self.attr_flipflop = False          # False: the next 0x3C0 write is an index
        self.pel_mask = 0xFF
        self.dac = bytearray(768)           # 256 x (red, green, blue), 6 bits each unless dac_8bit
        self.dac_8bit = False               # set through the Bochs DISPI ENABLE register
        self.dac_read_index = 0
        self.dac_write_index = 0
        self.dac_step = 0                   # which of red/green/blue the next data access is
        self.dac_reading = False
        self._dac_latch = bytearray(3)
        self.status_reads = 0
        # Bumped on every write that changes how display memory is addressed, so the memory
        # pipeline re-derives its decode only when something changed.
        self.memory_version = 0

    # -- derived state ---------------------------------------------------------------------------
    @property
    def crtc_base(self) -> int:
        """0x3D4 or 0x3B4: where the CRTC (and status 1, +6) decode now."""
        return CRTC_COLOR if self.misc & MISC_IO_COLOR else CRTC_MONO

    @property
    def blanked(self) -> bool:
        """The display shows nothing: palette address source cleared or sequencer screen off."""
        return not self.attr_index & ATTR_PAS or bool(self.seq[1] & 0x20)

    def dac_rgb(self, index: int) -> tuple[int, int, int]:
        """DAC entry ``index`` as 8-bit red, green, blue."""
        r, g, b = self.dac[index * 3:index * 3 + 3]
        if self.dac_8bit:
            return r, g, b
        # 6-bit to 8-bit with the top bits replicated, so 63 becomes 255, not 252.
        return (r << 2 | r >> 4), (g << 2 | g >> 4), (b << 2 | b >> 4)

    def palette_rgb(self) -> bytes:
        """The whole DAC as 768 bytes of 8-bit RGB (a Pillow palette)."""
        if self.dac_8bit:
            return bytes(self.dac)
        return bytes(v << 2 | v >> 4 for v in self.dac)

    def attr_to_dac(self, color: int) -> int:
        """A 4-bit colour through colour plane enable, the palette registers and the colour
        select register to the 8-bit DAC index (IBM VGA Technical Reference, attribute
        controller; FreeVGA "Attribute Mode Control" bit 7 and "Color Select")."""
        a = self.attr
        value = a[color & a[0x12] & 0x0F]
        if a[0x10] & 0x80:                  # P54S: bits 5-4 come from the colour select register
            value = (value & 0x0F) | (a[0x14] & 0x03) << 4
        return ((value & 0x3F) | (a[0x14] & 0x0C) << 4) & self.pel_mask

    # -- port protocol ---------------------------------------------------------------------------
    def read_port(self, port: int) -> int:
        """One byte from VGA port ``port`` (caller holds the lock)."""
        if 0x3C0 <= port <= 0x3CF:
            return self._read_3cx(port)
        base = self.crtc_base
        if port == base:
            return self.crtc_index
        if port == base + 1:
            return self.crtc[self.crtc_index] if self.crtc_index < CRTC_COUNT else 0
        if port == base + 6:
            return self._read_status1()
        return 0xFF

    def write_port(self, port: int, value: int) -> None:
        """One byte to VGA port ``port`` (caller holds the lock)."""
        value &= 0xFF
        if 0x3C0 <= port <= 0x3CF:
            self._write_3cx(port, value)
            return
        base = self.crtc_base
        if port == base:
            self.crtc_index = value & 0x3F
        elif port == base + 1:
            self._write_crtc(self.crtc_index, value)
        elif port == base + 6:
            self.feature = value & 0x03

    def _read_3cx(self, port: int) -> int:
        if port == ATTR_INDEX:
            return self.attr_index
        if port == ATTR_READ:
            i = self.attr_index & 0x1F
            return self.attr[i] if i < ATTR_COUNT else 0
        if port == STATUS0:
            return 0x00
        if port == SUBSYS_ENABLE:
            return self.subsys_enable
        if port == SEQ_INDEX:
            return self.seq_index
        if port == SEQ_DATA:
            return self.seq[self.seq_index] if self.seq_index < len(SEQ_MASK) else 0
        if port == PEL_MASK:
            return self.pel_mask
        if port == DAC_STATE:
            return 0x03 if self.dac_reading else 0x00
        if port == DAC_WRITE_INDEX:
            return self.dac_write_index
        if port == DAC_DATA:
            return self._read_dac()
        if port == FEATURE_READ:
            return self.feature
        if port == MISC_READ:
            return self.misc
        if port == GC_INDEX:
            return self.gc_index
        if port == GC_DATA:
            return self.gc[self.gc_index] if self.gc_index < len(GC_MASK) else 0
        return 0xFF

    def _write_3cx(self, port: int, value: int) -> None:
        if port == ATTR_INDEX:
            self._write_attr(value)
        elif port == MISC_WRITE:
            self.misc = value
            self.memory_version += 1
        elif port == SUBSYS_ENABLE:
            self.subsys_enable = value & 0x01
        elif port == SEQ_INDEX:
            self.seq_index = value & 0x07
        elif port == SEQ_DATA:
            if self.seq_index < len(SEQ_MASK):
                self.seq[self.seq_index] = value & SEQ_MASK[self.seq_index]
                self.memory_version += 1
        elif port == PEL_MASK:
            self.pel_mask = value
        elif port == DAC_READ_INDEX:
            self.dac_read_index, self.dac_step, self.dac_reading = value, 0, True
        elif port == DAC_WRITE_INDEX:
            self.dac_write_index, self.dac_step, self.dac_reading = value, 0, False
        elif port == DAC_DATA:
            self._write_dac(value)
        elif port == GC_INDEX:
            self.gc_index = value & 0x0F
        elif port == GC_DATA:
            if self.gc_index < len(GC_MASK):
                self.gc[self.gc_index] = value & GC_MASK[self.gc_index]
                self.memory_version += 1
        # 0x3C1 is read-only on the VGA; 0x3CA/0x3CC are the read side of registers written
        # elsewhere; 0x3CB and 0x3CD are not decoded.

    def _write_attr(self, value: int) -> None:
        # 0x3C0 alternates between index and data; reading input status 1 resets it to index.
        # Palette registers are accepted whatever the PAS bit says: the IBM reference expects
        # software to clear PAS first, but the BIOSes and drivers in the wild do, so being
        # lenient breaks nobody.
        if not self.attr_flipflop:
            self.attr_index = value & 0x3F
        else:
            i = self.attr_index & 0x1F
            if i < ATTR_COUNT:
                self.attr[i] = value & ATTR_MASK[i]
        self.attr_flipflop = not self.attr_flipflop

    def _write_crtc(self, index: int, value: int) -> None:
        if index >= CRTC_COUNT:
            return
        if self.crtc[0x11] & CRTC_PROTECT and index <= 0x07:
            # Write protection exists so old software that programs CGA timings cannot upset a
            # VGA monitor; the line compare bit in CR07 stays writable (FreeVGA, CR11 bit 7).
            if index == 0x07:
                self.crtc[7] = (self.crtc[7] & ~0x10) | (value & 0x10)
            return
        self.crtc[index] = value

    def _read_status1(self) -> int:
        self.attr_flipflop = False
        phase = self.status_reads % STATUS1_CYCLE
        self.status_reads += 1
        retrace = phase >= STATUS1_RETRACE_FROM
        return (0x09 if retrace else phase & 0x01)

    def _read_dac(self) -> int:
        i = self.dac_read_index
        value = self.dac[i * 3 + self.dac_step]
        self.dac_step += 1
        if self.dac_step == 3:
            self.dac_step, self.dac_read_index = 0, (i + 1) & 0xFF
        return value

    def _write_dac(self, value: int) -> None:
        # The three components are latched and the entry is updated as a whole after the blue
        # one, as the IBM reference describes; a half-written entry never shows.
        self._dac_latch[self.dac_step] = value if self.dac_8bit else value & 0x3F
        self.dac_step += 1
        if self.dac_step == 3:
            i = self.dac_write_index
            self.dac[i * 3:i * 3 + 3] = self._dac_latch
            self.dac_step, self.dac_write_index = 0, (i + 1) & 0xFF


class VgaPorts(Device):
    """A range of VGA ports as a bus device: offsets are relative to ``base``.

    A 16-bit OUT to an index port writes the index and then the data port (the idiom
    ``outw(0x3C4, value << 8 | index)``), so every access is split into bytes, low address
    first, as the ISA bus does for an 8-bit device."""

    name = "vga"

    def __init__(self, regs: VgaRegisters, base: int):
        self.regs, self.base = regs, base

    def read(self, offset: int, size: int) -> int:
        """Bytes from consecutive ports, little-endian."""
        regs = self.regs
        with regs.lock:
            return sum(regs.read_port(self.base + offset + i) << (8 * i) for i in range(size))

    def write(self, offset: int, size: int, value: int) -> None:
        """Bytes to consecutive ports, low byte first."""
        regs = self.regs
        with regs.lock:
            for i in range(size):
                regs.write_port(self.base + offset + i, value >> (8 * i))
