"""Turns on the one unicorn CPU: handed over in arrival order, re-entrant for the holder, and the
holder is told when somebody starts waiting."""
from __future__ import annotations

import threading
import time

from hvm.engine.uc_core import Turns


def _wait_until(predicate, timeout=2.0):
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.001)


def test_turns_go_in_arrival_order_and_the_releaser_queues_behind():
    waits = []
    turns = Turns(on_wait=lambda: waits.append(threading.current_thread().name))
    order = []
    turns.acquire()

    def worker(name):
        turns.acquire()
        order.append(name)
        turns.release()

    threads = []
    for name in ("b", "c"):
        t = threading.Thread(target=worker, args=(name,), name=name)
        t.start()
        threads.append(t)
        _wait_until(lambda: len(waits) == len(threads))  # queued before the next one starts
    assert turns.wanted and order == []
    turns.release()
    turns.acquire()  # the old holder comes back only after both waiters
    order.append("a")
    turns.release()
    for t in threads:
        t.join(2.0)
    assert order == ["b", "c", "a"]
    assert waits == ["b", "c", "MainThread"] and not turns.wanted


def test_the_holder_may_take_its_turn_again():
    turns = Turns()
    turns.acquire()
    turns.acquire()
    turns.release()
    got = threading.Event()
    t = threading.Thread(target=lambda: (turns.acquire(), got.set(), turns.release()))
    t.start()
    assert not got.wait(0.05)  # still held once
    turns.release()
    assert got.wait(2.0)
    t.join(2.0)
