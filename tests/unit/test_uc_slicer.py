"""The unicorn engine's slice timer (a C thread): it requests the stop of the armed slice at its
deadline or when cut, and only of that one; a request the slice did not live to see is dropped.
The stop here is the block hook's kind: the thread stores 1 (request) or 0 (drop) in an int."""
from __future__ import annotations

import time

from hvm.engine._ucstop import ffi
from hvm.engine.uc_slicer import Slicer, StopTarget


class Flag:
    """The int the slicer's thread stores its requests in, and a Slicer aimed at it."""

    def __init__(self) -> None:
        self.cell = ffi.new("int *")
        self.slicer = Slicer(StopTarget(flag=int(ffi.cast("uintptr_t", self.cell))))

    @property
    def requested(self) -> bool:
        return bool(self.cell[0])

    def wait(self, seconds: float) -> bool:
        """True once a stop is requested within ``seconds``."""
        end = time.monotonic() + seconds
        while not self.requested:
            if time.monotonic() >= end:
                return False
            time.sleep(0.0005)
        return True

    def wait_asleep(self) -> None:
        """Until the thread sleeps toward the armed deadline (not for a while: until it says so)."""
        end = time.monotonic() + 2
        while self.slicer.asleep_until is None:
            assert time.monotonic() < end
            time.sleep(0.001)


def test_a_slice_past_its_deadline_is_stopped_and_reported_cut():
    f = Flag()
    try:
        f.slicer.begin(time.monotonic_ns() + 20_000_000)
        assert not f.wait(0.005)
        assert f.wait(2.0)
        assert f.slicer.end() is True
    finally:
        f.slicer.close()


def test_a_slice_that_ends_first_is_not_stopped_later():
    f = Flag()
    try:
        f.slicer.begin(time.monotonic_ns() + 30_000_000)
        assert f.slicer.end() is False
        f.slicer.begin(time.monotonic_ns() + 10_000_000_000)  # the next slice, far off
        assert not f.wait(0.08)
        assert f.slicer.end() is False
    finally:
        f.slicer.close()


def test_an_earlier_deadline_wakes_the_sleeping_thread():
    f = Flag()
    try:
        f.slicer.begin(time.monotonic_ns() + 10_000_000_000)
        f.wait_asleep()
        f.slicer.end()
        t0 = time.monotonic()
        f.slicer.begin(time.monotonic_ns() + 5_000_000)
        assert f.wait(2.0) and time.monotonic() - t0 < 1.0
        assert f.slicer.end() is True
    finally:
        f.slicer.close()


def test_cut_requests_the_stop_once_and_only_while_armed():
    f = Flag()
    try:
        f.slicer.cut()  # between slices: nothing to end
        assert not f.requested
        f.cell[0] = 1   # a request left from before the next slice ...
        f.slicer.begin(time.monotonic_ns() + 10_000_000_000)
        assert not f.requested  # ... is withdrawn when it begins
        f.slicer.cut()
        assert f.requested
        f.cell[0] = 0
        f.slicer.cut()  # already cut: no second request
        assert not f.requested
        assert f.slicer.end() is True
        f.slicer.begin(time.monotonic_ns() + 10_000_000_000)
        assert f.slicer.end() is False
    finally:
        f.slicer.close()


def test_sooner_brings_the_armed_slice_forward_and_never_back():
    f = Flag()
    try:
        f.slicer.sooner(time.monotonic_ns())  # between slices: nothing to move
        assert not f.wait(0.02)
        f.slicer.begin(time.monotonic_ns() + 10_000_000_000)
        f.wait_asleep()
        f.slicer.sooner(time.monotonic_ns() + 20_000_000_000)  # later: ignored
        assert not f.wait(0.02)
        t0 = time.monotonic()
        f.slicer.sooner(time.monotonic_ns() + 5_000_000)  # a timer programmed during the slice
        assert f.wait(2.0) and time.monotonic() - t0 < 1.0
        assert f.slicer.end() is True
    finally:
        f.slicer.close()

