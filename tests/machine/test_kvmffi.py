"""The bindings against the real /dev/kvm: typed values, named errors."""
from __future__ import annotations

import errno

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
