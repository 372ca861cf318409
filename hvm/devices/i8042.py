"""The PC's i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command), with an AT
keyboard behind it and no mouse: enough for an OS to find the controller, probe and configure the
keyboard, and reset the machine with the 0xFE pulse, as the IBM PC/AT Technical Reference and the
Linux i8042/atkbd drivers expect.

Every answer is queued at once (there is no serial-line delay), so probing costs no timeouts. The
auxiliary (mouse) port reports itself broken: the AUX loopback answers without the AUX flag and
the interface test reports a stuck clock line, which an OS takes as "no PS/2 mouse port".
"""
from __future__ import annotations

import collections
import threading
from typing import Callable

from ..irq import IrqLine
from .base import Device
from .ps2_keys import scan_codes

DATA_PORT, COMMAND_PORT = 0x60, 0x64

STR_OBF, STR_SYS, STR_CMD, STR_UNLOCKED, STR_AUXDATA = 0x01, 0x04, 0x08, 0x10, 0x20
CTR_KBDINT, CTR_AUXINT, CTR_SYS, CTR_KBDDIS, CTR_AUXDIS, CTR_XLATE = 0x01, 0x02, 0x04, 0x10, 0x20, 0x40
OUTPUT_PORT_RESET, OUTPUT_PORT_A20 = 0x01, 0x02

ACK, RESEND, SELF_TEST_OK, KBD_SELF_TEST_PASSED = 0xFA, 0xFE, 0x55, 0xAA
AUX_CLOCK_STUCK_LOW = 0x01
KBD_ID = (0xAB, 0x83)
KBD_COMMANDS_WITH_ARGUMENT = (0xED, 0xF0, 0xF3)   # LEDs, scan code set, typematic rate
# Replies wait here until the guest reads them; a guest that sends commands without reading must
# not grow it. A keyboard buffers 16 bytes (QEMU's PS/2 queue is as long); later ones are lost.
QUEUE_LIMIT = 16


