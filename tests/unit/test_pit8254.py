"""8254 behaviour against a fake nanosecond clock, driven through ports 0x40-0x43 and 0x61."""
from __future__ import annotations

from hypothesis import given, strategies as st

from hvm.devices.irq.pit8254 import PIT_HZ, Pit8254
from hvm.irq import RecordingIrqLine

CH0, CH1, CH2, CTRL = 0, 1, 2, 3
NS = 1_000_000_000
T0 = 5 * NS  # a clock that does not start at zero


class FakeClock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns

    def advance_clocks(self, clocks: int) -> None:
        """Move to the first nanosecond at which ``clocks`` more PIT clocks have elapsed."""
        self.ns = T0 + -(-(self.elapsed() + clocks) * NS // PIT_HZ)

    def elapsed(self) -> int:
        return (self.ns - T0) * PIT_HZ // NS


def make() -> tuple[Pit8254, RecordingIrqLine, FakeClock]:
    irq = RecordingIrqLine(0)
    clock = FakeClock()
    return Pit8254(irq, clock), irq, clock


def load(pit: Pit8254, channel: int, control: int, count: int) -> None:
    pit.ports.write(CTRL, 1, control)
    pit.ports.write(channel, 1, count & 0xFF)
    pit.ports.write(channel, 1, count >> 8)


def latched_count(pit: Pit8254, channel: int) -> int:
    pit.ports.write(CTRL, 1, channel << 6)
    return pit.ports.read(channel, 1) | pit.ports.read(channel, 1) << 8


def status(pit: Pit8254, channel: int) -> int:
    pit.ports.write(CTRL, 1, 0xE0 | 2 << channel)  # read-back, status only
    return pit.ports.read(channel, 1)


def rising_edges(irq: RecordingIrqLine) -> int:
    return irq.history.count(True)


def ns_for(clocks: int) -> int:
    return -(-clocks * NS // PIT_HZ)


def test_unprogrammed_channel0_has_no_deadline_and_tick_is_quiet() -> None:
    pit, irq, clock = make()
    assert pit.next_deadline_ns() is None
    clock.ns += NS
    pit.tick()
    assert irq.history == []


def test_mode2_1ms_rate_generator_pulses_once_per_period() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x34, 1193)  # Linux's periodic HZ=1000 setup
    assert pit.next_deadline_ns() == T0 + ns_for(1193)
    clock.ns = pit.next_deadline_ns() - 1
    pit.tick()
    assert irq.history == []
    end = T0 + 10_000_000
    while clock.ns < end:
        clock.ns = min(clock.ns + 100_000, end)
        pit.tick()
    assert rising_edges(irq) == 10  # 10 ms / 0.99985 ms
    assert irq.history == [True, False] * 10 and not irq.level
    assert pit.next_deadline_ns() == T0 + ns_for(11 * 1193)


def test_following_next_deadline_gives_exactly_one_pulse_each() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x34, 1193)
    deadlines = []
    for _ in range(5):
        deadlines.append(pit.next_deadline_ns())
        clock.ns = deadlines[-1]
        pit.tick()
    assert rising_edges(irq) == 5
    assert deadlines == [T0 + ns_for(k * 1193) for k in range(1, 6)]


def test_late_tick_coalesces_many_periods_into_one_pulse() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x34, 1193)
    clock.ns = T0 + 10_000_000
    pit.tick()
    assert rising_edges(irq) == 1
    assert pit.next_deadline_ns() == T0 + ns_for(11 * 1193)
    pit.tick()
    assert rising_edges(irq) == 1


def test_mode2_count_reads_and_out_pulses_low_before_reload() -> None:
    pit, _, clock = make()
    load(pit, CH0, 0x34, 100)
    assert latched_count(pit, CH0) == 100
    clock.advance_clocks(30)
    assert latched_count(pit, CH0) == 70
    clock.advance_clocks(68)
    assert latched_count(pit, CH0) == 2 and status(pit, CH0) & 0x80
    clock.advance_clocks(1)
    assert latched_count(pit, CH0) == 1 and not status(pit, CH0) & 0x80
    clock.advance_clocks(1)
    assert latched_count(pit, CH0) == 100 and status(pit, CH0) & 0x80


