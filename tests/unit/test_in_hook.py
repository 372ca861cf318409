"""The unicorn engine's C IN hook (hvm/engine/_ucstop_build.py) called directly, against the
Python device models it stands in for: published registers, and the software PIT's channel 2
and port 0x61 while channel 2 counts in mode 0. Reads it cannot answer reach the Python hook."""
from __future__ import annotations

import time

from hvm.bus import PortIOBus
from hvm.devices.irq.pit8254 import Pit8254
from hvm.devices.uart16550 import Uart16550
from hvm.irq import RecordingIrqLine
from hvm.published import SLOTS
from hvm.engine._ucstop import ffi, lib
from hvm.serial import BufferBackend

GATE2, OUT2 = 0x01, 0x20
CH2_LOHI_MODE0 = 0xB0  # control word: counter 2, LSB then MSB, mode 0, binary


class Hook:
    """The C hook on a port bus holding a PIT and a UART, with a CPL the test chooses."""

    def __init__(self) -> None:
        self.bus = PortIOBus()
        self.pit = Pit8254(RecordingIrqLine(0))
        self.pit.publish_channel2(self.bus.published.timer2)
        self.bus.register(0x40, 4, self.pit.ports)
        self.bus.register(0x61, 1, self.pit.port61)
        self.bus.register(0x3F8, 8, Uart16550(RecordingIrqLine(4), BufferBackend()))
        self.cpl = 0
        self.python: list[int] = []  # ports the hook handed to Python
        self.state = ffi.new("hvm_in_t *")
        self._table = ffi.from_buffer("hvm_published[]", self.bus.published.buffer)
        self.state.published, self.state.slots = self._table, SLOTS
        self.state.timer2 = ffi.cast("hvm_timer2 *", ffi.from_buffer(self.bus.published.timer2.buffer))

        def reg_read(_uc, _reg, out):
            ffi.cast("uint64_t *", out)[0] = 0x10 | self.cpl   # CS: selector 0x10, RPL = CPL
            return 0

        def python(_uc, port, size, _user):
            self.python.append(port)
            return self.bus.read(port, size)

        self._reg_read = ffi.callback("int(void *, int, void *)", reg_read)
        self._python = ffi.callback("uint32_t(void *, uint32_t, int, void *)", python)
        self.state.reg_read = ffi.cast("void *", self._reg_read)
        self.state.python = self._python
        self._hook = ffi.cast("uint32_t(*)(void *, uint32_t, int, void *)", lib.hvm_in_hook_address())

    def inb(self, port: int) -> int:
        return self._hook(ffi.NULL, port, 1, self.state)

    def start_channel2(self, count: int) -> None:
        self.bus.write(0x61, 1, GATE2)
        self.bus.write(0x43, 1, CH2_LOHI_MODE0)
        self.bus.write(0x42, 1, count & 0xFF)
        self.bus.write(0x42, 1, count >> 8)


def test_channel2_counts_down_in_c_and_the_flip_flop_carries_over_to_python() -> None:
    h = Hook()
    h.start_channel2(0xFFFF)
    counts = []
    for _ in range(50):
        lo, hi = h.inb(0x42), h.inb(0x42)
        counts.append(hi << 8 | lo)
    assert h.python == []                                   # all answered in C
    # Each MSB is read after its LSB, so the MSBs count down in time order; a pair may be torn
    # where the LSB wrapped between its two reads (an unlatched 8254 reads so too), never more.
    msbs = [c >> 8 for c in counts]
    assert msbs == sorted(msbs, reverse=True) and counts[0] <= 0xFFFF
    assert all(b <= a + 0xFF for a, b in zip(counts, counts[1:]))
    lo = h.inb(0x42)                                        # C takes the LSB...
    hi = h.bus.read(0x42, 1)                                # ...Python, the MSB that follows
    assert hi << 8 | lo <= counts[-1]
    lo2, hi2 = h.inb(0x42), h.inb(0x42)                     # C again, from an LSB: the pair follows
    assert hi2 << 8 | lo2 <= hi << 8 | lo and hi2 >= hi - 1


def test_port61_refresh_alternates_across_c_and_python_and_out_rises_at_terminal_count() -> None:
    h = Hook()
    h.start_channel2(0x0010)                                # 16 clocks: 13.4 us
    refresh = [h.inb(0x61) >> 4 & 1, h.bus.read(0x61, 1) >> 4 & 1, h.inb(0x61) >> 4 & 1,
               h.bus.read(0x61, 1) >> 4 & 1]
    assert refresh in ([0, 1, 0, 1], [1, 0, 1, 0])
    time.sleep(0.001)
    assert h.inb(0x61) & (OUT2 | GATE2) == OUT2 | GATE2
    assert h.bus.read(0x61, 1) & OUT2
    assert h.python == []


def test_a_latched_count_or_another_mode_goes_to_python() -> None:
    h = Hook()
    h.start_channel2(0x8000)
    h.bus.write(0x43, 1, 0x80)                              # latch counter 2
    latched = h.inb(0x42) | h.inb(0x42) << 8
    assert h.python == [0x42, 0x42] and latched <= 0x8000
    h.bus.write(0x43, 1, 0xB6)                              # mode 3: the C side does not compute it
    h.bus.write(0x42, 1, 0)
    h.bus.write(0x42, 1, 0x10)
    h.inb(0x42)
    assert h.python[-1] == 0x42 and len(h.python) == 3


def test_published_lsr_is_answered_at_cpl0_only() -> None:
    h = Hook()
    assert h.inb(0x3FD) == 0x60 and h.python == []         # THRE | TEMT, from the table
    assert h.inb(0x3F9) == 0 and h.python == []            # IER (Xen's "is a UART there")
    h.cpl = 3                                               # I/O permission checks apply: Python
    assert h.inb(0x3FD) == 0x60 and h.python == [0x3FD]
    h.cpl = 0
    assert h.inb(0x3FB) is not None and h.python[-1] == 0x3FB   # LCR: not published
    assert h.bus.accesses["com1"] == 4                      # C-answered reads counted too
