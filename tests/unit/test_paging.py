"""The guest page-table walker, on page tables built by hand in a GuestMemory."""
from __future__ import annotations

import pytest

from hvm.boot.cpu_setup import entry_cpu_state
from hvm.boot.entry import EntryState, Mode
from hvm.memory import GuestMemory, MiB
from hvm.paging import PageFault, PagingMode, read_virtual, translate, write_virtual


@pytest.fixture
def mem():
    m = GuestMemory(8 * MiB)
    yield m
    m.close()


def _mode(sregs):
    return PagingMode(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)


def test_long_mode_identity_map_built_by_cpu_setup(mem):
    _, sregs = entry_cpu_state(mem, EntryState(Mode.LONG, 0x100000))
    mode = _mode(sregs)
    assert translate(mem, mode, 0x123456) == 0x123456
    assert translate(mem, mode, 0xFFFF_F000) == 0xFFFF_F000  # 2 MiB pages up to 4 GiB
    with pytest.raises(PageFault, match="not present at PML4"):
        translate(mem, mode, 0x80_0000_0000)


def test_four_level_4k_pages_and_read_only(mem):
    pml4, pdpt, pd, pt = 0x10000, 0x11000, 0x12000, 0x13000
    va = 0x7F12_3456_7000
    mem.write_u64(pml4 + ((va >> 39) & 511) * 8, pdpt | 3)
    mem.write_u64(pdpt + ((va >> 30) & 511) * 8, pd | 3)
    mem.write_u64(pd + ((va >> 21) & 511) * 8, pt | 3)
    mem.write_u64(pt + ((va >> 12) & 511) * 8, 0x200000 | 1)          # present, read-only
    mem.write_u64(pt + (((va >> 12) + 1) & 511) * 8, 0x300000 | 3)    # next page, writable
    mode = PagingMode(0x80000011, pml4, 0x20, 0x500)
    assert translate(mem, mode, va + 0x10) == 0x200010
    with pytest.raises(PageFault, match="read-only at PT"):
        translate(mem, mode, va, write=True)
    mem.write(0x200FFE, b"ab")
    mem.write(0x300000, b"cd")
    assert read_virtual(mem, mode, va + 0xFFE, 4) == b"abcd"  # crosses into a non-contiguous page
    with pytest.raises(PageFault):
        write_virtual(mem, mode, va + 0xFFE, b"zzzz")          # first page read-only: nothing written
    assert mem.read(0x300000, 2) == b"cd"


def test_32bit_paging_with_4m_page(mem):
    pd = 0x20000
    mem.write_u32(pd + (0xC0000000 >> 22) * 4, 0x400000 | 0x83)
    mode = PagingMode(0x80000011, pd, 0x10, 0)
    assert translate(mem, mode, 0xC0012345) == 0x412345
    with pytest.raises(PageFault):
        translate(mem, mode, 0x1000)


def test_pae_paging(mem):
    pdpt, pd = 0x30000, 0x31000
    mem.write_u64(pdpt + 3 * 8, pd | 1)
    mem.write_u64(pd + 5 * 8, 0x600000 | 0x83)
    mode = PagingMode(0x80000011, pdpt, 0x20, 0)
    assert translate(mem, mode, 0xC0A00000 + 0x1234) == 0x601234


def test_walk_leaving_ram_is_a_fault_not_a_host_access(mem):
    mode = PagingMode(0x80000011, 0xFFFF_F000, 0x20, 0x500)  # CR3 beyond RAM
    with pytest.raises(PageFault, match="left guest RAM"):
        translate(mem, mode, 0x1000)


def test_paging_off_is_identity(mem):
    assert translate(mem, PagingMode(0x11, 0, 0, 0), 0x1_2345_6789) == 0x2345_6789
