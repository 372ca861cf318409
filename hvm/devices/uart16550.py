"""A PC 16550A UART as a pure state machine: register semantics only, no KVM and no host I/O.

Transmission is instantaneous (the byte goes straight to the backend), so the transmitter is always
empty.  Reception is flow-controlled: host input waits in an unbounded buffer and only enters the
16-byte RX FIFO as the guest drains it, so a slow guest never loses a keystroke or a pasted file.
"""
from __future__ import annotations

import collections
import threading
from typing import TYPE_CHECKING

from ..irq import IrqLine
from .base import Device

if TYPE_CHECKING:  # the UART only needs .write(); importing hvm.serial at runtime would couple them
    from ..serial import SerialBackend

COM1_PORT = 0x3F8
COM1_IRQ = 4

FIFO_DEPTH = 16
TRIGGER_LEVELS = (1, 4, 8, 14)
HOST_INPUT_LIMIT = 1 << 20  # host bytes queued behind the FIFO before receive() blocks
RESET_DIVISOR = 12  # 115200 / 12 = 9600 baud, the classic BIOS default

# Register offsets (DLAB=0 meaning unless noted).
RBR = THR = DLL = 0
IER = DLM = 1
IIR = FCR = 2
LCR = 3
MCR = 4
LSR = 5
MSR = 6
SCR = 7

IER_ERBFI = 0x01  # received data available
IER_ETBEI = 0x02  # transmitter holding register empty
IER_ELSI = 0x04   # receiver line status
IER_EDSSI = 0x08  # modem status

IIR_NO_INT = 0x01
IIR_MSI = 0x00
IIR_THRI = 0x02
IIR_RDI = 0x04
IIR_RLSI = 0x06
IIR_CTI = 0x0C
IIR_FIFO_ENABLED = 0xC0

FCR_ENABLE = 0x01
FCR_CLEAR_RX = 0x02
FCR_CLEAR_TX = 0x04

LCR_DLAB = 0x80

MCR_DTR = 0x01
MCR_RTS = 0x02
MCR_OUT1 = 0x04
MCR_OUT2 = 0x08
MCR_LOOP = 0x10

LSR_DR = 0x01
LSR_OE = 0x02
LSR_THRE = 0x20
LSR_TEMT = 0x40
LSR_ERRORS = 0x1E  # OE|PE|FE|BI: what reading LSR clears and what raises a line-status interrupt

MSR_DCTS = 0x01
MSR_DDSR = 0x02
MSR_TERI = 0x04
MSR_DDCD = 0x08
MSR_CTS = 0x10
MSR_DSR = 0x20
MSR_RI = 0x40
MSR_DCD = 0x80
# With nothing attached to the modem pins, report a "connected" cable as QEMU does, so guests that
# wait for carrier or clear-to-send before transmitting do not stall.
MSR_IDLE_LINES = MSR_DCD | MSR_DSR | MSR_CTS


