"""A PS/2 mouse behind the i8042's auxiliary port: the command set, stream and remote modes and
movement packets of Adam Chapweske's "PS/2 Mouse Interface" notes (the IBM PS/2 mouse protocol),
with the IntelliMouse extensions Linux's psmouse driver and QEMU's ps2 mouse use: the sample-rate
knock 200, 100, 80 turns the mouse into a wheel mouse (device ID 3, a fourth packet byte for the
wheel), and 200, 200, 80 after that into a five-button one (ID 4).

The controller owns the lock: every method here is called with ``I8042._lock`` held. Movement
and buttons come from the host API through ``event``; the controller takes the mouse's bytes one
at a time with ``pull``.

Directions are the protocol's own: X grows to the right, Y grows *up*, and a positive wheel count
is the wheel turned toward the user (Linux reports it as REL_WHEEL -1, a scroll down).
"""
from __future__ import annotations

import collections

ACK, RESEND, SELF_TEST_PASSED = 0xFA, 0xFE, 0xAA
ID_STANDARD, ID_WHEEL, ID_FIVE_BUTTONS = 0x00, 0x03, 0x04
# What the mouse holds for the host (QEMU's PS/2 queue is as long). A guest that sends commands and
# reads nothing must not grow it; replies past the limit are lost, as on a real device.
QUEUE_LIMIT = 16

# Byte 0 of a movement packet: overflow and sign bits of the 9-bit counters, bit 3 always set,
# then the middle, right and left buttons.
Y_OVERFLOW, X_OVERFLOW, Y_SIGN, X_SIGN, ALWAYS_ONE = 0x80, 0x40, 0x20, 0x10, 0x08
LEFT, RIGHT, MIDDLE, BUTTON_4, BUTTON_5 = 0x01, 0x02, 0x04, 0x08, 0x10
ALL_BUTTONS = LEFT | RIGHT | MIDDLE | BUTTON_4 | BUTTON_5
# Byte 0 of the status report (command E9): its buttons are in the reverse order of a packet's.
STATUS_REMOTE, STATUS_ENABLED, STATUS_SCALING_2_1 = 0x40, 0x20, 0x10
STATUS_LEFT, STATUS_MIDDLE, STATUS_RIGHT = 0x04, 0x02, 0x01

COUNTER_LIMIT = 255              # the movement counters are 9-bit two's complement
WHEEL_MIN, WHEEL_MAX = -8, 7     # the IntelliMouse's Z count is 4 bits
DEFAULT_SAMPLE_RATE, DEFAULT_RESOLUTION = 100, 2   # 100 samples/s, 4 counts/mm

COMMANDS_WITH_ARGUMENT = (0xE8, 0xF3)   # set resolution, set sample rate
KNOCK_WHEEL, KNOCK_FIVE_BUTTONS = (200, 100, 80), (200, 200, 80)


def _clamp(value: int, low: int, high: int) -> int:
    return max(low, min(high, value))


def _scaled_2_1(count: int) -> int:
    """2:1 scaling (command E7) as the protocol tabulates it: 1 -> 1, 2 -> 1, 3 -> 3, 4 -> 6,
    5 -> 9, beyond that twice the count; the sign is kept."""
    magnitude = abs(count)
    scaled = (0, 1, 1, 3, 6, 9)[magnitude] if magnitude <= 5 else 2 * magnitude
    return -scaled if count < 0 else scaled


