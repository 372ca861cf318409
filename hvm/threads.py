"""Helper threads (serial readers, the time slicer, watchdogs) whose failure ends the run.

A thread that dies of an exception would otherwise leave the guest deaf (no console input), never
preempted (no slice ends) or unwatched, with nothing said. Each helper is started with the
``on_failure`` of the machine it serves, which turns the failure into the run's outcome.
"""
from __future__ import annotations

import threading
from typing import Callable

# (where, exception): "where" names the thread, for the one-line report.
Failure = Callable[[str, BaseException], None]


def start_thread(target: Callable[[], None], name: str, on_failure: Failure | None = None) -> threading.Thread:
    """Start a daemon thread running ``target``; an exception it raises goes to ``on_failure``
    (or, without one, to ``threading.excepthook``, where hvmrun has its last-resort handler)."""

    def run() -> None:
        try:
            target()
        except BaseException as exc:
            if on_failure is None:
                raise
            on_failure(name, exc)

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    return thread
