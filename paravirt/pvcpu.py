"""One PV vCPU's hypervisor-side state, and the transitions hvm makes for it: bouncing an
exception, interrupt or user-mode ``syscall`` to the guest kernel's handler, returning through
HYPERVISOR_iret, and switching between guest kernel and guest user mode.

In 64-bit PV both the guest's kernel and its user space run in ring 3; hvm tracks which one runs
(``kernel_mode``) and gives each its own L4 and GS base, as Xen's toggle_guest_mode does. The
frame a bounce leaves on the guest kernel's stack is Xen's (xen/arch/x86/x86_64/entry.S,
create_bounce_frame), lowest address first: RCX, R11, [error code], RIP, CS (bits 32-39: the
saved event mask), RFLAGS (IF = events were unmasked), RSP, SS. The return is do_iret's
(xen/arch/x86/pv/iret.c). Engine-neutral: it works on any engine's registers.
"""
from __future__ import annotations

import struct
from dataclasses import dataclass, field, replace

from hvm.engine.state import Regs, Segment, SRegs
from hvm.memory import GuestMemory, GuestMemoryError
from hvm.paging import PageFault, PagingMode, read_virtual, write_virtual

from .debugregs import DebugRegisters
from .vmce import Vmce
from .abi import (FLAT_KERNEL_CS, FLAT_KERNEL_SS, HYPERVISOR_VIRT_END, HYPERVISOR_VIRT_START,
                  VGCF_IN_SYSCALL)

PAGE = 4096
# RFLAGS bits (SDM vol. 1 3.4.3).
TF, IF, DF, IOPL, NT, RF, VM, AC = 1 << 8, 1 << 9, 1 << 10, 3 << 12, 1 << 14, 1 << 16, 1 << 17, 1 << 18
RFLAGS_FIXED = 1 << 1
RFLAGS_ALL = 0x3F7FD5            # the architectural flags (Xen's X86_EFLAGS_ALL)
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})
MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE = 0xC0000100, 0xC0000101, 0xC0000102
# Offsets in vcpu_info (xen.h, arch-x86/xen-x86_64.h).
VCPU_INFO_SIZE = 64
UPCALL_PENDING, UPCALL_MASK, PENDING_SEL, ARCH_CR2 = 0, 1, 8, 16
# iret_context (arch-x86/xen-x86_64.h): rax, r11, rcx, flags, rip, cs, rflags, rsp, ss.
IRET_CONTEXT = struct.Struct("<9Q")


class DomainCrash(Exception):
    """The guest did what Xen answers with domain_crash(); the message says what."""


class SegmentFault(DomainCrash):
    """A selector the CPU would refuse to load (#GP(selector)). Where Xen loads it for the
    guest it says what follows: the guest's own #GP, or the failsafe callback; else a crash."""

    def __init__(self, selector: int, reason: str):
        super().__init__(f"selector {selector:#x} {reason}")
        self.selector = selector
        self.regs: Regs | None = None        # where the guest stands when the load failed (iret)
        self.sregs: SRegs | None = None


def canonical(address: int) -> bool:
    """A 48-bit canonical address (bits 63-47 all equal): what a base, RIP or callback may be."""
    return address < 1 << 47 or address >= 0xFFFF800000000000


def ring3_segment(selector: int, code: bool) -> Segment:
    """A flat ring-3 segment cache: 64-bit code, or data (Xen's FLAT_RING3_* descriptors)."""
    if code:
        return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=0xB, present=1, dpl=3, db=0, s=1, l=1, g=1)
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=0x3, present=1, dpl=3, db=1, s=1, l=0, g=1)


@dataclass
class Trap:
    address: int
    flags: int          # TI_* (abi): DPL allowed for INT n, and "mask events"


