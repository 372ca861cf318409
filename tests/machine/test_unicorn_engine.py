"""The unicorn engine behind the same seam: the foundation's guests give the same serial output
and exit codes as under KVM (guests that need interrupt delivery wait for the software-engine
issue)."""
from __future__ import annotations

import pytest

from conftest import hvmrun
from hvm import End, Machine, MachineConfig
from hvm.host import host_info

CASES = [
    ("hello16", []),
    ("long64", ["--flat-mode", "long"]),
    ("multiboot", ["-m", "64M", "--append", "hello world poweroff"]),
    ("multiboot", ["--append", "exit=9"]),
]


@pytest.mark.parametrize("guest,args", CASES)
def test_same_output_and_exit_code_as_kvm(guests, guest, args):
    kvm = hvmrun("--accel", "kvm", "--kernel", str(guests(guest)), *args, "--timeout", "60")
    uc = hvmrun("--accel", "unicorn", "--kernel", str(guests(guest)), *args, "--timeout", "60")
    assert uc.stdout == kvm.stdout and uc.stdout
    assert uc.returncode == kvm.returncode, uc.stderr


def test_triple_fault_reported_like_kvm(guests):
    r = hvmrun("--accel", "unicorn", "--kernel", str(guests("multiboot")), "--append", "triple", "--timeout", "60")
    k = hvmrun("--accel", "kvm", "--kernel", str(guests("multiboot")), "--append", "triple", "--timeout", "60")
    assert r.returncode == 2
    err = r.stderr.decode()
    assert "guest crashed on vCPU 0: triple fault" in err and "ud2" in err
    rip = [l for l in err.splitlines() if "rip=" in l][0].split()[0]
    assert rip in k.stderr.decode()                    # the same faulting instruction


def test_halted_guest_times_out(guests):
    r = hvmrun("--accel", "unicorn", "--kernel", str(guests("multiboot")), "--append", "hang", "--timeout", "1")
    assert r.returncode == 124


def test_string_io_and_mmio_reach_python_devices(guests):
    from test_api import Counter
    from hvm import Device

    dev = Counter(b"0123456789abcdef")
    with Machine(MachineConfig(kernel=str(guests("repio")), memory="16M", accel="unicorn")) as m:
        m.add_port_device(0x510, 1, dev)
        assert m.run(timeout=30).end == End.POWEROFF
        assert m.serial.text == "0123456789abcdef\n" and dev.reads == 16

    class Regs(Device):
        name = "regs"

        def __init__(self):
            self.writes = []

        def read(self, offset, size):
            return 0x41 if offset == 0 else 0

        def write(self, offset, size, value):
            self.writes.append((offset, size, value))

    regs = Regs()
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="mmio", memory="16M", accel="unicorn")) as m:
        m.add_mmio_device(0xD0000000, 0x1000, regs)
        assert m.run(timeout=30).end == End.POWEROFF
        assert regs.writes == [(4, 4, 0x42)] and "mmio=00000042" in m.serial.text


def test_exception_the_idt_could_deliver_is_named_as_not_supported_yet(tmp_path):
    image = tmp_path / "ud2.bin"
    image.write_bytes(bytes.fromhex("0f0b"))         # real mode: the IVT (limit 0x3ff) has a slot for #UD
    r = hvmrun("--accel", "unicorn", "--kernel", str(image), "--timeout", "30")
    assert r.returncode == 2
    assert b"#UD" in r.stderr and b"not implemented in the unicorn engine yet" in r.stderr


def test_auto_says_which_engine_it_chose(guests):
    expect = "unicorn" if host_info().emulation_only else "kvm"
    r = hvmrun("--accel", "auto", "--kernel", str(guests("hello16")), "--timeout", "60")
    assert r.returncode == 0 and r.stdout == b"Hello from real mode!\r\n"
    assert f"--accel auto chose {expect}".encode() in r.stderr


def test_unicorn_refuses_more_than_one_vcpu(guests):
    r = hvmrun("--accel", "unicorn", "-c", "2", "--kernel", str(guests("hello16")))
    assert r.returncode == 64 and b"one vCPU" in r.stderr
