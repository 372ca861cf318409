"""The CPU state a loader's EntryState asks for: segments, GDT and (for 64-bit) page tables.

The GDT and page tables live in a small boot area of guest RAM (see ``hvm.layout``) so that the
guest can reload segments or take an exception with the same descriptors the VMM loaded.
"""
from __future__ import annotations

import struct

from ..engine.state import DTable, Regs, Segment, SRegs
from ..errors import ConfigError
from ..layout import BOOT_AREA_END, BOOT_GDT, BOOT_PML4
from ..memory import GuestMemory
from .entry import EntryState, Mode

SEL_CODE64, SEL_DATA, SEL_CODE32 = 0x08, 0x10, 0x18
# Linux's boot protocol: __BOOT_CS 0x10 (64-bit code for the 64-bit entry), __BOOT_DS 0x18.
LINUX_SEL_CODE, LINUX_SEL_DATA = 0x10, 0x18

# Flat descriptors (type/flags as the Intel SDM vol. 3 §3.4.5 lays out).
_CODE64, _DATA, _CODE32 = 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00CF9B000000FFFF
_GDT = [0, _CODE64, _DATA, _CODE32]
_LINUX_GDT = [0, 0, _CODE64, _DATA]

CR0_PE, CR0_ET, CR0_PG = 1, 0x10, 1 << 31
RESET_CR0 = 0x6000_0010
CR4_PAE = 1 << 5
EFER_LME, EFER_LMA = 1 << 8, 1 << 10


def _flat(selector: int, code: bool, long: bool = False) -> Segment:
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=0xB if code else 0x3,
                   present=1, dpl=0, db=0 if long else 1, s=1, l=1 if long else 0, g=1)


def _real(selector: int, code: bool) -> Segment:
    return Segment(base=selector << 4, limit=0xFFFF, selector=selector, type=0xB if code else 0x3,
                   present=1, dpl=0, db=0, s=1, l=0, g=0)


def _identity_page_tables(mem: GuestMemory) -> int:
    """Map the first 4 GiB 1:1 with 2 MiB pages; returns CR3."""
    pml4, pdpt = BOOT_PML4, BOOT_PML4 + 0x1000
    mem.fill(pml4, BOOT_AREA_END - pml4)
    mem.write_u64(pml4, pdpt | 0x3)
    for i in range(4):
        pd = pdpt + 0x1000 * (i + 1)
        mem.write_u64(pdpt + i * 8, pd | 0x3)
        mem.write(pd, b"".join(struct.pack("<Q", ((i << 30) + (j << 21)) | 0x83) for j in range(512)))
    return pml4


def entry_cpu_state(mem: GuestMemory, entry: EntryState) -> tuple[Regs, SRegs]:
    """Registers for the first instruction of ``entry``; writes the GDT/page tables it needs."""
    regs = Regs(rflags=0x2)
    for name, value in entry.regs.items():
        attr = "r" + name[1:] if len(name) == 3 and name[0] == "e" else name
        if not hasattr(regs, attr):
            raise ConfigError(f"loader asked for unknown register {name!r}")
        setattr(regs, attr, value)
    if entry.mode == Mode.GIVEN:
        if entry.cpu is None:
            raise ConfigError("the loader gave no CPU state for its entry")
        regs.rip = entry.entry
        return regs, entry.cpu
    sregs = SRegs()
    if entry.mode == Mode.RESET:
        # SDM vol. 3A §9.1.1 table 9-1: real mode with CS.base FFFF0000 until the first far jump,
        # so the first instruction is at FFFFFFF0; CD and NW set (caches off).
        sregs.cs = Segment(base=entry.entry & ~0xFFFF, limit=0xFFFF, selector=0xF000, type=0xB, present=1,
                           dpl=0, db=0, s=1, l=0, g=0)
        regs.rip = entry.entry & 0xFFFF
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, _real(0, False))
        sregs.cr0 = RESET_CR0
        sregs.gdt = DTable(0, 0xFFFF)
        sregs.idt = DTable(0, 0xFFFF)
        _system_segments(sregs)
        return regs, sregs
    if entry.mode == Mode.REAL:
        cs = entry.real_cs or 0
        regs.rip = entry.entry - (cs << 4)
        if not 0 <= regs.rip <= 0xFFFF:
            raise ConfigError(f"real-mode entry {entry.entry:#x} is not reachable from CS {cs:#x}")
        sregs.cs = _real(cs, True)
        for name in ("ds", "es", "fs", "gs", "ss"):
            setattr(sregs, name, _real(0, False))
        sregs.cr0 = CR0_ET
        _system_segments(sregs)
        return regs, sregs

    long = entry.mode == Mode.LONG
    if entry.linux_selectors:
        if not long:
            raise ConfigError("Linux's selectors are only laid out for the 64-bit entry")
        gdt, code, data = _LINUX_GDT, LINUX_SEL_CODE, LINUX_SEL_DATA
    else:
        gdt, code, data = _GDT, SEL_CODE64 if long else SEL_CODE32, SEL_DATA
    mem.write(BOOT_GDT, struct.pack(f"<{len(gdt)}Q", *gdt))
    sregs.gdt = DTable(BOOT_GDT, len(gdt) * 8 - 1)
    sregs.idt = DTable(0, 0)
    regs.rip = entry.entry
    sregs.cs = _flat(code, True, long)
    for name in ("ds", "es", "fs", "gs", "ss"):
        setattr(sregs, name, _flat(data, False))
    sregs.cr0 = CR0_PE | CR0_ET
    if long:
        sregs.cr3 = _identity_page_tables(mem)
        sregs.cr4 = CR4_PAE
        sregs.efer = EFER_LME | EFER_LMA
        sregs.cr0 |= CR0_PG
    _system_segments(sregs)
    return regs, sregs


def _system_segments(sregs: SRegs) -> None:
    # A busy 32/64-bit TSS and an empty LDT: what VM entry checks expect even if the guest never uses them.
    sregs.tr = Segment(base=0, limit=0xFFFF, selector=0, type=0xB, present=1, s=0)
    sregs.ldt = Segment(base=0, limit=0xFFFF, selector=0, type=0x2, present=1, s=0)