@dataclass
class PvVcpu:
    """State Xen keeps per vCPU (struct pv_vcpu and friends) that hvm needs."""

    index: int
    memory: GuestMemory
    shared_info_maddr: int
    kernel_mode: bool = True
    traps: dict[int, Trap] = field(default_factory=dict)
    callbacks: dict[int, tuple[int, int]] = field(default_factory=dict)   # type -> (address, flags)
    kernel_ss: int = FLAT_KERNEL_SS
    kernel_sp: int = 0
    kernel_l4: int = 0           # machine frame numbers of the current kernel / user L4
    user_l4: int = 0
    iopl: int = 0                # virtual IOPL (physdev_op set_iopl / architectural_iopl)
    gdt_frames: list[int] = field(default_factory=list)
    gdt_entries: int = 0
    ldt: tuple[int, int] = (0, 0)   # (linear base, entries)
    vcpu_info_maddr: int = 0
    debugregs: DebugRegisters = field(default_factory=DebugRegisters)
    vcpu_info_registered: bool = False
    # Xen's _VPF_down: every vCPU but the first starts down, until VCPUOP_up. ``parked``: its
    # engine holds it (VCPUOP_down took effect); VCPUOP_up lets it go on where it stopped.
    down: bool = True
    parked: bool = False
    poll: frozenset[int] | None = None   # the ports of a SCHEDOP_poll in progress
    ldt_frames: list[int] = field(default_factory=list)   # frames typed for the loaded LDT
    failsafe_selectors: tuple[int, int, int, int] | None = None   # DS, ES, FS, GS a start failed to load
    runstate_area: int = 0
    initialised: bool = False     # has a context (vCPU 0 from the builder, others VCPUOP_initialise)
    start_state: tuple | None = None   # (Regs, SRegs, MSRs) VCPUOP_up starts it with
    cr4: int = 0                  # the CR4 bits the guest controls (emulate.CR4_GUEST_CONTROLLED)
    vmce: Vmce | None = None      # made at the first machine-check MSR access (needs the vendor)

    def __post_init__(self) -> None:
        self.down = self.index != 0
        if not self.vcpu_info_maddr:
            self.vcpu_info_maddr = self.shared_info_maddr + self.index * VCPU_INFO_SIZE

    # -- vcpu_info ----------------------------------------------------------------------------
    @property
    def upcall_mask(self) -> int:
        return self.memory.read_u8(self.vcpu_info_maddr + UPCALL_MASK)

    @upcall_mask.setter
    def upcall_mask(self, value: int) -> None:
        self.memory.write(self.vcpu_info_maddr + UPCALL_MASK, bytes([value & 0xFF]))

    def cr2(self) -> int:
        return struct.unpack("<Q", self.memory.read(self.vcpu_info_maddr + ARCH_CR2, 8))[0]

    def set_cr2(self, address: int) -> None:
        self.memory.write(self.vcpu_info_maddr + ARCH_CR2, struct.pack("<Q", address))

    # -- guest memory through the current page tables -----------------------------------------
    @staticmethod
    def mode(sregs: SRegs) -> PagingMode:
        return PagingMode(sregs.cr0, sregs.cr3, sregs.cr4, sregs.efer)

    def read(self, sregs: SRegs, va: int, length: int) -> bytes:
        return read_virtual(self.memory, self.mode(sregs), va, length)

    def write(self, sregs: SRegs, va: int, data: bytes) -> None:
        write_virtual(self.memory, self.mode(sregs), va, data)

    def _descriptor(self, sregs: SRegs, selector: int) -> tuple[int, int]:
        """The 8-byte descriptor ``selector`` names in the GDT (or LDT) the vCPU uses now."""
        index = selector & ~7
        base, limit = (sregs.ldt.base, sregs.ldt.limit) if selector & 4 else (sregs.gdt.base, sregs.gdt.limit)
        if selector & 4 and (not sregs.ldt.present or sregs.ldt.unusable):
            limit = -1
        if not index and not selector & 4 or index + 7 > limit:
            raise SegmentFault(selector, "is outside the descriptor table")
        try:
            lo, hi = struct.unpack("<II", self.read(sregs, base + index, 8))
        except (PageFault, GuestMemoryError):
            raise SegmentFault(selector, "names a descriptor that cannot be read") from None
        return lo, hi

    @staticmethod
    def _cache(selector: int, lo: int, hi: int) -> Segment:
        limit = (lo & 0xFFFF) | (hi & 0xF0000)
        if hi >> 23 & 1:
            limit = limit << 12 | 0xFFF
        return Segment(base=(lo >> 16) | (hi & 0xFF) << 16 | (hi & 0xFF000000), limit=limit, selector=selector,
                       type=hi >> 8 & 0xF | 1, present=1, dpl=hi >> 13 & 3, db=hi >> 22 & 1, s=1,
                       l=hi >> 21 & 1, g=hi >> 23 & 1)

    def segment(self, sregs: SRegs, selector: int, code: bool) -> Segment:
        """The segment cache ``selector`` loads from the GDT (or LDT) the vCPU uses now into CS
        (``code``) or SS: a present ring-3 code or writable data descriptor, else SegmentFault."""
        lo, hi = self._descriptor(sregs, selector)
        kind, dpl, present = hi >> 8 & 0xF, hi >> 13 & 3, hi >> 15 & 1
        usable = kind & 0x8 if code else not kind & 0x8 and kind & 0x2
        if not (present and hi >> 12 & 1 and dpl == 3 and usable):
            raise SegmentFault(selector, f"is not a ring-3 {'code' if code else 'data'} segment")
        return self._cache(selector, lo, hi)

    def data_segment(self, sregs: SRegs, selector: int) -> Segment:
        """What ``mov selector, %ds`` (ES, FS, GS) in ring 3 loads (SDM vol. 3A 5.7): a null
        selector loads an unusable segment; else a present data or readable code segment that
        ring 3 may use (DPL 3 unless conforming code), or SegmentFault."""
        if not selector & ~3:
            return Segment(base=0, limit=0, selector=selector, type=0, present=0, dpl=3, s=1, unusable=1)
        lo, hi = self._descriptor(sregs, selector)
        kind, dpl, present = hi >> 8 & 0xF, hi >> 13 & 3, hi >> 15 & 1
        readable = not kind & 0x8 or kind & 0x2
        conforming = kind & 0xC == 0xC
        if not (present and hi >> 12 & 1 and readable and (dpl == 3 or conforming)):
            raise SegmentFault(selector, "is not a data segment ring 3 may load")
        return self._cache(selector, lo, hi)

    # -- mode switches ------------------------------------------------------------------------
    def toggle_mode(self, engine, sregs: SRegs) -> None:
        """Between guest kernel and guest user mode: the other L4 and the other GS base
        (Xen's toggle_guest_mode: swapgs, then the other page table)."""
        msrs = engine.get_msrs([MSR_GS_BASE, MSR_KERNEL_GS_BASE])
        engine.set_msrs({MSR_GS_BASE: msrs[MSR_KERNEL_GS_BASE], MSR_KERNEL_GS_BASE: msrs[MSR_GS_BASE]})
        self.kernel_mode = not self.kernel_mode
        sregs.gs.base = msrs[MSR_KERNEL_GS_BASE]
        sregs.cr3 = (self.kernel_l4 if self.kernel_mode else self.user_l4) * PAGE

    # -- bounces ------------------------------------------------------------------------------
    def bounce(self, engine, handler: int, *, error_code: int | None = None, mask_events: bool = False,
               regs: Regs | None = None, sregs: SRegs | None = None) -> None:
        """Enter the guest kernel at ``handler`` with Xen's exception frame on its stack."""
        regs = regs or engine.get_regs()
        sregs = sregs or engine.get_sregs()
        if not handler:
            raise DomainCrash("an event to bounce with no handler registered for it")
        interrupted_cs, interrupted_ss = sregs.cs.selector, sregs.ss.selector
        interrupted_rsp, interrupted_flags = regs.rsp, regs.rflags
        if self.kernel_mode:
            rsp = regs.rsp
            interrupted_cs &= ~3        # tells the guest it interrupted its kernel
        else:
            self.toggle_mode(engine, sregs)
            rsp = self.kernel_sp
        rsp &= ~0xF
        if HYPERVISOR_VIRT_START <= rsp < HYPERVISOR_VIRT_END + 64:
            raise DomainCrash(f"guest kernel stack {rsp:#x} inside the hypervisor's area")
        saved_mask = self.upcall_mask
        if mask_events:
            self.upcall_mask = 1
        flags = interrupted_flags & ~(IF | IOPL)
        flags |= (0 if saved_mask else IF) | (self.iopl << 12)
        frame = [regs.rcx, regs.r11]
        if error_code is not None:
            frame.append(error_code & 0xFFFFFFFF)
        frame += [regs.rip, interrupted_cs | saved_mask << 32, flags, interrupted_rsp, interrupted_ss]
        rsp -= 8 * len(frame)
        try:
            self.write(sregs, rsp, struct.pack(f"<{len(frame)}Q", *frame))
        except (PageFault, GuestMemoryError) as exc:
            raise DomainCrash(f"cannot write the exception frame at {rsp:#x}: {exc}") from None
        regs.rsp, regs.rip = rsp, handler
        regs.rflags = (regs.rflags & ~(AC | VM | RF | NT | TF)) | RFLAGS_FIXED
        sregs.cs, sregs.ss = ring3_segment(FLAT_KERNEL_CS, True), ring3_segment(FLAT_KERNEL_SS, False)
        engine.set_sregs(sregs)
        engine.set_regs(regs)

    def iret(self, engine) -> None:
        """HYPERVISOR_iret: the iret_context at RSP says where to return (and to which mode)."""
        regs, sregs = engine.get_regs(), engine.get_sregs()
        try:
            rax, r11, rcx, flags, rip, cs, rflags, rsp, ss = IRET_CONTEXT.unpack(
                self.read(sregs, regs.rsp, IRET_CONTEXT.size))
        except (PageFault, GuestMemoryError):
            raise DomainCrash("fault while reading the IRET context from the guest stack") from None
        # Selectors are 16-bit: the bounce frame's CS slot carries the saved event mask above them.
        cs, ss = cs & 0xFFFF, ss & 0xFFFF
        if cs & 3 == 3 and self.kernel_mode:
            if not self.user_l4:
                raise DomainCrash("guest switching to user mode with no user page tables")
            self.toggle_mode(engine, sregs)
        regs.rip, regs.rsp = rip, rsp
        regs.rflags = (rflags & RFLAGS_ALL & ~(IOPL | VM)) | IF | RFLAGS_FIXED
        if not flags & VGCF_IN_SYSCALL:
            regs.r11, regs.rcx = r11, rcx
        regs.rax = rax
        self.upcall_mask = 0 if rflags & IF else 1
        try:
            sregs.cs, sregs.ss = self.segment(sregs, cs | 3, code=True), self.segment(sregs, ss | 3, code=False)
        except SegmentFault as fault:
            # Xen's own IRETQ to the guest faults with #GP(selector), and its exception entry
            # makes that the guest's #GP at the place it was returning to (x86_64/entry.S,
            # exception_with_ints_disabled): the caller bounces it from these registers.
            sregs.cs, sregs.ss = replace(sregs.cs, selector=cs | 3), replace(sregs.ss, selector=ss | 3)
            fault.regs, fault.sregs = regs, sregs
            raise
        engine.set_sregs(sregs)
        engine.set_regs(regs)
