#!/usr/bin/env python3
"""Time to poweroff of a stock Linux boot: hvmrun against qemu-system-x86_64 -accel tcg.

Both VMMs get the same Debian kernel (the bzImage), the same busybox initramfs and the same command
line, whose init runs ``grep -c processor /proc/cpuinfo`` and powers off; the figure is the wall
time from process start to process exit, which must follow the guest's ACPI poweroff (and the
guest must have printed its CPU count, or the run does not count). Runs alternate between the two
VMMs; each figure is the median of R repeats, samples printed beside it.

    python3 benchmarks/bench_linux_boot.py [--repeat R] [--cpus N ...] [--accel auto|kvm|unicorn]

The images come from ``python3 -m images linux`` (built on first use, cached in ~/.cache/hvm).
Exit status: 0 the ratio for -c 1 is within the target (<= 2.0), 1 it is not, 2 QEMU absent,
3 a run went wrong.
"""
from __future__ import annotations

import argparse
import re
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_MISSED, EX_OK, REPO, BenchError  # noqa: E402

TARGET = 2.0
MEMORY = "256M"
APPEND = "console=ttyS0 hvm.run='grep -c processor /proc/cpuinfo'"


def _images() -> Path:
    sys.path.insert(0, str(REPO))
    import images

    return images.build("linux")


def _hvm_cmd(out: Path, cpus: int, accel: str) -> list[str]:
    exe = shutil.which("hvmrun")
    base = [exe] if exe else [sys.executable, "-m", "hvm.cli"]
    return [*base, "--accel", accel, "-m", MEMORY, "-c", str(cpus), "--kernel", str(out / "vmlinuz"),
            "--initrd", str(out / "initramfs.cpio"), "--append", APPEND, "--stats"]


def _qemu_cmd(qemu: str, out: Path, cpus: int, kernel: str = "vmlinuz", append: str = APPEND) -> list[str]:
    return [qemu, "-accel", "tcg", "-machine", "pc", "-m", MEMORY, "-smp", str(cpus), "-nographic",
            "-nodefaults", "-serial", "stdio", "-display", "none", "-no-reboot",
            "-kernel", str(out / kernel), "-initrd", str(out / "initramfs.cpio"), "-append", append]


class VmmExit(BenchError):
    """The VMM ended without the guest's poweroff lines; ``code`` is its exit status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


def run_to_poweroff(cmd: list[str], timeout: float, lines: list[str]) -> tuple[float, str, str]:
    """Wall seconds from start to exit, stdout, stderr; BenchError unless the VMM exited 0 and the
    guest printed a whole line matching each regular expression in ``lines``."""
    t0 = time.perf_counter()
    try:
        r = subprocess.run(cmd, capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{cmd[0]}: no poweroff within {timeout:g} s") from None
    wall = time.perf_counter() - t0
    out, err = r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")
    if r.returncode != 0 or not all(re.search(rf"^{line}$", out, re.M) for line in lines):
        raise VmmExit(f"{cmd[0]} exited {r.returncode} without printing {lines}:\n{out[-1500:]}\n"
                      f"{err[-1500:]}", r.returncode)
    return wall, out, err


# The count on a line of its own, or with a kernel message printed into that line before its end.
def count_line(cpus: int) -> str:
    """The pattern of the line on which the guest printed its CPU count."""
    return rf"{cpus}\r?(\[ *\d+\.\d+\] .*)?"


def run_once(cmd: list[str], cpus: int, timeout: float) -> tuple[float, str, str]:
    """``run_to_poweroff`` of a guest that counts ``cpus`` processors."""
    return run_to_poweroff(cmd, timeout, [count_line(cpus)])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--cpus", type=int, nargs="+", default=[1, 2])
    p.add_argument("--accel", default="auto", help="hvmrun's --accel (default auto)")
    p.add_argument("--timeout", type=float, default=300)
    args = p.parse_args(argv)
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)", file=sys.stderr)
        return EX_ABSENT
    out = _images()
    version = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout.split("\n")[0]
    print(f"kernel {out / 'vmlinuz'}, {MEMORY}, append {APPEND!r}; {version} -accel tcg")
    rows, ratios, last_stats = [], {}, ""
    try:
        for cpus in args.cpus:
            hvm, qem = [], []
            for _ in range(args.repeat):
                wall, _, err = run_once(_hvm_cmd(out, cpus, args.accel), cpus, args.timeout)
                hvm.append(wall)
                last_stats = err[err.find("hvm stats:"):]
                qem.append(run_once(_qemu_cmd(qemu, out, cpus), cpus, args.timeout)[0])
            ratio = statistics.median(hvm) / statistics.median(qem)
            ratios[cpus] = ratio
            rows.append((cpus, hvm, qem, ratio))
    except BenchError as exc:
        print(f"bench_linux_boot: {exc}", file=sys.stderr)
        return EX_BROKEN
    print("\n| -c | hvm to poweroff | QEMU TCG to poweroff | hvm/QEMU | target |")
    print("|---|---|---|---|---|")
    for cpus, hvm, qem, ratio in rows:
        samples = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        target = f"<= {TARGET}" if cpus == 1 else "-"
        print(f"| {cpus} | {statistics.median(hvm):.2f} s ({samples(hvm)}) | "
              f"{statistics.median(qem):.2f} s ({samples(qem)}) | {ratio:.2f} | {target} |")
    print(f"\nhvm --stats of the last run:\n{last_stats}")
    if 1 in ratios:
        return EX_OK if ratios[1] <= TARGET else EX_MISSED
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
