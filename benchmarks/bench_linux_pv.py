#!/usr/bin/env python3
"""The same Linux as a Xen PV guest and as an HVM guest, under each engine, against QEMU TCG.

One kernel (the ``images`` linux recipe's vmlinux, Debian's stock kernel, unchanged) and one
busybox initramfs whose /init runs ``grep -c processor /proc/cpuinfo`` and powers off, booted:

- as a Xen PV guest (``--xen pv``, console hvc0) under unicorn and under KVM;
- as an HVM guest by hvm's direct boot (PVH entry, console ttyS0) under unicorn and under KVM;
- by ``qemu-system-x86_64 -accel tcg -kernel vmlinux`` (PVH entry), the peer.

Each figure is wall time from process start to exit after the guest powered off, having printed
its CPU count; the median of R runs. A configuration this host cannot run to user space (a KVM
that only emulates ring 0 exits 69 at "Run /init") is reported as such, not timed.

    python3 benchmarks/bench_linux_pv.py [--repeat R] [--cpus N] [--only NAME ...]

Exit status: 0 every configuration ran or was reported unable, 2 QEMU absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
from bench_linux_boot import MEMORY, VmmExit, _images, _qemu_cmd, run_to_poweroff  # noqa: E402
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_OK, BenchError  # noqa: E402

RUN = "hvm.run='grep -c processor /proc/cpuinfo'"
EX_NO_USER_SPACE = 69      # hvmrun: this host's KVM cannot run guest user space


def _hvm(out: Path, cpus: int, accel: str, pv: bool) -> list[str]:
    exe = shutil.which("hvmrun")
    base = [exe] if exe else [sys.executable, "-m", "hvm.cli"]
    console = "hvc0" if pv else "ttyS0"
    return [*base, *(["--xen", "pv"] if pv else []), "--accel", accel, "-m", MEMORY, "-c", str(cpus),
            "--kernel", str(out / "vmlinux"), "--initrd", str(out / "initramfs.cpio"),
            "--append", f"console={console} {RUN}"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--cpus", type=int, default=1)
    p.add_argument("--timeout", type=float, default=900)
    p.add_argument("--only", nargs="+", choices=["pv-unicorn", "pv-kvm", "hvm-unicorn", "hvm-kvm", "qemu-tcg"])
    args = p.parse_args(argv)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)", file=sys.stderr)
        return EX_ABSENT
    out = _images()
    configs = {
        "pv-unicorn": _hvm(out, args.cpus, "unicorn", True),
        "pv-kvm": _hvm(out, args.cpus, "kvm", True),
        "hvm-unicorn": _hvm(out, args.cpus, "unicorn", False),
        "hvm-kvm": _hvm(out, args.cpus, "kvm", False),
        "qemu-tcg": _qemu_cmd(qemu, out, args.cpus, "vmlinux", f"console=ttyS0 {RUN}"),
    }
    names = args.only or list(configs)
    print(f"kernel {out / 'vmlinux'}, {MEMORY}, -c {args.cpus}, /init: {RUN}")
    times: dict[str, list[float] | str] = {}
    try:
        for _ in range(args.repeat):        # interleaved, so that drifts hit every configuration
            for name in names:
                if isinstance(times.get(name), str):
                    continue
                try:
                    wall = run_to_poweroff(configs[name], args.timeout, [rf"{args.cpus}\r?"])[0]
                except VmmExit as exc:
                    if exc.code != EX_NO_USER_SPACE:
                        raise
                    times[name] = "no guest user space on this host's KVM (exit 69 at Run /init)"
                    continue
                times.setdefault(name, []).append(wall)  # type: ignore[union-attr]
    except BenchError as exc:
        print(f"bench_linux_pv: {exc}", file=sys.stderr)
        return EX_BROKEN
    peer = times.get("qemu-tcg")
    peer_median = statistics.median(peer) if isinstance(peer, list) else None
    print("\n| configuration | to poweroff (median; samples) | / QEMU TCG |")
    print("|---|---|---|")
    for name in names:
        got = times[name]
        if isinstance(got, str):
            print(f"| {name} | {got} | - |")
            continue
        median = statistics.median(got)
        ratio = f"{median / peer_median:.2f}" if peer_median else "-"
        print(f"| {name} | {median:.1f} s ({', '.join(f'{x:.1f}' for x in got)}) | {ratio} |")
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
