"""Time slices for the unicorn engine, ended by one long-lived thread instead of unicorn's timeout.

``emu_start(timeout=...)`` starts a fresh timer thread per call, which polls with usleep(2):
measured here, an ``emu_start`` with a timeout costs ~125 µs against ~1.3 µs without, and the
engine calls it again after every exception, interrupt and SYSCALL. This slicer is one thread per
unicorn instance, sleeping until the current slice's deadline and then requesting the stop.

``stop`` only requests it: the request stays until it becomes a stop at the next translation
block entry (``UnicornCore.request_stop``; a stop elsewhere can make unicorn redo a store), and
``drop`` withdraws one that the slice did not live to see. ``begin``/``end`` and the request happen under one lock, so
a late request never ends the next slice, and ``end`` tells the engine whether this slice was
ended, at its deadline or early by ``cut`` (else emu_start returned for a reason of its own,
such as HLT).
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from ..threads import Failure, start_thread


class Slicer:
    """Requests a stop when the armed slice passes its deadline (monotonic ns)."""

    def __init__(self, stop: Callable[[], None], drop: Callable[[], None], on_failure: Failure | None = None):
        self._stop, self._drop = stop, drop
        self._cond = threading.Condition()
        self._deadline: int | None = None  # of the armed slice
        self._asleep_until: int | None = None  # the deadline the thread is waiting for, if any
        self._fired = False
        self._closed = False
        self._thread = start_thread(self._loop, "unicorn-slicer", on_failure)

    def begin(self, deadline: int) -> None:
        """A slice starts and must end by ``deadline``."""
        with self._cond:
            self._drop()
            self._deadline, self._fired = deadline, False
            # Waking the thread costs a context switch: only when it sleeps past the deadline.
            if self._asleep_until is None or deadline < self._asleep_until:
                self._cond.notify()

    def sooner(self, deadline: int) -> None:
        """Bring the armed slice's end forward to ``deadline`` (a timer was programmed during it);
        a later ``deadline`` changes nothing, and nothing happens between slices."""
        with self._cond:
            if self._deadline is None or self._fired or deadline >= self._deadline:
                return
            self._deadline = deadline
            if self._asleep_until is None or deadline < self._asleep_until:
                self._cond.notify()

    def cut(self) -> None:
        """End the armed slice early (any thread); nothing happens between slices."""
        with self._cond:
            if self._deadline is not None and not self._fired:
                self._fired = True
                self._stop()

    def end(self) -> bool:
        """The slice is over; True if it was ended by its deadline or ``cut``."""
        with self._cond:
            self._deadline = None
            return self._fired

    def close(self) -> None:
        """Stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join()

    def _loop(self) -> None:
        with self._cond:
            while not self._closed:
                deadline = self._deadline
                if deadline is None or self._fired:
                    self._asleep_until = None
                    self._cond.wait()
                    continue
                now = time.monotonic_ns()
                if now < deadline:
                    self._asleep_until = deadline
                    self._cond.wait((deadline - now) / 1e9)
                    continue
                self._fired = True
                self._stop()
