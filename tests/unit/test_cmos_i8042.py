"""CMOS/RTC and the i8042 keyboard controller as register state machines (no KVM): what Linux's
rtc-cmos, mc146818 time reading, i8042 and atkbd probing see, and the 0xFE reset pulse."""
from __future__ import annotations

import calendar

from hvm.devices.cmos_rtc import CmosRtc, started_clock
from hvm.devices.i8042 import I8042
from hvm.irq import IrqLine

MiB = 1 << 20
T0 = calendar.timegm((2026, 11, 25, 21, 7, 9))  # a Wednesday


def _rtc(clock=lambda: T0, **kw):
    return CmosRtc(kw.pop("below_4g", 256 * MiB), clock=clock, **kw)


def cmos(rtc, index, value=None):
    rtc.write(0, 1, index)
    if value is None:
        return rtc.read(1, 1)
    rtc.write(1, 1, value)
    return None


def test_time_in_bcd_24h_and_binary_12h():
    rtc = _rtc()
    assert [cmos(rtc, i) for i in (0, 2, 4, 6, 7, 8, 9, 0x32)] == [0x09, 0x07, 0x21, 0x04, 0x25, 0x11, 0x26, 0x20]
    cmos(rtc, 0x0B, 0x04)  # binary, 12-hour
    assert [cmos(rtc, i) for i in (4, 7, 9)] == [0x80 | 9, 25, 26]


def test_guest_setting_the_clock_moves_an_offset_not_the_host():
    now = [T0]
    rtc = _rtc(clock=lambda: now[0])
    cmos(rtc, 0x0B, 0x82)           # SET, 24h, BCD
    cmos(rtc, 9, 0x30)              # year 2030
    cmos(rtc, 0x0B, 0x02)           # clear SET: the new time takes effect
    assert cmos(rtc, 9) == 0x30 and cmos(rtc, 0) == 0x09
    now[0] += 61
    assert (cmos(rtc, 0), cmos(rtc, 2), cmos(rtc, 9)) == (0x10, 0x08, 0x30)


def test_status_and_memory_bytes():
    now = [T0 + 0.5]   # mid-second: no update cycle near
    rtc = _rtc(clock=lambda: now[0], below_4g=3 * 1024 * MiB, above_4g=2 * 1024 * MiB, cpus=4)
    assert cmos(rtc, 0x0A) & 0x80 == 0 and cmos(rtc, 0x0D) == 0x80
    now[0] += 1
    assert cmos(rtc, 0x0C) & 0x10 and not cmos(rtc, 0x0C) & 0x10   # update-ended: read clears
    assert cmos(rtc, 0x15) | cmos(rtc, 0x16) << 8 == 640
    assert cmos(rtc, 0x17) | cmos(rtc, 0x18) << 8 == 0xFFFF                # capped at 64 MiB-1 KiB
    assert cmos(rtc, 0x34) | cmos(rtc, 0x35) << 8 == (3 * 1024 - 16) * 16    # 64 KiB units above 16 MiB
    assert cmos(rtc, 0x5B) | cmos(rtc, 0x5C) << 8 | cmos(rtc, 0x5D) << 16 == 2 * 1024 * 16
    assert cmos(rtc, 0x5F) == 3
    rtc.write(0, 1, 0x80 | 0x0F)
    assert rtc.nmi_masked and rtc.index == 0x0F


class _Line:
    def __init__(self):
        self.levels = []

    def __call__(self, gsi, level):
        self.levels.append(level)


def _kbc():
    line, resets = _Line(), []
    return I8042(IrqLine(1, line), resets.append), line, resets


def _cmd(kbc, cmd, data=None):
    kbc.command_port.write(0, 1, cmd)
    if data is not None:
        kbc.data_port.write(0, 1, data)


def _drain(kbc):
    out = []
    while kbc.command_port.read(0, 1) & 1:
        out.append(kbc.data_port.read(0, 1))
    return out


def test_controller_self_test_ctr_and_keyboard_probe():
    kbc, line, _ = _kbc()
    _cmd(kbc, 0xAA)
    assert _drain(kbc) == [0x55] and kbc.command_port.read(0, 1) & 0x04   # SYS flag
    _cmd(kbc, 0x20)
    [ctr] = _drain(kbc)
    _cmd(kbc, 0x60, ctr & ~0x01)                 # keyboard interrupt off while probing
    seen = len(line.levels)
    kbc.data_port.write(0, 1, 0xF2)
    assert _drain(kbc) == [0xFA, 0xAB, 0x83]
    kbc.data_port.write(0, 1, 0xED)
    kbc.data_port.write(0, 1, 0x07)
    assert _drain(kbc) == [0xFA, 0xFA]
    assert not any(line.levels[seen:])          # nothing raised with the interrupt disabled
    _cmd(kbc, 0x60, ctr | 0x01)
    seen = len(line.levels)
    kbc.data_port.write(0, 1, 0xFF)
    assert line.levels[-1] is True
    assert _drain(kbc) == [0xFA, 0xAA] and line.levels[-1] is False
    assert line.levels[seen:].count(True) == 2   # one edge per byte


