"""What CPUID answers under the unicorn engine: unicorn's own model, edited by hvm's policy.

Unicorn's CPUID (QEMU's Broadwell model with what TCG cannot execute already filtered out, x2APIC
and TSC-deadline among it) is truthful about the instruction set; hvm adds what it knows of the
platform (the hypervisor bit, APIC ID and CPU count). The table is read once from a scratch CPU of
the same model, edited, and served from a CPUID hook, so the guest sees one consistent answer.
"""
from __future__ import annotations

from functools import cache

APIC = 1 << 9  # leaf 1 EDX
HYPERVISOR = 1 << 31  # leaf 1 ECX
OSXSAVE = 1 << 27  # leaf 1 ECX: mirrors CR4.OSXSAVE (SDM vol. 2A, CPUID)
AVX = 1 << 28  # leaf 1 ECX
PKU = 1 << 3  # leaf 7 ECX
OSPKE = 1 << 4  # leaf 7 ECX: mirrors CR4.PKE
XCR0_YMM = 1 << 2  # leaf 0xD subleaf 0 EAX: the AVX state component
LEGACY_XSAVE_AREA = 512 + 64  # the x87/SSE region and the XSAVE header
ARCH_CAPABILITIES_CPUID = 1 << 29  # leaf 7 EDX: IA32_ARCH_CAPABILITIES (MSR 0x10A) exists
# What IA32_ARCH_CAPABILITIES reads under this engine (uc_lib edit 17; bits as the SDM and
# Linux's msr-index.h name them): not affected by rogue data cache loads (Meltdown: bit 0), L1D
# flush on VM entry not needed (3), speculative store bypass (4), MDS (5), the page-size-change
# machine check (6), TSX async abort (8), the MMIO stale-data leaks (13-15), branch history
# injection (20), post-barrier RSB prediction (24), gather data sampling (26), register file data
# sampling (27) and indirect target selection (62, which Linux says VMMs synthesize). The CPU is
# emulated: none of those leaks reaches the guest, whose mitigations against them (page table
# isolation above all: a CR3 switch and TLB flush at every kernel entry and exit) only cost time.
ARCH_CAPABILITIES = (1 << 0 | 1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 8 | 1 << 13 | 1 << 14 | 1 << 15
                     | 1 << 20 | 1 << 24 | 1 << 26 | 1 << 27 | 1 << 62)
# Leaves with subleaves (ECX matters); the others ignore ECX.
_SUBLEAVES = {4: 8, 7: 2, 0xB: 2, 0xD: 64}


@cache
def model_table(model_name: str) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """(leaf, subleaf) -> (EAX, EBX, ECX, EDX) as unicorn's ``model_name`` answers them."""
    import unicorn
    from unicorn import x86_const as x86

    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.ctl_set_cpu_model(getattr(x86, f"UC_CPU_X86_{model_name}"))
    uc.mem_map(0, 0x1000)
    uc.mem_write(0, b"\x0f\xa2")
    regs = (x86.UC_X86_REG_EAX, x86.UC_X86_REG_EBX, x86.UC_X86_REG_ECX, x86.UC_X86_REG_EDX)

    def query(leaf: int, sub: int) -> tuple[int, int, int, int]:
        uc.reg_write(x86.UC_X86_REG_RAX, leaf)
        uc.reg_write(x86.UC_X86_REG_RCX, sub)
        uc.emu_start(0, 2)
        return tuple(uc.reg_read(r) for r in regs)  # type: ignore[return-value]

    table = {}
    for base in (0, 0x80000000):
        top = query(base, 0)[0]
        for leaf in range(base, top + 1):
            for sub in range(_SUBLEAVES.get(leaf, 1)):
                table[(leaf, sub)] = query(leaf, sub)
    return table


def policy_table(model_name: str, vcpu_id: int, ncpus: int,
                 arch_capabilities: bool = False) -> dict[tuple[int, int], tuple[int, int, int, int]]:
    """The table one vCPU's CPUID serves; ``arch_capabilities``: the CPU answers RDMSR of
    IA32_ARCH_CAPABILITIES with ARCH_CAPABILITIES (the rebuilt library), so CPUID says it exists."""
    table = dict(model_table(model_name))
    if arch_capabilities and (7, 0) in table:
        eax, ebx, ecx, edx = table[(7, 0)]
        table[(7, 0)] = (eax, ebx, ecx, edx | ARCH_CAPABILITIES_CPUID)
    eax, ebx, ecx, edx = table[(1, 0)]
    ebx = (ebx & 0x0000FFFF) | ((vcpu_id & 0xFF) << 24) | ((max(ncpus, 1) & 0xFF) << 16)
    table[(1, 0)] = (eax, ebx, ecx | HYPERVISOR, edx)
    if not ecx & AVX and (0xD, 0) in table:
        # The model filters AVX out (QEMU 5's TCG cannot execute it) but still lists its state
        # component as XCR0-settable: a guest that believes it (kvm-unit-tests' xsave) runs AVX
        # code and takes #UD. Without AVX the only components are x87 and SSE.
        x_eax, x_ebx, _x_ecx, x_edx = table[(0xD, 0)]
        table[(0xD, 0)] = (x_eax & ~XCR0_YMM, min(x_ebx, LEGACY_XSAVE_AREA), LEGACY_XSAVE_AREA, x_edx)
        table[(0xD, 2)] = (0, 0, 0, 0)
    return table


def lookup(table: dict, leaf: int, sub: int) -> tuple[int, int, int, int]:
    """CPUID semantics for a table: subleaf ignored where it does not matter, and a leaf past
    the maximum answers as the highest basic leaf does (Intel SDM vol. 2A, CPUID)."""
    if (leaf, sub) in table:      # a leaf the table enumerates by subleaf (hypervisor ones too)
        return table[(leaf, sub)]
    key = (leaf, sub if leaf in _SUBLEAVES else 0)
    if key in table:
        return table[key]
    if leaf in _SUBLEAVES and (leaf, 0) in table:
        return (0, 0, 0, 0)  # past the subleaves it enumerates
    if 0x40000000 <= leaf < 0x80000000:
        return (0, 0, 0, 0)  # no hypervisor leaves under this engine
    top = table[(0, 0)][0]
    return table.get((top, 0), (0, 0, 0, 0))
