"""The PS/2 mouse behind the i8042's AUX port, driven the way Linux's i8042 and psmouse drivers
drive it (drivers/input/serio/i8042.c, drivers/input/mouse/psmouse-base.c) and checked against
the PS/2 mouse protocol (Adam Chapweske's "PS/2 Mouse Interface"; Microsoft's IntelliMouse
extensions): packet bytes are worked out by hand from the packet layout, then decoded the way
psmouse_process_byte decodes them."""
from __future__ import annotations

import pytest

from hvm.devices.i8042 import I8042
from hvm.irq import RecordingIrqLine
from hvm.keyboard import Mouse

OBF, AUXDATA = 0x01, 0x20
CTR_KBDINT, CTR_AUXINT, CTR_KBDDIS, CTR_AUXDIS = 0x01, 0x02, 0x10, 0x20


class Rig:
    def __init__(self):
        self.irq1, self.irq12 = RecordingIrqLine(1), RecordingIrqLine(12)
        self.kbc = I8042(self.irq1, lambda why: None, aux_irq=self.irq12)

    def status(self) -> int:
        return self.kbc.read(4, 1)

    def command(self, cmd: int, *data: int) -> None:
        self.kbc.write(4, 1, cmd)
        for byte in data:
            self.kbc.write(0, 1, byte)

    def read(self) -> tuple[int, bool]:
        """(byte, came on the AUX channel) as i8042_interrupt sorts it."""
        status = self.status()
        assert status & OBF, "nothing to read"
        return self.kbc.read(0, 1), bool(status & AUXDATA)

    def drain(self) -> list[tuple[int, bool]]:
        out = []
        while self.status() & OBF:
            out.append(self.read())
        return out

    def aux(self, *bytes_: int) -> list[int]:
        """Send bytes to the mouse (i8042_aux_write: D4 before each); all replies are AUX data."""
        for byte in bytes_:
            self.command(0xD4, byte)
        replies = self.drain()
        assert all(aux for _, aux in replies), replies
        return [value for value, _ in replies]

    def enable_aux(self) -> None:
        """What i8042_enable_aux_port writes: AUX interface on, its interrupt on."""
        self.command(0x20)
        [(ctr, _)] = self.drain()
        self.command(0x60, (ctr & ~CTR_AUXDIS) | CTR_AUXINT)


def test_linux_i8042_probe_finds_an_aux_port_with_working_irq12():
    rig = Rig()
    assert rig.drain() == []                                     # i8042_controller_check: flush
    rig.command(0x20)
    rig.command(0x20)
    [(ctr, aux1), (again, aux2)] = rig.drain()                   # i8042_controller_init: stable CTR
    assert ctr == again and not aux1 and not aux2
    ctr = (ctr | CTR_KBDDIS) & ~CTR_KBDINT
    rig.command(0x60, ctr)
    rig.command(0xD3, 0x5A)                                      # i8042_check_aux: internal loopback
    status = rig.status()
    assert status & OBF and status & AUXDATA                     # else "auxerr" and no AUX port
    assert rig.read() == (0x5A, True)
    rig.command(0xA9)                                            # the external test Linux falls back on
    assert rig.drain() == [(0x00, False)]
    rig.command(0xA7)                                            # i8042_toggle_aux(false)
    rig.command(0x20)
    assert rig.drain()[0][0] & CTR_AUXDIS
    rig.command(0xA8)                                            # i8042_toggle_aux(true)
    rig.command(0x20)
    [(ctr, _)] = rig.drain()
    assert not ctr & CTR_AUXDIS
    # AUX IRQ delivery test: with the AUX interrupt on, the loopback byte raises IRQ 12, not IRQ 1.
    rig.command(0x60, (ctr & ~CTR_AUXDIS) | CTR_AUXINT)
    kbd_edges = rig.irq1.history.count(True)
    rig.command(0xD3, 0xA5)
    assert rig.irq12.level and not rig.irq1.level
    assert rig.read() == (0xA5, True)
    assert not rig.irq12.level and rig.irq1.history.count(True) == kbd_edges
    # i8042_set_mux_mode: an active multiplexer would answer the third byte with its version;
    # a plain controller echoes it, and Linux goes on with a legacy AUX port.
    for byte in (0xF0, 0x56, 0xA4):
        rig.command(0xD3, byte)
        assert rig.read() == (byte, True)


