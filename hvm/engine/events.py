"""Architectural delivery of exceptions and interrupts, for engines whose CPU leaves it to the
embedder (unicorn). Works on the neutral Regs/SRegs and GuestMemory, so it is engine-neutral.

Real mode follows Intel SDM vol. 3, §20.1.4 (interrupt handling in real-address mode); protected
and IA-32e mode follow §6.12 ("Exception and interrupt handling") and §6.14 ("Exception and
interrupt handling in 64-bit mode"): interrupt and trap gates, privilege change with the stack
from the TSS, IST, error codes, and the double-fault rules of Table 6-5. Task gates and virtual-8086
mode are not modelled (no 64-bit OS uses them); a guest needing them gets a clear error.

The CPU's hidden segment caches are not read here: a new stack segment's base comes from its GDT
descriptor and the current one's from ``sregs`` (flat for every 64-bit and flat 32-bit OS).
"""
from __future__ import annotations

from dataclasses import dataclass

from ..memory import GuestMemory, GuestMemoryError
from ..paging import EFER_LMA, PageFault, PagingMode, translate
from .state import Regs, SRegs

IF, TF, AC = 1 << 9, 1 << 8, 1 << 18
NT, RF, VM = 1 << 14, 1 << 16, 1 << 17

VEC_DF, VEC_TS, VEC_NP, VEC_SS, VEC_GP, VEC_PF = 8, 10, 11, 12, 13, 14
# Exceptions that push an error code (SDM Table 6-1); #DF, #TS, #NP, #SS, #GP, #PF, #AC, #CP.
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
_CONTRIBUTORY = frozenset({0, 10, 11, 12, 13})


class DeliveryFailed(Exception):
    """The CPU could not deliver the event (a #GP, #DF, then shutdown on real hardware)."""


def deliver_real_mode(mem: GuestMemory, regs: Regs, sregs: SRegs, vector: int) -> None:
    """Deliver ``vector`` through the IVT: push FLAGS, CS, IP on SS:SP, clear IF/TF/AC and load
    CS:IP from the vector's entry. Updates ``regs`` and ``sregs`` in place."""
    if sregs.idt.limit < vector * 4 + 3:
        raise DeliveryFailed(f"vector {vector:#x} beyond the IVT limit {sregs.idt.limit:#x}")
    try:
        entry = mem.read_u32(sregs.idt.base + vector * 4)
        sp = regs.rsp & 0xFFFF
        ss_base = sregs.ss.selector << 4
        for value in (regs.rflags & 0xFFFF, sregs.cs.selector, regs.rip & 0xFFFF):
            sp = (sp - 2) & 0xFFFF  # the stack wraps inside its 64 KiB segment
            mem.write_u16(ss_base + sp, value)
    except GuestMemoryError as exc:
        raise DeliveryFailed(f"IVT or stack outside guest RAM ({exc})") from None
    regs.rsp = (regs.rsp & ~0xFFFF) | sp
    regs.rflags &= ~(IF | TF | AC)
    regs.rip = entry & 0xFFFF
    sregs.cs.selector = entry >> 16
    sregs.cs.base = (entry >> 16) << 4


class Unsupported(Exception):
    """The guest asked for something this delivery code does not model (task gate, vm86)."""


@dataclass
class Event:
    """One exception or interrupt to deliver."""

    vector: int
    error_code: int | None = None
    software: bool = False      # INT n / INT3 / INTO: gate DPL is checked, RIP is already past it
    insn_length: int = 0        # of that instruction: a fault while delivering it points RIP back at it
    external: bool = False      # from an interrupt controller: sets EXT in error codes it causes
    cr2: int | None = None      # for #PF: the faulting linear address


@dataclass
class Delivered:
    """The state after delivery: ``regs`` updated in place; CS/SS selectors and the new CPL."""

    vector: int                 # what was delivered in the end (#DF if the event escalated)
    cs: int
    ss: int
    cpl: int
    cs_desc: tuple[int, int]    # the handler's code descriptor (low, high dword)
    ss_desc: tuple[int, int] | None = None  # the new stack's; None: SS kept (or null in IA-32e)


class _Fault(Exception):
    def __init__(self, vector: int, error_code: int = 0, cr2: int | None = None):
        super().__init__(vector)
        self.vector, self.error_code, self.cr2 = vector, error_code, cr2


