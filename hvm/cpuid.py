"""CPUID policy: what each vCPU's CPUID instruction answers. Host quirks live here and nowhere else."""
from __future__ import annotations

from dataclasses import replace
from typing import Callable

from kvmffi import CpuidEntry

from .host import HostInfo

HYPERVISOR_BIT = 1 << 31  # leaf 1 ECX: "running under a hypervisor"
KVM_CPUID_FLAG_SIGNIFCANT_INDEX = 1  # linux/kvm.h (sic): the entry depends on the subleaf
KVM_SIGNATURE = (0x4B4D564B, 0x564B4D56, 0x0000004D)  # "KVMKVMKVM\0\0\0" in EBX, ECX, EDX

# Features this host's KVM cannot offer a guest when it runs guest CPL0 code in its instruction
# emulator, as (leaf, subleaf, register, bit, name):
# - executed wrongly without an exit (LZCNT/TZCNT run as BSR/BSF) or refused with #UD at CPL0
#   (MOVBE, RDPID), so the fallback never sees them;
KVM_MISEXECUTES = [
    (7, 0, "ebx", 3, "bmi1"), (0x80000001, 0, "ecx", 5, "abm/lzcnt"),
    (1, 0, "ecx", 22, "movbe"), (7, 0, "ecx", 22, "rdpid"),
]
# - refused with an exit, but beyond the unicorn fallback too (QEMU 5's TCG has no AVX; XSAVE
#   state is not carried across), or absent from its Broadwell model (SSE4a);
FALLBACK_CANNOT = [
    (1, 0, "ecx", 12, "fma"), (1, 0, "ecx", 26, "xsave"), (1, 0, "ecx", 27, "osxsave"),
    (1, 0, "ecx", 28, "avx"), (1, 0, "ecx", 29, "f16c"), (7, 0, "ebx", 5, "avx2"),
    (0x80000001, 0, "ecx", 6, "sse4a"),
]
# - refused with an exit and executed by the fallback (hvm.engine.fallback), so offered only
#   when it is on. CMPXCHG16B executed there is atomic against one vCPU only.
FALLBACK_EXECUTES = [
    (1, 0, "ecx", 0, "sse3"), (1, 0, "ecx", 1, "pclmulqdq"), (1, 0, "ecx", 9, "ssse3"),
    (1, 0, "ecx", 19, "sse4_1"), (1, 0, "ecx", 20, "sse4_2"), (1, 0, "ecx", 23, "popcnt"),
    (1, 0, "ecx", 25, "aes"), (7, 0, "ebx", 8, "bmi2"), (7, 0, "ebx", 19, "adx"),
    (7, 0, "ebx", 20, "smap"), (0x80000001, 0, "edx", 27, "rdtscp"),
]
CX16 = (1, 0, "ecx", 13, "cx16")
# RDTSCP is offered even where KVM_GET_SUPPORTED_CPUID omits it (as here): the fallback executes
# it at CPL0, CPL3 runs it natively, and hvm serves TSC_AUX (FallbackExecutor.tsc_aux).
RDTSCP = (0x80000001, 0, "edx", 27, "rdtscp")


def _hidden(host: HostInfo, ncpus: int, fallback: bool) -> list[tuple[int, int, str, int, str]]:
    if not host.emulation_only:
        return []
    hidden = KVM_MISEXECUTES + FALLBACK_CANNOT
    if not fallback:
        return hidden + FALLBACK_EXECUTES + [CX16]
    return hidden + ([CX16] if ncpus > 1 else [])


