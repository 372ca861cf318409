"""Raw binaries loaded into real guest RAM in each CPU mode."""
from __future__ import annotations

import pytest

from hvm.boot.entry import Mode
from hvm.boot.flat import load_flat
from hvm.errors import ImageError

MiB = 1 << 20
CODE = bytes((i * 31 + 1) & 0xFF for i in range(512))


def test_real_mode_defaults_like_a_boot_sector(mem):
    st = load_flat(mem, "boot.bin", CODE, Mode.REAL)
    assert mem.read(0x7C00, len(CODE)) == CODE
    assert st.mode == Mode.REAL
    assert st.entry == 0x7C00 and st.real_cs == 0
    assert st.regs == {"esp": 0x7C00}


def test_real_mode_high_entry_gets_a_segment(mem):
    st = load_flat(mem, "r.bin", CODE, Mode.REAL, load_addr=0x12000, entry=0x12345)
    assert st.real_cs == 0x1000
    assert 0 <= st.entry - (st.real_cs << 4) <= 0xFFFF
    assert st.entry == 0x12345
    assert mem.read(0x12000, len(CODE)) == CODE
    assert st.regs["esp"] == 0          # wraps to the top of the first 64 KiB, below the image


def test_real_mode_segment_for_entry_near_top_of_conventional_memory(mem):
    st = load_flat(mem, "r.bin", CODE, Mode.REAL, load_addr=0x9F000)
    assert st.real_cs == 0x9000 and st.entry - (st.real_cs << 4) == 0xF000


def test_protected_and_long_defaults(mem):
    st = load_flat(mem, "p.bin", CODE, Mode.PROTECTED)
    assert mem.read(0x100000, len(CODE)) == CODE
    assert (st.mode, st.entry, st.real_cs, st.regs) == (Mode.PROTECTED, 0x100000, None, {"esp": 0x80000})
    st = load_flat(mem, "l.bin", CODE, Mode.LONG, load_addr=0x200000, entry=0x200010)
    assert (st.mode, st.entry, st.regs) == (Mode.LONG, 0x200010, {"rsp": 0x80000})
    assert mem.read(0x200000, len(CODE)) == CODE


def test_stack_moves_above_an_image_covering_it(mem):
    st = load_flat(mem, "p.bin", bytes(0x70000), Mode.PROTECTED, load_addr=0x20000)
    assert st.regs["esp"] == 0x20000                  # just below the image
    st = load_flat(mem, "p.bin", bytes(0x80000), Mode.PROTECTED, load_addr=0x10000)
    assert st.regs["esp"] == 0x110000                 # above it, past the EBDA/VGA/ROM hole
    st = load_flat(mem, "p.bin", bytes(0x71000), Mode.PROTECTED, load_addr=0x8000)
    assert st.regs["esp"] == 0x89000                  # above it, 64 KiB of room


def test_empty_image(mem):
    with pytest.raises(ImageError) as exc:
        load_flat(mem, "e.bin", b"", Mode.REAL)
    assert exc.value.reason == "empty image" and exc.value.path == "e.bin"


def test_real_mode_image_must_fit_conventional_memory(mem):
    with pytest.raises(ImageError, match=r"does not fit below 0xa0000 \(conventional memory\)"):
        load_flat(mem, "big.bin", bytes(0xA0000 - 0x7C00 + 1), Mode.REAL)
    # Exactly filling it is fine.
    load_flat(mem, "ok.bin", bytes(0xA0000 - 0x7C00), Mode.REAL)


def test_too_big_for_ram(mem):
    with pytest.raises(ImageError, match=r"too big for RAM \(65 MiB needed, 64 MiB available\)"):
        load_flat(mem, "huge.bin", bytes(64 * MiB), Mode.PROTECTED)
    with pytest.raises(ImageError, match="too big for RAM"):
        load_flat(mem, "far.bin", CODE, Mode.LONG, load_addr=0x1_0000_0000)


def test_overlapping_cpu_setup_scratch_refused(mem):
    # Long mode needs the identity page tables at 0x1000-0x6FFF.
    with pytest.raises(ImageError, match="page tables"):
        load_flat(mem, "l.bin", CODE, Mode.LONG, load_addr=0x2000)
    # Protected mode only writes its GDT, so 0x2000 is fine there, and real mode writes nothing.
    load_flat(mem, "p.bin", CODE, Mode.PROTECTED, load_addr=0x2000)
    load_flat(mem, "r.bin", CODE, Mode.REAL, load_addr=0x500)


def test_entry_outside_ram(mem):
    with pytest.raises(ImageError, match="entry point"):
        load_flat(mem, "p.bin", CODE, Mode.PROTECTED, entry=128 * MiB)
    with pytest.raises(ImageError, match="beyond the first MiB"):
        load_flat(mem, "r.bin", CODE, Mode.REAL, entry=0x100000)
