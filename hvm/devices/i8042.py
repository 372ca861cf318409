"""The PC's i8042 keyboard controller at ports 0x60 (data) and 0x64 (status/command), with an AT
keyboard on its first port and a PS/2 mouse (``ps2_mouse``) on its auxiliary port: enough for an
OS to find the controller, probe and configure both devices, and reset the machine with the 0xFE
pulse, as the IBM PC/AT and PS/2 Technical References and the Linux i8042/atkbd/psmouse drivers
expect.

The controller has one output buffer. The keyboard, the mouse and the controller itself (answers
to its own commands) each keep a queue; when the buffer is empty the controller moves the next byte
into it: its own answers first, then the keyboard's, then the mouse's, a device's only while its
interface is enabled (CTR bits 4 and 5). The byte in the buffer keeps its source: a mouse byte sets
the status register's AUX flag and raises IRQ 12, a keyboard byte raises IRQ 1, each when its CTR
interrupt bit is set. Reading port 0x60 empties the buffer; read again with nothing new, it gives
the same byte, as the 8042's output register (and QEMU's model) does.

Every answer is queued at once (there is no serial-line delay), so probing costs no timeouts. A key
held down through the API repeats at the typematic rate the guest programmed (command F3), from a
host thread that lives only while the key is held.
"""
from __future__ import annotations

import collections
import threading
import time
from typing import Callable

from ..irq import IrqLine
from ..threads import start_thread
from .base import Device
from .ps2_keys import scan_codes
from .ps2_mouse import Ps2Mouse

DATA_PORT, COMMAND_PORT = 0x60, 0x64

STR_OBF, STR_SYS, STR_CMD, STR_UNLOCKED, STR_AUXDATA = 0x01, 0x04, 0x08, 0x10, 0x20
CTR_KBDINT, CTR_AUXINT, CTR_SYS, CTR_KBDDIS, CTR_AUXDIS, CTR_XLATE = 0x01, 0x02, 0x04, 0x10, 0x20, 0x40
OUTPUT_PORT_RESET, OUTPUT_PORT_A20 = 0x01, 0x02

ACK, RESEND, SELF_TEST_OK, KBD_SELF_TEST_PASSED = 0xFA, 0xFE, 0x55, 0xAA
INTERFACE_OK = 0x00   # answer to the interface tests AB and A9: no clock or data line stuck
KBD_ID = (0xAB, 0x83)
KBD_COMMANDS_WITH_ARGUMENT = (0xED, 0xF0, 0xF3)   # LEDs, scan code set, typematic rate
LED_SCROLL_LOCK, LED_NUM_LOCK, LED_CAPS_LOCK = 0x01, 0x02, 0x04
# Typematic byte (command F3): bits 0-2 A and 3-4 B give the period (8 + A) * 2**B * 4.17 ms,
# bits 5-6 D the delay (D + 1) * 250 ms (IBM PS/2 keyboard reference). Power-on value: 10.9
# characters/s after 500 ms.
TYPEMATIC_DEFAULT = 0x2B
# Replies wait here until the guest reads them; a guest that sends commands without reading must
# not grow it. A keyboard buffers 16 bytes (QEMU's PS/2 queue is as long); later ones are lost.
# The byte in the controller's output buffer counts: Linux's i8042_flush gives up on a controller
# that hands out more than 16 bytes in a row.
QUEUE_LIMIT = 16


def typematic_delay(typematic: int) -> float:
    """Seconds a key is held before it starts repeating."""
    return ((typematic >> 5 & 3) + 1) * 0.25


