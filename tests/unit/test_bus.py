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


# -- string I/O (REP INS/OUTS): one call for a run of accesses ----------------------------------

class Wide(Device):
    """Answers wider than asked, as devices may (the bus cuts replies to the access size)."""

    def __init__(self):
        self.n, self.log = 0, []

    def read(self, offset, size):
        self.n += 1
        return 0xA5A5A500 | self.n

    def write(self, offset, size, value):
        self.log.append((offset, size, value))


def test_default_string_read_is_the_single_reads_in_order():
    bus, single = PortIOBus(), PortIOBus()
    a, b = Wide(), Wide()
    bus.register(0x700, 4, a)
    single.register(0x700, 4, b)
    for size in (1, 2, 4):
        run = bus.read_string(0x702, size, 5)
        one = b"".join(single.read(0x702, size).to_bytes(size, "little") for _ in range(5))
        assert run == one and len(run) == 5 * size
    assert bus.read_string(0x700, 2, 1) == (0xA500 | 16).to_bytes(2, "little")
    assert bus.accesses["device"] == 16                 # each element is an access


def test_default_string_write_is_the_single_writes_in_order():
    bus = PortIOBus()
    dev = Wide()
    bus.register(0x700, 4, dev)
    assert bus.write_string(0x701, 2, bytes([1, 2, 3, 4, 5, 6])) == 3
    assert dev.log == [(1, 2, 0x0201), (1, 2, 0x0403), (1, 2, 0x0605)]
    assert bus.accesses["device"] == 3


def test_string_io_on_unclaimed_ports():
    bus = PortIOBus()
    assert bus.read_string(0x123, 2, 3) == b"\xff" * 6
    assert bus.write_string(0x123, 4, bytes(8)) == 2
    assert bus.unclaimed == 5


class Chunky(Device):
    """Serves at most ``limit`` elements per string call, as a device with data blocks does."""

    def __init__(self, limit, reply=None):
        self.limit, self.reply, self.taken = limit, reply, b""

    def read_string(self, offset, size, count):
        if self.reply is not None:
            return self.reply
        return bytes(range(min(count, self.limit) * size))

    def write_string(self, offset, size, data):
        n = min(len(data) // size, self.limit)
        self.taken += data[:n * size]
        return n if self.reply is None else self.reply


def test_a_device_may_serve_part_of_a_run():
    bus = PortIOBus()
    bus.register(0x700, 1, Chunky(3))
    assert bus.read_string(0x700, 2, 10) == bytes(range(6))
    assert bus.write_string(0x700, 4, bytes(40)) == 3
    assert bus.accesses["device"] == 6


@pytest.mark.parametrize("reply", [b"", b"\x01\x02\x03", bytes(42)])
def test_a_string_read_of_the_wrong_length_is_a_device_bug(reply):
    bus = PortIOBus()
    bus.register(0x700, 1, Chunky(3, reply), "chunky")
    with pytest.raises(BusError, match="chunky returned"):
        bus.read_string(0x700, 2, 10)


@pytest.mark.parametrize("reply", [0, 11])
def test_a_string_write_taking_none_or_too_many_is_a_device_bug(reply):
    bus = PortIOBus()
    bus.register(0x700, 1, Chunky(3, reply), "chunky")
    with pytest.raises(BusError, match="chunky took"):
        bus.write_string(0x700, 2, bytes(20))


def test_string_io_reaches_duck_typed_devices_one_element_at_a_time():
    class Plain:     # not a Device subclass
        def __init__(self):
            self.log = []

        def read(self, offset, size):
            self.log.append(("r", offset, size))
            return 7

        def write(self, offset, size, value):
            self.log.append(("w", offset, size, value))

    bus, dev = PortIOBus(), Plain()
    bus.register(0x700, 2, dev, "plain")
    assert bus.read_string(0x701, 1, 2) == b"\x07\x07"
    assert bus.write_string(0x700, 1, b"\x09") == 1
    assert dev.log == [("r", 1, 1), ("r", 1, 1), ("w", 0, 1, 9)]


def test_string_io_of_an_engines_callables():
    from hvm.bus import string_io

    bus = PortIOBus()
    bus.register(0x700, 1, Chunky(3))
    assert string_io(bus.read, bus.write) == (bus.read_string, bus.write_string)
    log = []
    read_string, write_string = string_io(lambda port, size: 0x1234, lambda *a: log.append(a))
    assert read_string(0x80, 1, 3) == b"\x34" * 3       # cut to the access size
    assert write_string(0x80, 2, b"\x01\x00\x02\x00") == 2
    assert log == [(0x80, 2, 1), (0x80, 2, 2)]
