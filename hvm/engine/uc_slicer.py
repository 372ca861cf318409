"""Time slices for the unicorn engine, ended by one long-lived C thread instead of unicorn's timeout.

``emu_start(timeout=...)`` starts a fresh timer thread per call, which polls with usleep(2):
measured here, an ``emu_start`` with a timeout costs ~125 µs against ~1.3 µs without, and the
engine calls it again after every exception, interrupt and SYSCALL. This slicer is one thread per
unicorn instance, sleeping until the current slice's deadline and then requesting the stop. The
thread is C (``hvm_slicer`` in ``_ucstop_build``): a Python one needs the GIL to wake, which a
vCPU polling a port through Python hooks hands over late (it fired up to 7 ms after deadlines).

The stop is only requested: the request stays until it becomes a stop at the next translation
block entry (``UnicornCore.request_stop``; a stop elsewhere can make unicorn redo a store), and the
next ``begin`` withdraws one that the slice did not live to see. ``begin``/``end`` and the request
happen under one lock, so a late request never ends the next slice, and ``end`` tells the engine
whether this slice was ended, at its deadline or early by ``cut`` (else emu_start returned for a
reason of its own, such as HLT).
"""
from __future__ import annotations

from dataclasses import dataclass

from ._ucstop import ffi, lib


@dataclass(frozen=True)
class StopTarget:
    """How the C thread requests and drops a stop: ``fn(uc, request, 0)`` / ``fn(uc, drop, 0)``
    (the rebuilt library's native stop), or without ``fn`` by storing 1 / 0 at ``flag`` (the
    address of an int, such as the block hook's ``wanted``)."""

    fn: int = 0
    uc: int = 0
    request: int = 0
    drop: int = 0
    flag: int = 0


class Slicer:
    """Requests a stop when the armed slice passes its deadline (monotonic ns)."""

    def __init__(self, target: StopTarget):
        self._target = target  # whatever ``flag`` points into must outlive the thread
        self._s = lib.hvm_slicer_new(target.fn, target.uc, target.request, target.drop,
                                     ffi.cast("int *", target.flag))
        if self._s == ffi.NULL:
            raise OSError("hvm: could not start the time-slice thread")

    def begin(self, deadline: int) -> None:
        """A slice starts and must end by ``deadline``."""
        lib.hvm_slicer_begin(self._s, deadline)

    def sooner(self, deadline: int) -> None:
        """Bring the armed slice's end forward to ``deadline`` (a timer was programmed during it);
        a later ``deadline`` changes nothing, and nothing happens between slices."""
        lib.hvm_slicer_sooner(self._s, deadline)

    def cut(self) -> None:
        """End the armed slice early (any thread); nothing happens between slices."""
        lib.hvm_slicer_cut(self._s)

    def end(self) -> bool:
        """The slice is over; True if it was ended by its deadline or ``cut``."""
        return bool(lib.hvm_slicer_end(self._s))

    @property
    def asleep_until(self) -> int | None:
        """The deadline the thread is sleeping toward, or None (a racy look, for tests)."""
        return self._s.asleep_until or None

    @property
    def handle(self):
        """The C slicer (``hvm_slicer *``), for C code that brings slices' ends forward."""
        return self._s

    def close(self) -> None:
        """Stop the thread."""
        if self._s != ffi.NULL:
            lib.hvm_slicer_close(self._s)
            self._s = ffi.NULL
