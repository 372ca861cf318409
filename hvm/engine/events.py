"""Architectural delivery of exceptions and interrupts, for engines whose CPU leaves it to the
embedder (unicorn). Works on the neutral Regs/SRegs and GuestMemory, so it is engine-neutral.

Real mode is done (Intel SDM vol. 3, §20.1.4 "Interrupt and exception handling" in real-address
mode); protected and long mode IDT delivery (gates, privilege change through the TSS, IST, error
codes) is the next step of the software-engine work.
"""
from __future__ import annotations

from ..memory import GuestMemory, GuestMemoryError
from .state import Regs, SRegs

IF, TF, AC = 1 << 9, 1 << 8, 1 << 18


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