def test_psmouse_probe_reset_and_intellimouse_knocks():
    rig = Rig()
    assert rig.aux(0xF2) == [0xFA, 0x00]                         # psmouse_probe: a plain PS/2 mouse
    assert rig.aux(0xFF) == [0xFA, 0xAA, 0x00]                   # reset: BAT passed, ID 0
    assert rig.aux(0xF6) == [0xFA]
    # intellimouse_detect: sample rates 200, 100, 80, then the ID is 3 (a wheel).
    assert rig.aux(0xF3, 200, 0xF3, 100, 0xF3, 80) == [0xFA] * 6
    assert rig.aux(0xF2) == [0xFA, 0x03]
    # im_explorer_detect: 200, 200, 80 next, then the ID is 4 (wheel and five buttons).
    assert rig.aux(0xF3, 200, 0xF3, 200, 0xF3, 80) == [0xFA] * 6
    assert rig.aux(0xF2) == [0xFA, 0x04]
    assert rig.aux(0xFF) == [0xFA, 0xAA, 0x00]                   # a reset forgets the mode
    assert rig.aux(0xF2) == [0xFA, 0x00]
    # 200, 200, 80 alone (without the wheel first) does not make an Explorer.
    rig.aux(0xF3, 200, 0xF3, 200, 0xF3, 80)
    assert rig.aux(0xF2) == [0xFA, 0x00]


def test_status_request_settings_wrap_mode_and_unknown_commands():
    rig = Rig()
    # Defaults: stream mode, reporting off, 1:1, resolution 2 (4 counts/mm), 100 samples/s.
    assert rig.aux(0xE9) == [0xFA, 0x00, 0x02, 100]
    rig.aux(0xE8, 3, 0xF3, 40, 0xE7, 0xF4)
    assert rig.aux(0xE9) == [0xFA, 0x30, 0x03, 40]               # enabled | 2:1 scaling
    rig.kbc.mouse_event(press=0x01 | 0x02)                       # left and right held
    rig.drain()
    assert rig.aux(0xF5, 0xF0, 0xE6, 0xE9) == [0xFA, 0xFA, 0xFA, 0xFA, 0x40 | 0x04 | 0x01, 0x03, 40]
    # Defaults again; the buttons are still down.
    assert rig.aux(0xF6, 0xE9) == [0xFA, 0xFA, 0x04 | 0x01, 0x02, 100]
    # Wrap mode echoes everything but EC (leave) and FF (reset).
    assert rig.aux(0xEE, 0x12, 0xF2, 0xEC, 0xF2) == [0xFA, 0x12, 0xF2, 0xFA, 0xFA, 0x00]
    assert rig.aux(0xD1) == [0xFE]                               # not a mouse command
    assert rig.aux(0xF2, 0xFE) == [0xFA, 0x00, 0xFA, 0x00]       # resend repeats the last reply


def _streaming(rig: Rig) -> None:
    rig.enable_aux()
    assert rig.aux(0xF4) == [0xFA]


