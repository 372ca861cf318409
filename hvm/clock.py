"""The guest's view of time: a nanosecond clock and the TSC derived from it, in exact integers.

The TSC is ``tsc_offset + ns * tsc_hz // 10**9`` where ``ns`` is a reading of ``clock``: it never
runs backwards and is the same in every thread.  ``tsc_to_ns`` rounds up, so a deadline converted
to nanoseconds is never reached early (the LAPIC's TSC-deadline timer relies on that).
"""
from __future__ import annotations

import time
from typing import Callable

NS_PER_S = 1_000_000_000


class GuestClock:
    """A TSC running at ``tsc_hz`` over ``clock``; by default it reads 0 when the clock is built."""

    def __init__(self, tsc_hz: int, clock: Callable[[], int] = time.monotonic_ns,
                 tsc_offset: int | None = None):
        if tsc_hz <= 0:
            raise ValueError(f"TSC frequency must be positive, not {tsc_hz}")
        self.tsc_hz = tsc_hz
        self.clock = clock
        self.tsc_offset = -(clock() * tsc_hz // NS_PER_S) if tsc_offset is None else tsc_offset

    def now_ns(self) -> int:
        """The clock's current reading in nanoseconds."""
        return self.clock()

    def now_tsc(self) -> int:
        """What RDTSC returns now."""
        return self.ns_to_tsc(self.clock())

    def ns_to_tsc(self, ns: int) -> int:
        """The TSC value at clock reading ``ns``."""
        return self.tsc_offset + ns * self.tsc_hz // NS_PER_S

    def tsc_to_ns(self, tsc: int) -> int:
        """The first clock reading at which the TSC has reached ``tsc``."""
        return -(-(tsc - self.tsc_offset) * NS_PER_S // self.tsc_hz)