def test_mode3_square_wave_counts_by_two_and_toggles_out() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x36, 1000)  # SeaBIOS's mode 3 setup, here with a short count
    assert latched_count(pit, CH0) == 1000 and status(pit, CH0) & 0x80
    clock.advance_clocks(100)
    assert latched_count(pit, CH0) == 800
    clock.advance_clocks(400)
    assert latched_count(pit, CH0) == 1000 and not status(pit, CH0) & 0x80
    clock.advance_clocks(500)
    assert status(pit, CH0) & 0x80
    pit.tick()
    assert rising_edges(irq) == 1
    assert pit.next_deadline_ns() == T0 + ns_for(2000)


def test_mode0_one_shot_raises_irq0_and_holds_it() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x30, 5000)
    deadline = pit.next_deadline_ns()
    assert deadline == T0 + ns_for(5000)
    assert not status(pit, CH0) & 0x80
    clock.ns = deadline - 1
    pit.tick()
    assert irq.history == [] and latched_count(pit, CH0) == 1
    clock.ns = deadline
    pit.tick()
    assert irq.history == [True] and irq.level
    assert status(pit, CH0) & 0x80 and pit.next_deadline_ns() is None
    clock.ns += NS
    pit.tick()
    assert irq.history == [True]
    assert latched_count(pit, CH0) != 0  # the counter wraps and keeps going; OUT stays high
    pit.ports.write(CH0, 1, 0x10)  # first byte of a new count: OUT drops at once
    assert irq.history == [True, False] and pit.next_deadline_ns() is None
    pit.ports.write(CH0, 1, 0x00)
    assert pit.next_deadline_ns() == clock.ns + ns_for(0x10)


def test_mode4_strobes_once_per_count_write() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x38, 2000)  # Linux's one-shot clockevent mode
    clock.ns = pit.next_deadline_ns()
    pit.tick()
    assert irq.history == [True, False] and pit.next_deadline_ns() is None
    clock.ns += NS
    pit.tick()
    assert rising_edges(irq) == 1
    pit.ports.write(CH0, 1, 100)
    pit.ports.write(CH0, 1, 0)
    assert pit.next_deadline_ns() == clock.ns + ns_for(100)


def test_count_zero_means_65536() -> None:
    pit, _, clock = make()
    load(pit, CH0, 0x34, 0)
    assert pit.next_deadline_ns() == T0 + ns_for(65536)
    clock.advance_clocks(1)
    assert latched_count(pit, CH0) == 0xFFFF


def test_latched_count_is_frozen_until_fully_read() -> None:
    pit, _, clock = make()
    load(pit, CH0, 0x34, 0x1234)
    clock.advance_clocks(0x34)
    pit.ports.write(CTRL, 1, 0x00)
    clock.advance_clocks(0x100)
    pit.ports.write(CTRL, 1, 0x00)  # ignored: the first latch is still unread
    assert pit.ports.read(CH0, 1) == 0x00
    clock.advance_clocks(0x100)
    assert pit.ports.read(CH0, 1) == 0x12
    assert latched_count(pit, CH0) == 0x1234 - 0x234


def test_lobyte_only_and_hibyte_only_access() -> None:
    pit, _, clock = make()
    pit.ports.write(CTRL, 1, 0x14)  # ch0, lobyte only, mode 2
    pit.ports.write(CH0, 1, 200)
    assert pit.next_deadline_ns() == T0 + ns_for(200)
    clock.advance_clocks(50)
    assert pit.ports.read(CH0, 1) == 150 and pit.ports.read(CH0, 1) == 150
    pit.ports.write(CTRL, 1, 0x24)  # hibyte only
    pit.ports.write(CH0, 1, 0x02)
    assert pit.next_deadline_ns() == clock.ns + ns_for(0x200)
    clock.advance_clocks(0x10)
    assert pit.ports.read(CH0, 1) == 0x01  # 0x1F0


def test_live_lohi_reads_alternate_low_then_high() -> None:
    pit, _, clock = make()
    load(pit, CH2, 0xB0, 0xFFFF)
    pit.port61.write(0, 1, 0x01)
    clock.advance_clocks(0x0305)
    assert pit.ports.read(CH2, 1) == 0xFA
    assert pit.ports.read(CH2, 1) == 0xFC


