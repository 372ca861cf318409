"""The VGA's display memory as the CPU sees it through the legacy window 0xA0000-0xBFFFF.

Four 64 KiB planes live in the first 256 KiB of VRAM, *interleaved*: byte ``i`` of plane ``p`` is
``vram[4 * i + p]``. One plane offset therefore holds a 32-bit word with a byte per plane, which is
what the latches, set/reset and the bit mask operate on, and a chain-4 address ``a`` (plane
``a & 3``, plane offset ``a >> 2``) lands at ``vram[a]``: mode 13h and a Bochs VBE 8-bit mode see
the same linear bytes. Real chain-4 hardware keeps the plane offset at ``a & ~3`` and leaves three
quarters of each plane unused; the compact form loses only the (rare) trick of switching a chain-4
picture to unchained mode and finding it rearranged. The renderer reads 256-colour modes linearly
to match (see screen.py).

The CPU path, per the IBM VGA Technical Reference and FreeVGA ("Graphics Controller",
"Sequencer Memory Mode"):

- GR6 bits 3-2 choose which part of the 128 KiB window decodes (A0000 128K, A0000 64K, B0000 32K,
  B8000 32K); the miscellaneous output RAM-enable bit gates all CPU access;
- chain-4 (SR4 bit 3) picks the plane from address bits 1-0; odd/even (SR4 bit 2 clear for writes,
  GR5 bit 4 for reads) picks plane 0/2 or 1/3 by address bit 0, and GR6 bit 1 drops that bit from
  the plane offset so a character and its attribute share one offset. The odd/even page bit
  (misc bit 5) is not modelled: dropping A0 keeps the CPU's view aligned with the CRTC's
  word-mode fetch, which is what every BIOS relies on;
- every read loads the four latches; read mode 0 returns one plane (GR4), read mode 1 returns the
  colour-compare result (GR2 under the GR7 don't-care mask);
- writes go through write modes 0-3: rotate (GR3 bits 2-0), set/reset (GR0 with enable GR1),
  the logical function against the latches (GR3 bits 4-3), the bit mask (GR8), and reach the
  planes the map mask (SR2) enables.
"""
from __future__ import annotations

from .registers import MISC_RAM_ENABLE, VgaRegisters
from ..base import Device

WINDOW_BASE = 0xA0000
WINDOW_SIZE = 0x20000
BANK_SIZE = 0x10000           # the Bochs DISPI bank window, A0000-AFFFF
PLANE_SIZE = 0x10000
PLANES_SIZE = 4 * PLANE_SIZE  # the legacy VGA's 256 KiB at the start of VRAM

# GR6 memory map select: (first window offset, length).
MEMORY_MAPS = ((0x00000, 0x20000), (0x00000, 0x10000), (0x10000, 0x8000), (0x18000, 0x8000))

# A 4-bit plane set as a 32-bit mask with 0xFF in each selected plane's byte.
PLANE_BYTES = tuple(sum(0xFF << (8 * p) for p in range(4) if m >> p & 1) for m in range(16))
ALL = 0xFFFFFFFF


