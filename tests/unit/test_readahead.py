"""Guest RAM populated ahead of a sweeping guest (hvm.readahead): which host pages are resident
is the kernel's answer (mincore(2)), never hvm's own bookkeeping."""
from __future__ import annotations

import ctypes
import mmap
import time

import pytest

from hvm.memory import GuestMemory
from hvm.readahead import CHUNK, WINDOW

MiB = 1 << 20
_libc = ctypes.CDLL(None, use_errno=True)
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def resident_chunks(mem: GuestMemory) -> set[int]:
    """Chunks of the first region with at least one resident page."""
    r = mem.regions[0]
    vec = ctypes.create_string_buffer(r.size // mmap.PAGESIZE)
    assert _libc.mincore(r.host_addr, r.size, vec) == 0, ctypes.get_errno()
    per = CHUNK // mmap.PAGESIZE
    return {c for c in range(r.size // CHUNK) if any(b & 1 for b in vec.raw[c * per:(c + 1) * per])}


def touch(mem: GuestMemory, chunk: int, pages: int = 1) -> None:
    for p in range(pages):
        mem.write_u8(chunk * CHUNK + p * mmap.PAGESIZE, 1)


def settle(mem: GuestMemory, want: set[int], timeout: float = 2.0) -> set[int]:
    """The resident chunks once ``want`` is among them, or when ``timeout`` passed."""
    deadline = time.monotonic() + timeout
    while True:
        got = resident_chunks(mem)
        if want <= got or time.monotonic() > deadline:
            return got
        time.sleep(0.005)


@pytest.fixture
def mem(monkeypatch):
    # The thread runs only where the process may use two CPUs or more; these tests check what it
    # does, on any host.
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    m = GuestMemory(64 * MiB, [(0, 64 * MiB)])
    yield m
    m.close()


def test_a_sweep_upward_is_populated_a_window_ahead(mem):
    touch(mem, 0)                       # resident before the thread starts: its starting point
    mem.start_readahead()
    touch(mem, 4, pages=512)            # a chunk on its own: nothing around it
    time.sleep(0.05)
    assert resident_chunks(mem) == {0, 4}
    touch(mem, 5)                       # on from chunk 4 into 5: the next WINDOW chunks
    ahead = set(range(6, 6 + WINDOW))
    assert settle(mem, ahead) == {0, 4, 5} | ahead
    deadline = time.monotonic() + 2   # the count follows each chunk's population
    while mem.readahead.populated < WINDOW * CHUNK and time.monotonic() < deadline:
        time.sleep(0.005)
    assert mem.readahead.populated == WINDOW * CHUNK


def test_a_sweep_downward_is_populated_below(mem):
    mem.start_readahead()
    touch(mem, 30)
    time.sleep(0.05)
    touch(mem, 29)
    below = set(range(29 - WINDOW, 29))
    assert settle(mem, below) == {30, 29} | below


def test_what_hvm_loaded_before_the_start_is_no_sweep(mem):
    for c in range(0, 6):               # a kernel image written by hvm's loader
        touch(mem, c, pages=512)
    mem.start_readahead()
    time.sleep(0.1)
    assert resident_chunks(mem) == set(range(0, 6))
    assert mem.readahead.populated == 0


def test_after_close_nothing_more_is_populated(mem):
    mem.start_readahead()
    ra = mem.readahead
    ra.close()
    touch(mem, 10)
    touch(mem, 11)
    time.sleep(0.1)
    assert resident_chunks(mem) == {10, 11}


def test_no_thread_where_the_process_has_one_cpu(monkeypatch):
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {3})
    m = GuestMemory(16 * MiB, [(0, 16 * MiB)])
    try:
        m.start_readahead()
        assert m.readahead is None
    finally:
        m.close()
