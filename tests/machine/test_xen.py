"""Debian's Xen 4.17 as QEMU's -kernel boots it: the ``xen`` recipe's hypervisor (gzip-compressed,
multiboot) with Debian's stock kernel as a PV dom0 on 2 vCPUs. dom0's init reports what the guest
sees, from outside hvm: the kernel's /sys/hypervisor/type and its CPU count, then powers off."""
from __future__ import annotations

import re
import sys

import pytest

from conftest import REPO, hvmrun, recipe_image


@pytest.mark.slow
# Xen emulates dom0's port I/O through a stub it writes through its direct map (NX) and runs at
# its per-CPU stub address; PyPI's libunicorn runs the stale stub in about 2 boots of 7 (a 16-bit
# OUT where the page holds an 8-bit one; smc64 is the small case). With the library the
# README's commands build (`python3 -m images unicorn`) 4 of 4 boots passed here (130-160 s each
# then; 11-13 s on 2026-12-05).
def test_xen_boots_a_linux_dom0_that_sees_xen_and_two_cpus(linux_image):
    xen = recipe_image("xen", "Xen")
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))
    from images.xen import command

    run = "cat /sys/hypervisor/type; grep -c processor /proc/cpuinfo"
    r = hvmrun(*command(xen, linux_image, run), "--no-reboot", "--timeout", "420", timeout=480)
    out = r.stdout.decode(errors="replace")
    assert "(XEN) Brought up 2 CPUs" in out, (out[-3000:], r.stderr)
    lines = [line.strip() for line in out.splitlines()]
    assert "xen" in lines and "2" in lines, (out[-3000:], r.stderr)
    assert r.returncode == 0, (out[-3000:], r.stderr)
    # Xen and dom0 agree on time: dom0 calibrates the TSC against what Xen serves it from Xen's
    # own clock. With a 24-bit PM timer as Xen's platform timer, Xen lost its wraps while it built
    # dom0, its clock fell to a fifth of real time, and dom0 saw a 48 GHz TSC (2.6 GHz here).
    assert "Platform timer appears to have unexpectedly wrapped" not in out, out[-3000:]
    xen_mhz = float(re.search(r"\(XEN\) Detected ([\d.]+) MHz processor", out).group(1))
    dom0_mhz = float(re.search(r"\] tsc: Detected ([\d.]+) MHz processor", out).group(1))
    assert abs(dom0_mhz / xen_mhz - 1) < 0.02, (xen_mhz, dom0_mhz)
