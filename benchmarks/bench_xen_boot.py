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
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
from bench_linux_boot import run_to_poweroff  # noqa: E402
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_MISSED, EX_OK, REPO, BenchError  # noqa: E402

TARGET = 1.0
RUN = "cat /sys/hypervisor/type; grep -c processor /proc/cpuinfo"
# dom0's lines come through Xen's console as 'xen\r\r\n'.
DOM0_REPORT = [r"xen\r*", r"2\r*"]


def run_once(cmd: list[str], timeout: float) -> float:
    return run_to_poweroff(cmd, timeout, DOM0_REPORT)[0]


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
