"""Stores a PV guest kernel makes straight into its own L1 page tables, carried out as Xen's
"writable page tables" assist does (xen/arch/x86/pv/ro-page-fault.c, ptwr_do_page_fault).

Page tables are mapped read-only in a PV guest, so a store into one faults. With
VMASST_TYPE_writable_pagetables on (Linux turns it on), Xen emulates the faulting instruction when
the read-only page is an L1 table of the domain's, and lets the store through only if it changes
one naturally aligned entry of that page to something mod_l1_entry accepts. Linux depends on it:
generic code clears PTEs with XCHG (ptep_get_and_clear on every munmap and exit) and flips bits
with locked bit operations, none of them through a hypercall.

hvm executes that one instruction in a scratch unicorn CPU holding the guest's registers, the
instruction bytes and a copy of the L1 frame at the faulting page, then compares the copy: at
most one changed entry, which DirectPaging validates and writes. An instruction that touches any
other memory, or a store Xen would refuse, leaves the fault for the guest, as Xen does.
"""
from __future__ import annotations

import struct
import threading

from hvm.memory import GuestMemoryError
from hvm.paging import PageFault

from . import abi as x
from .pvcpu import MSR_FS_BASE, MSR_GS_BASE

PAGE = 4096
PFEC_PRESENT, PFEC_WRITE, PFEC_USER, PFEC_RSVD, PFEC_INSN = 1, 2, 4, 8, 16
_ENTRIES = struct.Struct("<512Q")
_GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
         "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")
MAX_INSN = 15
# The scratch CPU's physical memory: its page tables (up to 7 of them for three pages), the two
# code pages an instruction can span, and the copy of the L1 table.
_TABLES, _TABLES_SIZE, _CODE, _DATA, _SCRATCH = 0x1000, 0x8000, 0x10000, 0x12000, 0x13000
_TABLE_FLAGS = x.PTE_P | x.PTE_RW
_CR0_PE, _CR0_PG, _CR4_PAE = 1, 1 << 31, 1 << 5
_EFER, _EFER_LME, _EFER_LMA = 0xC0000080, 1 << 8, 1 << 10


class PageTableWrites:
    """One domain's emulator of stores into its L1 tables (a unicorn CPU, made on first use)."""

    def __init__(self) -> None:
        self._uc = None
        self._ids: list[int] = []
        self._next_table = 0
        self._lock = threading.Lock()   # one scratch CPU, any vCPU thread

    def handles(self, domain, vcpu, error_code: int | None) -> bool:
        """Xen's precondition: a kernel-mode write to a present page, assist enabled."""
        return (error_code is not None and vcpu.kernel_mode
                and error_code & (PFEC_PRESENT | PFEC_WRITE | PFEC_RSVD | PFEC_INSN) == PFEC_PRESENT | PFEC_WRITE
                and bool(domain.vm_assist & 1 << x.VMASST_TYPE_WRITABLE_PAGETABLES))

    def emulate(self, domain, vcpu, engine, regs, fault_va: int) -> bool:
        """Carry out the faulting store; False when the guest must take the #PF."""
        mm, memory = domain.mm, domain.memory
        l1_of_va = mm.kernel_l1(fault_va, vcpu.index)
        if l1_of_va is None:
            return False
        pte = memory.read_u64(l1_of_va * PAGE + (fault_va >> 12 & 511) * 8)
        if pte & (x.PTE_P | x.PTE_RW) != x.PTE_P:
            return False                        # only read-only mappings
        table = (pte & x.PTE_ADDR) >> 12
        if not mm.is_l1_table(table):
            return False
        sregs = engine.get_sregs()
        code = b""
        try:
            code = vcpu.read(sregs, regs.rip, min(MAX_INSN, PAGE - (regs.rip & 0xFFF)))
            if len(code) < MAX_INSN:            # the rest may sit on the next page, or nowhere
                code += vcpu.read(sregs, regs.rip + len(code), MAX_INSN - len(code))
        except (PageFault, GuestMemoryError):
            if not code:
                return False
        before = memory.read(table * PAGE, PAGE)
        bases = engine.get_msrs([MSR_FS_BASE, MSR_GS_BASE])
        with self._lock:
            result = self._run(regs, code, fault_va & ~0xFFF, before, bases)
        if result is None:
            return False
        after, out = result
        changed = [(i, old, new) for i, (old, new) in enumerate(zip(_ENTRIES.unpack(before), _ENTRIES.unpack(after)))
                   if old != new]
        if len(changed) > 1:
            return False                        # one naturally aligned entry per store, as Xen
        if changed:
            index, old, new = changed[0]
            if mm.write_l1_entry(table, index, old, new):
                return False
            domain.flush_tlb(engine)
        for name in _GPRS:
            setattr(regs, name, out[name])
        engine.set_regs(regs)
        return True

    def _run(self, regs, code: bytes, page_va: int, table: bytes, bases: dict) -> tuple[bytes, dict] | None:
        import unicorn
        from unicorn import x86_const as u

        uc = self._cpu()
        code_pages = sorted({regs.rip & ~0xFFF, (regs.rip + len(code) - 1) & ~0xFFF})
        if page_va in code_pages:
            return None
        # The scratch CPU pages like the guest's (unicorn does not reach canonical-high
        # addresses without paging): the code pages and the table, nothing else.
        uc.mem_write(_TABLES, bytes(_TABLES_SIZE))
        self._next_table = _TABLES + PAGE
        for i, page in enumerate(code_pages):
            self._map(uc, page, _CODE + i * PAGE)
        self._map(uc, page_va, _DATA)
        uc.mem_write(_CODE + (regs.rip & 0xFFF), code)
        uc.mem_write(_DATA, table)
        uc.reg_write(u.UC_X86_REG_CR3, _TABLES)           # also empties unicorn's TLB
        uc.reg_write_batch(list(zip(self._ids, (getattr(regs, n) for n in _GPRS))))
        uc.reg_write(u.UC_X86_REG_FS_BASE, bases[MSR_FS_BASE])
        uc.reg_write(u.UC_X86_REG_GS_BASE, bases[MSR_GS_BASE])
        try:
            uc.emu_start(regs.rip, 0, count=1)
        except unicorn.UcError:
            return None                         # touched memory beyond the table, or faulted
        return bytes(uc.mem_read(_DATA, PAGE)), dict(zip(_GPRS, uc.reg_read_batch(self._ids)))

    def _map(self, uc, va: int, pa: int) -> None:
        table = _TABLES
        for shift in (39, 30, 21):
            slot = table + (va >> shift & 511) * 8
            entry = struct.unpack("<Q", uc.mem_read(slot, 8))[0]
            if not entry & x.PTE_P:
                entry, self._next_table = self._next_table | _TABLE_FLAGS, self._next_table + PAGE
                uc.mem_write(slot, struct.pack("<Q", entry))
            table = entry & x.PTE_ADDR
        uc.mem_write(table + (va >> 12 & 511) * 8, struct.pack("<Q", pa | _TABLE_FLAGS))

    def _cpu(self):
        if self._uc is None:
            import unicorn
            from unicorn import x86_const as u

            uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
            uc.mem_map(0, _SCRATCH, unicorn.UC_PROT_ALL)
            uc.reg_write(u.UC_X86_REG_CR4, _CR4_PAE)
            uc.reg_write(u.UC_X86_REG_MSR, (_EFER, _EFER_LME | _EFER_LMA))
            uc.reg_write(u.UC_X86_REG_CR0, _CR0_PG | _CR0_PE)
            self._ids = [getattr(u, f"UC_X86_REG_{n.upper()}") for n in _GPRS]
            self._uc = uc
        return self._uc