def test_empty_data_port_reads_the_last_byte_again():
    # The 8042's output register keeps its byte once read (QEMU returns it too): SeaBIOS, reading
    # port 0x60 after an interrupt whose byte was taken, must not see a scancode 0x00.
    kbc, _, _ = _kbc()
    kbc.data_port.write(0, 1, 0xF2)
    assert _drain(kbc) == [0xFA, 0xAB, 0x83]
    assert not kbc.command_port.read(0, 1) & 1
    assert kbc.data_port.read(0, 1) == 0x83 and kbc.data_port.read(0, 1) == 0x83
    assert kbc.key("a", True)
    assert kbc.data_port.read(0, 1) == 0x1E and kbc.data_port.read(0, 1) == 0x1E


def test_leds_typematic_byte_and_scanning():
    """ED sets the LEDs (bit 0 Scroll, 1 Num, 2 Caps Lock), F3 the typematic byte; F5 stops
    scanning and restores the defaults, F4 starts scanning, FF resets (IBM PS/2 keyboard
    reference)."""
    kbc, _, _ = _kbc()
    assert (kbc.leds, kbc.typematic) == (0, 0x2B)               # power-on: 10.9 cps after 500 ms
    for byte in (0xED, 0x06, 0xF3, 0x7F):
        kbc.data_port.write(0, 1, byte)
    assert _drain(kbc) == [0xFA] * 4
    assert kbc.leds == 0x06 and kbc.typematic == 0x7F             # Num and Caps Lock; 2 cps, 1 s
    from hvm.devices.i8042 import typematic_delay, typematic_period
    assert typematic_delay(0x7F) == 1.0 and abs(1 / typematic_period(0x7F) - 2.0) < 0.01
    assert typematic_delay(0x00) == 0.25 and abs(1 / typematic_period(0x00) - 30.0) < 0.1
    assert abs(1 / typematic_period(0x2B) - 10.9) < 0.05
    kbc.data_port.write(0, 1, 0xF5)
    assert _drain(kbc) == [0xFA] and (kbc.leds, kbc.typematic) == (0, 0x2B)
    assert not kbc.key("a", True)                               # not scanning: the key waits
    kbc.data_port.write(0, 1, 0xF4)
    assert _drain(kbc) == [0xFA] and kbc.key("a", True)
    assert _drain(kbc) == [0x1E]
    kbc.data_port.write(0, 1, 0xED)
    kbc.data_port.write(0, 1, 0xFF)                             # a command where the LEDs were due
    assert _drain(kbc) == [0xFA, 0xFA, 0xAA] and kbc.leds == 0


def test_a_disabled_keyboard_interface_holds_keys():
    kbc, _, _ = _kbc()
    _cmd(kbc, 0xAD)
    assert kbc.key("a", True)
    assert not kbc.command_port.read(0, 1) & 1
    _cmd(kbc, 0xAE)
    assert _drain(kbc) == [0x1E]


def _collect(kbc, seconds):
    """(time, byte) of every byte the keyboard sends in the next ``seconds``, read as it comes."""
    import time

    out, end = [], time.monotonic() + seconds
    while time.monotonic() < end:
        while kbc.command_port.read(0, 1) & 1:
            out.append((time.monotonic(), kbc.data_port.read(0, 1)))
        time.sleep(0.002)
    return out


def test_a_held_key_repeats_at_the_typematic_rate_until_released():
    """Typematic 0x00: 30 repeats per second after 250 ms. Timing is checked loosely (the host
    is shared): the first repeat comes after most of the delay, the count is near the rate."""
    import time

    kbc, _, _ = _kbc()
    kbc.data_port.write(0, 1, 0xF3)
    kbc.data_port.write(0, 1, 0x00)
    assert _drain(kbc) == [0xFA, 0xFA]
    pressed = time.monotonic()
    assert kbc.key("a", True)
    seen = _collect(kbc, 0.75)
    assert kbc.key("a", False)
    makes = [t for t, byte in seen if byte == 0x1E]
    assert makes and makes[0] - pressed < 0.1                   # the press itself
    repeats = makes[1:]
    assert repeats and repeats[0] - pressed >= 0.2              # not before the delay
    assert 7 <= len(repeats) <= 20                              # ~15 in 0.5 s at 30/s
    # Perhaps a repeat sent before the release; then the release, and silence after it.
    after = [byte for _, byte in _collect(kbc, 0.15)]
    assert after in ([0x9E], [0x1E, 0x9E]), after