class Uart16550(Device):
    """A 16550A at one 8-port range; ``receive`` may be called from any thread."""

    # Guests poll LSR before every byte they send: its value is published while reading it
    # clears nothing (no latched errors), so an engine can answer the poll itself. IER (DLM
    # while DLAB is set) never changes on a read: Xen reads it before every byte it sends or
    # polls for (0xFF would mean no UART), ~260 000 reads in a boot with its dom0.
    published_offsets = (LSR, IER)
    # A THR write (DLAB clear, no loopback) sends its byte out at once, and LSR keeps saying the
    # transmitter is empty: an engine may queue them (hvm/published.py QueuedWrites), taken here
    # in order before any other access is handled. The THRE interrupt's edges of a run of queued
    # bytes come as one when they are taken: the CPU takes no interrupt within a run anyway (the
    # run ends with the time slice it was written in, within 100 us of its first byte).
    queued_offsets = (THR,)

    def __init__(self, irq: IrqLine, backend: "SerialBackend | None" = None, name: str = "com1"):
        self.irq = irq
        self.backend = backend
        self.name = name
        self.tx_bytes = 0  # bytes handed to the backend
        self.rx_bytes = 0  # bytes accepted from the host via receive()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)
        self._closed = False
        self._host_pending = bytearray()
        self._rx: collections.deque[int] = collections.deque()
        self._published: dict[int, object] = {}
        self._queue = None  # QueuedWrites of THR, when an engine can queue them
        self._reset_locked()

    # -- public API -------------------------------------------------------------------------

    def attach_published(self, offset: int, entry) -> None:
        """Keep ``entry`` (or nothing, when None) showing the register at ``offset``; see
        ``published_offsets``."""
        with self._lock:
            if entry is None:
                old = self._published.pop(offset, None)
                if old is not None:
                    old.hide()
            else:
                self._published[offset] = entry
            self._publish_locked()

    def attach_queue(self, offset: int, queue) -> None:
        """Take THR writes an engine queued from ``queue`` (None: no more); see ``queued_offsets``."""
        with self._lock:
            self._take_queued_locked()
            if self._queue is not None:
                self._queue.enable(False)
            self._queue = queue
            self._publish_locked()

    def take_queued(self) -> None:
        """Handle the THR writes queued so far (the engine's end of slice)."""
        with self._lock:
            self._take_queued_locked()

    def reset(self) -> None:
        """Return every register to its power-on value; host input not yet in the FIFO is kept."""
        with self._lock:
            self._take_queued_locked()
            self._reset_locked()
            self._refill_locked()
            self._update_irq_locked()  # publishes LSR first

    def receive(self, data: bytes) -> None:
        """Queue host input for the guest; it enters the RX FIFO as the guest makes room.

        Blocks while more than HOST_INPUT_LIMIT bytes wait for a guest that is not reading, so
        a host feeding a file into a stalled guest applies backpressure instead of growing hvm.
        """
        if not data:
            return
        with self._lock:
            while len(self._host_pending) >= HOST_INPUT_LIMIT and not self._closed:
                self._room.wait()
            if self._closed:
                return
            self._take_queued_locked()
            self._host_pending += data
            self.rx_bytes += len(data)
            self._refill_locked()
            self._update_irq_locked()  # publishes LSR first

    def close(self) -> None:
        """The machine is going away: release senders blocked in ``receive``."""
        with self._lock:
            self._closed = True
            self._room.notify_all()

    @property
    def pending_input(self) -> int:
        """Host bytes not yet delivered to the guest (in the FIFO or still waiting to enter it)."""
        with self._lock:
            return len(self._rx) + len(self._host_pending)

    def read(self, offset: int, size: int) -> int:
        """Guest register read; only the low byte is meaningful, wider reads are zero-extended."""
        if not 0 <= offset <= 7:
            return (1 << (size * 8)) - 1
        with self._lock:
            self._take_queued_locked()
            value = self._read_locked(offset)
            self._publish_locked()
            return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Guest register write; wider writes act on their low byte."""
        if not 0 <= offset <= 7:
            return
        with self._lock:
            self._take_queued_locked()
            self._write_locked(offset, value & 0xFF)
            self._publish_locked()

    # -- register file ----------------------------------------------------------------------

    def _reset_locked(self) -> None:
        self._ier = 0
        self._lcr = 0
        self._mcr = 0
        self._scr = 0
        self._divisor = RESET_DIVISOR
        self._fifo_enabled = False
        self._trigger = TRIGGER_LEVELS[0]
        self._lsr_errors = 0
        self._msr_delta = 0
        self._thre_pending = False
        self._rx.clear()

    def _read_locked(self, offset: int) -> int:
        dlab = self._lcr & LCR_DLAB
        if offset == RBR:
            if dlab:
                return self._divisor & 0xFF
            return self._read_rbr_locked()
        if offset == IER:
            return (self._divisor >> 8) if dlab else self._ier
        if offset == IIR:
            return self._read_iir_locked()
        if offset == LCR:
            return self._lcr
        if offset == MCR:
            return self._mcr
        if offset == LSR:
            value = self._lsr_locked()
            if self._lsr_errors:
                self._lsr_errors = 0
                self._update_irq_locked()
            return value
        if offset == MSR:
            value = self._msr_lines() | self._msr_delta
            if self._msr_delta:
                self._msr_delta = 0
                self._update_irq_locked()
            return value
        return self._scr

    def _write_locked(self, offset: int, value: int) -> None:
        dlab = self._lcr & LCR_DLAB
        if offset == THR:
            if dlab:
                self._divisor = (self._divisor & 0xFF00) | value
            else:
                self._write_thr_locked(value)
        elif offset == IER:
            if dlab:
                self._divisor = (self._divisor & 0x00FF) | (value << 8)
            else:
                self._write_ier_locked(value & 0x0F)
        elif offset == FCR:
            self._write_fcr_locked(value)
        elif offset == LCR:
            self._lcr = value
        elif offset == MCR:
            old_lines = self._msr_lines()
            self._mcr = value & 0x1F
            self._note_msr_change(old_lines, self._msr_lines())
            # Leaving loopback reconnects the receiver to the host, so queued input can flow again.
            self._refill_locked()
            self._update_irq_locked()
        elif offset == SCR:
            self._scr = value
        # LSR and MSR writes are factory-test features on real parts; ignoring them is what QEMU does.

    def _read_rbr_locked(self) -> int:
        value = self._rx.popleft() if self._rx else 0
        self._refill_locked()
        self._update_irq_locked()
        return value

    def _read_iir_locked(self) -> int:
        code = self._iir_code_locked()
        if code == IIR_THRI:
            # The IIR read is the acknowledgement for THRE; the 8250 driver's edge-triggered ISA IRQ
            # depends on the line dropping here so the next THR write makes a fresh edge.
            self._thre_pending = False
            self._update_irq_locked()
        return code | (IIR_FIFO_ENABLED if self._fifo_enabled else 0)

    def _take_queued_locked(self) -> None:
        queue = self._queue
        if queue is None:
            return
        data = queue.take()
        if data:
            self._sent_locked(data)

    def _sent_locked(self, data: bytes) -> None:
        """THR writes queued while DLAB was clear and loopback off: each sent its byte; their
        interrupt edges are one (what the LAPIC holds after a run the CPU took no interrupt in)."""
        self.tx_bytes += len(data)
        if self.backend is not None:
            self.backend.write(data)
        self._thre_pending = False
        self._rearm_thre_locked(dropped=self._iir_code_locked() == IIR_NO_INT)

    def _write_thr_locked(self, value: int) -> None:
        # Writing THR acknowledges THRE; dropping the line before re-arming gives edge-triggered
        # interrupt controllers a new edge even when THRE was never read out of IIR (the drop
        # and the rise told at once where nothing else changes in between: a retrigger).
        self._thre_pending = False
        dropped = self._iir_code_locked() == IIR_NO_INT
        if self._mcr & MCR_LOOP:
            self._update_irq_locked()
            self._push_rx_locked(value)
        else:
            self.tx_bytes += 1
            if self.backend is not None:
                self.backend.write(bytes([value]))
        self._rearm_thre_locked(dropped)

    def _rearm_thre_locked(self, dropped: bool) -> None:
        """THRE is pending again after THR writes acknowledged it; ``dropped``: nothing else held
        the line up meanwhile, so a line still high from before gets a fresh edge in one call."""
        self._thre_pending = True
        if self.irq.level and dropped and self._iir_code_locked() != IIR_NO_INT:
            self._publish_locked()
            self.irq.retrigger()
        else:
            self._update_irq_locked()

    def _write_ier_locked(self, value: int) -> None:
        old = self._ier
        self._ier = value
        if (value & IER_ETBEI) and not (old & IER_ETBEI):
            # The transmitter is always empty, so enabling the interrupt must fire it at once; Linux
            # probes for exactly this at startup and otherwise marks the port as buggy.
            self._thre_pending = True
        # A pending THRE with ETBEI clear is harmless: IIR only reports enabled sources.
        self._update_irq_locked()

    def _write_fcr_locked(self, value: int) -> None:
        enable = bool(value & FCR_ENABLE)
        if enable != self._fifo_enabled:
            # Toggling FIFO mode resets both FIFOs on a real 16550A.
            self._rx.clear()
        self._fifo_enabled = enable
        if enable:
            if value & FCR_CLEAR_RX:
                self._rx.clear()
                self._lsr_errors &= ~LSR_OE
            # FCR_CLEAR_TX is a no-op: there is never anything waiting to be transmitted.
            self._trigger = TRIGGER_LEVELS[value >> 6]
        else:
            self._trigger = TRIGGER_LEVELS[0]
        self._refill_locked()
        self._update_irq_locked()

    # -- derived state ----------------------------------------------------------------------

    def _capacity(self) -> int:
        return FIFO_DEPTH if self._fifo_enabled else 1

    def _refill_locked(self) -> None:
        if self._mcr & MCR_LOOP or not self._host_pending:
            # In loopback the receiver is cut off from the outside world; host input waits, intact.
            return
        room = self._capacity() - len(self._rx)
        if room <= 0:
            return
        chunk = self._host_pending[:room]
        del self._host_pending[:room]
        self._rx.extend(chunk)
        if len(self._host_pending) < HOST_INPUT_LIMIT:
            self._room.notify_all()

    def _push_rx_locked(self, value: int) -> None:
        if len(self._rx) < self._capacity():
            self._rx.append(value)
            return
        # Loopback bytes have no flow control, so a full receiver overruns like real hardware:
        # the 16450-style holding register is overwritten, while a full FIFO loses the new byte.
        self._lsr_errors |= LSR_OE
        if not self._fifo_enabled:
            self._rx[-1] = value

    def _publish_locked(self) -> None:
        if self._queue is not None:
            self._queue.enable(not self._lcr & LCR_DLAB and not self._mcr & MCR_LOOP)
        entry = self._published.get(LSR)
        if entry is not None:
            if self._lsr_errors:
                entry.hide()  # reading LSR clears them: the device must see that read
            else:
                entry.show(self._lsr_locked())
        entry = self._published.get(IER)
        if entry is not None:
            entry.show((self._divisor >> 8) if self._lcr & LCR_DLAB else self._ier)

    def _lsr_locked(self) -> int:
        value = LSR_THRE | LSR_TEMT | self._lsr_errors
        if self._rx:
            value |= LSR_DR
        return value

    def _msr_lines(self) -> int:
        mcr = self._mcr
        if not mcr & MCR_LOOP:
            return MSR_IDLE_LINES
        lines = 0
        if mcr & MCR_DTR:
            lines |= MSR_DSR
        if mcr & MCR_RTS:
            lines |= MSR_CTS
        if mcr & MCR_OUT1:
            lines |= MSR_RI
        if mcr & MCR_OUT2:
            lines |= MSR_DCD
        return lines

    def _note_msr_change(self, old: int, new: int) -> None:
        changed = old ^ new
        if changed & MSR_CTS:
            self._msr_delta |= MSR_DCTS
        if changed & MSR_DSR:
            self._msr_delta |= MSR_DDSR
        if changed & MSR_DCD:
            self._msr_delta |= MSR_DDCD
        if (old & MSR_RI) and not (new & MSR_RI):
            # TERI is a trailing-edge detector on the 16550A: only RI going inactive sets it.
            self._msr_delta |= MSR_TERI

    def _iir_code_locked(self) -> int:
        ier = self._ier
        if ier & IER_ELSI and self._lsr_errors:
            return IIR_RLSI
        if ier & IER_ERBFI and self._rx:
            # Without a character-timeout timer, "below trigger level but not empty" is reported as
            # a timeout straight away so the guest still collects the last few bytes of a burst.
            if not self._fifo_enabled or len(self._rx) >= self._trigger:
                return IIR_RDI
            return IIR_CTI
        if ier & IER_ETBEI and self._thre_pending:
            return IIR_THRI
        if ier & IER_EDSSI and self._msr_delta:
            return IIR_MSI
        return IIR_NO_INT

    def _update_irq_locked(self) -> None:
        # Called under the lock so a racing receive() cannot leave the line at a stale level.
        # LSR is published first: the interrupt handler's first read of it may be answered from
        # the published value, and must already see the data the interrupt announces.
        self._publish_locked()
        self.irq.set_level(self._iir_code_locked() != IIR_NO_INT)
