"""The PC's 8254 programmable interval timer and the port 0x61 bits that reach it, as pure state.

Counters are never decremented: each remembers the clock time its current counting span began,
and the count and OUT are derived from the elapsed clocks whenever someone looks.  A count load is
taken to reach the counting element at once (real parts wait one CLK edge), and rewriting the
count of a running mode 2/3 counter restarts the period instead of waiting for it to end; guests
that reprogram send a control word first, which restarts real hardware too.  BCD counting is
modelled (counts run modulo 10000 and read back as BCD digits).

Port I/O and ``tick`` both come from the vCPU thread that runs the software engine, so there is no
lock here.
"""
from __future__ import annotations

import time
from typing import TYPE_CHECKING, Callable

from ...irq import IrqLine
from ..base import Device

if TYPE_CHECKING:
    from ...published import PublishedTimer2

PIT_HZ = 1_193_182
NS_PER_S = 1_000_000_000
PIT_PORT = 0x40
PORT61 = 0x61
CONTROL = 3  # offset of the control word register within 0x40-0x43
READ_BACK = 3

P61_GATE2 = 0x01
P61_SPEAKER = 0x02
P61_REFRESH = 0x10
P61_OUT2 = 0x20

ACCESS_LATCH, ACCESS_LO, ACCESS_HI, ACCESS_LOHI = range(4)

# A periodic channel 0 interrupts at most this often, as KVM's in-kernel PIT does (its
# min_timer_period_us, 200 by default, in arch/x86/kvm/i8254.c): a guest loading count 1 would
# otherwise ask for an interrupt every 838 ns, and the engine would spend its slices on ticks.
# The counter itself still counts at PIT_HZ; only the interrupts are spaced out, and the periods
# a spacing skips coalesce into the next pulse as they would behind an unacknowledged edge.
MIN_PERIOD_NS = 200_000


def _clocks(ns: int) -> int:
    return ns * PIT_HZ // NS_PER_S


