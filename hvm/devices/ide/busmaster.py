"""SFF-8038i bus-master IDE DMA: per channel a Command register (+0), a Status register (+2) and
the Physical Region Descriptor table pointer (+4), the secondary channel's at +8, together one
16-port I/O BAR.

A PRD is two little-endian dwords: the buffer's physical address (bit 0 ignored) and its byte
count in bits 15:1 (0 means 64 KiB), with bit 31 marking the table's last entry. The table is
dword aligned and may not cross a 64 KiB boundary (SFF-8038i), which bounds a walk at 8192
entries: a table running into that boundary without an end mark fails the transfer.

When the engine is started and its channel's device waits with a DMA transfer, the whole
transfer happens at once. Its end is reported as SFF-8038i's Status table describes: Interrupt
set and Active clear when table and transfer matched, both set when the table was longer,
both clear when it was shorter (no interrupt); a guest address outside RAM sets Error as well.
Interrupt is also set by every rising edge of the channel's interrupt, and at the end of a DMA
even under nIEN, for firmware that polls Status.
"""
from __future__ import annotations

import struct
from typing import Callable

from ...memory import GuestMemory, GuestMemoryError
from ..base import Device
from .channel import Channel, DmaRequest

CMD_START, CMD_TO_MEMORY = 0x01, 0x08
ST_ACTIVE, ST_ERROR, ST_INTERRUPT, ST_DRIVE0_DMA, ST_DRIVE1_DMA = 0x01, 0x02, 0x04, 0x20, 0x40
REG_COMMAND, REG_STATUS, REG_PRD = 0, 2, 4
CHANNEL_STRIDE, BAR_SIZE = 8, 16
PRD_END = 1 << 31
PRD_TABLE_SPAN = 0x10000

_PRD = struct.Struct("<II")


class BusMasterChannel:
    """One channel's bus-master registers and its DMA engine."""

    def __init__(self, channel: Channel, memory: GuestMemory, can_master: Callable[[], bool] = lambda: True):
        self.channel, self.memory, self.can_master = channel, memory, can_master
        self.command = 0
        self.status = 0
        self.prd = 0
        self._armed = False       # started and not yet used for a transfer
        self.transfers = self.written = 0   # DMA commands run, and bytes they took from memory
        channel.engine = self

    # -- registers -----------------------------------------------------------------------------
    def read_byte(self, reg: int) -> int:
        """Register byte ``reg`` (0-7) of this channel."""
        with self.channel.lock:
            if reg == REG_COMMAND:
                return self.command
            if reg == REG_STATUS:
                return self.status
            if REG_PRD <= reg < REG_PRD + 4:
                return self.prd >> (8 * (reg - REG_PRD)) & 0xFF
            return 0

    def write_byte(self, reg: int, value: int) -> None:
        """Write register byte ``reg``: Command starts or stops, Status bits 1-2 clear on one."""
        with self.channel.lock:
            if reg == REG_COMMAND:
                self._write_command(value)
            elif reg == REG_STATUS:
                kept = self.status & ~(ST_DRIVE0_DMA | ST_DRIVE1_DMA) & ~(value & (ST_ERROR | ST_INTERRUPT))
                self.status = kept | value & (ST_DRIVE0_DMA | ST_DRIVE1_DMA)
            elif REG_PRD <= reg < REG_PRD + 4:
                shift = 8 * (reg - REG_PRD)
                self.prd = (self.prd & ~(0xFF << shift) | value << shift) & 0xFFFFFFFC

    def _write_command(self, value: int) -> None:
        before, self.command = self.command, value & (CMD_START | CMD_TO_MEMORY)
        if value & CMD_START and not before & CMD_START:
            self.status |= ST_ACTIVE
            self._armed = True
            self.kick()
        elif before & CMD_START and not value & CMD_START:
            # Stopping loses all state (SFF-8038i); a device still waiting keeps waiting.
            self.status &= ~ST_ACTIVE
            self._armed = False

    # -- the engine ----------------------------------------------------------------------------
    def interrupted(self) -> None:
        """The channel's interrupt line rose."""
        self.status |= ST_INTERRUPT

    def kick(self) -> None:
        """Run the waiting transfer if the engine is started and may master the bus."""
        with self.channel.lock:
            if not self._armed or not self.can_master() or self.channel.pending is None:
                return
            request = self.channel.take_dma()
            self._armed = False
            outcome, exc = self._walk(request)
            self.transfers += 1
            self.written += 0 if request.to_memory else request.length
            if outcome == "short":
                self.status &= ~ST_ACTIVE
            elif outcome == "more":
                self.status |= ST_INTERRUPT
            else:
                error = ST_ERROR if outcome == "memory" else 0
                self.status = self.status & ~ST_ACTIVE | ST_INTERRUPT | error
            self.channel.dma_finished(request, outcome, exc)

    def _walk(self, request: DmaRequest) -> tuple[str, OSError | None]:
        entry, moved = self.prd, 0
        table_end = (self.prd | (PRD_TABLE_SPAN - 1)) + 1
        while entry + _PRD.size <= table_end:
            try:
                address, flags = _PRD.unpack(self.memory.read(entry, _PRD.size))
                entry += _PRD.size
                count = flags & 0xFFFE or 0x10000
                take = min(count, request.length - moved)
                address &= ~1
                if request.to_memory:
                    self.memory.write(address, request.read(moved, take))
                else:
                    request.write(moved, self.memory.read(address, take))
            except GuestMemoryError:
                return "memory", None
            except OSError as exc:
                return "device", exc
            moved += take
            if moved == request.length:
                return ("more" if take < count or not flags & PRD_END else "done"), None
            if flags & PRD_END:
                return "short", None
        return "memory", None


class BusMaster(Device):
    """The bus-master BAR: both channels' registers, accessed at any width."""

    name = "ide-busmaster"

    def __init__(self, channels: tuple[BusMasterChannel, ...]):
        self.channels = channels

    def read(self, offset: int, size: int) -> int:
        value = 0
        for i in range(size):
            reg = offset + i
            byte = 0xFF
            if reg < CHANNEL_STRIDE * len(self.channels):
                byte = self.channels[reg // CHANNEL_STRIDE].read_byte(reg % CHANNEL_STRIDE)
            value |= byte << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            reg = offset + i
            if reg < CHANNEL_STRIDE * len(self.channels):
                self.channels[reg // CHANNEL_STRIDE].write_byte(reg % CHANNEL_STRIDE, value >> (8 * i) & 0xFF)