def cpuid_policy(supported: list[CpuidEntry], host: HostInfo, vcpu_id: int, ncpus: int,
                 fallback: bool = True, edit: Callable[[dict], None] | None = None) -> list[CpuidEntry]:
    """The CPUID table for one vCPU, derived from KVM_GET_SUPPORTED_CPUID; ``fallback``: the
    unicorn fallback executes what KVM's emulator refuses; ``edit``: the board's changes, made
    in place on a (leaf, subleaf) -> (EAX, EBX, ECX, EDX) table."""
    hidden: dict[tuple[int, int, str], int] = {}
    for leaf, sub, reg, bit, _name in _hidden(host, ncpus, fallback):
        hidden[(leaf, sub, reg)] = hidden.get((leaf, sub, reg), 0) | (1 << bit)
    added: dict[tuple[int, int, str], int] = {}
    if host.emulation_only and fallback:
        leaf, sub, reg, bit, _name = RDTSCP
        added[(leaf, sub, reg)] = 1 << bit

    out = []
    have_signature = False
    for e in supported:
        for (leaf, sub, reg), mask in hidden.items():
            if e.function == leaf and e.index == sub:
                e = replace(e, **{reg: getattr(e, reg) & ~mask})
        for (leaf, sub, reg), mask in added.items():
            if e.function == leaf and e.index == sub:
                e = replace(e, **{reg: getattr(e, reg) | mask})
        if e.function == 1:
            ebx = (e.ebx & 0x0000FFFF) | ((vcpu_id & 0xFF) << 24) | ((max(ncpus, 1) & 0xFF) << 16)
            e = replace(e, ebx=ebx, ecx=e.ecx | HYPERVISOR_BIT, edx=e.edx | (1 << 28 if ncpus > 1 else 0))
        elif e.function in (0xB, 0x1F):
            e = replace(e, edx=vcpu_id)
        elif e.function == 0x40000000:
            have_signature = True
            e = replace(e, ebx=KVM_SIGNATURE[0], ecx=KVM_SIGNATURE[1], edx=KVM_SIGNATURE[2],
                        eax=max(e.eax, 0x40000001))
        out.append(e)
    if not have_signature:
        out.append(CpuidEntry(0x40000000, 0, 0, 0x40000001, *KVM_SIGNATURE))
    return out if edit is None else _edited(out, edit)


def _edited(entries: list[CpuidEntry], edit: Callable[[dict], None]) -> list[CpuidEntry]:
    table = {(e.function, e.index): (e.eax, e.ebx, e.ecx, e.edx) for e in entries}
    flags = {(e.function, e.index): e.flags for e in entries}
    edit(table)
    by_subleaf = {leaf for leaf, sub in table if sub}
    return [CpuidEntry(leaf, sub, flags.get((leaf, sub), KVM_CPUID_FLAG_SIGNIFCANT_INDEX if leaf in by_subleaf else 0),
                       *regs) for (leaf, sub), regs in sorted(table.items())]



def hidden_features(host: HostInfo, ncpus: int = 1, fallback: bool = True) -> list[str]:
    """Names of the features this host's policy hides from guests."""
    return [name for *_rest, name in _hidden(host, ncpus, fallback)]


# Linux's names (/proc/cpuinfo flags, accepted by clearcpuid= since 5.18) for hvm's feature names.
_LINUX_NAMES = {"sse3": "pni", "abm/lzcnt": "abm"}
# Shown to guest kernels by this host's KVM whatever the CPUID table says: AVX-512 is beyond hvm
# too, and CMPXCHG16B the fallback executes at ~430 us a time (SLUB used it 53,000 times in a boot).
_HOST_ONLY = ["avx512f", "cx16"]


def linux_clearcpuid(host: HostInfo) -> list[str]:
    """Features a Linux kernel must be told not to use on this host (empty where KVM_SET_CPUID2 is
    obeyed). An emulating KVM answers the guest kernel's CPUID with the host's feature bits
    (HOST-KVM.md), so hiding them in the table is not enough: without this the stock kernel runs
    its SSSE3/AVX-512 crypto through the fallback one instruction at a time (~250 us each) or
    takes #UD."""
    if not host.emulation_only:
        return []
    hidden = [name for *_rest, name in KVM_MISEXECUTES + FALLBACK_CANNOT + FALLBACK_EXECUTES]
    return [_LINUX_NAMES.get(name, name) for name in hidden] + _HOST_ONLY
