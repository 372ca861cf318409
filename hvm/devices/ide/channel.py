"""One IDE channel (ATA/ATAPI-6 chapters 5, 7 and 9): the command block registers (0x1F0-0x1F7 or
0x170-0x177), the control block register (Device Control / Alternate Status at 0x3F6 or 0x376),
two device positions, PIO data transfers through the Data register, and the channel's interrupt.

Register files: both devices latch every command-block and Device Control write (ATA/ATAPI-6),
each keeping the previous value of the 48-bit registers for HOB reads (48-bit Address feature
set); the device named by the DEV bit answers reads and executes commands. With one device present and the other
selected, Status and Error read 0 (what libata's probe takes as "no device": an ATA signature
with status 0 is discarded, and a polled IDENTIFY that sees status 0 ends with "no device") and
commands are ignored, as QEMU behaves; the absent position still latches writes and takes the
reset signature, so SeaBIOS's register echo and post-reset checks finish at once.

With no device at all the channel reads as a floating bus with the pull-down on DD7 that
ATA/ATAPI-6 requires of hosts: 0x7F on every register, BSY clear (Linux's probe takes
that as "ready, nobody there"; 0xFF would read as BSY and be waited for). QEMU reads 0 instead.

Transfers run synchronously in the accessing vCPU's thread; one lock per channel serialises the
vCPUs and the bus-master engine.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Callable, Protocol

from ...irq import IrqLine
from ..base import Device

# Status register.
BSY, DRDY, DF, DSC, DRQ, ERR = 0x80, 0x40, 0x20, 0x10, 0x08, 0x01
# DSC is obsolete since ATA-4 but drivers still test it; the seek is always complete.
READY = DRDY | DSC
# Error register.
ICRC, UNC, MC, IDNF, MCR, ABRT, TK0NF, AMNF = 0x80, 0x40, 0x20, 0x10, 0x08, 0x04, 0x02, 0x01
# Device Control register.
NIEN, SRST, HOB = 0x02, 0x04, 0x80
# Device register.
LBA, DEV = 0x40, 0x10
# Command block offsets.
DATA, ERROR, FEATURE, COUNT, LBA_LOW, LBA_MID, LBA_HIGH, DEVICE, STATUS, COMMAND = (
    0, 1, 1, 2, 3, 4, 5, 6, 7, 7)
COMMAND_BLOCK_LENGTH, CONTROL_BLOCK_LENGTH = 8, 1

DEVICE_RESET, EXECUTE_DIAGNOSTIC = 0x08, 0x90
# Diagnostic code "device 0 passed, device 1 passed or not present" (EXECUTE DEVICE DIAGNOSTIC).
DIAGNOSTIC_PASSED = 0x01
FLOATING = 0x7F          # one register of a channel with no device: DD7 pulled down
FLOATING_DATA = 0xFF7F   # the 16-bit Data register of that channel

_TASK_FILE = ("feature", "count", "lba_low", "lba_mid", "lba_high")


class DeviceModel(Protocol):
    """What a device (ATA disk, ATAPI drive) provides to the channel it sits on."""

    packet: bool   # implements the PACKET command feature set
    lock: threading.RLock   # the channel's lock, handed over when the model is plugged in

    def reset(self, drive: "Drive") -> None:
        """Put the signature, diagnostic code and post-reset status in ``drive``'s registers."""

    def execute(self, drive: "Drive", command: int) -> None:
        """Run ``command`` with the parameters in ``drive``'s registers."""


@dataclass
class DmaRequest:
    """A DMA data transfer a device waits to do, moved by the bus-master engine when started."""

    drive: "Drive"
    to_memory: bool                                    # data-in (device to host memory)
    length: int                                        # bytes, > 0
    read: Callable[[int, int], bytes] | None           # data-in: bytes at (offset, count)
    write: Callable[[int, bytes], None] | None         # data-out: store bytes at offset
    done: Callable[[], None]                           # the whole length moved
    failed: Callable[[OSError | None], None]           # guest memory fault (None) or host I/O error


