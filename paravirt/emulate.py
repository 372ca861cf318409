"""Privileged instructions a PV guest kernel executes anyway, emulated as Xen does when they fault
in ring 3 with #GP(0) (xen/arch/x86/pv/emul-priv-op.c): RDMSR/WRMSR of the MSRs a PV kernel may
touch, MOV to and from control registers, CLTS, WBINVD/INVD, HLT, CLI/STI and port I/O under the
guest's virtual IOPL. Anything else, or a value Xen refuses, stays a #GP for the guest's handler.

``emulate(domain, vcpu, engine, regs, code)`` returns True when it carried the instruction out
(RIP moved past it), False when the fault must be delivered.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .debugregs import CR4_DE
from .pvcpu import MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, canonical
from .vmce import Vmce

if TYPE_CHECKING:
    from hvm.engine.state import Regs

    from .domain import PvDomain
    from .pvcpu import PvVcpu

MSR_TSC, MSR_APIC_BASE, MSR_MISC_ENABLE, MSR_PAT, MSR_PERF_CAPABILITIES = 0x10, 0x1B, 0x1A0, 0x277, 0x345
MSR_ARCH_CAPABILITIES = 0x10A
MSR_EFER = 0xC0000080
APIC_BASE_BSP, APIC_BASE_ENABLE, APIC_DEFAULT_BASE = 1 << 8, 1 << 11, 0xFEE00000
# Xen's own PAT (asm/processor.h XEN_MSR_PAT), which PV guests see and may not change.
XEN_MSR_PAT = 0x050100070406
# MISC_ENABLE as Xen shows it (guest_misc_enable): fast strings, no BTS, no PEBS.
MISC_ENABLE = 1 << 0 | 1 << 11 | 1 << 12
EFER_VISIBLE = 1 << 0 | 1 << 8 | 1 << 10 | 1 << 11     # SCE, LME, LMA, NX
CR0_TS = 1 << 3
# CR4 as a PV guest sees it (xen/arch/x86/pv/domain.c, PV_CR4_GUEST_MASK and _VISIBLE_MASK):
# TSD and DE are the guest's to choose (hvm keeps them virtual: its user-mode RDTSC does not
# fault; DE only decides what set_debugreg accepts, paravirt.debugregs); FSGSBASE and OSXSAVE
# are too on Xen, but hvm's PV CPUID offers neither feature. PAE, MCE, OSFXSR and OSXMMEXCPT
# read as set.
CR4_TSD = 1 << 2
CR4_GUEST_CONTROLLED = CR4_TSD | CR4_DE
CR4_XEN_VISIBLE = 1 << 5 | 1 << 6 | 1 << 9 | 1 << 10
GPRS = ("rax", "rcx", "rdx", "rbx", "rsp", "rbp", "rsi", "rdi",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


def emulate(domain: "PvDomain", vcpu: "PvVcpu", engine, regs: "Regs", code: bytes) -> bool:
    rex = 0
    length = 0
    opsize16 = False
    while length < len(code) and (0x40 <= code[length] <= 0x4F or code[length] == 0x66):
        if code[length] == 0x66:
            opsize16 = True
        else:
            rex = code[length]
        length += 1
    op = code[length:length + 3]
    if not op:
        return False
    done = None
    if op[:2] == b"\x0f\x32":
        done = _rdmsr(vcpu, engine, regs) and length + 2
    elif op[:2] == b"\x0f\x30":
        done = _wrmsr(vcpu, engine, regs) and length + 2
    elif op[:2] in (b"\x0f\x20", b"\x0f\x22") and len(op) == 3:
        cr = (op[2] >> 3 & 7) | (rex & 4) << 1
        gpr = GPRS[(op[2] & 7) | (rex & 1) << 3]
        if op[1] == 0x20:
            done = _read_cr(vcpu, engine, regs, cr, gpr) and length + 3
        else:
            done = _write_cr(domain, vcpu, engine, regs, cr, getattr(regs, gpr)) and length + 3
    elif op[:2] == b"\x0f\x06":                      # CLTS
        sregs = engine.get_sregs()
        sregs.cr0 &= ~CR0_TS
        engine.set_sregs(sregs)
        done = length + 2
    elif op[:2] in (b"\x0f\x09", b"\x0f\x08"):     # WBINVD, INVD: nothing cached to lose here
        done = length + 2
    elif op[0] == 0xF4:                              # HLT: as SCHEDOP_block
        domain.block(vcpu, engine)
        done = length + 1
    elif op[0] in (0xFA, 0xFB) and vcpu.iopl >= 1:
        # CLI/STI with virtual IOPL do nothing: Xen leaves the event mask alone (a POPF that
        # should undo it cannot be trapped), so a kernel's stray CLI cannot mask it for good.
        done = length + 1
    elif op[0] in (0xE4, 0xE5, 0xEC, 0xED, 0xE6, 0xE7, 0xEE, 0xEF) and vcpu.iopl >= 1:
        size = 1 if op[0] in (0xE4, 0xEC, 0xE6, 0xEE) else (2 if opsize16 else 4)
        immediate = op[0] in (0xE4, 0xE5, 0xE6, 0xE7)
        if immediate and len(op) < 2:
            return False
        port = op[1] if immediate else regs.rdx & 0xFFFF
        if op[0] in (0xE4, 0xE5, 0xEC, 0xED):
            mask = (1 << (8 * size)) - 1
            value = domain.io.read(port, size)
            # A 32-bit IN zero-extends into RAX; 8/16-bit ones keep the rest of it.
            regs.rax = value if size == 4 else (regs.rax & ~mask) | value
        else:
            domain.io.write(port, size, regs.rax)
        done = length + (2 if immediate else 1)
    if not done:
        return False
    regs.rip += done
    engine.set_regs(regs)
    domain.bounced["emulated privileged instruction"] += 1
    return True


def _rdmsr(vcpu: "PvVcpu", engine, regs: "Regs") -> bool:
    index = regs.rcx & 0xFFFFFFFF
    if index in (MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE):
        # In guest kernel mode the active GS base is the kernel's; the inactive one the user's.
        value = engine.get_msrs([index])[index]
    elif index == MSR_APIC_BASE:
        value = APIC_DEFAULT_BASE | APIC_BASE_ENABLE | (APIC_BASE_BSP if vcpu.index == 0 else 0)
    elif index == MSR_EFER:
        value = engine.get_sregs().efer & EFER_VISIBLE
    elif index == MSR_PAT:
        value = XEN_MSR_PAT
    elif index == MSR_MISC_ENABLE:
        value = MISC_ENABLE
    elif index == MSR_PERF_CAPABILITIES:
        value = 0
    elif index == MSR_ARCH_CAPABILITIES and getattr(engine, "arch_capabilities", None) is not None:
        # Xen emulates it for PV guests from its CPU policy; here the engine's CPU is emulated
        # too and affected by none of the leaks it lists (hvm.engine.uc_cpuid.ARCH_CAPABILITIES).
        value = engine.arch_capabilities
    elif _vmce(vcpu, engine).owns(index):
        value = _vmce(vcpu, engine).read(index)
    else:
        return False
    regs.rax, regs.rdx = value & 0xFFFFFFFF, value >> 32
    return True


def _vmce(vcpu: "PvVcpu", engine) -> Vmce:
    if vcpu.vmce is None:
        vcpu.vmce = Vmce.for_vendor(engine.cpuid(0, 0)[1])
    return vcpu.vmce


def _wrmsr(vcpu: "PvVcpu", engine, regs: "Regs") -> bool:
    index = regs.rcx & 0xFFFFFFFF
    value = (regs.rdx & 0xFFFFFFFF) << 32 | (regs.rax & 0xFFFFFFFF)
    if index in (MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE):
        if not canonical(value):
            return False
        engine.set_msrs({index: value})
        return True
    if index == MSR_EFER:
        return value & EFER_VISIBLE == engine.get_sregs().efer & EFER_VISIBLE
    if index == MSR_PAT:
        return value == XEN_MSR_PAT
    if index == MSR_MISC_ENABLE:
        return value == MISC_ENABLE
    if _vmce(vcpu, engine).owns(index):
        return _vmce(vcpu, engine).write(index, value)
    return False


def _read_cr(vcpu: "PvVcpu", engine, regs: "Regs", cr: int, gpr: str) -> bool:
    sregs = engine.get_sregs()
    if cr == 0:
        value = sregs.cr0
    elif cr == 2:
        value = vcpu.cr2()
    elif cr == 3:
        value = vcpu.kernel_l4 << 12
    elif cr == 4:
        value = vcpu.cr4 | CR4_XEN_VISIBLE
    else:
        return False
    setattr(regs, gpr, value)
    return True


def _write_cr(domain: "PvDomain", vcpu: "PvVcpu", engine, regs: "Regs", cr: int, value: int) -> bool:
    sregs = engine.get_sregs()
    if cr == 0:
        if (value ^ sregs.cr0) & ~CR0_TS:
            return False                              # only TS may change (Xen: unmodifiable flags)
        sregs.cr0 = value
        engine.set_sregs(sregs)
        return True
    if cr == 3:
        mfn = value >> 12
        rc = domain.mm.new_baseptr(mfn, vcpu=vcpu.index)
        if rc:
            return False
        vcpu.kernel_l4 = mfn
        sregs.cr3 = mfn << 12
        engine.set_sregs(sregs)
        return True
    if cr == 4:
        # Xen's pv_fixup_guest_cr4: never a fault; the guest keeps its choice of the bits it
        # controls (those its CPUID allows) and the rest reads as Xen set it.
        vcpu.cr4 = value & CR4_GUEST_CONTROLLED
        return True
    return False
