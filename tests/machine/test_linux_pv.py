"""Debian's stock kernel (the ``images`` linux recipe's vmlinux, unchanged) booted as a Xen PV
guest: it runs deprivileged on hvm's PV interface, finds Xen (its own /sys/hypervisor/type), brings
up every vCPU through VCPUOP_initialise/VCPUOP_up, runs its busybox /init on hvc0 and powers off
through SCHEDOP_shutdown. The expected values are the guest's own report.

Under unicorn: this project's KVM cannot run guest user space at all (README, "KVM that only
emulates"), so the KVM engine is exercised by tests/machine/test_xen_pv.py's test kernels."""
from __future__ import annotations

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