class _Port(Device):
    """One of the controller's two ports (0x61-0x63 between them belong to other devices)."""

    def __init__(self, controller: "I8042", offset: int, name: str):
        self.controller, self.offset, self.name = controller, offset, name

    def read(self, offset: int, size: int) -> int:
        return self.controller.read(self.offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.controller.write(self.offset, size, value)


class I8042(Device):
    """The controller; register ``data_port`` at 0x60 and ``command_port`` at 0x64. ``on_reset``
    is called for the reset pulse."""

    name = "i8042"

    def __init__(self, kbd_irq: IrqLine, on_reset: Callable[[str], None]):
        self.kbd_irq = kbd_irq
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._queue: collections.deque[int] = collections.deque()
        self.ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE
        self.output_port = OUTPUT_PORT_RESET | OUTPUT_PORT_A20
        self._last_was_command = False
        self._controller_arg: int | None = None   # command waiting for its data byte
        self._keyboard_arg: int | None = None
        self._scan_set = 2
        self.data_port = _Port(self, 0, "i8042-data")
        self.command_port = _Port(self, 4, "i8042-cmd")

    # -- ports ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == 0:
                value = self._queue.popleft() if self._queue else 0
                self.kbd_irq.set_level(False)   # the next byte, if any, brings a new edge
                self._update_irq()
                return value
            if offset == 4:
                status = STR_UNLOCKED | (self.ctr & CTR_SYS)
                status |= STR_OBF if self._queue else 0
                status |= STR_CMD if self._last_was_command else 0
                return status
        return 0xFF

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        reset = None
        with self._lock:
            if offset == 4:
                self._last_was_command = True
                reset = self._command(value)
            elif offset == 0:
                self._last_was_command = False
                reset = self._data(value)
            self._update_irq()
        if reset:
            self._on_reset(reset)

    # -- controller -----------------------------------------------------------------------------
    def _reply(self, *values: int) -> None:
        self._queue.extend(values[:QUEUE_LIMIT - len(self._queue)])

    def _command(self, cmd: int) -> str | None:
        self._controller_arg = None
        if cmd == 0x20:
            self._reply(self.ctr)
        elif cmd in (0x60, 0xD1, 0xD2, 0xD3, 0xD4):
            self._controller_arg = cmd
        elif cmd == 0xA7:
            self.ctr |= CTR_AUXDIS
        elif cmd == 0xA8:
            self.ctr &= ~CTR_AUXDIS
        elif cmd == 0xA9:
            self._reply(AUX_CLOCK_STUCK_LOW)
        elif cmd == 0xAA:
            self.ctr |= CTR_SYS
            self._reply(SELF_TEST_OK)
        elif cmd == 0xAB:
            self._reply(0x00)
        elif cmd == 0xAD:
            self.ctr |= CTR_KBDDIS
        elif cmd == 0xAE:
            self.ctr &= ~CTR_KBDDIS
        elif cmd == 0xC0:
            self._reply(0x00)
        elif cmd == 0xD0:
            self._reply(self.output_port)
        elif cmd == 0xE0:
            self._reply(0x00)
        elif cmd >= 0xF0 and not cmd & OUTPUT_PORT_RESET:
            # Pulse output port lines low for 6 us: bit 0 is the CPU's reset line.
            return f"reset pulse through the keyboard controller (command {cmd:#04x} to port 0x64)"
        return None

    def _data(self, value: int) -> str | None:
        pending, self._controller_arg = self._controller_arg, None
        if pending == 0x60:
            self.ctr = value
        elif pending == 0xD1:
            self.output_port = value
            if not value & OUTPUT_PORT_RESET:
                return f"reset through the keyboard controller's output port (value {value:#04x})"
        elif pending in (0xD2, 0xD3):
            # D3 would echo on the AUX channel; without a mouse port the byte comes back as
            # keyboard data, which is how a broken AUX loopback looks.
            self._reply(value)
        elif pending == 0xD4:
            pass  # a byte for the mouse that is not there
        else:
            self._keyboard(value)
        return None

    # -- keyboard -------------------------------------------------------------------------------
    def _keyboard(self, value: int) -> None:
        arg_of, self._keyboard_arg = self._keyboard_arg, None
        if arg_of is not None:
            if arg_of == 0xF0:
                if value == 0:
                    self._reply(ACK, self._scan_set)
                    return
                self._scan_set = value
            self._reply(ACK)
            return
        if value in KBD_COMMANDS_WITH_ARGUMENT:
            self._keyboard_arg = value
            self._reply(ACK)
        elif value == 0xFF:
            self._scan_set = 2
            self._reply(ACK, KBD_SELF_TEST_PASSED)
        elif value == 0xF2:
            self._reply(ACK, *KBD_ID)
        elif value == 0xEE:
            self._reply(0xEE)
        elif 0xF4 <= value <= 0xFD:
            self._reply(ACK)
        else:
            self._reply(RESEND)

    # -- input from the user --------------------------------------------------------------------
    def room(self) -> int:
        """How many more bytes the keyboard's buffer takes now."""
        with self._lock:
            return QUEUE_LIMIT - len(self._queue)

    def key(self, name: str, down: bool) -> bool:
        """Press or release key ``name`` (see ``ps2_keys.KEYS``): its scan codes in the set the
        guest sees (set 1 when the controller translates, else the keyboard's set). False when
        the buffer has no room for them (nothing is queued then)."""
        with self._lock:
            scan_set = 1 if self.ctr & CTR_XLATE or self._scan_set == 1 else 2
            codes = scan_codes(name, down, scan_set)
            if len(codes) > QUEUE_LIMIT - len(self._queue):
                return False
            self._queue.extend(codes)
            self._update_irq()
            return True

    def _update_irq(self) -> None:
        # IRQ 1 is up while a keyboard byte waits and the interrupt is enabled (ISA, edge-triggered).
        self.kbd_irq.set_level(bool(self._queue) and bool(self.ctr & CTR_KBDINT))