class Ps2Mouse:
    """The mouse's state machine and output queue."""

    def __init__(self) -> None:
        self._replies: collections.deque[int] = collections.deque()   # answers to commands
        self._packets: collections.deque[bytes] = collections.deque()   # movement not yet begun
        self._sending: collections.deque[int] = collections.deque()   # rest of a begun packet
        self._rates: collections.deque[int] = collections.deque(maxlen=len(KNOCK_WHEEL))
        self._last: bytes = b""        # what FE (resend) repeats
        self._argument_of: int | None = None
        # The controller's output buffer holds one of our bytes: it counts against the queue, as
        # the byte on the wire does on a real device.
        self.latched = False
        self.buttons = 0
        self.device_id = ID_STANDARD
        self.wrap = False
        self._defaults()

    def _defaults(self) -> None:
        self.sample_rate, self.resolution = DEFAULT_SAMPLE_RATE, DEFAULT_RESOLUTION
        self.scaling_2_1 = self.remote = self.reporting = False
        self._clear_counters()

    def _clear_counters(self) -> None:
        self._dx = self._dy = self._dz = 0
        self._x_overflow = self._y_overflow = False
        self._reported_buttons = self._shown_buttons()

    def _shown_buttons(self) -> int:
        # Buttons 4 and 5 exist for the guest only once it has switched the mouse to ID 4.
        return self.buttons & (ALL_BUTTONS if self.device_id == ID_FIVE_BUTTONS else LEFT | RIGHT | MIDDLE)

    def _unreported(self) -> bool:
        return bool(self._dx or self._dy or self._dz or self._shown_buttons() != self._reported_buttons)

    # -- output ---------------------------------------------------------------------------------
    def queued(self) -> int:
        """Bytes the mouse holds for the host, the one in the controller's output buffer included."""
        return (len(self._replies) + len(self._sending) + sum(len(p) for p in self._packets)
                + self.latched)

    def pending(self) -> bool:
        return bool(self._replies or self._sending or self._packets)

    def pull(self) -> int:
        """The next byte for the controller (only called when ``pending``). A reply goes ahead of
        packets not yet begun, never into the middle of one, so the host always sees whole
        packets and gets its answers without waiting behind movement."""
        if self._sending:
            value = self._sending.popleft()
        elif self._replies:
            value = self._replies.popleft()
        else:
            self._sending.extend(self._packets.popleft())
            value = self._sending.popleft()
        self.latched = True
        return value

    def taken(self) -> None:
        """The host read our byte from the controller: room for movement that waited."""
        self.latched = False
        self._report()

    def _reply(self, *values: int) -> None:
        self._last = bytes(values)
        room = QUEUE_LIMIT - self.queued()
        self._replies.extend(values[:max(room, 0)])

    def _drop_movement(self) -> None:
        # Packets not begun are dropped with the counters they came from; a begun one is finished.
        self._packets.clear()
        self._clear_counters()

    # -- commands from the host (controller command D4) -----------------------------------------
    def command(self, value: int) -> None:
        argument_of, self._argument_of = self._argument_of, None
        if argument_of is not None:
            self._argument(argument_of, value)
            return
        if self.wrap and value not in (0xEC, 0xFF):
            self._reply(value)       # wrap ("echo") mode returns every byte but these two
            return
        if value == 0xFF:            # reset: self-test passed, then the device ID
            self._packets.clear()
            self._sending.clear()
            self._replies.clear()
            self.device_id, self.wrap = ID_STANDARD, False
            self._rates.clear()
            self._defaults()
            self._reply(ACK, SELF_TEST_PASSED, ID_STANDARD)
        elif value == 0xFE:          # resend the last packet or reply
            self._reply(*(self._last or bytes([ACK])))
        elif value == 0xF6:          # set defaults (the device ID stays, as QEMU's does)
            self._drop_movement()
            self._defaults()
            self._reply(ACK)
        elif value == 0xF5:
            self._drop_movement()
            self.reporting = False
            self._reply(ACK)
        elif value == 0xF4:
            self._clear_counters()
            self.reporting = True
            self._reply(ACK)
        elif value in COMMANDS_WITH_ARGUMENT:
            self._argument_of = value
            self._reply(ACK)
        elif value == 0xF2:
            self._reply(ACK, self.device_id)
        elif value in (0xF0, 0xEA):  # remote / stream mode
            self._drop_movement()
            self.remote = value == 0xF0
            self._reply(ACK)
        elif value == 0xEB:          # read data: one packet from the counters, then they clear
            self._reply(ACK)
            if QUEUE_LIMIT - self.queued() >= self._packet_size():
                self._replies.extend(self._packet(stream=False))
            self._clear_counters()
        elif value == 0xEE:
            self._drop_movement()
            self.wrap = True
            self._reply(ACK)
        elif value == 0xEC:
            self._drop_movement()
            self.wrap = False
            self._reply(ACK)
        elif value == 0xE9:          # status request
            status = (STATUS_REMOTE if self.remote else 0) | (STATUS_ENABLED if self.reporting else 0)
            status |= STATUS_SCALING_2_1 if self.scaling_2_1 else 0
            for button, bit in ((LEFT, STATUS_LEFT), (MIDDLE, STATUS_MIDDLE), (RIGHT, STATUS_RIGHT)):
                status |= bit if self.buttons & button else 0
            self._reply(ACK, status, self.resolution, self.sample_rate)
        elif value in (0xE6, 0xE7):
            self.scaling_2_1 = value == 0xE7
            self._reply(ACK)
        else:
            self._reply(RESEND)

    def _argument(self, command: int, value: int) -> None:
        # Any value is taken, as by QEMU's mouse: probes of other pads (Synaptics, ALPS, Elantech)
        # send odd ones and expect an ACK before they decide the mouse is not theirs.
        if command == 0xE8:
            self.resolution = value
            self._clear_counters()
        else:
            self.sample_rate = value
            self._rates.append(value)
            knock = tuple(self._rates)
            if knock == KNOCK_WHEEL:
                self.device_id = ID_WHEEL
            elif knock == KNOCK_FIVE_BUTTONS and self.device_id == ID_WHEEL:
                self.device_id = ID_FIVE_BUTTONS
        self._reply(ACK)

    # -- movement -------------------------------------------------------------------------------
    def _packet_size(self) -> int:
        return 4 if self.device_id in (ID_WHEEL, ID_FIVE_BUTTONS) else 3

    def _packet(self, stream: bool) -> bytes:
        """One packet from the counters, which keep what it could not carry. 2:1 scaling applies
        to stream reports only; there a count is split at 127 so that its scaled value fits."""
        scaled = stream and self.scaling_2_1
        limit = 127 if scaled else COUNTER_LIMIT
        dx, dy = _clamp(self._dx, -limit, limit), _clamp(self._dy, -limit, limit)
        dz = _clamp(self._dz, WHEEL_MIN, WHEEL_MAX)
        self._dx, self._dy, self._dz = self._dx - dx, self._dy - dy, self._dz - dz
        if scaled:
            dx, dy = _scaled_2_1(dx), _scaled_2_1(dy)
        head = ALWAYS_ONE | self.buttons & (LEFT | RIGHT | MIDDLE)
        head |= (X_SIGN if dx < 0 else 0) | (Y_SIGN if dy < 0 else 0)
        head |= (X_OVERFLOW if self._x_overflow else 0) | (Y_OVERFLOW if self._y_overflow else 0)
        self._x_overflow = self._y_overflow = False
        packet = [head, dx & 0xFF, dy & 0xFF]
        if self.device_id == ID_WHEEL:
            packet.append(dz & 0xFF)
        elif self.device_id == ID_FIVE_BUTTONS:
            packet.append(dz & 0x0F | (self.buttons & (BUTTON_4 | BUTTON_5)) << 1)
        self._reported_buttons = self._shown_buttons()
        self._last = bytes(packet)
        return self._last

    def _saturate(self) -> None:
        # A counter past its 9-bit range stops there and raises its overflow bit, which the next
        # packet carries (the protocol's overflow semantics).
        if abs(self._dx) > COUNTER_LIMIT:
            self._dx, self._x_overflow = COUNTER_LIMIT if self._dx > 0 else -COUNTER_LIMIT, True
        if abs(self._dy) > COUNTER_LIMIT:
            self._dy, self._y_overflow = COUNTER_LIMIT if self._dy > 0 else -COUNTER_LIMIT, True
        self._dz = _clamp(self._dz, -128, 127)

    def _streaming(self) -> bool:
        return self.reporting and not self.remote and not self.wrap

    def _report(self) -> None:
        """Stream mode: turn the counters into packets while the queue has room; a large move
        becomes several in-range packets."""
        if not self._streaming():
            return
        size = self._packet_size()
        while self._unreported() and QUEUE_LIMIT - self.queued() >= size:
            self._packets.append(self._packet(stream=True))
        self._saturate()

    def event(self, dx: int, dy: int, dz: int, buttons: int | None) -> bool:
        """The user moved the mouse (``dx`` right, ``dy`` up, ``dz`` wheel toward the user) and/or
        set ``buttons`` (a mask of LEFT...BUTTON_5). False when the mouse cannot take it yet: it
        is streaming and still holds movement from before, or no packet fits; the caller tries
        again once the guest has read. Taken but not sent: reporting off (the guest does not
        listen) or remote mode (the counters keep it for command EB)."""
        if self.device_id == ID_STANDARD:
            dz = 0                   # no wheel until the guest asks for one
        if not (dx or dy or dz) and buttons in (None, self.buttons):
            return True
        if self._streaming() and (self._unreported() or QUEUE_LIMIT - self.queued() < self._packet_size()):
            return False
        if buttons is not None:
            self.buttons = buttons & ALL_BUTTONS
        if self.remote:
            self._dx, self._dy, self._dz = self._dx + dx, self._dy + dy, self._dz + dz
            self._saturate()
        elif self._streaming():
            self._dx, self._dy, self._dz = dx, dy, dz
            self._report()
        else:
            self._reported_buttons = self._shown_buttons()
        return True
