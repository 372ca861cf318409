"""A PCI function's 256-byte type-0 configuration header and its base address registers.

Layout and BAR semantics from the PCI Local Bus Specification 3.0, chapter 6: BARs are sized by
writing all ones and reading back the size mask; an I/O BAR has bit 0 set, a memory BAR encodes
its type (32/64-bit) and prefetchability in bits 1-3; the expansion-ROM BAR at 0x30 has its
enable in bit 0. Whether a BAR decodes at all is the Command register's I/O and Memory bits. What
is writable is a per-byte mask, so a guest's writes to read-only fields never change them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ..base import Device

VENDOR_ID, DEVICE_ID, COMMAND, STATUS, REVISION, PROG_IF = 0x00, 0x02, 0x04, 0x06, 0x08, 0x09
CACHE_LINE, LATENCY, HEADER_TYPE = 0x0C, 0x0D, 0x0E
BAR0, SUBSYSTEM_VENDOR, SUBSYSTEM_ID, ROM_BAR = 0x10, 0x2C, 0x2E, 0x30
INTERRUPT_LINE, INTERRUPT_PIN = 0x3C, 0x3D
CMD_IO, CMD_MEMORY, CMD_MASTER = 1, 2, 4
ROM_ENABLE = 1
CONFIG_SIZE = 256


@dataclass
class Bar:
    """One base address register: what it claims and the device that serves it."""

    index: int
    size: int            # a power of two
    kind: str            # "io", "mem" or "mem64"
    device: Device | None
    prefetch: bool = False
    name: str = ""

    @property
    def io(self) -> bool:
        return self.kind == "io"

    def low_bits(self) -> int:
        """The read-only type bits of the BAR's low dword."""
        if self.io:
            return 1
        return (4 if self.kind == "mem64" else 0) | (8 if self.prefetch else 0)


class PciFunction:
    """Configuration space of one PCI function. Subclasses add their own registers through
    ``writable`` masks and ``config_written``; BAR placement is reported to ``on_remap``
    (the host bridge maps the BAR's device onto the port or memory bus)."""

    name = "pci-function"

    def __init__(self, vendor: int, device: int, class_code: int, revision: int = 0,
                 header_type: int = 0, subsystem: tuple[int, int] = (0, 0), irq_pin: int = 0):
        self.config = bytearray(CONFIG_SIZE)
        self.wmask = bytearray(CONFIG_SIZE)
        self.bars: dict[int, Bar] = {}
        self.rom: bytes | None = None
        self.on_remap: Callable[["PciFunction"], None] = lambda function: None
        self._set(VENDOR_ID, 2, vendor)
        self._set(DEVICE_ID, 2, device)
        self._set(REVISION, 1, revision)
        self._set(PROG_IF, 3, class_code)
        self._set(HEADER_TYPE, 1, header_type)
        self._set(SUBSYSTEM_VENDOR, 2, subsystem[0])
        self._set(SUBSYSTEM_ID, 2, subsystem[1])
        self._set(INTERRUPT_PIN, 1, irq_pin)
        self.writable(COMMAND, 2, 0x0547)      # I/O, memory, master, parity, SERR, INTx disable
        self.writable(CACHE_LINE, 2, 0xFFFF)
        self.writable(INTERRUPT_LINE, 1, 0xFF)

    # -- set-up (by the device model) ------------------------------------------------------------
    def _set(self, offset: int, size: int, value: int) -> None:
        self.config[offset:offset + size] = value.to_bytes(size, "little")

    def set_config(self, offset: int, size: int, value: int) -> None:
        """Set a field's value as the device reports it (whatever its write mask)."""
        self._set(offset, size, value)

    def writable(self, offset: int, size: int, mask: int) -> None:
        """Let the guest change the bits ``mask`` of the field at ``offset``."""
        self.wmask[offset:offset + size] = mask.to_bytes(size, "little")

    def add_bar(self, index: int, size: int, kind: str, device: Device | None, prefetch: bool = False,
                name: str = "") -> Bar:
        """Declare BAR ``index`` (0-5; a 64-bit one also takes ``index + 1``)."""
        if size & (size - 1) or size < (4 if kind == "io" else 16):
            raise ValueError(f"BAR {index}: size {size:#x} is not a power of two of the minimum size")
        bar = Bar(index, size, kind, device, prefetch, name or f"{self.name}-bar{index}")
        self.bars[index] = bar
        offset = BAR0 + 4 * index
        self._set(offset, 4, bar.low_bits())
        self.writable(offset, 4, ~(size - 1) & 0xFFFFFFFF & ~(3 if bar.io else 0xF))
        if kind == "mem64":
            self.writable(offset + 4, 4, 0xFFFFFFFF)
        return bar

    def set_rom(self, data: bytes) -> None:
        """Give the function an expansion ROM (an option ROM the firmware copies and runs)."""
        size = 2048
        while size < len(data):
            size <<= 1
        self.rom = bytes(data) + bytes(size - len(data))
        self.writable(ROM_BAR, 4, (~(size - 1) & 0xFFFFF800) | ROM_ENABLE)

    # -- guest access ---------------------------------------------------------------------------
    def config_read(self, offset: int, size: int) -> int:
        """Read ``size`` bytes of configuration space (the host bridge keeps it in range)."""
        return int.from_bytes(self.config[offset:offset + size], "little")

    def config_write(self, offset: int, size: int, value: int) -> None:
        """Write through the per-byte masks; BAR or command changes remap the function."""
        old_map = self.mapping()
        for i in range(size):
            mask = self.wmask[offset + i]
            if mask:
                byte = (value >> (8 * i)) & 0xFF
                self.config[offset + i] = (self.config[offset + i] & ~mask) | (byte & mask)
        # Status has no writable bits here: its write-one-to-clear error bits are never set.
        self.config_written(offset, size, value)
        if self.mapping() != old_map:
            self.on_remap(self)

    def config_written(self, offset: int, size: int, value: int) -> None:
        """A device's own registers changed (after the masked write)."""

    # -- where the BARs decode ------------------------------------------------------------------
    @property
    def command(self) -> int:
        return self.config_read(COMMAND, 2)

    def bar_address(self, bar: Bar) -> int:
        """The address the guest programmed into ``bar`` (type bits removed)."""
        offset = BAR0 + 4 * bar.index
        value = self.config_read(offset, 4)
        if bar.kind == "mem64":
            value |= self.config_read(offset + 4, 4) << 32
        return value & ~(3 if bar.io else 0xF)

    def mapping(self) -> tuple:
        """(bar index, address) of every BAR that decodes now, and the ROM's address or None.
        A BAR decodes when its space is enabled in Command and it is placed (not 0, not left
        at its sizing value)."""
        cmd = self.command
        out = []
        for bar in self.bars.values():
            if not cmd & (CMD_IO if bar.io else CMD_MEMORY):
                continue
            addr = self.bar_address(bar)
            limit = 1 << 16 if bar.io else (1 << 64 if bar.kind == "mem64" else 1 << 32)
            if addr == 0 or addr + bar.size > limit or addr == (limit - bar.size):
                continue
            out.append((bar.index, addr))
        rom = self.config_read(ROM_BAR, 4)
        rom_at = rom & ~0x7FF if self.rom is not None and cmd & CMD_MEMORY and rom & ROM_ENABLE else None
        if rom_at is not None and (rom_at == 0 or rom_at + len(self.rom) > 1 << 32):
            rom_at = None
        return tuple(out), rom_at
