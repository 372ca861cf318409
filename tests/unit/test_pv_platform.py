"""Pure checks of what paravirt/ answers a PV guest, against Xen's own definitions: the CPUID
policy (public/arch-x86/cpuid.h, cpufeatureset.h), the vcpu_guest_context layout
(arch-x86/xen.h), the vMCE banks (cpu/mcheck/vmce.c) and the PV PIT ports (emul-priv-op.c)."""
from __future__ import annotations

from paravirt.cpuid import pv_policy
from paravirt.ioemul import PvIoPorts
from paravirt.vcpu_context import SIZE, VcpuGuestContext
from paravirt.vmce import Vmce

KVM = (0x40000001, 0x4B4D564B, 0x564B4D56, 0x4D)


def test_pv_cpuid_shows_xen_not_kvm_and_hides_superpages():
    table = {(0x40000000, 0): KVM, (0x40000001, 0): (1, 0, 0, 0), (1, 0): (0x800F12, 0, 0xFFFFFFFF, 0xFFFFFFFF),
             (0x80000001, 0): (0, 0, 0xFFFFFFFF, 0xFFFFFFFF)}
    pv_policy(table, 2_400_000_000, 0x12345678, -1)
    eax, ebx, ecx, edx = table[(0x40000000, 0)]
    assert (ebx, ecx, edx) == (0x566E6558, 0x65584D4D, 0x4D4D566E) and eax >= 0x40000002   # "XenVMMXenVMM"
    assert table[(0x40000001, 0)][0] == 4 << 16 | 17
    assert table[(0x40000003, 0)][2] == 2_400_000   # guest TSC kHz
    assert not table[(1, 0)][3] & 1 << 3            # PSE ('S': HVM only)
    assert not table[(0x80000001, 0)][3] & 1 << 26  # PAGE1GB
    assert table[(1, 0)][3] & 1 << 0 and table[(1, 0)][3] & 1 << 4   # FPU, TSC ('A')
    assert not table[(1, 0)][2] & 1 << 26           # XSAVE: hvm keeps it from PV guests


def test_vcpu_guest_context_has_xens_64bit_size_and_offsets():
    assert SIZE == 5168
    raw = bytearray(SIZE)
    raw[648:656] = (0x1111).to_bytes(8, "little")      # user_regs.rip
    raw[5008:5016] = (0x2000).to_bytes(8, "little")    # ctrlreg[3]
    raw[5152:5160] = (0x3333).to_bytes(8, "little")    # gs_base_kernel
    ctx = VcpuGuestContext.parse(bytes(raw))
    assert (ctx.user_regs.rip, ctx.ctrlreg[3], ctx.gs_base_kernel) == (0x1111, 0x2000, 0x3333)


def test_vmce_has_two_quiet_banks_and_refuses_nonzero_status():
    amd, intel = Vmce.for_vendor(0x68747541), Vmce.for_vendor(0x756E6547)
    assert amd.read(0x179) == 2 and intel.read(0x179) & 0xFF == 2 and intel.read(0x179) & 1 << 24
    assert amd.read(0x400) == (1 << 64) - 1 and amd.read(0x401) == 0   # MC0_CTL all ones, STATUS 0
    assert amd.owns(0x407) and not amd.owns(0x408)
    assert amd.write(0x401, 0) and not amd.write(0x401, 1)


def test_pv_ports_give_channel_2_and_all_ones_elsewhere():
    ports = PvIoPorts()
    ticks = iter(range(0, 10**9, 1_000_000))            # 1 ms per look at the clock
    ports.pit._clock = lambda: next(ticks)
    ports.write(0x43, 1, 0xB0)                           # channel 2, lo/hi, mode 0
    ports.write(0x42, 1, 0xFF)
    ports.write(0x42, 1, 0xFF)
    ports.write(0x61, 1, 0x01)                           # gate on
    ports.write(0x43, 1, 0x80)
    first = ports.read(0x42, 1) | ports.read(0x42, 1) << 8
    ports.write(0x43, 1, 0x80)
    second = ports.read(0x42, 1) | ports.read(0x42, 1) << 8
    assert second < first                                # counts down at 1.19 MHz
    assert ports.read(0x80, 1) == 0xFF and ports.read(0x70, 2) == 0xFFFF
