"""The instruction-set check guest under both engines, and KVM's fallback executor."""
from __future__ import annotations

import re

from conftest import hvmrun
from hvm.host import host_info

EXPECTED = ("popcnt=10 crc=78b6ad9a sse=ffff paddd=8000002200000022 cx16=7 pf=40000000 bp=1 intn=1 ac=3 "
            "tscp=3 ubp=2 ucpl=3 upopcnt=10 ucrc=78b6ad9a usse=ffff lzcnt=")
# KVM's emulator refuses these at CPL0 on an emulation-only host (../shared/HOST-KVM.md).
REFUSED_HERE = {"popcnt", "crc32", "pcmpeqb", "pmovmskb", "paddd", "lock cmpxchg16b", "int3", "int", "stac",
                "clac", "rdtscp"}


def _isa64(guests, *args: str):
    return hvmrun("--kernel", str(guests("isa64")), "-m", "16M", "--flat-mode", "long", "--timeout", "60", *args)


def test_instruction_set_check_passes_under_unicorn(guests):
    r = _isa64(guests, "--accel", "unicorn")
    assert r.returncode == 65, r.stderr.decode()
    assert r.stdout.decode() == EXPECTED + "1\n"  # unicorn's Broadwell model has LZCNT


def test_instruction_set_check_passes_under_kvm_through_the_fallback(guests):
    r = _isa64(guests, "--accel", "kvm", "-v", "--stats")
    err = r.stderr.decode()
    assert r.returncode == 65, err
    out = r.stdout.decode()
    assert out.startswith(EXPECTED) and out[len(EXPECTED):] in ("1\n", "2\n"), out
    reported = re.findall(r"KVM refused `((?:lock )?[^` ]+)", err)
    assert len(reported) == len(set(reported)), "each mnemonic is reported once"
    if host_info().emulation_only:
        assert out.endswith("lzcnt=2\n")  # hidden by CPUID: KVM would run it as bsr
        assert REFUSED_HERE <= set(reported), err
        stats = err[err.index("fallback instructions"):]
        assert re.search(r"popcnt\s+1\n", stats), stats  # the CPL0 one; CPL3 code runs natively


def test_without_fallback_the_first_refused_instruction_is_a_crash(guests):
    r = _isa64(guests, "--accel", "kvm", "--no-fallback")
    if host_info().emulation_only:
        assert r.returncode == 2
        assert "cannot execute popcnt eax, eax" in r.stderr.decode()
    else:
        assert r.returncode == 65


def test_refused_instruction_on_mmio_runs_through_the_fallback(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", "popcnt", "--timeout", "60")
    assert r.returncode == 0, r.stderr.decode()
    assert "popcnt on mmio next" in r.stdout.decode()