def test_movement_packets_as_the_protocol_lays_them_out():
    rig = Rig()
    _streaming(rig)
    mouse = Mouse(rig.kbc)
    # 5 right and 3 down on screen: PS/2 counts Y up, so dy = -3: byte 0 = always-1 (0x08) |
    # Y sign (0x20); X = 0x05; Y = -3 & 0xFF = 0xFD.
    mouse.move(5, 3)
    packet = rig.aux()
    assert packet == [0x28, 0x05, 0xFD]
    # psmouse_process_byte's decoding gives back the move (REL_Y grows downward).
    rel_x = packet[1] - ((packet[0] << 4) & 0x100)
    rel_y = ((packet[0] << 3) & 0x100) - packet[2]
    assert (rel_x, rel_y) == (5, 3)
    mouse.press("left")
    assert rig.aux() == [0x09, 0x00, 0x00]
    mouse.move(-1, -1)                                           # left still held; X sign, Y up
    assert rig.aux() == [0x19, 0xFF, 0x01]
    mouse.release("left")
    assert rig.aux() == [0x08, 0x00, 0x00]
    mouse.click("right")
    assert rig.aux() == [0x0A, 0x00, 0x00, 0x08, 0x00, 0x00]


def test_a_long_move_is_split_into_nine_bit_packets():
    rig = Rig()
    _streaming(rig)
    Mouse(rig.kbc).move(600, -300)          # 600 right, 300 up: counts reach +-255 per packet
    assert rig.aux() == [0x08, 0xFF, 0xFF, 0x08, 0xFF, 0x2D, 0x08, 0x5A, 0x00]
    Mouse(rig.kbc).move(-300, 0)            # -255 is 0x101 in 9 bits: sign bit and 0x01
    assert rig.aux() == [0x18, 0x01, 0x00, 0x18, 0xD3, 0x00]


def test_counter_overflow_in_remote_mode():
    rig = Rig()
    rig.enable_aux()
    assert rig.aux(0xF0) == [0xFA]                               # remote mode: no packets on their own
    assert rig.kbc.mouse_event(dx=400, dy=-20)
    assert rig.drain() == []
    # Read data: X stopped at 255 with its overflow bit (0x40); Y -20 (sign 0x20, 0xEC).
    assert rig.aux(0xEB) == [0xFA, 0x08 | 0x40 | 0x20, 0xFF, 0xEC]
    assert rig.aux(0xEB) == [0xFA, 0x08, 0x00, 0x00]             # the counters were cleared


def test_wheel_and_extra_buttons_after_the_knocks():
    rig = Rig()
    rig.enable_aux()
    rig.aux(0xF3, 200, 0xF3, 100, 0xF3, 80, 0xF4)
    mouse = Mouse(rig.kbc)
    mouse.move(0, 0, wheel=1)               # scroll up: Z = -1; psmouse: REL_WHEEL = -(s8)Z = 1
    assert rig.aux() == [0x08, 0x00, 0x00, 0xFF]
    mouse.move(0, 0, wheel=-2)
    assert rig.aux() == [0x08, 0x00, 0x00, 0x02]
    rig.aux(0xF3, 200, 0xF3, 200, 0xF3, 80)
    mouse.press("side")                     # ID 4: Z in bits 0-3, button 4 in bit 4, button 5 in bit 5
    assert rig.aux() == [0x08, 0x00, 0x00, 0x10]
    mouse.move(0, 0, wheel=3)
    assert rig.aux() == [0x08, 0x00, 0x00, 0x10 | 0x0D]       # -3 in four bits
    mouse.release("side")
    assert rig.aux() == [0x08, 0x00, 0x00, 0x00]


def test_two_to_one_scaling_in_stream_mode():
    rig = Rig()
    _streaming(rig)
    rig.aux(0xE7)
    rig.kbc.mouse_event(dx=4, dy=200)        # 4 -> 6; 200 goes as 127 (-> 254) and 73 (-> 146)
    assert rig.aux() == [0x08, 0x06, 0xFE, 0x08, 0x00, 0x92]


def test_nothing_is_sent_before_the_guest_enables_reporting():
    rig = Rig()
    rig.enable_aux()
    mouse = Mouse(rig.kbc)
    mouse.move(10, 10)
    mouse.click()
    assert rig.drain() == []


