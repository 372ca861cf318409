"""The instruction-set check guest under both engines, and KVM's fallback executor."""
from __future__ import annotations

import re
import struct

from conftest import hvmrun
from hvm.host import host_info



def _crc32c(data: bytes, crc: int = 0xFFFFFFFF) -> int:
    """CRC-32C (Castagnoli, reflected polynomial 0x82F63B78) as SSE4.2's crc32 computes it: from
    the given start value, without the final inversion."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc


# The guest's data (isa64.S `data`, `vec_a`, `vec_b`) and what each instruction must make of it.
CRC = _crc32c(struct.pack("<QQ", 0x0123456789ABCDEF, 0xFEDCBA9876543210))
PADDD = [(a + b) & 0xFFFFFFFF for a, b in zip([1, 2, 3, 0x7FFFFFFF], [0x10, 0x20, 0x30, 1])]
PADDD_XOR = ((PADDD[1] << 32) | PADDD[0]) ^ ((PADDD[3] << 32) | PADDD[2])   # the guest folds the lanes
EXPECTED = (f"popcnt={bin(0xF0F0F0F0).count('1'):x} crc={CRC:08x} sse=ffff paddd={PADDD_XOR:016x} "
            f"cx16=7 pf=40000000 bp=1 intn=1 ac=3 tscp=3 ubp=2 ucpl=3 upopcnt={bin(0xF0F0F0F0).count('1'):x} "
            f"ucrc={CRC:08x} usse=ffff lzcnt=")
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
    # The README documents the difference: a KVM that emulates guest kernel code refuses these
    # and hvm executes them; any other KVM runs them itself and the fallback stays idle.
    if host_info().emulation_only:
        assert out.endswith("lzcnt=2\n")  # hidden by CPUID: KVM would run it as bsr
        assert REFUSED_HERE <= set(reported), err
        stats = err[err.index("fallback instructions"):]
        assert re.search(r"popcnt\s+1\n", stats), stats  # the CPL0 one; CPL3 code runs natively
    else:
        assert out.endswith("lzcnt=1\n") and reported == [], err


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
    # Nothing claims 0xd0000000: it reads as all ones, as on a PC bus, and popcnt counts 32.
    assert "popcnt on mmio next\npopcnt=32\n" in r.stdout.decode()