def test_repeat_stops_when_the_guest_disables_the_keyboard():
    kbc, _, _ = _kbc()
    kbc.data_port.write(0, 1, 0xF3)
    kbc.data_port.write(0, 1, 0x00)
    _drain(kbc)
    assert kbc.key("Up", True)
    assert [b for _, b in _collect(kbc, 0.4)].count(0x48) >= 3   # E0 48 repeats
    kbc.data_port.write(0, 1, 0xF5)                             # default and disable
    assert [b for _, b in _collect(kbc, 0.3)] in ([0xFA], [0xE0, 0x48, 0xFA])
    assert kbc._held is None and kbc._repeater is None          # the repeat thread has ended
    for byte in (0xF4, 0xF3, 0x00):
        kbc.data_port.write(0, 1, byte)
    assert _drain(kbc) == [0xFA] * 3
    assert kbc.key("a", True) and kbc.key("b", True)            # the last key pressed repeats
    sent = [b for _, b in _collect(kbc, 0.5)]
    assert sent.count(0x1E) == 1 and sent.count(0x30) >= 4      # set 1: 'a' 1E, 'b' 30
    kbc.key("b", False)
    kbc.key("a", False)


def test_reset_pulse_and_output_port():
    kbc, _, resets = _kbc()
    _cmd(kbc, 0xD0)
    assert _drain(kbc) == [0x03]
    _cmd(kbc, 0xFF)                              # pulses nothing: bit 0 set
    assert resets == []
    _cmd(kbc, 0xFE)
    assert len(resets) == 1 and "0xfe" in resets[0]
    _cmd(kbc, 0xD1, 0x02)
    assert len(resets) == 2


def test_unread_replies_stop_at_sixteen_bytes():
    # A guest that sends a million identify commands and reads nothing must not grow hvm; the
    # keyboard's 16-byte buffer (the byte in the controller's output buffer counted) keeps the
    # oldest replies, as a real one (and QEMU's) does.
    kbc, _, _ = _kbc()
    for _ in range(100_000):
        kbc.data_port.write(0, 1, 0xF2)
    assert _drain(kbc) == [0xFA, 0xAB, 0x83] * 5 + [0xFA]
    kbc.data_port.write(0, 1, 0xEE)              # room again once read
    assert _drain(kbc) == [0xEE]


def test_typed_keys_arrive_as_the_guest_expects_them():
    """Scan codes per the IBM keyboard references: 'a' is set-2 1C, translated by the controller
    to set-1 1E (release 9E); with translation off the keyboard's own set 2 comes through
    (release F0 1C); an arrow key carries E0."""
    from hvm.devices.i8042 import I8042
    from hvm.irq import RecordingIrqLine

    irq = RecordingIrqLine(1)
    kbc = I8042(irq, lambda why: None)
    assert kbc.key("a", True) and kbc.key("a", False) and kbc.key("Up", True)
    assert [kbc.read(0, 1) for _ in range(4)] == [0x1E, 0x9E, 0xE0, 0x48]
    assert irq.history[0] is True
    kbc.write(4, 1, 0x60)
    kbc.write(0, 1, 0x01)           # CTR: keyboard interrupt on, translation off
    assert kbc.key("a", True) and kbc.key("a", False)
    assert [kbc.read(0, 1) for _ in range(3)] == [0x1C, 0xF0, 0x1C]
    while kbc.key("Up", True):       # a full buffer takes no partial key
        pass
    assert kbc.room() < 2


def test_uip_marks_the_update_cycle_around_each_second_boundary():
    # MC146818A: UIP rises 244 us before the update and stays set through its 1984 us; Xen waits
    # for it to rise before reading the time, for up to a second (it never rose before).
    now = [T0 + 0.5]
    rtc = _rtc(clock=lambda: now[0])
    samples = {}
    for frac in (0.5, 0.9990, 0.99980, 0.0, 0.0019, 0.0021):
        now[0] = T0 + frac
        samples[frac] = cmos(rtc, 0x0A) & 0x80
    assert samples == {0.5: 0, 0.9990: 0, 0.99980: 0x80, 0.0: 0x80, 0.0019: 0x80, 0.0021: 0}
    assert cmos(rtc, 0x0A) & 0x7F == 0x26              # the rest of register A as written
    now[0] = T0
    cmos(rtc, 0x0B, 0x82)                               # SET: updates stop, and UIP with them
    assert not cmos(rtc, 0x0A) & 0x80
    cmos(rtc, 0x0B, 0x02)
    cmos(rtc, 0x0A, 0x06)                               # divider stopped (DV = 000)
    assert not cmos(rtc, 0x0A) & 0x80


def test_the_default_clock_starts_its_seconds_when_the_machine_is_made():
    # QEMU's RTC (mc146818rtc.c: base_rtc, last_update) starts at the host's whole second and
    # counts on from device creation: its update cycles come at whole seconds after that, and
    # a guest waiting for one waits as long in every run.
    wall, mono = [1_700_000_000.73], [50.0]
    clock = started_clock(lambda: wall[0], lambda: mono[0])
    assert clock() == 1_700_000_000.0
    mono[0], wall[0] = 50.9998, 1_700_000_001.7298       # 244 us before the first update
    rtc = _rtc(clock=clock)
    assert cmos(rtc, 0x0A) & 0x80
    mono[0] = 50.5
    assert not cmos(rtc, 0x0A) & 0x80
    assert cmos(rtc, 0x00) == 0x20 and cmos(rtc, 0x02) == 0x13  # 2023-11-14 22:13:20 UTC
