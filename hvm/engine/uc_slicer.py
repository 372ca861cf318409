"""Time slices for the unicorn engine, cut by one long-lived thread instead of unicorn's timeout.

``emu_start(timeout=...)`` starts a fresh timer thread per call, which polls with usleep(2):
measured here, an ``emu_start`` with a timeout costs ~125 µs against ~1.3 µs without, and the
engine calls it again after every exception, interrupt and SYSCALL. This slicer is one thread per
engine, sleeping until the current slice's deadline and then calling ``emu_stop``.

It stops only the slice it was armed for: ``begin``/``end`` and the stop happen under one lock,
so a late stop never cuts into the next slice and ``end`` tells the engine whether this slice
was cut (else emu_start returned for a reason of its own, such as HLT). A stop issued just before
``emu_start`` begins is lost (unicorn clears its stop request on entry), so it is repeated until
the slice ends.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

RETRY_S = 0.0005


class Slicer:
    """Calls ``stop`` when the armed slice passes its deadline (monotonic ns)."""

    def __init__(self, stop: Callable[[], None]):
        self._stop = stop
        self._cond = threading.Condition()
        self._deadline: int | None = None
        self._asleep_until: int | None = None  # the deadline the thread is waiting for, if any
        self._fired = False
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="unicorn-slicer", daemon=True)
        self._thread.start()

    def begin(self, deadline: int) -> None:
        """A slice starts and must end by ``deadline``."""
        with self._cond:
            self._deadline, self._fired = deadline, False
            # Waking the thread costs a context switch: only when it sleeps past the deadline.
            if self._asleep_until is None or deadline < self._asleep_until:
                self._cond.notify()

    def end(self) -> bool:
        """The slice is over; True if it was cut at its deadline."""
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
                if deadline is None:
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
                self._asleep_until = None
                self._cond.wait(RETRY_S)
