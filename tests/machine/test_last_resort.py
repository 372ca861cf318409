"""hvmrun's promises when things go wrong that are not the guest's doing: an unexpected exception
anywhere is exit 70 with one line (the traceback only with -v), an image nobody can identify is
exit 65, and --accel auto trusts a KVM device only once it has created a VM."""
from __future__ import annotations

import random
import subprocess
import sys

import pytest

from conftest import hvmrun, hvmrun_env

BOOT_SECTOR_POST = (bytes.fromhex("b080e680"          # mov $0x80,%al; out %al,$0x80 (a POST code)
                                  "ba0406b80020eff4")  # ACPI power-off
                    .ljust(510, b"\0") + b"\x55\xaa")


def _hvmrun_with(fault: str, *args: str) -> subprocess.CompletedProcess:
    """hvmrun's own main() in a process where ``fault`` (Python) has broken one piece of hvm."""
    script = f"import sys\n{fault}\nfrom hvm.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120,
                          env=hvmrun_env(), stdin=subprocess.DEVNULL)


def _one_line_report(r: subprocess.CompletedProcess, where: str) -> None:
    assert r.returncode == 70, r.stderr
    lines = [line for line in r.stderr.splitlines() if "internal error" in line]
    assert len(lines) == 1 and where in lines[0] and "injected fault" in lines[0], r.stderr
    assert "please report" in lines[0]
    assert "Traceback" not in r.stderr


@pytest.fixture
def post_guest(tmp_path):
    path = tmp_path / "post.img"
    path.write_bytes(BOOT_SECTOR_POST)
    return str(path)


@pytest.fixture
def waiting_guest(tmp_path):
    """A POST code, then cli; hlt for good: the run can only end by a failure (or the timeout)."""
    path = tmp_path / "wait.img"
    path.write_bytes(bytes.fromhex("b080e680" "fa" "f4" "ebfd").ljust(510, b"\0") + b"\x55\xaa")
    return str(path)


BREAK_POST = ("import hvm.devices.post as p\n"
              "def write(self, offset, size, value): raise RuntimeError('injected fault')\n"
              "p.PostCode.write = write")


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_a_failing_device_is_exit_70_with_one_line(post_guest, accel):
    r = _hvmrun_with(BREAK_POST, "--accel", accel, "--kernel", post_guest, "--timeout", "60")
    _one_line_report(r, "vCPU 0")
    r = _hvmrun_with(BREAK_POST, "--accel", accel, "--kernel", post_guest, "--timeout", "60", "-v")
    assert r.returncode == 70 and "Traceback" in r.stderr and "def write" not in r.stderr


def test_a_failing_helper_thread_is_exit_70(waiting_guest):
    # The serial console's input thread dies: the run ends and says where, instead of going on deaf.
    fault = ("import hvm.serial as s\n"
             "def loop(self): raise OSError('injected fault')\n"
             "s.StdioBackend._read_loop = loop")
    r = subprocess.run([sys.executable, "-c", f"import sys\n{fault}\nfrom hvm.cli import main\n"
                        "sys.exit(main(sys.argv[1:]))\n", "--accel", "unicorn", "--kernel", waiting_guest,
                        "--timeout", "60"],
                       capture_output=True, text=True, timeout=120, env=hvmrun_env(), input="")
    _one_line_report(r, "serial-stdio")


def test_a_thread_started_outside_hvm_failing_is_exit_70(waiting_guest):
    # An embedder's or a library's thread, started with no failure handler: the last resort
    # (threading.excepthook) still ends the run with one line.
    fault = ("import threading, hvm.devices.post as p\n"
             "def boom(): raise ValueError('injected fault')\n"
             "def write(self, offset, size, value): threading.Thread(target=boom, name='stray').start()\n"
             "p.PostCode.write = write")
    r = _hvmrun_with(fault, "--accel", "unicorn", "--kernel", waiting_guest, "--timeout", "60")
    _one_line_report(r, "stray")


def test_a_failure_while_building_the_machine_is_exit_70(post_guest):
    fault = ("import hvm.boards.direct as d\n"
             "def tables(machine): raise KeyError('injected fault')\n"
             "d.DirectBoard._write_acpi_tables = staticmethod(tables)")
    r = _hvmrun_with(fault, "--accel", "unicorn", "--kernel", post_guest)
    assert r.returncode == 70 and r.stderr.count("\n") == 1, r.stderr
    assert "internal error: KeyError" in r.stderr and "Traceback" not in r.stderr


def test_random_bytes_are_refused_not_run(tmp_path):
    noise = tmp_path / "noise.bin"
    noise.write_bytes(random.Random(1).randbytes(4096))
    r = hvmrun("--accel", "unicorn", "--kernel", str(noise), "--timeout", "30")
    assert r.returncode == 65, r.stderr
    assert f"{noise}: not a bootable image".encode() in r.stderr and b"--flat-mode" in r.stderr
    # The user may insist: then the bytes run as a raw binary (and crash, or spin, as raw bytes do).
    r = hvmrun("--accel", "unicorn", "--kernel", str(noise), "--flat-mode", "real", "--timeout", "3")
    assert r.returncode in (2, 124), r.stderr


def test_auto_falls_back_when_the_kvm_device_is_no_kvm(tmp_path, guests, monkeypatch):
    node = tmp_path / "kvm"
    node.write_bytes(b"")  # exists and is read/writable: only opening it as KVM shows what it is
    monkeypatch.setenv("HVM_KVM_DEVICE", str(node))
    r = hvmrun("--accel", "auto", "--kernel", str(guests("hello16")), "--timeout", "60")
    assert r.returncode == 0 and r.stdout == b"Hello from real mode!\r\n", r.stderr
    assert f"--accel auto chose unicorn: {node}: unusable".encode() in r.stderr


def test_kvm_refusing_to_build_the_machine_is_named(post_guest):
    # KVM may refuse a vCPU (past its per-VM limit, out of memory): exit 69 naming the request.
    fault = ("import errno, kvmffi.kvm as k\n"
             "def create_vcpu(self, index): raise k.KvmError('KVM_CREATE_VCPU', errno.EINVAL)\n"
             "k.Vm.create_vcpu = create_vcpu")
    r = _hvmrun_with(fault, "--accel", "kvm", "--kernel", post_guest)
    assert r.returncode == 69, r.stderr
    assert "KVM refused to build the machine: KVM_CREATE_VCPU: Invalid argument" in r.stderr
    assert "Traceback" not in r.stderr