def typematic_period(typematic: int) -> float:
    """Seconds between repeats."""
    return (8 + (typematic & 7)) * (1 << (typematic >> 3 & 3)) * 0.00417


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
    is called for the reset pulse; ``aux_irq`` is IRQ 12 (none: the mouse interrupts nothing)."""

    name = "i8042"

    def __init__(self, kbd_irq: IrqLine, on_reset: Callable[[str], None], aux_irq: IrqLine | None = None):
        self.kbd_irq = kbd_irq
        self.aux_irq = aux_irq if aux_irq is not None else IrqLine(12, lambda _gsi, _level: None)
        self._on_reset = on_reset
        self._lock = threading.Lock()
        self._queue: collections.deque[int] = collections.deque()       # the keyboard's buffer
        self._own: collections.deque[tuple[int, bool]] = collections.deque()  # (byte, AUX) answers
        self.mouse = Ps2Mouse()
        # The output buffer: its byte stays readable after the guest has taken it, and where the
        # byte came from (the keyboard, the mouse or the controller: AUX for the mouse's, D3's).
        self._out, self._out_full, self._out_aux = 0, False, False
        self._out_source: object = None
        self.ctr = CTR_KBDINT | CTR_SYS | CTR_XLATE
        self.output_port = OUTPUT_PORT_RESET | OUTPUT_PORT_A20
        self._last_was_command = False
        self._controller_arg: int | None = None   # command waiting for its data byte
        self._keyboard_arg: int | None = None
        self._scan_set = 2
        self.leds = 0
        self.typematic = TYPEMATIC_DEFAULT
        self.scanning = True
        # Typematic repeat: the key repeating, when it repeats next, and the thread doing it.
        self._held: str | None = None
        self._repeat_at = 0.0
        self._repeater: threading.Thread | None = None
        self._wake = threading.Condition(self._lock)
        self.data_port = _Port(self, 0, "i8042-data")
        self.command_port = _Port(self, 4, "i8042-cmd")

    # -- ports ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        with self._lock:
            if offset == 0:
                value = self._out
                if self._out_full:
                    self._out_full = False
                    if self._out_source is self.mouse:
                        self.mouse.taken()
                # The next byte, if any, brings a new edge.
                self.kbd_irq.set_level(False)
                self.aux_irq.set_level(False)
                self._fill()
                return value
            if offset == 4:
                status = STR_UNLOCKED | (self.ctr & CTR_SYS)
                if self._out_full:
                    status |= STR_OBF | (STR_AUXDATA if self._out_aux else 0)
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
            self._fill()
        if reset:
            self._on_reset(reset)

    # -- output buffer --------------------------------------------------------------------------
    def _fill(self) -> None:
        """Move the next byte into an empty output buffer, then drive the interrupt lines."""
        if not self._out_full:
            if self._own:
                (self._out, self._out_aux), self._out_source = self._own.popleft(), self._own
            elif self._queue and not self.ctr & CTR_KBDDIS:
                self._out, self._out_aux, self._out_source = self._queue.popleft(), False, self._queue
            elif self.mouse.pending() and not self.ctr & CTR_AUXDIS:
                self._out, self._out_aux, self._out_source = self.mouse.pull(), True, self.mouse
            else:
                self._out_source = None
            self._out_full = self._out_source is not None
        # IRQ 1 and 12 are up while a byte of theirs waits and its interrupt is enabled (ISA,
        # edge-triggered).
        self.kbd_irq.set_level(self._out_full and not self._out_aux and bool(self.ctr & CTR_KBDINT))
        self.aux_irq.set_level(self._out_full and self._out_aux and bool(self.ctr & CTR_AUXINT))

    def _keyboard_room(self) -> int:
        return QUEUE_LIMIT - len(self._queue) - (self._out_full and self._out_source is self._queue)

    # -- controller -----------------------------------------------------------------------------
    def _reply(self, *values: int) -> None:
        """Keyboard bytes, up to the keyboard's buffer size."""
        self._queue.extend(values[:max(self._keyboard_room(), 0)])

    def _answer(self, value: int, aux: bool = False) -> None:
        """The controller's own answer (``aux``: as if it came from the mouse port)."""
        if len(self._own) < QUEUE_LIMIT:
            self._own.append((value, aux))

    def _command(self, cmd: int) -> str | None:
        self._controller_arg = None
        if cmd == 0x20:
            self._answer(self.ctr)
        elif cmd in (0x60, 0xD1, 0xD2, 0xD3, 0xD4):
            self._controller_arg = cmd
        elif cmd == 0xA7:
            self.ctr |= CTR_AUXDIS
        elif cmd == 0xA8:
            self.ctr &= ~CTR_AUXDIS
        elif cmd in (0xA9, 0xAB):
            self._answer(INTERFACE_OK)
        elif cmd == 0xAA:
            self.ctr |= CTR_SYS
            self._answer(SELF_TEST_OK)
        elif cmd == 0xAD:
            self.ctr |= CTR_KBDDIS
            self._stop_repeat()
        elif cmd == 0xAE:
            self.ctr &= ~CTR_KBDDIS
        elif cmd == 0xC0:
            self._answer(0x00)
        elif cmd == 0xD0:
            self._answer(self.output_port)
        elif cmd == 0xE0:
            self._answer(0x00)
        elif cmd >= 0xF0 and not cmd & OUTPUT_PORT_RESET:
            # Pulse output port lines low for 6 us: bit 0 is the CPU's reset line.
            return f"reset pulse through the keyboard controller (command {cmd:#04x} to port 0x64)"
        return None

    def _data(self, value: int) -> str | None:
        pending, self._controller_arg = self._controller_arg, None
        if pending == 0x60:
            self.ctr = value
            if value & CTR_KBDDIS:
                self._stop_repeat()
        elif pending == 0xD1:
            self.output_port = value
            if not value & OUTPUT_PORT_RESET:
                return f"reset through the keyboard controller's output port (value {value:#04x})"
        elif pending in (0xD2, 0xD3):
            # Write the output buffer as if the keyboard (D2) or the mouse (D3) had sent the byte:
            # Linux's AUX loopback test looks for the AUX flag and IRQ 12.
            self._answer(value, aux=pending == 0xD3)
        elif pending == 0xD4:
            # Sending to a device enables its interface again (as QEMU's controller does).
            self.ctr &= ~CTR_AUXDIS
            self.mouse.command(value)
        else:
            self.ctr &= ~CTR_KBDDIS
            self._keyboard(value)
        return None

    # -- keyboard -------------------------------------------------------------------------------
    def _keyboard_defaults(self) -> None:
        self._stop_repeat()
        self._scan_set, self.leds, self.typematic = 2, 0, TYPEMATIC_DEFAULT

    def _keyboard(self, value: int) -> None:
        arg_of, self._keyboard_arg = self._keyboard_arg, None
        # A command where an argument was expected replaces the command waiting for it.
        if arg_of is not None and value < 0xED:
            if arg_of == 0xF0:
                if value == 0:
                    self._reply(ACK, self._scan_set)
                    return
                if 1 <= value <= 3:
                    self._scan_set = value
            elif arg_of == 0xED:
                self.leds = value & (LED_SCROLL_LOCK | LED_NUM_LOCK | LED_CAPS_LOCK)
            else:
                self.typematic = value & 0x7F
            self._reply(ACK)
            return
        if value in KBD_COMMANDS_WITH_ARGUMENT:
            self._keyboard_arg = value
            self._reply(ACK)
        elif value == 0xFF:
            self._keyboard_defaults()
            self.scanning = True
            self._reply(ACK, KBD_SELF_TEST_PASSED)
        elif value == 0xF2:
            self._reply(ACK, *KBD_ID)
        elif value == 0xEE:
            self._reply(0xEE)
        elif value == 0xF4:
            self.scanning = True
            self._reply(ACK)
        elif value in (0xF5, 0xF6):       # defaults, and scanning off (F5) or on (F6)
            self._keyboard_defaults()
            self.scanning = value == 0xF6
            self._reply(ACK)
        elif 0xF7 <= value <= 0xFD:       # scan set 3 key types: nothing to set in sets 1 and 2
            self._reply(ACK)
        else:
            self._reply(RESEND)

    # -- input from the user --------------------------------------------------------------------
    def room(self) -> int:
        """How many more bytes the keyboard's buffer takes now."""
        with self._lock:
            return self._keyboard_room()

    def _queue_key(self, name: str, down: bool) -> bool:
        scan_set = 1 if self.ctr & CTR_XLATE or self._scan_set == 1 else 2
        codes = scan_codes(name, down, scan_set)
        if len(codes) > self._keyboard_room():
            return False
        self._queue.extend(codes)
        self._fill()
        return True

    def key(self, name: str, down: bool) -> bool:
        """Press or release key ``name`` (see ``ps2_keys.KEYS``): its scan codes in the set the
        guest sees (set 1 when the controller translates, else the keyboard's set). False when
        the keyboard cannot take it now (nothing is queued then): its buffer is full, or the
        guest has turned scanning off (command F5). A key pressed and not released repeats at
        the typematic rate until it is released or another key is pressed."""
        with self._lock:
            if not down and name == self._held:
                self._stop_repeat()        # the key is up even if its break code finds no room
            if not self.scanning or not self._queue_key(name, down):
                return False
            if down:
                self._held, self._repeat_at = name, time.monotonic() + typematic_delay(self.typematic)
                if self._repeater is None:
                    self._repeater = start_thread(self._repeat, "i8042-typematic")
                self._wake.notify()
            return True

    def _stop_repeat(self) -> None:
        self._held = None
        self._wake.notify()

    def _repeat(self) -> None:
        # The keyboard's typematic repeat: the held key's make code again every period; a repeat
        # that finds the buffer full is lost, as a real keyboard's is.
        with self._lock:
            while self._held is not None:
                now = time.monotonic()
                if now < self._repeat_at:
                    self._wake.wait(self._repeat_at - now)
                    continue
                if not self.ctr & CTR_KBDDIS:
                    self._queue_key(self._held, True)
                # After a stall (the host was busy), go on at the rate instead of catching up.
                period = typematic_period(self.typematic)
                self._repeat_at = max(self._repeat_at + period, now + period / 2)
            self._repeater = None

    def mouse_event(self, dx: int = 0, dy: int = 0, wheel: int = 0, press: int = 0, release: int = 0) -> bool:
        """The user moved the mouse by ``dx``, ``dy`` counts (right, up) and the wheel by ``wheel``
        (toward the user), and/or pressed or released buttons (masks of ``ps2_mouse.LEFT`` ...).
        False when the mouse cannot take it yet (see ``Ps2Mouse.event``); nothing changed then."""
        with self._lock:
            buttons = (self.mouse.buttons | press) & ~release
            taken = self.mouse.event(dx, dy, wheel, buttons)
            self._fill()
            return taken
