"""The unicorn engine's slice timer: it requests the stop of the armed slice at its deadline or
when cut, and only of that one; a request the slice did not live to see is dropped."""
from __future__ import annotations

import threading
import time

from hvm.engine.uc_slicer import Slicer


def test_a_slice_past_its_deadline_is_stopped_and_reported_cut():
    stopped = threading.Event()
    slicer = Slicer(stopped.set, lambda: None)
    try:
        slicer.begin(time.monotonic_ns() + 20_000_000)
        assert not stopped.wait(0.005)
        assert stopped.wait(2.0)
        assert slicer.end() is True
    finally:
        slicer.close()


def test_a_slice_that_ends_first_is_not_stopped_later():
    stops = []
    slicer = Slicer(lambda: stops.append(time.monotonic_ns()), lambda: None)
    try:
        slicer.begin(time.monotonic_ns() + 30_000_000)
        assert slicer.end() is False
        slicer.begin(time.monotonic_ns() + 10_000_000_000)  # the next slice, far off
        time.sleep(0.08)
        assert stops == []
        assert slicer.end() is False
    finally:
        slicer.close()


def test_an_earlier_deadline_wakes_the_sleeping_thread():
    stopped = threading.Event()
    slicer = Slicer(stopped.set, lambda: None)
    try:
        slicer.begin(time.monotonic_ns() + 10_000_000_000)
        # The thread now sleeps toward the far deadline: wait until it says so, not for a while.
        deadline = time.monotonic() + 2
        while slicer._asleep_until is None:
            assert time.monotonic() < deadline
            time.sleep(0.001)
        slicer.end()
        t0 = time.monotonic()
        slicer.begin(time.monotonic_ns() + 5_000_000)
        assert stopped.wait(2.0) and time.monotonic() - t0 < 1.0
        assert slicer.end() is True
    finally:
        slicer.close()


def test_cut_requests_the_stop_once_and_only_while_armed():
    requests, drops = [], []
    slicer = Slicer(lambda: requests.append(1), lambda: drops.append(1))
    try:
        slicer.cut()  # between slices: nothing to end
        assert requests == []
        slicer.begin(time.monotonic_ns() + 10_000_000_000)
        assert drops == [1]  # a request left from before this slice is withdrawn
        slicer.cut()
        slicer.cut()
        assert requests == [1]
        assert slicer.end() is True
        slicer.begin(time.monotonic_ns() + 10_000_000_000)
        assert slicer.end() is False and drops == [1, 1]
    finally:
        slicer.close()


def test_sooner_brings_the_armed_slice_forward_and_never_back():
    stopped = threading.Event()
    slicer = Slicer(stopped.set, lambda: None)
    try:
        slicer.sooner(time.monotonic_ns())  # between slices: nothing to move
        assert not stopped.wait(0.02)
        slicer.begin(time.monotonic_ns() + 10_000_000_000)
        deadline = time.monotonic() + 2
        while slicer._asleep_until is None:  # asleep toward the far deadline
            assert time.monotonic() < deadline
            time.sleep(0.001)
        slicer.sooner(time.monotonic_ns() + 20_000_000_000)  # later: ignored
        assert not stopped.wait(0.02)
        t0 = time.monotonic()
        slicer.sooner(time.monotonic_ns() + 5_000_000)  # a timer programmed during the slice
        assert stopped.wait(2.0) and time.monotonic() - t0 < 1.0
        assert slicer.end() is True
    finally:
        slicer.close()
