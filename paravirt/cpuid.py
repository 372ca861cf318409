"""What CPUID tells a PV guest, as Xen tells it: Xen's leaves (public/arch-x86/cpuid.h;
xen/arch/x86/cpuid.c, cpuid_hypervisor_leaves) and only the features Xen offers PV guests.

A guest looks for "XenVMMXenVMM" at 0x40000000 and the following 0x100-aligned bases, and takes the
first one with at least two leaves after the signature (Linux's hypervisor_cpuid_base). A PV
domain on Xen sees no other hypervisor's leaves, so Xen's sit at the first base and KVM's are not
offered: a Linux PV kernel that found "KVMKVMKVM" would take kvm-clock's MSRs for its clock.
"""
from __future__ import annotations

from .hypercalls import XEN_VERSION

BASE = 0x40000000
SIGNATURE = (0x566E6558, 0x65584D4D, 0x4D4D566E)   # "XenV" "MMXe" "nVMM" in EBX, ECX, EDX
# Base+2 EBX: where Xen's own MSRs start (the hypercall-page MSR of HVM guests).
XEN_MSR_BASE = 0x40000000
FEAT1_MMU_PT_UPDATE_PRESERVE_AD = 1 << 0
HYPERVISOR_RANGE = range(0x40000000, 0x40010000)   # where guests look for hypervisors' leaves
LAST = BASE + 5          # Xen 4.17 answers up to base+5 (base+4 HVM, base+5 PV parameters)
TSC_SUBLEAVES = 3


def xen_leaves(tsc_hz: int, mul: int, shift: int) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(leaf, subleaf) -> (EAX, EBX, ECX, EDX) for Xen's range, as Xen answers a PV domain whose
    TSC is the host's (tsc_mode native: nothing emulated, no offset)."""
    khz = tsc_hz // 1000
    major, minor = XEN_VERSION
    leaves = {
        (BASE, 0): (LAST, *SIGNATURE),
        (BASE + 1, 0): (major << 16 | minor, 0, 0, 0),
        (BASE + 2, 0): (1, XEN_MSR_BASE, FEAT1_MMU_PT_UPDATE_PRESERVE_AD, 0),
        # Time: sub 0 mode and guest kHz, sub 1 offset and the vcpu_time_info scale, sub 2 host kHz.
        (BASE + 3, 0): (0, 0, khz, 0),
        (BASE + 3, 1): (0, 0, mul, shift & 0xFFFFFFFF),
        (BASE + 3, 2): (khz, 0, 0, 0),
        (BASE + 4, 0): (0, 0, 0, 0),
        (BASE + 5, 0): (0, 0, 0, 0),
    }
    return leaves


# The feature bits Xen offers a PV guest: those public/arch-x86/cpufeatureset.h marks 'A'
# (every guest, on by default); 'S' and 'H' ones are HVM-only. Among those hidden: PSE and
# PAGE1GB (a PV guest maps no superpages: Linux would write 2 MiB PMD entries that Xen's
# validation refuses), PGE, MTRR, VMX/SVM, MONITOR, X2APIC, TSC_DEADLINE, PCID, SMEP/SMAP, UMIP.
# hvm hides two more that Xen offers: XSAVE (with OSXSAVE, and AVX that needs it) and FSGSBASE,
# whose CR4 enables hvm does not carry to the real CR4 (emulate.py).
PV_FEATURES = {
    (0x1, 0, 2): 0xF6D83203,            # ECX
    (0x1, 0, 3): 0x1FC9CBF5,            # EDX
    (0x80000001, 0, 2): 0x442109E3,
    (0x80000001, 0, 3): 0xEA500800,
    (0xD, 1, 0): 0x00000007,
    (0x7, 0, 1): 0xF1AF0B29,
    (0x7, 0, 2): 0x02405F43,
    (0x7, 0, 3): 0xAC804410,
    (0x7, 1, 0): 0x00801C37,
    (0x80000007, 0, 3): 0x00000000,
    (0x80000008, 0, 1): 0x64001005,
}

HVM_HIDES = [((0x1, 0, 2), ~(1 << 26 | 1 << 27 | 1 << 28)), ((0x7, 0, 1), ~(1 << 0 | 1 << 5))]


def pv_policy(table: dict, tsc_hz: int, mul: int, shift: int) -> None:
    """Edit a vCPU's CPUID table (leaf, subleaf) -> registers in place into what a PV guest sees."""
    for key in [key for key in table if key[0] in HYPERVISOR_RANGE]:
        del table[key]
    table.update(xen_leaves(tsc_hz, mul, shift))
    for (leaf, sub, reg), mask in list(PV_FEATURES.items()) + HVM_HIDES:
        if (leaf, sub) in table:
            regs = list(table[(leaf, sub)])
            regs[reg] &= mask
            table[(leaf, sub)] = tuple(regs)