def _ns_until(clocks: int) -> int:
    """The fewest nanoseconds after which ``clocks`` input clocks have elapsed."""
    return -(-clocks * NS_PER_S // PIT_HZ)


def _from_bcd(value: int) -> int:
    return sum(((value >> (4 * i)) & 0xF) * 10**i for i in range(4))


def _to_bcd(value: int) -> int:
    return int(str(value), 16)


class _Counter:
    """One counter; ``start`` is None while it is not counting (gated, untriggered, unloaded)."""

    def __init__(self, gate: bool):
        self.gate = gate
        self.mode = 0
        self.access = ACCESS_LOHI
        self.bcd = False
        self.epoch = 0  # bumped on every restart so channel 0's interrupt logic can start over
        self._program(ACCESS_LOHI, 0, False)

    def _program(self, access: int, mode: int, bcd: bool) -> None:
        self.access, self.mode, self.bcd = access, mode, bcd
        self.null_count = True
        self.write_hi = self.read_hi = False
        self.lsb = 0
        self.latched: list[int] = []
        self.status: int | None = None
        self._restart(None)

    def _restart(self, reload: int | None) -> None:
        self.reload = reload  # the count in effect (1..65536, or 1..10000 in BCD); None: unloaded
        self.start: int | None = None
        self.offset = 0  # clocks counted before ``start``
        self.triggered = False
        self.epoch += 1

    def elapsed(self, now: int) -> int:
        if self.start is None:
            return self.offset
        return self.offset + _clocks(now - self.start)

    # -- derived state ------------------------------------------------------------------------

    def out(self, now: int) -> bool:
        n = self.reload
        if n is None:
            return self.mode != 0  # the control word drives OUT low for mode 0, high otherwise
        d = self.elapsed(now)
        if self.mode == 0:
            return d >= n
        if self.mode == 1:
            return not self.triggered or d >= n
        if self.mode == 2:
            return not self.gate or d % n != n - 1  # low for the single clock before reload
        if self.mode == 3:
            return not self.gate or d % n < (n + 1) // 2  # odd counts spend the extra clock high
        if self.mode == 4:
            return d != n
        return not self.triggered or d != n

    def count(self, now: int) -> int:
        n = self.reload
        if n is None:
            return 0
        d = self.elapsed(now)
        if self.mode in (1, 5) and not self.triggered:
            value = n
        elif self.mode == 2:
            value = n - d % n
        elif self.mode == 3:
            # Two steps per clock through each half period; exact for even counts, and odd counts
            # differ from silicon only in which value the first clock of a half shows.
            phase, high = d % n, (n + 1) // 2
            value = n - 2 * (phase if phase < high else phase - high)
        else:
            value = n - d  # modes 0/4 (and 1/5 once triggered) wrap past zero and keep going
        value %= 10000 if self.bcd else 0x10000
        return _to_bcd(value) if self.bcd else value

    # -- guest operations ---------------------------------------------------------------------

    def program(self, value: int) -> None:
        mode = (value >> 1) & 7
        self._program((value >> 4) & 3, mode - 4 if mode > 5 else mode, bool(value & 1))

    def latch_count(self, now: int) -> None:
        if self.latched:
            return  # a latch holds until fully read; later latch commands are ignored
        value = self.count(now)
        lo, hi = value & 0xFF, value >> 8
        self.latched = {ACCESS_LO: [lo], ACCESS_HI: [hi]}.get(self.access, [lo, hi])

    def latch_status(self, now: int) -> None:
        if self.status is None:
            self.status = (self.out(now) << 7 | self.null_count << 6 | self.access << 4
                           | self.mode << 1 | self.bcd)

    def read(self, now: int) -> int:
        if self.status is not None:
            status, self.status = self.status, None
            return status
        if self.latched:
            return self.latched.pop(0)
        value = self.count(now)
        high = self.access == ACCESS_HI or (self.access == ACCESS_LOHI and self.read_hi)
        if self.access == ACCESS_LOHI:
            self.read_hi = not self.read_hi
        return value >> 8 if high else value & 0xFF

    def write(self, now: int, byte: int) -> None:
        if self.access == ACCESS_LOHI and not self.write_hi:
            self.lsb, self.write_hi = byte, True
            if self.mode == 0:
                self._restart(None)  # the first byte stops a mode 0 count and drops OUT
            return
        self.write_hi = False
        value = byte << 8 if self.access == ACCESS_HI else byte
        if self.access == ACCESS_LOHI:
            value = self.lsb | byte << 8
        self._load(now, value)

    def _load(self, now: int, value: int) -> None:
        if self.bcd:
            n = _from_bcd(value) or 10000
        else:
            n = value or 0x10000
        self._restart(n)
        # Modes 1 and 5 hold the count until a gate edge moves it into the counting element.
        self.null_count = self.mode in (1, 5)
        if self.gate and not self.null_count:
            self.start = now

    def set_gate(self, now: int, level: bool) -> None:
        if level == self.gate:
            return
        self.gate = level
        if self.reload is None:
            return
        if not level:
            if self.mode not in (1, 5):
                self.offset, self.start = self.elapsed(now), None
            return
        if self.mode in (1, 2, 3, 5):
            self.offset = 0  # a rising gate triggers the one-shots and reloads the periodic modes
            self.triggered = True
            self.null_count = False
        self.start = now


class _Ports(Device):
    """0x40-0x42 counter data, 0x43 control word; wide accesses use the low byte."""

    name = "pit"

    def __init__(self, pit: Pit8254):
        self._pit = pit

    def read(self, offset: int, size: int) -> int:
        """A byte of a counter's status, latched count or live count; the control port reads 0."""
        if offset >= CONTROL:
            return 0  # the control register is write-only; answer with a constant
        pit = self._pit
        pit._reclaim()
        value = pit._counters[offset].read(pit._clock())
        pit._republish()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Control words (including latch and read-back commands) and count bytes."""
        pit = self._pit
        pit._reclaim()
        pit._write(offset, value & 0xFF)
        pit._republish()


class _Port61(Device):
    """System control port B: the bits of 0x61 that belong to the timer."""

    name = "port61"

    def __init__(self, pit: Pit8254):
        self._pit = pit

    def read(self, offset: int, size: int) -> int:
        """Gate 2, speaker data, a refresh bit that flips on every read, and channel 2's OUT."""
        pit = self._pit
        pit._reclaim()
        value = pit._read61()
        pit._republish()
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        """Only the gate and speaker bits are writable."""
        pit = self._pit
        pit._reclaim()
        pit._write61(value)
        pit._republish()


class Pit8254:
    """Three 8254 counters at PIT_HZ: channel 0 drives ``irq0``, channel 2 is gated by port 0x61.

    The engine only looks at the timer between time slices, so for modes 2 and 3 the IRQ0 line is
    pulsed once per :meth:`tick` that finds at least one new period boundary behind it; several
    boundaries crossed since the last tick coalesce into one pulse, just as the PIC's edge latch
    would have merged them before the guest acknowledged.  In modes 0 and 4 the line follows OUT.
    """

    def __init__(self, irq0: IrqLine, clock: Callable[[], int] = time.monotonic_ns):
        self.irq0 = irq0
        self._clock = clock
        # Channels 0 and 1 have their gates tied high; channel 1 (DRAM refresh) drives nothing.
        self._counters = [_Counter(True), _Counter(True), _Counter(False)]
        self._speaker = False
        self._refresh = False
        self._irq_epoch = self._counters[0].epoch
        self._signalled = 0  # channel 0 periods (modes 2/3) or terminal counts (0/4) reported
        self._last_pulse: int | None = None  # clock time of the last periodic pulse
        self.ports = _Ports(self)
        self.port61 = _Port61(self)
        self._published: "PublishedTimer2 | None" = None
        self.deadline_listener: Callable[[], None] | None = None  # the engine's (Timer protocol)

    def publish_channel2(self, published: "PublishedTimer2") -> None:
        """Let an engine's C hook answer channel 2 and port 0x61 reads from ``published`` while
        channel 2 is in the state it can compute (Linux's TSC calibration polls them thousands of
        times, and its quality checks fail at the cost of a trip into Python per read). Only
        with the host's monotonic clock, which the C side reads too."""
        if self._clock is time.monotonic_ns:
            self._published = published
            self._republish()

    def _reclaim(self) -> None:
        if self._published is not None:
            taken = self._published.reclaim()
            if taken is not None:
                self._counters[2].read_hi, self._refresh = taken

    def _republish(self) -> None:
        published = self._published
        if published is None:
            return
        c = self._counters[2]
        if (c.mode == 0 and not c.bcd and c.access == ACCESS_LOHI and not c.latched and c.status is None
                and c.reload is not None and c.start is not None and not c.write_hi):
            published.publish(c.read_hi, c.start, c.offset, c.reload, c.gate | self._speaker << 1, self._refresh)

    def _write(self, offset: int, value: int) -> None:
        now = self._clock()
        if offset == CONTROL:
            select = value >> 6
            if select == READ_BACK:
                for i, counter in enumerate(self._counters):
                    if value & (2 << i):
                        if not value & 0x20:
                            counter.latch_count(now)
                        if not value & 0x10:
                            counter.latch_status(now)
            elif (value >> 4) & 3 == ACCESS_LATCH:
                self._counters[select].latch_count(now)
            else:
                self._counters[select].program(value)
        elif offset < CONTROL:
            self._counters[offset].write(now, value)
        if self._counters[0].epoch != self._irq_epoch:
            # Channel 0 was reprogrammed or reloaded: OUT restarts low (mode 0) or the pulse
            # train restarts, and in both cases nothing has been reported for it yet.
            self._irq_epoch = self._counters[0].epoch
            self._signalled = 0
            self._last_pulse = None  # the first period after a load is not spaced out
            self.irq0.set_level(False)
            if self.deadline_listener is not None:
                self.deadline_listener()

    def _read61(self) -> int:
        self._refresh = not self._refresh
        gate = self._counters[2].gate
        out = self._counters[2].out(self._clock())
        return gate | self._speaker << 1 | self._refresh << 4 | out << 5

    def _write61(self, value: int) -> None:
        self._speaker = bool(value & P61_SPEAKER)
        self._counters[2].set_gate(self._clock(), bool(value & P61_GATE2))

    def tick(self) -> None:
        """Raise channel 0's interrupt for whatever its OUT did since the last call."""
        counter = self._counters[0]
        if counter.reload is None:
            return
        now = self._clock()
        d = counter.elapsed(now)
        if counter.mode in (2, 3):
            periods = d // counter.reload
            if periods > self._signalled and not self._too_soon(now):
                self._signalled = periods
                self._last_pulse = now
                self.irq0.pulse()
        elif counter.mode in (0, 4) and not self._signalled and d >= counter.reload:
            self._signalled = 1
            if counter.mode == 0:
                self.irq0.set_level(True)  # OUT stays high until the guest writes a new count
            else:
                self.irq0.pulse()

    def next_deadline_ns(self) -> int | None:
        """Clock time of the next channel 0 event ``tick`` must report, or None if none is due."""
        counter = self._counters[0]
        if counter.reload is None or counter.start is None:
            return None
        if counter.mode in (2, 3):
            target = (self._signalled + 1) * counter.reload
        elif counter.mode in (0, 4) and not self._signalled:
            target = counter.reload
        else:
            return None
        due = counter.start + _ns_until(target - counter.offset)
        if counter.mode in (2, 3) and self._last_pulse is not None:
            due = max(due, self._last_pulse + MIN_PERIOD_NS)
        return due

    def _too_soon(self, now: int) -> bool:
        return self._last_pulse is not None and now - self._last_pulse < MIN_PERIOD_NS