def test_keyboard_and_mouse_bytes_keep_their_source_and_irq():
    rig = Rig()
    rig.command(0x60, CTR_KBDINT | CTR_AUXINT | 0x04 | 0x40)    # both interrupts on, XLATE
    assert rig.aux(0xF4) == [0xFA]
    assert rig.kbc.mouse_event(dx=1)
    assert rig.irq12.level and not rig.irq1.level               # the mouse byte is at the head
    assert rig.kbc.key("a", True)
    assert rig.read() == (0x08, True)
    # The keyboard goes first once the buffer is free; the rest of the packet waits behind it.
    assert rig.irq1.level and not rig.irq12.level
    assert rig.read() == (0x1E, False)
    assert rig.irq12.level and not rig.irq1.level
    assert rig.drain() == [(0x01, True), (0x00, True)]
    assert not rig.irq1.level and not rig.irq12.level
    # With the AUX interrupt off the byte is flagged AUX but raises nothing (polling).
    rig.command(0x60, CTR_KBDINT | 0x04 | 0x40)
    edges = rig.irq12.history.count(True), rig.irq1.history.count(True)
    rig.kbc.mouse_event(dx=2)
    assert rig.status() & (OBF | AUXDATA) == OBF | AUXDATA
    assert (rig.irq12.history.count(True), rig.irq1.history.count(True)) == edges
    assert rig.drain() == [(0x08, True), (0x02, True), (0x00, True)]


def test_a_disabled_aux_interface_holds_mouse_bytes():
    rig = Rig()
    rig.enable_aux()
    rig.aux(0xF4)
    rig.command(0xA7)                                            # AUX interface off
    assert rig.kbc.mouse_event(dx=1)
    assert not rig.status() & OBF
    rig.command(0xA8)
    assert rig.aux() == [0x08, 0x01, 0x00]
    # Sending to the mouse turns its interface on again (i8042 behaviour QEMU models).
    rig.command(0xA7)
    assert rig.aux(0xF2) == [0xFA, 0x00]


def test_replies_do_not_split_a_packet_and_queues_stay_bounded():
    rig = Rig()
    _streaming(rig)
    rig.kbc.mouse_event(dx=3)
    assert rig.read() == (0x08, True)        # a packet begun...
    rig.command(0xD4, 0xF2)                  # ...then a command: its reply waits for the packet's end
    assert [v for v, _ in rig.drain()] == [0x03, 0x00, 0xFA, 0x00]
    # A guest that sends a million commands and reads nothing cannot grow hvm.
    for _ in range(10_000):
        rig.command(0xD4, 0xE9)
        rig.command(0xD3, 0x55)
    assert rig.kbc.mouse.queued() <= 16 and len(rig.kbc._own) <= 16
    # A user who keeps moving a mouse nobody reads is held off, not queued without end.
    rig.drain()
    taken = sum(rig.kbc.mouse_event(dx=1) for _ in range(1000))
    assert taken <= 6 and rig.kbc.mouse.queued() <= 16


def test_the_api_waits_for_the_guest_and_gives_up():
    rig = Rig()
    _streaming(rig)
    mouse = Mouse(rig.kbc)
    for _ in range(5):
        mouse.move(1, 0)                     # five 3-byte packets fill the 16-byte queue
    with pytest.raises(TimeoutError):
        mouse.move(1, 0, timeout=0.05)
    with pytest.raises(ValueError):
        mouse.click("fourth")


def test_the_machine_wires_the_mouse_to_irq12(tmp_path):
    from hvm.config import MachineConfig
    from hvm.machine import Machine

    boot = tmp_path / "idle.img"
    boot.write_bytes(b"\xf4" + bytes(509) + b"\x55\xaa")
    with Machine(MachineConfig(kernel=str(boot), memory="16M", accel="unicorn")) as machine:
        mouse = machine.mouse
        assert isinstance(mouse, Mouse) and mouse.i8042 is machine.keyboard.i8042
        assert mouse.i8042.aux_irq.gsi == 12 and mouse.i8042.kbd_irq.gsi == 1
