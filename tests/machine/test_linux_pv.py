"""Debian's stock kernel (the ``images`` linux recipe's vmlinux, unchanged) booted as a Xen PV
guest: it runs deprivileged on hvm's PV interface, finds Xen (its own /sys/hypervisor/type), brings
up every vCPU through VCPUOP_initialise/VCPUOP_up, runs its busybox /init on hvc0 and powers off
through SCHEDOP_shutdown. The expected values are the guest's own report.

Under unicorn: this project's KVM cannot run guest user space at all (README, "KVM that only
emulates"), so the KVM engine is exercised by tests/machine/test_xen_pv.py's test kernels."""
from __future__ import annotations

import re
import time

import pytest

from conftest import hvmrun


@pytest.mark.slow
def test_debian_kernel_boots_paravirtualized_with_two_vcpus(linux_image):
    r = hvmrun("--xen", "pv", "--accel", "unicorn", "-m", "256M", "-c", "2",
               "--kernel", str(linux_image / "vmlinux"), "--initrd", str(linux_image / "initramfs.cpio"),
               "--append", "console=hvc0 hvm.run='cat /sys/hypervisor/type; grep -c processor /proc/cpuinfo'",
               "--timeout", "900", timeout=960)
    out = r.stdout.decode(errors="replace")
    assert r.returncode == 0, out[-3000:] + r.stderr.decode(errors="replace")[-3000:]
    assert "Booting paravirtualized kernel on Xen" in out or "Booting kernel on Xen" in out, out[:3000]
    assert "Hypervisor detected: Xen PV" in out
    assert "smp: Brought up 1 node, 2 CPUs" in out, out
    lines = [line.strip() for line in out.splitlines()]
    # /init prints the command's output on its own lines, after the kernel's log.
    assert lines.index("xen") < lines.index("2"), out[-2000:]


@pytest.mark.slow
def test_shell_on_hvc0_answers_what_is_typed(linux_image):
    """No command on the kernel command line: /init starts a shell on hvc0, the PV console. What is
    typed on hvm's console (COM1's backend) reaches it through the console ring; its answers come
    back the same way, and `exit` powers the guest off."""
    from hvm.config import MachineConfig
    from hvm.machine import Machine

    config = MachineConfig(machine="xenpv", accel="unicorn", memory="256M", kernel=str(linux_image / "vmlinux"),
                           initrd=str(linux_image / "initramfs.cpio"), append="console=hvc0")
    with Machine(config) as machine:
        machine.start()
        assert machine.serial.wait_for("/ # ", timeout=600), machine.serial.text[-3000:]
        start = len(machine.serial.text)
        machine.serial.send("cat /sys/hypervisor/type; echo typed-$((6 * 7))\n")
        # The answer, then the next prompt: `exit` typed any earlier is echoed into the answer.
        deadline = time.monotonic() + 60
        while not re.search(r"typed-42\r?\n/ # ", machine.serial.text[start:]) and time.monotonic() < deadline:
            time.sleep(0.1)
        machine.serial.send("exit\n")
        outcome = machine.wait(120)
        text = machine.serial.text
    after = text[text.index("typed-$((6 * 7))") if "typed-$((6 * 7))" in text else 0:]
    lines = [line.strip() for line in after.splitlines()]
    assert "xen" in lines and "typed-42" in lines, after[-2000:]
    assert outcome.end.value == "poweroff", (outcome, text[-2000:])