class Drive:
    """One device position of a channel: its register file, its pending interrupt and the PIO
    transfer in progress. ``model`` is None when no device sits here."""

    def __init__(self, channel: "Channel", unit: int, model: DeviceModel | None):
        self.channel, self.unit, self.model = channel, unit, model
        self.feature = self.count = self.lba_low = self.lba_mid = self.lba_high = 0
        self.hob_feature = self.hob_count = self.hob_lba_low = self.hob_lba_mid = self.hob_lba_high = 0
        self.device = 0
        self.status = 0
        self.error = 0
        self.intrq = False
        self._data = bytearray()          # the DRQ data block being transferred
        self._pos = 0                     # data-in: bytes the host has read of it
        self._expect = 0                  # data-out: bytes the block will have
        self._pio: str | None = None      # "in" (device to host) or "out", while DRQ is for PIO
        self._then: Callable | None = None

    @property
    def present(self) -> bool:
        """A device sits at this position."""
        return self.model is not None

    # -- addressing helpers for device models ---------------------------------------------------
    def lba28(self) -> int:
        """The 28-bit LBA in LBA Low/Mid/High and Device bits 3:0."""
        return (self.device & 0x0F) << 24 | self.lba_high << 16 | self.lba_mid << 8 | self.lba_low

    def lba48(self) -> int:
        """The 48-bit LBA: the previous (HOB) register contents are bits 47:24."""
        return (self.hob_lba_high << 40 | self.hob_lba_mid << 32 | self.hob_lba_low << 24
                | self.lba_high << 16 | self.lba_mid << 8 | self.lba_low)

    def count48(self) -> int:
        """The 16-bit sector count of a 48-bit command (0 meaning 65536 is the caller's)."""
        return self.hob_count << 8 | self.count

    def set_signature(self, packet: bool) -> None:
        """The device signature: what tells a host an ATA from a packet device."""
        self.count = self.lba_low = 1
        self.lba_mid, self.lba_high = (0x14, 0xEB) if packet else (0, 0)
        self.device &= DEV

    def hardware_reset_result(self) -> int:
        """IDENTIFY word 93: how the devices of this channel came out of a hardware reset."""
        other_present = self.channel.drives[1 - self.unit].present
        # Bit 14 shall be one; bit 13: an 80-conductor cable; device number set by jumper.
        word = 0x4000 | 0x2000
        if self.unit == 0:
            word |= 0x0001 | 0x0002 | 0x0008 | (0x0030 if other_present else 0)  # passed, PDIAG-/DASP- seen
        else:
            word |= 0x0100 | 0x0200 | 0x0800      # this device asserted PDIAG-
        return word

    # -- data transfer protocols ----------------------------------------------------------------
    def pio_in(self, data: bytes, then: Callable[[], None] | None = None, irq: bool = True) -> None:
        """Offer one DRQ data block to the host; ``then`` runs once it has read it all, and with
        no ``then`` the command completes without a further interrupt (PIO data-in)."""
        self._data, self._pos, self._pio, self._then = bytearray(data), 0, "in", then
        self.status = READY | DRQ
        if irq:
            self.interrupt()

    def pio_out(self, length: int, then: Callable[[bytes], None], irq: bool = False) -> None:
        """Ask the host for ``length`` bytes; ``then`` gets them when all have arrived."""
        self._data, self._expect, self._pio, self._then = bytearray(), length, "out", then
        self.status = READY | DRQ
        if irq:
            self.interrupt()

    def dma(self, to_memory: bool, length: int, done: Callable[[], None],
            failed: Callable[[OSError | None], None], read: Callable[[int, int], bytes] | None = None,
            write: Callable[[int, bytes], None] | None = None) -> None:
        """Wait for the bus-master engine to move ``length`` bytes (DMA protocol)."""
        self._stop_pio()
        self.status = READY | DRQ
        self.channel.request_dma(DmaRequest(self, to_memory, length, read, write, done, failed))

    def complete(self, status: int = READY) -> None:
        """End the command successfully and interrupt."""
        self._stop_pio()
        self.status = status
        self.interrupt()

    def abort(self, error: int = ABRT) -> None:
        """End the command with ERR set and ``error`` in the Error register, and interrupt."""
        self._stop_pio()
        self.error = error
        self.status = READY | ERR
        self.interrupt()

    def idle(self) -> None:
        """End a data transfer without an interrupt."""
        self._stop_pio()
        self.status = READY

    def interrupt(self) -> None:
        """Make an interrupt pending (INTRQ, once this device is selected and nIEN is clear)."""
        self.intrq = True
        self.channel.update_irq()

    def cancel(self) -> None:
        """Drop whatever this device was doing (reset)."""
        self._stop_pio()
        self.intrq = False
        self.channel.drop_dma(self)

    def _stop_pio(self) -> None:
        self._data, self._pos, self._expect, self._pio, self._then = bytearray(), 0, 0, None, None

    # -- the Data register ---------------------------------------------------------------------
    # A run of accesses (REP INSW/OUTSW) is served up to the end of the DRQ block at most: what
    # follows a block's end (the next block, the command's end, an interrupt) happens once, as
    # after the last of that many single accesses, and the caller asks again for the rest.
    def take_in(self, size: int, count: int) -> tuple[bytes, bool]:
        """The next ``count`` ``size``-byte reads of a PIO data-in block, or as many as are left
        of it (a short last one padded with zeros); True when they end the block, after which
        ``end_block_in`` must run. Outside a data-in block every read is 0."""
        if self._pio != "in":
            return bytes(size * count), False
        # At least one: an empty block (no data at all) ends at the next read.
        n = max(1, min(count, -(-(len(self._data) - self._pos) // size)))
        chunk = bytes(self._data[self._pos:self._pos + n * size]).ljust(n * size, b"\0")
        self._pos += n * size
        return chunk, self._pos >= len(self._data)

    def end_block_in(self) -> None:
        """The host has read the whole data-in block: clear DRQ and run what follows."""
        then = self._then
        self._stop_pio()
        self.status = READY
        if then is not None:
            then()

    def read_data(self, size: int) -> int:
        """The next ``size`` bytes of a PIO data-in block; its last one ends the block."""
        chunk, ended = self.take_in(size, 1)
        if ended:
            self.end_block_in()
        return int.from_bytes(chunk, "little")

    def give_out(self, size: int, data: bytes) -> tuple[int, bool]:
        """Take the ``size``-byte elements of ``data`` into a PIO data-out block, up to the one
        that completes it (bytes past the block's length are dropped); returns how many were
        taken and True when the block is complete, after which ``end_block_out`` must run.
        Outside a data-out block every write is taken and ignored."""
        count = len(data) // size
        if self._pio != "out":
            return count, False
        need = self._expect - len(self._data)
        n = max(1, min(count, -(-need // size)))
        self._data += data[:min(n * size, need)]
        return n, len(self._data) >= self._expect

    def end_block_out(self) -> None:
        """The host has written the whole data-out block: clear DRQ and hand it over."""
        then, data = self._then, bytes(self._data)
        self._stop_pio()
        self.status = READY
        then(data)

    def write_data(self, size: int, value: int) -> None:
        """Take ``size`` bytes of a PIO data-out block; its last one hands the block over."""
        _, ended = self.give_out(size, value.to_bytes(size, "little"))
        if ended:
            self.end_block_out()


class Channel:
    """An IDE channel with up to two devices and the interrupt line they share."""

    def __init__(self, irq: IrqLine, master: DeviceModel | None = None, slave: DeviceModel | None = None,
                 name: str = "ide"):
        self.irq = irq
        self.name = name
        self.lock = threading.RLock()
        self.drives = (Drive(self, 0, master), Drive(self, 1, slave))
        self.selected = 0
        self.control = 0
        self.engine = None                  # the bus-master engine, when the controller has one
        self.pending: DmaRequest | None = None
        self._line = False
        self.command_block = CommandBlock(self)
        self.control_block = ControlBlock(self)
        for drive in self.drives:
            if drive.present:
                drive.model.lock = self.lock
                drive.model.reset(drive)

    @property
    def empty(self) -> bool:
        """No device on this channel at all."""
        return not (self.drives[0].present or self.drives[1].present)

    @property
    def current(self) -> Drive:
        """The position the DEV bit selects."""
        return self.drives[self.selected]

    # -- interrupt -----------------------------------------------------------------------------
    def update_irq(self) -> None:
        """INTRQ follows the selected device's pending interrupt unless nIEN is set."""
        drive = self.current
        level = drive.present and drive.intrq and not self.control & NIEN
        if level and not self._line and self.engine is not None:
            self.engine.interrupted()
        self._line = level
        self.irq.set_level(level)

    # -- DMA hand-off to the bus-master engine -------------------------------------------------
    def request_dma(self, request: DmaRequest) -> None:
        """A device waits for the engine; a started engine moves the data before this returns."""
        self.pending = request
        if self.engine is not None:
            self.engine.kick()

    def take_dma(self) -> DmaRequest | None:
        """The waiting transfer, handed to the engine."""
        request, self.pending = self.pending, None
        return request

    def drop_dma(self, drive: Drive) -> None:
        """Forget ``drive``'s waiting transfer (reset)."""
        if self.pending is not None and self.pending.drive is drive:
            self.pending = None

    def dma_finished(self, request: DmaRequest, outcome: str, exc: OSError | None = None) -> None:
        """The engine's verdict: "done"/"more" (all moved), "short" (the PRD table ended first),
        "memory" (a guest address outside RAM) or "device" (the image failed)."""
        if outcome in ("done", "more"):
            request.done()
        elif outcome == "short":
            # SFF-8038i: the table was smaller than the transfer; the device stops without an
            # interrupt and the driver sees Interrupt and Active both clear.
            request.drive.idle()
        else:
            request.failed(exc)

    # -- register access (called by the port devices) -----------------------------------------
    def read_register(self, offset: int) -> int:
        """A guest read of command block register ``offset`` (1-7); Status clears INTRQ."""
        if not 1 <= offset <= 7:
            return 0xFF
        with self.lock:
            if self.empty:
                return FLOATING
            drive = self.current
            if offset == STATUS:
                if not drive.present:
                    return 0
                drive.intrq = False
                self.update_irq()
                return drive.status
            if offset == ERROR:
                return drive.error if drive.present else 0
            if offset == DEVICE:
                return drive.device
            name = _TASK_FILE[offset - 1]
            return getattr(drive, ("hob_" if self.control & HOB else "") + name)

    def write_register(self, offset: int, value: int) -> None:
        """A guest write of command block register ``offset`` (1-7)."""
        if not 1 <= offset <= 7:
            return
        with self.lock:
            self.control &= ~HOB      # any command block write clears HOB
            if offset == COMMAND:
                self._command(value)
            elif offset == DEVICE:
                for drive in self.drives:
                    drive.device = value
                self.selected = value >> 4 & 1
                self.update_irq()
            else:
                name = _TASK_FILE[offset - 1]
                for drive in self.drives:
                    setattr(drive, "hob_" + name, getattr(drive, name))
                    setattr(drive, name, value)

    def read_alt_status(self) -> int:
        """Alternate Status: Status without clearing the interrupt."""
        with self.lock:
            if self.empty:
                return FLOATING
            drive = self.current
            return drive.status if drive.present else 0

    def write_control(self, value: int) -> None:
        """Device Control: nIEN, SRST (reset on its falling edge) and HOB."""
        with self.lock:
            before, self.control = self.control, value & (HOB | SRST | NIEN)
            if value & SRST and not before & SRST:
                self._reset_begin()
            elif before & SRST and not value & SRST:
                self._reset_end()
            self.update_irq()

    def read_data(self, size: int) -> int:
        """A 16- or 32-bit read of the Data register."""
        with self.lock:
            if self.empty:
                return FLOATING_DATA if size == 2 else FLOATING_DATA * 0x10001
            drive = self.current
            if not drive.present:
                return 0
            try:
                return drive.read_data(size)
            except OSError:
                drive.abort(ABRT)     # the next block's image read failed unexpectedly
                return 0

    def write_data(self, size: int, value: int) -> None:
        """A 16- or 32-bit write of the Data register."""
        with self.lock:
            drive = self.current
            if drive.present:
                try:
                    drive.write_data(size, value)
                except OSError:
                    drive.abort(ABRT)

    def read_data_string(self, size: int, count: int) -> bytes:
        """Up to ``count`` 16- or 32-bit reads of the Data register at once (REP INSW/INSD):
        the rest of the current data block at most, with exactly the effects of as many
        single reads (``read_data``)."""
        with self.lock:
            if self.empty:
                return FLOATING_DATA.to_bytes(2, "little") * (size // 2 * count)
            drive = self.current
            if not drive.present:
                return bytes(size * count)
            chunk, ended = drive.take_in(size, count)
            if ended:
                try:
                    drive.end_block_in()
                except OSError:
                    drive.abort(ABRT)
                    chunk = chunk[:-size] + bytes(size)   # the read that ended the block gets 0
            return chunk

    def write_data_string(self, size: int, data: bytes) -> int:
        """16- or 32-bit writes of the Data register at once (REP OUTSW/OUTSD), up to the one
        that completes the current data block; returns how many were taken. The effects are
        those of as many single writes (``write_data``)."""
        with self.lock:
            drive = self.current
            if not drive.present:
                return len(data) // size
            taken, ended = drive.give_out(size, data)
            if ended:
                try:
                    drive.end_block_out()
                except OSError:
                    drive.abort(ABRT)
            return taken

    # -- commands and resets -------------------------------------------------------------------
    def _command(self, command: int) -> None:
        drive = self.current
        if self.control & SRST or not drive.present:
            return
        # Only DEVICE RESET may interrupt a packet device that is busy or transferring;
        # anything else written then is ignored, as the host may not write the Command register.
        if drive.status & (BSY | DRQ) and not (command == DEVICE_RESET and drive.model.packet):
            return
        drive.intrq = False
        drive.error = 0
        if command == EXECUTE_DIAGNOSTIC:
            self._diagnose()
        else:
            try:
                drive.model.execute(drive, command)
            except OSError:
                drive.abort(ABRT)     # the host's image failed in a way the model did not expect
        self.update_irq()

    def _diagnose(self) -> None:
        """EXECUTE DEVICE DIAGNOSTIC runs in both devices, whichever was selected; each ends
        with an interrupt pending so the selected one shows it."""
        for drive in self.drives:
            drive.cancel()
            self._after_reset(drive)
            drive.intrq = drive.present

    def _reset_begin(self) -> None:
        for drive in self.drives:
            drive.cancel()
            if drive.present:
                drive.status = BSY

    def _reset_end(self) -> None:
        # After a software reset device 0 is selected (the Device register is cleared).
        self.selected = 0
        for drive in self.drives:
            drive.device = 0
            self._after_reset(drive)

    def _after_reset(self, drive: Drive) -> None:
        if drive.present:
            drive.model.reset(drive)
        else:
            # The absent position's own registers: count/LBA low 1 as after any reset, and
            # neither an ATA nor a packet signature.
            drive.count = drive.lba_low = 1
            drive.lba_mid = drive.lba_high = 0xFF


class CommandBlock(Device):
    """The eight command block registers; the 16-bit Data register also takes 32-bit accesses
    (two words at once, as ``insl``/``outsl`` do)."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.name = channel.name

    def read(self, offset: int, size: int) -> int:
        if offset == DATA and size in (2, 4):
            return self.channel.read_data(size)
        value = 0
        for i in range(size):
            value |= self.channel.read_register(offset + i) << (8 * i)
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == DATA and size in (2, 4):
            self.channel.write_data(size, value & ((1 << (8 * size)) - 1))
            return
        for i in range(size):
            self.channel.write_register(offset + i, value >> (8 * i) & 0xFF)

    def read_string(self, offset: int, size: int, count: int) -> bytes:
        if offset == DATA and size in (2, 4):
            return self.channel.read_data_string(size, count)
        return super().read_string(offset, size, count)

    def write_string(self, offset: int, size: int, data: bytes) -> int:
        if offset == DATA and size in (2, 4):
            return self.channel.write_data_string(size, data)
        return super().write_string(offset, size, data)


class ControlBlock(Device):
    """Device Control (write) / Alternate Status (read): one port; the next one (0x3F7) is the
    floppy controller's, so bytes past it read as an empty bus."""

    def __init__(self, channel: Channel):
        self.channel = channel
        self.name = channel.name + "-control"

    def read(self, offset: int, size: int) -> int:
        if offset:
            return (1 << (8 * size)) - 1
        return self.channel.read_alt_status() | ((1 << (8 * size)) - 256)

    def write(self, offset: int, size: int, value: int) -> None:
        if offset == 0:
            self.channel.write_control(value & 0xFF)
