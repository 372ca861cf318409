"""fw_cfg from the command line: a user's file reaches the guest (it prints it), bad --fw-cfg
arguments get their documented exit codes, under both engines."""
from __future__ import annotations

import pytest

from conftest import hvmrun


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_a_string_file_reaches_the_guest(guests, accel):
    r = hvmrun("--accel", accel, "-c", "2", "--kernel", str(guests("multiboot")), "--append", "x poweroff",
               "--fw-cfg", "opt/hvm/greeting,string=hi there", "--timeout", "60")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    assert "fw_cfg sig=QEMU id=3 cpus=2 maxcpus=2" in out
    assert "fw_cfg greeting=[hi there]\n" in out


@pytest.mark.parametrize("spec, code, says", [
    ("opt/x", 64, "expected NAME,file=PATH"),
    ("opt/x,data=1", 64, "expected NAME,file=PATH"),
    ("etc/e820,string=x", 64, "hvm provides this file itself"),
    ("opt/" + "n" * 60 + ",string=x", 64, "at most 55 characters"),
    ("opt/x,file=/nonexistent/blob", 66, "/nonexistent/blob"),
])
def test_bad_fw_cfg_arguments(guests, spec, code, says):
    r = hvmrun("--kernel", str(guests("multiboot")), "--fw-cfg", spec, "--timeout", "30")
    assert r.returncode == code, r.stderr
    assert says in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_duplicate_names_are_refused(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--fw-cfg", "opt/a,string=1", "--fw-cfg", "opt/a,string=2")
    assert r.returncode == 64 and "opt/a" in r.stderr.decode()
