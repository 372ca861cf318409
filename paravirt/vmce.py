"""Xen's virtual machine-check architecture for a guest (xen/arch/x86/cpu/mcheck/vmce.c): two
banks that never report an error, so a kernel that polls them at start-up (Linux's
machine_check_poll) reads a quiet machine instead of faulting on MSRs a PV guest cannot reach.
"""
from __future__ import annotations

from dataclasses import dataclass, field

MCG_CAP, MCG_STATUS, MCG_CTL = 0x179, 0x17A, 0x17B
MC0_CTL = 0x400                    # MCi_CTL, _STATUS, _ADDR, _MISC at 0x400 + 4i + 0..3
BANKS = 2                          # Xen's GUEST_MC_BANK_NUM
MCG_CMCI_P, MCG_TES_P, MCG_SER_P = 1 << 10, 1 << 11, 1 << 24
INTEL_CAP = MCG_SER_P | MCG_TES_P | MCG_CMCI_P | BANKS
AMD_CAP = BANKS
GENUINE_INTEL_EBX = 0x756E6547     # "Genu": CPUID leaf 0 EBX


@dataclass
class Vmce:
    """One vCPU's machine-check MSRs."""

    cap: int = AMD_CAP
    status: int = 0
    banks: list[list[int]] = field(default_factory=lambda: [[0, 0, 0] for _ in range(BANKS)])

    @classmethod
    def for_vendor(cls, cpuid_leaf0_ebx: int) -> "Vmce":
        return cls(cap=INTEL_CAP if cpuid_leaf0_ebx == GENUINE_INTEL_EBX else AMD_CAP)

    def owns(self, index: int) -> bool:
        return index in (MCG_CAP, MCG_STATUS, MCG_CTL) or MC0_CTL <= index < MC0_CTL + 4 * BANKS

    def read(self, index: int) -> int:
        if index == MCG_CAP:
            return self.cap
        if index == MCG_STATUS:
            return self.status
        if index == MCG_CTL:
            return 0                   # no MCG_CTL_P in the capabilities
        bank, register = divmod(index - MC0_CTL, 4)
        return (1 << 64) - 1 if register == 0 else self.banks[bank][register - 1]

    def write(self, index: int, value: int) -> bool:
        """False: Xen refuses the write with #GP (a bank's status, address or misc other than 0)."""
        if index == MCG_STATUS:
            self.status = value
        elif MC0_CTL <= index < MC0_CTL + 4 * BANKS and (index - MC0_CTL) % 4:
            if value:
                return False
            bank, register = divmod(index - MC0_CTL, 4)
            self.banks[bank][register - 1] = 0
        return True                    # MCG_CAP, MCG_CTL and MCi_CTL writes change nothing
