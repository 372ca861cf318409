"""The unicorn engine's C OUT hook (hvm/engine/_ucstop_build.py) called directly: one-byte THR
writes a UART lets be queued (hvm/published.py QueuedWrites) are queued in C at CPL 0 and taken by
the UART in order, before any other access it handles; everything else reaches the Python hook."""
from __future__ import annotations

from hvm.bus import PortIOBus
from hvm.devices import uart16550 as u
from hvm.devices.uart16550 import Uart16550
from hvm.engine._ucstop import ffi, lib
from hvm.irq import RecordingIrqLine
from hvm.published import QUEUE_CAP, QUEUE_SLOTS
from hvm.serial import BufferBackend

COM1 = 0x3F8


class Hook:
    """The C hook on a port bus holding a UART at COM1, with a CPL the test chooses."""

    def __init__(self) -> None:
        self.bus = PortIOBus()
        self.irq = RecordingIrqLine(4)
        self.backend = BufferBackend()
        self.uart = Uart16550(self.irq, self.backend)
        self.bus.register(COM1, 8, self.uart, "com1")
        self.cpl = 0
        self.python: list[tuple[int, int]] = []  # (port, value) the hook handed to Python
        self.state = ffi.new("hvm_out_t *")
        self._queued = ffi.from_buffer("hvm_queued[]", self.bus.published.queued)
        self.state.queued, self.state.slots = self._queued, QUEUE_SLOTS

        def reg_read(_uc, _reg, out):
            ffi.cast("uint64_t *", out)[0] = 0x10 | self.cpl
            return 0

        def python(_uc, port, size, value, _user):
            self.python.append((port, value))
            self.bus.write(port, size, value)

        self._reg_read = ffi.callback("int(void *, int, void *)", reg_read)
        self._python = ffi.callback("void(void *, uint32_t, int, uint32_t, void *)", python)
        self.state.reg_read = ffi.cast("void *", self._reg_read)
        self.state.python = self._python
        self._hook = ffi.cast("void(*)(void *, uint32_t, int, uint32_t, void *)", lib.hvm_out_hook_address())

    def outb(self, port: int, value: int) -> None:
        self._hook(ffi.NULL, port, 1, value, self.state)


def test_thr_bytes_are_queued_and_taken_in_order_before_any_other_access() -> None:
    h = Hook()
    for ch in b"hello":
        h.outb(COM1 + u.THR, ch)
    assert h.python == [] and h.backend.data == b"" and h.state.served == 5
    assert h.bus.read(COM1 + u.LCR, 1) == 0                 # any access takes them first
    assert h.backend.data == b"hello" and h.uart.tx_bytes == 5
    h.outb(COM1 + u.THR, ord("!"))
    h.bus.published.drain()                                 # the engine's end of slice
    assert h.backend.data == b"hello!"
    assert h.bus.accesses["com1"] == 7                      # queued writes counted too


def test_writes_that_are_not_plain_thr_bytes_go_to_python() -> None:
    h = Hook()
    h.outb(COM1 + u.LCR, u.LCR_DLAB)                        # not THR: Python
    h.outb(COM1 + u.THR, 0x01)                              # DLAB set: the divisor latch, Python
    h.outb(COM1 + u.LCR, 0x03)
    assert [p for p, _ in h.python] == [COM1 + u.LCR, COM1 + u.THR, COM1 + u.LCR]
    assert h.backend.data == b""
    h.outb(COM1 + u.MCR, u.MCR_LOOP)                        # loopback: the byte is received, Python
    h.outb(COM1 + u.THR, ord("x"))
    assert h.python[-1] == (COM1 + u.THR, ord("x")) and h.uart.read(u.RBR, 1) == ord("x")
    h.outb(COM1 + u.MCR, 0)
    h.cpl = 3                                               # I/O permission checks apply: Python
    h.outb(COM1 + u.THR, ord("y"))
    assert h.python[-1] == (COM1 + u.THR, ord("y")) and h.backend.data == b"y"


def test_a_full_queue_hands_the_next_byte_to_python_after_the_queued_ones() -> None:
    h = Hook()
    for _ in range(QUEUE_CAP):
        h.outb(COM1 + u.THR, ord("a"))
    h.outb(COM1 + u.THR, ord("b"))
    assert h.python == [(COM1 + u.THR, ord("b"))]
    assert h.backend.data == b"a" * QUEUE_CAP + b"b"


def test_a_queued_run_makes_the_thre_edges_one_write_would() -> None:
    # What test_uart's test_thr_write_rearms_thre_with_a_fresh_edge checks byte by byte, for runs:
    # a run after THRE was acknowledged raises the line; a run while it is pending gives one edge.
    h = Hook()
    h.uart.write(u.IER, 1, u.IER_ETBEI)
    assert h.uart.read(u.IIR, 1) == u.IIR_THRI
    assert h.irq.history == [True, False]
    for ch in b"ab":
        h.outb(COM1 + u.THR, ch)
    assert h.irq.history == [True, False]                   # nothing until they are taken
    h.bus.published.drain()
    assert h.irq.history == [True, False, True]
    for ch in b"cd":
        h.outb(COM1 + u.THR, ch)
    h.bus.published.drain()
    assert h.irq.history == [True, False, True, False, True]
    assert h.uart.read(u.IIR, 1) == u.IIR_THRI and h.uart.read(u.IIR, 1) == u.IIR_NO_INT
    assert h.backend.data == b"abcd"
