"""Port I/O of a PV guest that has no I/O ports of its own, as Xen emulates it
(xen/arch/x86/pv/emul-priv-op.c, guest_io_read/guest_io_write): byte by byte, ports 0x42, 0x43
and 0x61 go to the domain's virtual PIT (Xen's X86_EMU_PIT, emul-i8254.c pv_pit_handler:
channel 2 and the speaker port; a PV domain's channel 0 interrupts nothing), every other port
reads all ones and ignores writes.

hvm gives every PV domain the PIT (Xen makes it optional for a domU and mandatory for dom0): a
kernel calibrating its TSC against channel 2 (Linux's quick_pit_calibrate) then sees a counter
that moves in real time and gives up after a few reads, where all-ones would keep it reading
100 000 times, each read a trip through hvm's ring 0 or unicorn's exception path.
"""
from __future__ import annotations

import threading

from hvm.devices.irq.pit8254 import PIT_PORT, PORT61, Pit8254
from hvm.irq import IrqLine

PIT_CHANNEL2, PIT_CONTROL = 0x42, 0x43


class PvIoPorts:
    """The ports an unprivileged PV domain reaches through emulated IN/OUT."""

    def __init__(self) -> None:
        self.pit = Pit8254(IrqLine(0, lambda gsi, level: None))
        self._lock = threading.Lock()    # the PIT model is plain state; vCPUs share it

    def read(self, port: int, size: int) -> int:
        value = 0
        for i in range(size):
            value |= self._read_byte((port + i) & 0xFFFF) << (8 * i)
        return value

    def write(self, port: int, size: int, value: int) -> None:
        for i in range(size):
            self._write_byte((port + i) & 0xFFFF, value >> (8 * i) & 0xFF)

    def _read_byte(self, port: int) -> int:
        with self._lock:
            if port in (PIT_CHANNEL2, PIT_CONTROL):
                return self.pit.ports.read(port - PIT_PORT, 1) & 0xFF
            if port == PORT61:
                return self.pit.port61.read(0, 1) & 0xFF
        return 0xFF

    def _write_byte(self, port: int, byte: int) -> None:
        with self._lock:
            if port in (PIT_CHANNEL2, PIT_CONTROL):
                self.pit.ports.write(port - PIT_PORT, 1, byte)
            elif port == PORT61:
                self.pit.port61.write(0, 1, byte)
