"""GuestMemory bounds: no guest address or length may reach outside RAM."""
from __future__ import annotations

import pytest
from hypothesis import given, settings, strategies as st

from hvm.memory import GiB, GuestMemory, GuestMemoryError, MiB, pc_layout

SIZE = 2 * MiB
LAYOUT = [(0, 1 * MiB), (4 * GiB, 1 * MiB)]  # two regions with a hole between, like the PC


@pytest.fixture(scope="module")
def mem():
    m = GuestMemory(SIZE, LAYOUT)
    yield m
    m.close()


def _inside(gpa: int, length: int) -> bool:
    return any(base <= gpa and gpa + length <= base + size for base, size in LAYOUT)


addresses = st.one_of(st.integers(-2**64, 2**65), st.sampled_from([0, MiB - 1, MiB, 4 * GiB - 1, 4 * GiB,
                                                                    4 * GiB + MiB - 8, 4 * GiB + MiB]))
lengths = st.one_of(st.integers(-16, 2 * MiB + 16), st.sampled_from([0, 1, 8, MiB]))


@settings(max_examples=400, deadline=None)
@given(gpa=addresses, length=lengths)
def test_view_is_bounds_checked(mem, gpa, length):
    if length >= 0 and gpa >= 0 and _inside(gpa, length):
        assert len(mem.view(gpa, length)) == length
        assert mem.contains(gpa, length)
    else:
        with pytest.raises(GuestMemoryError):
            mem.view(gpa, length)
        assert not mem.contains(gpa, length)


@settings(max_examples=200, deadline=None)
@given(gpa=addresses, data=st.binary(min_size=1, max_size=64))
def test_write_then_read_roundtrip_or_refusal(mem, gpa, data):
    if gpa >= 0 and _inside(gpa, len(data)):
        mem.write(gpa, data)
        assert mem.read(gpa, len(data)) == data
    else:
        with pytest.raises(GuestMemoryError):
            mem.write(gpa, data)


def test_access_straddling_a_region_end_is_refused(mem):
    with pytest.raises(GuestMemoryError, match="outside guest RAM"):
        mem.read(MiB - 4, 8)
    with pytest.raises(GuestMemoryError):
        mem.read_u64(4 * GiB + MiB - 4)


def test_integer_accessors(mem):
    mem.write_u64(0x1000, 0x1122334455667788)
    assert mem.read_u32(0x1000) == 0x55667788
    assert mem.read_u16(0x1006) == 0x1122
    assert mem.read_u8(0x1007) == 0x11
    mem.write_u16(0x1000, 0x1FFFF)  # truncated to 16 bits, never spills
    assert mem.read_u32(0x1000) == 0x5566FFFF


def test_views_are_zero_copy(mem):
    v = mem.view(0x2000, 4)
    v[:] = b"abcd"
    assert mem.read(0x2000, 4) == b"abcd"


def test_pc_layout_keeps_the_hole_below_4g():
    assert pc_layout(512 * MiB) == [(0, 512 * MiB)]
    assert pc_layout(4 * GiB) == [(0, 3 * GiB), (4 * GiB, 1 * GiB)]
    with pytest.raises(ValueError):
        pc_layout(0)