class VgaMemory(Device):
    """The legacy window as a bus device: offsets 0-0x1FFFF are 0xA0000-0xBFFFF."""

    name = "vga-memory"

    def __init__(self, vram, regs: VgaRegisters):
        self.vram = memoryview(vram)
        self.regs = regs
        self.latch = 0                      # the four latches, plane p in bits 8p+7..8p
        # Set by the Bochs DISPI when its mode is enabled: in packed-pixel depths the first 64 KiB
        # of the window is a plain bank into VRAM; in the planar depth the bank moves the plane
        # offset instead and the VGA pipeline stays in charge.
        self.linear_bank: int | None = None
        self.planar_bank = 0
        self._version = -1

    # -- decode of the registers that steer the pipeline -----------------------------------------
    def _decode(self) -> None:
        regs = self.regs
        seq, gc = regs.seq, regs.gc
        self._version = regs.memory_version
        self._enabled = bool(regs.misc & MISC_RAM_ENABLE)
        self._map_start, self._map_len = MEMORY_MAPS[gc[6] >> 2 & 3]
        self._chain4 = bool(seq[4] & 0x08)
        self._oddeven_write = not seq[4] & 0x04
        self._oddeven_read = bool(gc[5] & 0x10)
        self._chain_oddeven = bool(gc[6] & 0x02)
        self._map_mask = seq[2] & 0x0F
        self._read_map = gc[4] & 0x03
        self._write_mode = gc[5] & 0x03
        self._read_mode = gc[5] >> 3 & 1
        self._rotate = gc[3] & 0x07
        self._function = gc[3] >> 3 & 0x03
        self._set_reset = PLANE_BYTES[gc[0] & 0x0F]
        self._sr_enable = PLANE_BYTES[gc[1] & 0x0F]
        self._compare = PLANE_BYTES[gc[2] & 0x0F]
        self._care = PLANE_BYTES[gc[7] & 0x0F]
        self._bit_mask = gc[8]
        # The BIOS's text output and mode 13h drawing leave the pipeline at its identity: the
        # byte goes to every enabled plane unchanged, without touching the latches.
        self._plain = (self._write_mode == 0 and not self._sr_enable and not self._rotate
                       and not self._function and self._bit_mask == 0xFF)

    def _plane_offset(self, offset: int, write: bool):
        """(plane offset, planes or plane) for a window offset, or None where nothing decodes."""
        if self._version != self.regs.memory_version:
            self._decode()
        if not self._enabled:
            return None
        a = offset - self._map_start
        if not 0 <= a < self._map_len:
            return None
        if self._chain4:
            plane, off = a & 3, a >> 2
            sel = 1 << plane if write else plane
        elif self._oddeven_write if write else self._oddeven_read:
            off = a & ~1 if self._chain_oddeven else a
            sel = 0x5 << (a & 1) if write else (self._read_map & 2) | (a & 1)
        else:
            off, sel = a, 0x0F if write else self._read_map
        off = (off & (PLANE_SIZE - 1)) + self.planar_bank
        if 4 * off + 4 > len(self.vram):
            return None
        return off, sel

    # -- one byte --------------------------------------------------------------------------------
    def read_byte(self, offset: int) -> int:
        """The byte the CPU reads at window offset ``offset`` (caller holds the lock)."""
        bank = self.linear_bank
        if bank is not None and offset < BANK_SIZE:
            return self.vram[bank + offset] if bank + offset < len(self.vram) else 0xFF
        where = self._plane_offset(offset, False)
        if where is None:
            return 0xFF
        off, plane = where
        latch = int.from_bytes(self.vram[4 * off:4 * off + 4], "little")
        self.latch = latch
        if not self._read_mode:
            return latch >> (8 * plane) & 0xFF
        differ = (latch ^ self._compare) & self._care
        differ |= differ >> 16
        differ |= differ >> 8
        return ~differ & 0xFF

    def write_byte(self, offset: int, value: int) -> None:
        """The CPU writes ``value`` at window offset ``offset`` (caller holds the lock)."""
        bank = self.linear_bank
        if bank is not None and offset < BANK_SIZE:
            if bank + offset < len(self.vram):
                self.vram[bank + offset] = value & 0xFF
            return
        where = self._plane_offset(offset, True)
        if where is None:
            return
        off, planes = where
        planes &= self._map_mask
        if not planes:
            return
        base = 4 * off
        vram = self.vram
        if self._plain:
            value &= 0xFF
            for p in range(4):
                if planes >> p & 1:
                    vram[base + p] = value
            return
        data = self._pipeline(value & 0xFF)
        mask = PLANE_BYTES[planes]
        if mask != ALL:
            old = int.from_bytes(vram[base:base + 4], "little")
            data = (old & ~mask) | (data & mask)
        vram[base:base + 4] = data.to_bytes(4, "little")

    def _pipeline(self, value: int) -> int:
        """The 32-bit word write modes 0-3 produce from the CPU byte and the latches."""
        latch, mode = self.latch, self._write_mode
        if mode == 1:
            return latch
        if mode == 2:
            data, bit_mask = PLANE_BYTES[value & 0x0F], self._bit_mask
        else:
            r = self._rotate
            value = ((value >> r) | (value << (8 - r))) & 0xFF
            if mode == 0:
                data = (value * 0x01010101 & ~self._sr_enable) | (self._set_reset & self._sr_enable)
                bit_mask = self._bit_mask
            else:
                # Write mode 3: set/reset is the data, the rotated CPU byte ANDed with the bit
                # mask register is the bit mask.
                data, bit_mask = self._set_reset, value & self._bit_mask
        function = self._function
        if function == 1:
            data &= latch
        elif function == 2:
            data |= latch
        elif function == 3:
            data ^= latch
        mask = bit_mask * 0x01010101
        return (data & mask) | (latch & ~mask & ALL)

    # -- bus access ------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        """A CPU read of 1-8 bytes: byte reads, low address first, as an 8-bit ISA device sees it."""
        with self.regs.lock:
            bank = self.linear_bank
            if bank is not None and offset + size <= BANK_SIZE and bank + offset + size <= len(self.vram):
                return int.from_bytes(self.vram[bank + offset:bank + offset + size], "little")
            return sum(self.read_byte(offset + i) << (8 * i) for i in range(size))

    def write(self, offset: int, size: int, value: int) -> None:
        """A CPU write of 1-8 bytes, split into byte writes, low address first."""
        with self.regs.lock:
            bank = self.linear_bank
            if bank is not None and offset + size <= BANK_SIZE and bank + offset + size <= len(self.vram):
                self.vram[bank + offset:bank + offset + size] = value.to_bytes(size, "little")
                return
            for i in range(size):
                self.write_byte(offset + i, value >> (8 * i) & 0xFF)
