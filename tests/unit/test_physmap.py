"""The PC's memory map below 1 MiB: the BIOS alias, PAM segments switching between ROM and RAM
(82441FX datasheet §3.2.15), and stores into read-only segments, with no VM."""
from __future__ import annotations

import pytest

from hvm.boards.pc_memory import PcMemoryMap, pam_segments
from hvm.memory import GuestMemory
from hvm.physmap import PhysMap


@pytest.fixture
def pc():
    mem = GuestMemory(16 << 20)
    bios = bytes(range(256)) * 1024       # 256 KiB with recognisable content
    layout = PcMemoryMap(mem, bios)
    yield mem, bios, layout
    mem.close()


def _at(layout, gpa):
    return layout.physmap.window_at(gpa)


def test_thirteen_segments_cover_c0000_to_fffff():
    segments = pam_segments()
    assert len(segments) == 13
    assert sum(size for _, size, _, _ in segments) == 0x40000
    assert segments[0][:2] == (0xC0000, 0x4000) and segments[-1][:2] == (0xF0000, 0x10000)


def test_at_reset_the_bios_shows_at_the_top_and_under_1m(pc):
    mem, bios, layout = pc
    top = _at(layout, 0xFFFFFFF0)
    assert top.readonly and top.gpa == 0xFFFC0000 and top.size == len(bios)
    low = _at(layout, 0xF0000)
    assert low.readonly and layout.legacy.read(low.host_addr - layout.legacy.host_addr, 4) == bios[0x30000:0x30004]
    assert _at(layout, 0xA0000) is None and _at(layout, 0xBFFFF) is None     # the VGA window is MMIO
    assert _at(layout, 0x9FFFF).name == "ram" and _at(layout, 0x100000).name == "ram"
    assert (0xA0000, 0x20000) in layout.physmap.holes()


def test_pam_switches_segments_and_tells_listeners(pc):
    mem, _, layout = pc
    changes = []
    layout.physmap.subscribe(lambda removed, added: changes.append((removed, added)))
    layout.set_pam(bytes([0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33]))
    assert all(_at(layout, gpa).name == "ram" for gpa, *_ in pam_segments())
    assert len(changes) == 1                          # one contiguous run, one change
    layout.set_pam(bytes([0x10, 0x11, 0x33, 0x33, 0x33, 0x33, 0x33]))
    assert _at(layout, 0xF0000).name == "ram-ro" and _at(layout, 0xC0000).name == "ram-ro"
    assert _at(layout, 0xC8000).name == "ram"
    holes_before = layout.physmap.holes()
    layout.set_pam(bytes(7))
    assert layout.physmap.holes() == holes_before     # PAM never opens MMIO space


def test_stores_into_read_only_segments(pc):
    mem, _, layout = pc
    mem.write(0xF0000, b"RAM!")
    layout.set_pam(bytes([0x10] + [0] * 6))           # F-segment: read RAM, writes go nowhere
    layout.write(0xF0000 - 0xC0000, 4, 0x41414141)
    assert mem.read(0xF0000, 4) == b"RAM!"
    layout.set_pam(bytes([0x20] + [0] * 6))           # read ROM, write RAM
    layout.write(0xF0000 - 0xC0000, 4, 0x41414141)
    assert mem.read(0xF0000, 4) == b"AAAA"


def test_bad_bios_images_are_refused():
    mem = GuestMemory(16 << 20)
    try:
        for size in (0, 1000, 0x10000 + 1):
            with pytest.raises(ValueError, match="multiple of 64 KiB"):
                PcMemoryMap(mem, bytes(size))
    finally:
        mem.close()


def test_replace_keeps_the_map_consistent():
    mem = GuestMemory(4 << 20)
    try:
        pm = PhysMap(mem)
        with pytest.raises(ValueError):
            pm.replace([pm.ram_window(0x1000, 0x1000, readonly=True)])   # cuts the RAM window in two
    finally:
        mem.close()
