"""CPUID under the unicorn engine: the model's own answers, edited for the platform hvm models."""
from __future__ import annotations

from hvm.engine import uc_cpuid
from hvm.engine.unicorn import CPU_MODEL

POPCNT, SSE42, X2APIC = 1 << 23, 1 << 20, 1 << 21


def test_policy_keeps_the_instruction_set_and_reports_the_platform():
    table = uc_cpuid.policy_table(CPU_MODEL, vcpu_id=2, ncpus=3)
    eax, ebx, ecx, edx = uc_cpuid.lookup(table, 1, 0)
    assert ecx & POPCNT and ecx & SSE42 and not ecx & X2APIC
    assert ecx & uc_cpuid.HYPERVISOR and edx & uc_cpuid.APIC
    assert not ecx & (1 << 24)  # no TSC-deadline: unicorn cannot hand the MSR to hvm
    assert ebx >> 24 == 2 and (ebx >> 16) & 0xFF == 3
    assert uc_cpuid.model_table(CPU_MODEL)[(1, 0)][1] >> 24 == 0  # the APIC ID is our edit
    assert uc_cpuid.lookup(table, 7, 0)[1] & (1 << 20)  # SMAP: clac/stac run


def test_lookup_follows_cpuid_rules_for_unknown_leaves_and_subleaves():
    table = uc_cpuid.policy_table(CPU_MODEL, 0, 1)
    top = table[(0, 0)][0]
    assert uc_cpuid.lookup(table, top + 5, 0) == table[(top, 0)]
    assert uc_cpuid.lookup(table, 0x40000000, 0) == (0, 0, 0, 0)
    assert uc_cpuid.lookup(table, 1, 7) == uc_cpuid.lookup(table, 1, 0)  # ECX ignored for leaf 1
    assert uc_cpuid.lookup(table, 0x80000000, 0)[0] >= 0x80000001


def test_xsave_leaf_lists_no_state_of_a_feature_the_model_lacks():
    # The model filters AVX out; its XSAVE state component must go with it (kvm-unit-tests' xsave
    # ran AVX code when leaf 0xD listed it), and the sizes shrink to the x87/SSE area.
    table = uc_cpuid.policy_table(CPU_MODEL, 0, 1)
    assert not uc_cpuid.lookup(table, 1, 0)[2] & uc_cpuid.AVX
    eax, ebx, ecx, _ = uc_cpuid.lookup(table, 0xD, 0)
    assert eax & 3 == 3 and not eax & uc_cpuid.XCR0_YMM
    assert ebx <= uc_cpuid.LEGACY_XSAVE_AREA and ecx == uc_cpuid.LEGACY_XSAVE_AREA
    assert uc_cpuid.lookup(table, 0xD, 2) == (0, 0, 0, 0)
