#!/usr/bin/env python3
"""Time to poweroff of Xen 4.17 with a Linux dom0: hvmrun against qemu-system-x86_64 -accel tcg.

Both VMMs boot Debian's hypervisor (the ``xen`` recipe) with Debian's stock kernel as dom0 on 2
vCPUs and the linux recipe's initramfs, whose init prints /sys/hypervisor/type and the CPU count
and powers off; the figure is the wall time from process start to exit, counted only when dom0
printed "xen" and "2". QEMU gets the hypervisor gunzipped (its -kernel reads no gzip) and
``-cpu max,-smap,-smep``: with SMAP its TCG reads a ring-3 IRET's frame as a supervisor access and
dom0 dies (hvm works around the same flaw in unicorn). Median of R alternating runs.

    python3 benchmarks/bench_xen_boot.py [--repeat R] [--accel auto|kvm|unicorn]

Exit status: 0 ratio within the target (<= 1.0), 1 not, 2 QEMU absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import gzip
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TARGET = 1.0
RUN = "cat /sys/hypervisor/type; grep -c processor /proc/cpuinfo"
EX_OK, EX_MISSED, EX_ABSENT, EX_BROKEN = 0, 1, 2, 3


class BenchError(RuntimeError):
    """A run that produced no usable measurement."""


def run_once(cmd: list[str], timeout: float) -> float:
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{cmd[0]}: no poweroff within {timeout:g} s") from None
    wall = time.perf_counter() - t0
    out = r.stdout.decode(errors="replace")
    if r.returncode != 0 or not (re.search(r"^xen\r*$", out, re.M) and re.search(r"^2\r*$", out, re.M)):
        raise BenchError(f"{cmd[0]} exited {r.returncode} without dom0's report:\n{out[-1500:]}\n"
                         f"{r.stderr.decode(errors='replace')[-1500:]}")
    return wall


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--accel", default="auto", help="hvmrun's --accel (default auto)")
    p.add_argument("--timeout", type=float, default=900)
    args = p.parse_args(argv)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)", file=sys.stderr)
        return EX_ABSENT
    sys.path.insert(0, str(REPO))
    import images
    from images.xen import XEN_CMDLINE, command

    xen = images.build("xen")
    dom0 = images.build("linux")
    hvm_cmd = [sys.executable, "-m", "hvm.cli", *command(xen, dom0, RUN), "--accel", args.accel, "--no-reboot"]
    with tempfile.TemporaryDirectory() as tmp:
        plain = Path(tmp) / "xen"
        plain.write_bytes(gzip.decompress(xen.read_bytes()))
        qemu_cmd = [qemu, "-accel", "tcg", "-cpu", "max,-smap,-smep", "-machine", "pc", "-m", "1024",
                    "-smp", "2", "-nographic", "-nodefaults", "-serial", "stdio", "-display", "none",
                    "-no-reboot", "-kernel", str(plain), "-append", XEN_CMDLINE,
                    "-initrd", f"{dom0 / 'vmlinuz'} console=hvc0 hvm.run='{RUN}',{dom0 / 'initramfs.cpio'}"]
        hvm, qem = [], []
        try:
            for _ in range(args.repeat):
                hvm.append(run_once(hvm_cmd, args.timeout))
                qem.append(run_once(qemu_cmd, args.timeout))
        except BenchError as exc:
            print(f"bench_xen_boot: {exc}", file=sys.stderr)
            return EX_BROKEN
    ratio = statistics.median(hvm) / statistics.median(qem)
    samples = lambda xs: ", ".join(f"{x:.1f}" for x in xs)  # noqa: E731
    print("| Xen 4.17 + dom0, -c 2, to poweroff | hvm | QEMU TCG | hvm/QEMU | target |")
    print("|---|---|---|---|---|")
    print(f"| --accel {args.accel} | {statistics.median(hvm):.1f} s ({samples(hvm)}) | "
          f"{statistics.median(qem):.1f} s ({samples(qem)}) | {ratio:.2f} | <= {TARGET} |")
    return EX_OK if ratio <= TARGET else EX_MISSED


if __name__ == "__main__":
    sys.exit(main())