def test_read_back_status_reports_out_null_count_access_mode() -> None:
    pit, _, clock = make()
    pit.ports.write(CTRL, 1, 0x30)  # ch0 lohi mode 0
    assert status(pit, CH0) == 0x40 | 0x30  # OUT low, count not loaded yet
    pit.ports.write(CH0, 1, 0x10)
    pit.ports.write(CH0, 1, 0x00)
    assert status(pit, CH0) == 0x30
    clock.advance_clocks(0x10)
    pit.ports.write(CTRL, 1, 0xC2)  # read-back of count and status together, ch0
    clock.advance_clocks(5)
    assert pit.ports.read(CH0, 1) == 0x80 | 0x30  # status first
    assert pit.ports.read(CH0, 1) == 0x00 and pit.ports.read(CH0, 1) == 0x00
    pit.ports.write(CTRL, 1, 0x76)  # ch1 lohi mode 3
    assert status(pit, CH1) == 0x80 | 0x40 | 0x30 | 0x06


def test_modes_6_and_7_alias_2_and_3() -> None:
    pit, _, _ = make()
    pit.ports.write(CTRL, 1, 0x3C)
    assert status(pit, CH0) & 0x0E == 0x04
    pit.ports.write(CTRL, 1, 0x3E)
    assert status(pit, CH0) & 0x0E == 0x06


def test_bcd_counting() -> None:
    pit, _, clock = make()
    load(pit, CH0, 0x31, 0x1000)  # 1000 decimal
    assert status(pit, CH0) & 1
    clock.advance_clocks(1)
    assert latched_count(pit, CH0) == 0x0999
    assert pit.next_deadline_ns() == T0 + ns_for(1000)


def test_linux_tsc_calibration_polls_port61_bit5() -> None:
    """pit_calibrate_tsc: gate on, speaker off, ch2 mode 0 lohi, spin until OUT2 rises."""
    pit, irq, clock = make()
    pit.port61.write(0, 1, (pit.port61.read(0, 1) & ~0x02) | 0x01)
    latch = PIT_HZ // 20  # 50 ms
    load(pit, CH2, 0xB0, latch)
    polls = 0
    while not pit.port61.read(0, 1) & 0x20:
        polls += 1
        clock.ns += 1_000_000
    assert polls == 50
    assert clock.elapsed() >= latch and irq.history == []  # channel 2 never touches IRQ0


def test_quick_pit_calibrate_msb_steps_down() -> None:
    pit, _, clock = make()
    pit.port61.write(0, 1, 0x01)
    load(pit, CH2, 0xB0, 0xFFFF)
    pit.ports.read(CH2, 1)  # Linux's dummy read; it flips the lo/hi toggle
    pit.ports.read(CH2, 1)
    msbs = []
    for _ in range(4):
        clock.advance_clocks(256)
        pit.ports.read(CH2, 1)
        msbs.append(pit.ports.read(CH2, 1))
    assert msbs == [0xFE, 0xFD, 0xFC, 0xFB]


def test_gate_low_freezes_channel2_and_gate_high_resumes() -> None:
    pit, _, clock = make()
    load(pit, CH2, 0xB0, 1000)  # gate starts low after reset
    clock.advance_clocks(500)
    assert latched_count(pit, CH2) == 1000
    pit.port61.write(0, 1, 0x01)
    clock.advance_clocks(300)
    pit.port61.write(0, 1, 0x00)
    clock.advance_clocks(5000)
    assert latched_count(pit, CH2) == 700 and not pit.port61.read(0, 1) & 0x20
    pit.port61.write(0, 1, 0x01)
    clock.advance_clocks(700)
    assert pit.port61.read(0, 1) & 0x20


def test_gate_rising_edge_reloads_mode2() -> None:
    pit, _, clock = make()
    pit.port61.write(0, 1, 0x01)
    load(pit, CH2, 0xB4, 1000)
    clock.advance_clocks(600)
    pit.port61.write(0, 1, 0x00)
    assert status(pit, CH2) & 0x80  # gate low forces OUT high
    pit.port61.write(0, 1, 0x01)
    assert latched_count(pit, CH2) == 1000


