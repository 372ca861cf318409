"""The bindings against the real /dev/kvm: typed values, named errors."""
from __future__ import annotations

import errno
import os

import pytest

import kvmffi
from kvmffi import exits


@pytest.fixture
def kvm():
    k = kvmffi.Kvm()
    yield k
    k.close()


def test_system_queries(kvm):
    assert kvm.api_version == 12
    assert kvm.vcpu_mmap_size >= 4096
    leaves = {e.function for e in kvm.supported_cpuid()}
    assert 0 in leaves and 1 in leaves
    assert 0x10 in kvm.msr_index_list()  # IA32_TSC


def test_failing_ioctl_names_itself(kvm):
    vm = kvm.create_vm()
    try:
        with pytest.raises(kvmffi.KvmError) as info:
            vm.set_user_memory_region(0, 0x1000, 0x1000, 0x123)  # host address not page aligned
        assert info.value.ioctl == "KVM_SET_USER_MEMORY_REGION"
        assert info.value.errno == errno.EINVAL
        assert "KVM_SET_USER_MEMORY_REGION" in str(info.value)
    finally:
        vm.close()


def test_missing_capability_is_named(kvm):
    absent = [c for c in ("KVM_CAP_XEN_HVM", "KVM_CAP_HYPERV", "KVM_CAP_GUEST_DEBUG_HW_BPS")
              if kvm.check_extension(c) <= 0]
    if not absent:
        pytest.fail("every probed capability is present; pick another absent one for this host")
    with pytest.raises(kvmffi.MissingCapability) as info:
        kvm.require(absent[0])
    assert info.value.capability == absent[0] and absent[0] in str(info.value)


def test_run_returns_typed_exits(kvm):
    import mmap
    vm = kvm.create_vm()
    ram = mmap.mmap(-1, 0x10000)
    ram[0:4] = bytes([0xE6, 0x42, 0xF4, 0x00])  # out 0x42, al; hlt
    addr = int(kvmffi.ffi.cast("uintptr_t", kvmffi.ffi.from_buffer(ram)))
    vm.set_user_memory_region(0, 0, 0x10000, addr)
    vcpu = vm.create_vcpu(0)
    try:
        s = vcpu.get_sregs()
        s.cs.base, s.cs.selector = 0, 0
        vcpu.set_sregs(s)
        r = vcpu.get_regs()
        r.rip, r.rax, r.rflags = 0, 0x99, 2
        vcpu.set_regs(r)
        e = vcpu.run()
        assert isinstance(e, exits.IoOut) and e.port == 0x42 and e.size == 1 and bytes(e.data) == b"\x99"
        del e
        e = vcpu.run()
        assert isinstance(e, exits.Hlt)  # no in-kernel irqchip in this VM: HLT exits
        del e
    finally:
        vcpu.close()
        vm.close()


def _tiny_vm(kvm, code: bytes, irqchip: bool = False, dirty: bool = False):
    import mmap
    vm = kvm.create_vm()
    if irqchip:
        vm.create_irqchip()
    ram = mmap.mmap(-1, 0x10000)
    ram[0:len(code)] = code
    addr = int(kvmffi.ffi.cast("uintptr_t", kvmffi.ffi.from_buffer(ram)))
    vm.set_user_memory_region(0, 0, 0x10000, addr, kvmffi.lib.KVM_MEM_LOG_DIRTY_PAGES if dirty else 0)
    vcpu = vm.create_vcpu(0)
    s = vcpu.get_sregs()
    s.cs.base = s.cs.selector = 0
    vcpu.set_sregs(s)
    r = vcpu.get_regs()
    r.rip, r.rflags = 0, 2
    vcpu.set_regs(r)
    return vm, vcpu, ram


def test_state_roundtrips(kvm):
    vm, vcpu, _ram = _tiny_vm(kvm, b"\xf4", irqchip=True)
    try:
        fpu = vcpu.get_fpu()
        fpu.fcw = 0x37F
        vcpu.set_fpu(fpu)
        assert vcpu.get_fpu().fcw == 0x37F
        vcpu.set_lapic(vcpu.get_lapic())
        assert vcpu.get_mp_state() == kvmffi.lib.KVM_MP_STATE_RUNNABLE
        dbg = vcpu.get_debugregs()
        dbg.db[0] = 0x1234
        vcpu.set_debugregs(dbg)
        assert vcpu.get_debugregs().db[0] == 0x1234
        vcpu.set_msrs({0x174: 0x10})          # IA32_SYSENTER_CS
        assert vcpu.get_msrs([0x174]) == {0x174: 0x10}
        ev = vcpu.get_vcpu_events()
        vcpu.set_vcpu_events(ev)
        assert vcpu.translate(0x1234)[0] == 0x1234  # paging off: identity
    finally:
        vcpu.close()
        vm.close()


def test_interrupt_plumbing(kvm):
    vm, vcpu, _ram = _tiny_vm(kvm, b"\xf4", irqchip=True)
    efd = os.eventfd(0)
    efd2 = os.eventfd(0)
    try:
        vm.irq_line(4, True)
        vm.irq_line(4, False)
        vm.irqfd(efd, 5)
        vm.irqfd(efd, 5, deassign=True)
        vm.ioeventfd(efd2, 0x510, 1, pio=True)
        vm.ioeventfd(efd2, 0x510, 1, pio=True, deassign=True)
        assert vm.signal_msi(0xFEE00000, 0x30) >= 0
    finally:
        os.close(efd)
        os.close(efd2)
        vcpu.close()
        vm.close()


def test_dirty_log_sees_guest_writes(kvm):
    # mov %al, 0x3000 ; hlt  (16-bit: a2 00 30)
    vm, vcpu, _ram = _tiny_vm(kvm, bytes.fromhex("a20030f4"), dirty=True)
    try:
        vm.get_dirty_log(0, 16)                  # clear whatever setup dirtied
        assert isinstance(vcpu.run(), exits.Hlt)
        bitmap = vm.get_dirty_log(0, 16)
        assert bitmap[0] & (1 << 3)              # page 3 written by the guest
    finally:
        vcpu.close()
        vm.close()


def test_guest_debug_single_step(kvm):
    vm, vcpu, _ram = _tiny_vm(kvm, bytes.fromhex("9090f4"))  # nop; nop; hlt
    try:
        lib = kvmffi.lib
        vcpu.set_guest_debug(lib.KVM_GUESTDBG_ENABLE | lib.KVM_GUESTDBG_SINGLESTEP)
        e = vcpu.run()
        assert isinstance(e, exits.Debug) and e.exception == 1 and e.pc == 1
    finally:
        vcpu.close()
        vm.close()
