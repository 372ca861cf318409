"""Bus registration and dispatch, without KVM."""
from __future__ import annotations

import pytest
from hypothesis import given, strategies as st

from hvm.bus import BusError, MmioBus, PortIOBus
from hvm.devices.base import Device


class Rec(Device):
    def __init__(self, name):
        self.name, self.log = name, []

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return 0x42

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


def test_dispatch_passes_offsets_relative_to_base():
    bus = PortIOBus()
    a = Rec("a")
    bus.register(0x3F8, 8, a)
    bus.write(0x3FB, 1, 0x80)
    assert bus.read(0x3FD, 1) == 0x42
    assert a.log == [("w", 3, 1, 0x80), ("r", 5, 1)]
    assert bus.accesses["a"] == 2


def test_unclaimed_reads_all_ones_and_writes_dropped():
    bus = PortIOBus()
    assert bus.read(0x123, 1) == 0xFF
    assert bus.read(0x123, 2) == 0xFFFF
    assert bus.read(0x123, 4) == 0xFFFFFFFF
    bus.write(0x123, 1, 5)
    assert bus.unclaimed == 4


@pytest.mark.parametrize("base,length", [(0x3F0, 9), (0x3FF, 1), (0x3F8, 8), (0x3FA, 2), (0x3F0, 0x20)])
def test_overlaps_refused(base, length):
    bus = PortIOBus()
    bus.register(0x3F8, 8, Rec("com1"))
    with pytest.raises(BusError, match="overlaps com1"):
        bus.register(base, length, Rec("new"))


def test_bad_ranges_refused():
    bus = PortIOBus()
    with pytest.raises(BusError):
        bus.register(0xFFFF, 2, Rec("x"))
    with pytest.raises(BusError):
        bus.register(0x10, 0, Rec("x"))


@given(st.lists(st.tuples(st.integers(0, 0xFFF), st.integers(1, 64)), max_size=40), st.integers(0, 0x1100))
def test_lookup_agrees_with_a_linear_scan(ranges, probe):
    bus = MmioBus()
    accepted = []
    for i, (base, length) in enumerate(ranges):
        try:
            bus.register(base, length, Rec(f"d{i}"))
            accepted.append((base, length, f"d{i}"))
        except BusError:
            assert any(b < base + length and base < b + l for b, l, _ in accepted)
    expect = [n for b, l, n in accepted if b <= probe < b + l]
    m = bus.lookup(probe)
    assert (m.name if m else None) == (expect[0] if expect else None)


def test_unregister():
    bus = PortIOBus()
    bus.register(0x80, 1, Rec("post"))
    bus.unregister(0x80)
    assert bus.lookup(0x80) is None
    with pytest.raises(BusError):
        bus.unregister(0x80)


def test_lookup_cache_follows_registration_and_stays_bounded():
    from hvm import bus as busmod
    bus = MmioBus()
    assert bus.read(0x1000, 4) == 0xFFFFFFFF          # cached as unclaimed
    dev = Rec("late")
    bus.register(0x1000, 0x10, dev)                    # registration must invalidate that
    assert bus.read(0x1000, 4) == 0x42 and dev.log == [("r", 0, 4)]
    for addr in range(busmod.CACHE_LIMIT * 2):         # guest-chosen addresses: bounded cache
        bus.read(0x100000 + addr, 1)
    assert len(bus._cache) <= busmod.CACHE_LIMIT
    bus.unregister(0x1000)
    assert bus.read(0x1000, 4) == 0xFFFFFFFF
    assert bus.accesses == {}                         # the mapping is gone with its count
