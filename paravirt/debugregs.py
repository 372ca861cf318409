"""A PV vCPU's debug registers, as Xen keeps them (xen/arch/x86/pv/misc-hypercalls.c
set_debugreg, xen/arch/x86/debug.c): HYPERVISOR_set_debugreg validates a value and loads it into
the CPU, so breakpoints the guest kernel sets fire as #DB in its own code and reach its trap
table; HYPERVISOR_get_debugreg reads them back, DR6 with what the last #DB reported merged in.

The CPU's registers are the engine's (``set_debugregs``/``get_debugregs``). I/O breakpoints
(DR7 R/W = 10b, allowed with CR4.DE) are accepted and read back as Xen does, which emulates
them in its port-I/O emulation; hvm does not fire them.
"""
from __future__ import annotations

from . import abi as x

CR4_DE = 1 << 3                                      # debugging extensions (SDM vol. 3A 2.5)
DR6_DEFAULT, DR6_ZEROS = 0xFFFF0FF0, 0x00001000      # x86-defns.h X86_DR6_DEFAULT / _ZEROS
DR6_BREAKPOINTS = 0xF                                # B0-B3
DR7_DEFAULT = 0x00000400
DR7_ZEROS = 0x0000D000 | 0x00000800                  # X86_DR7_ZEROS, and RTM: hvm offers no TSX
DR7_GD, DR7_ACTIVE = 0x2000, 0xFF                    # general detect; the L/G enable bits
DR_IO = 2                                            # R/W field: I/O read or write


def addr_ok(address: int) -> bool:
    """Xen's __addr_ok (breakpoint_addr_ok): below the canonical hole, or above Xen's area."""
    return address < 1 << 47 or address >= x.HYPERVISOR_VIRT_END


def adjust_dr6(value: int) -> int:
    return (value | DR6_DEFAULT) & ~DR6_ZEROS


def merge_dr6(dr6: int, hardware: int) -> int:
    """x86_merge_dr6: the breakpoint bits the CPU reported replace the old ones, the other
    status bits accumulate (both in positive polarity, relative to DR6_DEFAULT)."""
    old, new = dr6 ^ DR6_DEFAULT, (hardware ^ DR6_DEFAULT) & 0xFFFFFFFF
    merged = (old & ~DR6_BREAKPOINTS) | new
    return adjust_dr6(merged ^ DR6_DEFAULT)


class DebugRegisters:
    """DR0-DR3, DR6, DR7 of one vCPU; ``io_enable``: I/O breakpoints kept out of the CPU."""

    def __init__(self) -> None:
        self.dr = [0, 0, 0, 0]
        self.dr6 = DR6_DEFAULT
        self.dr7 = DR7_DEFAULT
        self.io_enable = 0

    def set(self, reg: int, value: int, cr4: int, engine) -> int:
        """HYPERVISOR_set_debugreg: 0, or Xen's errno for a value it refuses."""
        if reg in (4, 5):
            if cr4 & CR4_DE:
                return -x.ENODEV
            reg += 2                                  # DR4/DR5 alias DR6/DR7 without CR4.DE
        if 0 <= reg <= 3:
            if not addr_ok(value):
                return -x.EPERM
            self.dr[reg] = value
        elif reg == 6:
            if value >> 32:
                return -x.EINVAL
            self.dr6 = adjust_dr6(value)
        elif reg == 7:
            if value >> 32:
                return -x.EINVAL
            value = (value & ~DR7_ZEROS) | DR7_DEFAULT
            if value & DR7_GD:
                return -x.EPERM
            io_enable = 0
            if value & DR7_ACTIVE:
                for n in range(4):
                    if value >> (16 + 4 * n) & 3 == DR_IO:
                        if not cr4 & CR4_DE:
                            return -x.EPERM
                        io_enable |= value & (3 << 2 * n)
            self.io_enable = io_enable
            self.dr7 = value & ~io_enable
        else:
            return -x.ENODEV
        self.load(engine)
        return 0

    def get(self, reg: int, cr4: int) -> int:
        """HYPERVISOR_get_debugreg (x86emul_read_dr for a PV vCPU)."""
        if reg in (4, 5):
            if cr4 & CR4_DE:
                return -x.ENODEV
            reg += 2
        if 0 <= reg <= 3:
            return self.dr[reg]
        if reg == 6:
            return self.dr6
        if reg == 7:
            return self.dr7 | self.io_enable
        return -x.ENODEV

    def load(self, engine) -> None:
        engine.set_debugregs(self.dr, self.dr6, self.dr7)

    def took_debug_trap(self, engine) -> None:
        """A #DB from the guest: what the CPU's DR6 says goes into the guest's view of DR6, and
        the CPU's goes back to its default (Xen's do_debug for a PV guest)."""
        self.dr6 = merge_dr6(self.dr6, engine.get_debugregs()[1])
        engine.set_debugregs(self.dr, DR6_DEFAULT, self.dr7)
