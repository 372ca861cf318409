"""Small platform pieces without KVM: ACPI PM, debug exit, POST, config, CPUID policy, CLI table."""
from __future__ import annotations

import pytest

from hvm.outcome import exit_code_for
from hvm.config import MachineConfig, ModuleSpec, parse_size
from hvm.cpuid import cpuid_policy, hidden_features
from hvm.devices.acpi_pm import AcpiPm
from hvm.devices.debug_exit import DebugExit
from hvm.devices.post import PostCode
from hvm.errors import ConfigError, MissingFileError
from hvm.host import HostInfo
from hvm.outcome import End, Outcome
from kvmffi import CpuidEntry


def test_acpi_pm_poweroff_only_on_s5_sleep_enable():
    off = []
    pm = AcpiPm(lambda: off.append(1), clock=lambda: 0)
    pm.write(4, 2, 0x0001)           # SCI_EN only
    assert off == [] and pm.read(4, 2) == 1
    pm.write(4, 2, (5 << 10) | (1 << 13))  # S3-style type: not poweroff
    assert off == []
    pm.write(4, 2, 1 << 13)          # SLP_TYP 0 (S5) | SLP_EN
    assert off == [1]


def test_acpi_pm_timer_runs_at_3_58_mhz():
    now = [0]
    pm = AcpiPm(lambda: None, clock=lambda: now[0])
    now[0] = 1_000_000_000
    assert pm.read(8, 4) == 3579545
    now[0] = 10_000_000_000
    assert pm.read(8, 4) == 35795450              # past 24 bits: the FADT says TMR_VAL_EXT
    now[0] = 1300 * 1_000_000_000                 # 32 bits wrap after 1199.9 s
    assert pm.read(8, 4) == 3579545 * 1300 - (1 << 32)


def test_acpi_pm_status_is_write_one_to_clear():
    pm = AcpiPm(lambda: None)
    pm.status = 0x0101
    pm.write(0, 2, 0x0001)
    assert pm.read(0, 2) == 0x0100


def test_debug_exit_and_exit_codes():
    got = []
    DebugExit(got.append).write(0, 1, 0x10)
    assert got == [0x10]
    assert exit_code_for(Outcome(End.DEBUG_EXIT, value=0x10)) == 0x21
    assert exit_code_for(Outcome(End.DEBUG_EXIT, value=0x7F)) == 0xFF
    assert exit_code_for(Outcome(End.POWEROFF)) == 0
    assert exit_code_for(Outcome(End.CRASH)) == 2
    assert exit_code_for(Outcome(End.TIMEOUT)) == 124


def test_post_code_history():
    p = PostCode()
    for c in range(20):
        p.write(0, 1, c)
    assert p.read(0, 1) == 19 and p.history == list(range(4, 20))


@pytest.mark.parametrize("text,value", [("64M", 64 << 20), ("1G", 1 << 30), ("512", 512 << 20),
                                        ("2048k", 2 << 20), ("1GiB", 1 << 30)])
def test_parse_size(text, value):
    assert parse_size(text) == value


def test_config_validation(tmp_path):
    k = tmp_path / "k"
    k.write_bytes(b"x")
    with pytest.raises(ConfigError):
        parse_size("lots")
    with pytest.raises(ConfigError, match="nothing to boot"):
        MachineConfig().validate()
    with pytest.raises(MissingFileError, match="nope"):
        MachineConfig(kernel=str(tmp_path / "nope")).validate()
    with pytest.raises(ConfigError, match="vCPUs"):
        MachineConfig(kernel=str(k), cpus=0).validate()
    with pytest.raises(ConfigError, match="invalid character device"):
        MachineConfig(kernel=str(k), serial=["tcp:1"]).validate()
    assert ModuleSpec.parse("a.bin,x y") == ModuleSpec("a.bin", "x y")


def _supported():
    return [CpuidEntry(0, 0, 0, 0xD, 0, 0, 0),
            CpuidEntry(1, 0, 0, 0x800F12, 0x12345678, (1 << 13) | (1 << 23) | 1, 1 << 25),
            CpuidEntry(7, 0, 1, 0, (1 << 3) | (1 << 8) | 1, 0, 0),
            CpuidEntry(0x80000001, 0, 0, 0, 0, 1 << 5, 1 << 27)]


def test_cpuid_policy_on_an_emulation_only_host_without_fallback_hides_what_kvm_cannot_run():
    host = HostInfo("/dev/kvm", True, "test")
    table = {(e.function, e.index): e for e in cpuid_policy(_supported(), host, vcpu_id=3, ncpus=4,
                                                            fallback=False)}
    leaf1 = table[(1, 0)]
    assert not leaf1.ecx & (1 << 13) and not leaf1.ecx & (1 << 23)   # cx16, popcnt hidden
    assert leaf1.ecx & 1 == 0                                           # sse3 hidden
    assert leaf1.ecx & (1 << 31)                                        # hypervisor present
    assert leaf1.ebx >> 24 == 3 and (leaf1.ebx >> 16) & 0xFF == 4      # APIC id, logical count
    assert table[(7, 0)].ebx == 1                                       # bmi1/bmi2 hidden
    assert table[(0x80000001, 0)].ecx == 0 and table[(0x80000001, 0)].edx == 0
    sig = table[(0x40000000, 0)]
    assert (sig.ebx, sig.ecx, sig.edx) == (0x4B4D564B, 0x564B4D56, 0x4D)
    assert "cx16" in hidden_features(host, ncpus=4, fallback=False)


def test_cpuid_policy_with_fallback_offers_what_unicorn_executes_and_hides_silent_misexecution():
    host = HostInfo("/dev/kvm", True, "test")
    one = {(e.function, e.index): e for e in cpuid_policy(_supported(), host, vcpu_id=0, ncpus=1)}
    assert one[(1, 0)].ecx & (1 << 23) and one[(1, 0)].ecx & 1        # popcnt, sse3 offered
    assert one[(1, 0)].ecx & (1 << 13)                                  # cx16: atomic with one vCPU
    assert one[(7, 0)].ebx == 1 | (1 << 8)                              # bmi2 kept, bmi1 (tzcnt) hidden
    assert one[(0x80000001, 0)].ecx == 0                                # lzcnt hidden
    assert one[(0x80000001, 0)].edx == 1 << 27                          # rdtscp offered
    four = {(e.function, e.index): e for e in cpuid_policy(_supported(), host, vcpu_id=0, ncpus=4)}
    assert not four[(1, 0)].ecx & (1 << 13)                             # cx16 hidden with SMP
    assert "abm/lzcnt" in hidden_features(host) and "popcnt" not in hidden_features(host)


def test_cpuid_policy_on_a_normal_host_keeps_features():
    host = HostInfo("/dev/kvm", False, "")
    table = {(e.function, e.index): e for e in cpuid_policy(_supported(), host, vcpu_id=0, ncpus=1)}
    assert table[(1, 0)].ecx & (1 << 23) and table[(7, 0)].ebx & (1 << 8)
    assert hidden_features(host) == []