def escalate(first: int, second: int) -> int | None:
    """The vector the CPU raises when ``second`` occurs while delivering ``first`` (SDM Table 6-5):
    ``second`` itself, #DF, or None for a triple fault (shutdown)."""
    if first == VEC_DF:
        return None
    if (first in _CONTRIBUTORY and second in _CONTRIBUTORY) or \
            (first == VEC_PF and (second in _CONTRIBUTORY or second == VEC_PF)):
        return VEC_DF
    return second


class _Linear:
    """Supervisor-mode access to linear addresses through the guest's page tables."""

    def __init__(self, mem: GuestMemory, sregs: SRegs):
        self.mem = mem
        self.mode = PagingMode(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)

    def _gpa(self, addr: int, size: int, write: bool) -> int:
        try:
            gpa = translate(self.mem, self.mode, addr, write)
            if (addr & 0xFFF) + size > 0x1000:  # the access straddles pages: both must be mapped
                translate(self.mem, self.mode, addr + size - 1, write)
        except PageFault as exc:
            present = 1 if "read-only" in exc.reason else 0
            raise _Fault(VEC_PF, present | (2 if write else 0), cr2=exc.vaddr) from None
        return gpa

    def read(self, addr: int, size: int) -> int:
        try:
            return int.from_bytes(self.mem.read(self._gpa(addr, size, False), size), "little")
        except GuestMemoryError:
            raise _Fault(VEC_GP) from None

    def write(self, addr: int, size: int, value: int) -> None:
        gpa = self._gpa(addr, size, True)
        try:
            self.mem.write(gpa, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little"))
        except GuestMemoryError:
            raise _Fault(VEC_GP) from None


def _descriptor(lin: _Linear, sregs: SRegs, ldt_base: int, ldt_limit: int, selector: int,
                error: int) -> tuple[int, int]:
    """The two dwords of the descriptor ``selector`` names, or #GP(selector)."""
    index = selector & ~7
    base, limit = (ldt_base, ldt_limit) if selector & 4 else (sregs.gdt.base, sregs.gdt.limit)
    if index + 7 > limit:
        raise _Fault(VEC_GP, error)
    return lin.read(base + index, 4), lin.read(base + index + 4, 4)


def _seg_base(lo: int, hi: int) -> int:
    return (lo >> 16) | ((hi & 0xFF) << 16) | (hi & 0xFF000000)


def deliver_protected(mem: GuestMemory, regs: Regs, sregs: SRegs, event: Event, cpl: int,
                      tr_base: int, ldt: tuple[int, int] = (0, 0)) -> Delivered:
    """Deliver ``event`` through the protected-mode or IA-32e IDT, applying the double-fault rules
    to faults met on the way. ``regs`` is updated in place; CR2 is set in ``sregs`` for a #PF.

    Raises DeliveryFailed for a triple fault, Unsupported for task gates and vm86.
    """
    if regs.rflags & VM:
        raise Unsupported("virtual-8086 mode")
    saved = Regs(**regs.as_dict())
    while True:
        try:
            if event.cr2 is not None:
                sregs.cr2 = event.cr2
            return _deliver_once(mem, regs, sregs, event, cpl, tr_base, ldt)
        except _Fault as fault:
            regs.__dict__.update(saved.__dict__)  # a fault during delivery leaves no half-built frame
            if event.software:
                # The fault points at INT n, and so does any fault met delivering that one.
                regs.rip -= event.insn_length
                saved.rip = regs.rip
            nested = escalate(event.vector, fault.vector)
            if nested is None:
                raise DeliveryFailed(f"triple fault: {fault.vector:#x} while delivering "
                                     f"{event.vector:#x}") from None
            code = 0 if nested == VEC_DF else fault.error_code | (1 if event.external else 0)
            event = Event(nested, code, external=event.external,
                          cr2=fault.cr2 if nested == VEC_PF else None)


def _deliver_once(mem: GuestMemory, regs: Regs, sregs: SRegs, event: Event, cpl: int,
                  tr_base: int, ldt: tuple[int, int]) -> Delivered:
    lin = _Linear(mem, sregs)
    long_mode = bool(sregs.efer & EFER_LMA)
    ext = 1 if event.external else 0
    vec = event.vector
    idt_error = vec * 8 + 2 + ext
    entry_size = 16 if long_mode else 8
    if vec * entry_size + entry_size - 1 > sregs.idt.limit:
        raise _Fault(VEC_GP, idt_error)
    gate_lo = lin.read(sregs.idt.base + vec * entry_size, 4)
    gate_hi = lin.read(sregs.idt.base + vec * entry_size + 4, 4)
    gate_type, gate_dpl, present = (gate_hi >> 8) & 0xF, (gate_hi >> 13) & 3, gate_hi >> 15 & 1
    if gate_type == 0x5 and not long_mode:
        raise Unsupported("task gate in the IDT")
    valid = (0xE, 0xF) if long_mode else (0x6, 0x7, 0xE, 0xF)
    if gate_type not in valid:
        raise _Fault(VEC_GP, idt_error)
    if event.software and gate_dpl < cpl:
        raise _Fault(VEC_GP, idt_error)
    if not present:
        raise _Fault(VEC_NP, idt_error)
    selector = gate_lo >> 16
    offset = (gate_lo & 0xFFFF) | (gate_hi & 0xFFFF0000)
    if long_mode:
        offset |= lin.read(sregs.idt.base + vec * 16 + 8, 4) << 32
    elif gate_type in (0x6, 0x7):
        offset &= 0xFFFF
    ist = gate_hi & 7 if long_mode else 0

    if selector & 0xFFFC == 0:
        raise _Fault(VEC_GP, ext)
    cs_lo, cs_hi = _descriptor(lin, sregs, *ldt, selector, (selector & 0xFFFC) | ext)
    dpl = (cs_hi >> 13) & 3
    is_code = cs_hi & (1 << 12) and cs_hi & (1 << 11)
    if not is_code or dpl > cpl or (long_mode and not (cs_hi >> 21) & 1):
        raise _Fault(VEC_GP, (selector & 0xFFFC) | ext)
    if not cs_hi & (1 << 15):
        raise _Fault(VEC_NP, (selector & 0xFFFC) | ext)
    conforming = cs_hi & (1 << 10)
    new_cpl = cpl if conforming else dpl
    wide = 8 if long_mode else (4 if gate_type in (0xE, 0xF) else 2)

    old_ss, old_rsp, old_flags = sregs.ss.selector, regs.rsp, regs.rflags
    if long_mode:
        if new_cpl < cpl or ist:
            slot = tr_base + (0x24 + 8 * (ist - 1) if ist else 4 + 8 * new_cpl)
            rsp = lin.read(slot, 8)
        else:
            rsp = regs.rsp
        rsp &= ~0xF
        new_ss = new_cpl if new_cpl < cpl else old_ss  # a null SS carrying the new RPL
        # QEMU's do_interrupt64 loads that null SS with only its DPL in the cache.
        ss_desc = (0, new_cpl << 13) if new_cpl < cpl else None
        ss_base, mask = 0, (1 << 64) - 1
        frame = [old_ss, old_rsp, old_flags, sregs.cs.selector, regs.rip]
    else:
        if new_cpl < cpl:
            new_ss = lin.read(tr_base + 8 + 8 * new_cpl, 2)
            rsp = lin.read(tr_base + 4 + 8 * new_cpl, 4)
            if new_ss & 0xFFFC == 0:
                raise _Fault(VEC_TS, ext)
            ss_lo, ss_hi = _descriptor(lin, sregs, *ldt, new_ss, (new_ss & 0xFFFC) | ext)
            if not ss_hi & (1 << 15):
                raise _Fault(VEC_SS, (new_ss & 0xFFFC) | ext)
            ss_base = _seg_base(ss_lo, ss_hi)
            ss_desc = (ss_lo, ss_hi)
            mask = 0xFFFFFFFF if ss_hi & (1 << 22) else 0xFFFF
            frame = [old_ss, old_rsp, old_flags, sregs.cs.selector, regs.rip]
        else:
            # The current stack is taken as 32-bit (SS.B=1), as every protected-mode OS sets it.
            new_ss, rsp, ss_base, mask = old_ss, regs.rsp, sregs.ss.base, 0xFFFFFFFF
            ss_desc = None
            frame = [old_flags, sregs.cs.selector, regs.rip]
    if event.error_code is not None:
        frame.append(event.error_code)
    for value in frame:
        rsp = (rsp - wide) & mask
        lin.write(ss_base + rsp, wide, value)

    regs.rsp = rsp if long_mode else (regs.rsp & ~mask) | rsp
    regs.rip = offset
    regs.rflags &= ~(TF | NT | RF | VM)
    if gate_type in (0x6, 0xE):
        regs.rflags &= ~IF
    return Delivered(vector=vec, cs=(selector & 0xFFFC) | new_cpl, ss=new_ss, cpl=new_cpl,
                     cs_desc=(cs_lo, cs_hi), ss_desc=ss_desc)