def test_mode1_one_shot_is_triggered_by_the_gate() -> None:
    pit, _, clock = make()
    load(pit, CH2, 0xB2, 100)
    assert status(pit, CH2) == 0x80 | 0x40 | 0x30 | 0x02  # waiting for a trigger
    clock.ns += 1_000_000
    pit.port61.write(0, 1, 0x01)
    assert not status(pit, CH2) & 0x80
    clock.ns += ns_for(99)  # counted from the trigger, not from the load
    assert latched_count(pit, CH2) == 1 and not status(pit, CH2) & 0x80
    clock.ns += ns_for(1)
    assert status(pit, CH2) & 0x80


def test_mode5_strobes_one_clock_after_gate_trigger() -> None:
    pit, _, clock = make()
    load(pit, CH2, 0xBA, 10)
    pit.port61.write(0, 1, 0x01)
    clock.advance_clocks(9)
    assert status(pit, CH2) & 0x80
    clock.advance_clocks(1)
    assert not status(pit, CH2) & 0x80
    clock.advance_clocks(1)
    assert status(pit, CH2) & 0x80


def test_port61_refresh_toggles_and_speaker_bit_reads_back() -> None:
    pit, _, _ = make()
    first, second = pit.port61.read(0, 1), pit.port61.read(0, 1)
    assert (first ^ second) == 0x10
    pit.port61.write(0, 1, 0xFF)
    value = pit.port61.read(0, 1)
    assert value & 0x03 == 0x03 and value & 0xCC == 0
    pit.port61.write(0, 1, 0x00)
    assert pit.port61.read(0, 1) & 0x03 == 0


@given(st.integers(2, 0x10000), st.lists(st.integers(1, 200_000), min_size=1, max_size=30))
def test_mode2_pulses_once_per_tick_that_crosses_a_boundary(count: int, steps: list[int]) -> None:
    # KVM's in-kernel PIT (arch/x86/kvm/i8254.c) never interrupts more often than every
    # min_timer_period_us (200 us): the same floor here, periods in between coalescing.
    floor = 200_000
    pit, irq, clock = make()
    load(pit, CH0, 0x34, count & 0xFFFF)
    expected, reported, last = 0, 0, None
    for step in steps:
        clock.advance_clocks(step)
        pit.tick()
        periods = clock.elapsed() // count
        if periods > reported and (last is None or clock.ns - last >= floor):
            expected, reported, last = expected + 1, periods, clock.ns
        deadline = pit.next_deadline_ns()
        assert deadline > clock.ns
        natural = T0 + ns_for((reported + 1) * count)
        assert deadline == (natural if last is None else max(natural, last + floor))
    assert rising_edges(irq) == expected and irq.history == [True, False] * expected


def test_count_1_rate_generator_interrupts_every_200us_not_every_838ns() -> None:
    pit, irq, clock = make()
    load(pit, CH0, 0x34, 1)
    assert pit.next_deadline_ns() == T0 + ns_for(1)  # the first period is not held back
    clock.ns = pit.next_deadline_ns()
    pit.tick()
    assert rising_edges(irq) == 1
    assert pit.next_deadline_ns() == clock.ns + 200_000
    end = clock.ns + 10_000_000
    while clock.ns < end:
        clock.ns = pit.next_deadline_ns()
        pit.tick()
    assert rising_edges(irq) == 51  # the first, then one per 200 us for 10 ms
    assert latched_count(pit, CH0) == 1  # the counter itself still runs at PIT_HZ


@given(st.integers(1, 0xFFFF), st.integers(0, 0x20000))
def test_mode0_count_and_out_follow_elapsed_clocks(count: int, clocks: int) -> None:
    pit, _, clock = make()
    load(pit, CH0, 0x30, count)
    clock.advance_clocks(clocks)
    assert latched_count(pit, CH0) == (count - clocks) & 0xFFFF
    assert bool(status(pit, CH0) & 0x80) == (clocks >= count)


def test_loading_channel_0_tells_the_engine_its_new_deadline() -> None:
    pit, _, _ = make()
    seen: list[int | None] = []
    pit.deadline_listener = lambda: seen.append(pit.next_deadline_ns())
    load(pit, CH2, 0xB0, 0xFFFF)  # channel 2 raises no interrupt: no call
    assert seen == []
    load(pit, CH0, 0x34, 1193)  # mode 2: the first period ends ~1 ms from now
    assert seen and seen[-1] == T0 + -(-1193 * NS // PIT_HZ)
