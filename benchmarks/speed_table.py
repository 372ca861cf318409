#!/usr/bin/env python3
"""hvm's speed against QEMU in one run: the exit path, the software engine, a Linux boot, memory.

Each row comes from the project's other benchmarks, run here side by side with QEMU 7.2 on the
same machine (KVM rows against `-enable-kvm`, unicorn rows against `-accel tcg`), reduced to a
ratio hvm/QEMU (for the fallback: its cost in port-I/O exits) and checked against its target:

  KVM port-I/O write, POST port 0x80            bench_vs_qemu (a)       <= 0.90
  KVM port-I/O read, COM1 LSR                   bench_vs_qemu (d)       <= 1.00
  Linux to poweroff, PVH entry, 1 vCPU          --accel auto vs tcg     <= 1.00
  Linux to poweroff, bzImage, 1 vCPU            --accel auto vs tcg     <= 0.50
  unicorn: int $0x30 + iretq                    bench_engines (3)       <= 30
  unicorn: compute loop                         bench_engines (1)       <= 2.5
  KVM fallback instruction / port-I/O exit      bench_engines (4)       <= 3
  peak RSS, 64 MiB multiboot guest (KVM)        bench_vs_qemu (c)       <= 0.50
  peak RSS, the Linux boot (unicorn vs TCG)     reported

    python3 benchmarks/speed_table.py [--repeat R] [--write]

--write puts the table, with the date, the machine and the versions, into benchmarks/README.md
between its speed-table markers. Exit status: 0 every target met, 1 a target missed, 2 QEMU,
binutils, unicorn or /dev/kvm absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
import bench_engines as engines  # noqa: E402
import bench_linux_boot as linux  # noqa: E402
import bench_vs_qemu as base  # noqa: E402

README = Path(__file__).resolve().parent / "README.md"
BEGIN, END = "<!-- speed-table begin (written by speed_table.py --write) -->", "<!-- speed-table end -->"


@dataclass
class Row:
    """One line of the table."""

    what: str
    hvm: str
    peer: str
    ratio: float
    target: float | None   # None: reported, no target

    @property
    def passed(self) -> bool:
        return self.target is None or self.ratio <= self.target


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:.3g} µs" if seconds >= 1e-6 else f"{seconds * 1e9:.3g} ns"


# -- a Linux boot, with its wall time and peak RSS ----------------------------------------------

def boot(cmd: list[str], timeout: float, cpus: int) -> tuple[float, int]:
    """(wall seconds, peak RSS in bytes) of one boot to poweroff that printed its CPU count; the
    RSS is the kernel's high-water mark from wait4, as bench_vs_qemu takes it."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out: dict[str, bytes] = {}
    readers = [threading.Thread(target=lambda k=k, f=f: out.__setitem__(k, f.read()))
               for k, f in (("out", proc.stdout), ("err", proc.stderr))]
    for t in readers:
        t.start()
    killer = threading.Timer(timeout, proc.kill)
    killer.start()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    killer.cancel()
    for t in readers:
        t.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    text = out["out"].decode(errors="replace")
    if proc.returncode != 0 or not re.search(rf"^{linux.count_line(cpus)}$", text, re.M):
        raise base.BenchError(f"{cmd[0]} exited {proc.returncode} without printing the CPU count:\n"
                              f"{text[-1200:]}\n{out['err'].decode(errors='replace')[-1200:]}")
    return wall, usage.ru_maxrss * 1024


def linux_rows(repeat: int, timeout: float, qemu: str) -> list[Row]:
    """PVH and bzImage boots to poweroff, 1 vCPU, hvm --accel auto against QEMU's TCG, alternating."""
    out = linux._images()
    hvm_base = [sys.executable, "-m", "hvm.cli", "--accel", "auto", "-m", linux.MEMORY, "-c", "1",
                "--initrd", str(out / "initramfs.cpio"), "--append", linux.APPEND]
    rows, rss = [], {"hvm": [], "qemu": []}
    for label, image in (("PVH entry (vmlinux)", "vmlinux"), ("bzImage", "vmlinuz")):
        walls: dict[str, list[float]] = {"hvm": [], "qemu": []}
        for i in range(repeat):
            order = ("hvm", "qemu") if i % 2 == 0 else ("qemu", "hvm")
            for who in order:
                base._say(f"repeat {i + 1}/{repeat}: Linux {label} under {who}")
                cmd = [*hvm_base, "--kernel", str(out / image)] if who == "hvm" else \
                    linux._qemu_cmd(qemu, out, 1, kernel=image)
                wall, peak = boot(cmd, timeout, 1)
                walls[who].append(wall)
                rss[who].append(peak)
        h, q = statistics.median(walls["hvm"]), statistics.median(walls["qemu"])
        samples = lambda xs: ", ".join(f"{x:.2f}" for x in xs)  # noqa: E731
        rows.append(Row(f"Linux to poweroff, {label}, 1 vCPU: `--accel auto` (unicorn here) vs `-accel tcg`",
                        f"{h:.2f} s ({samples(walls['hvm'])})", f"{q:.2f} s ({samples(walls['qemu'])})",
                        h / q, 1.0 if image == "vmlinux" else 0.5))
    h, q = statistics.median(rss["hvm"]), statistics.median(rss["qemu"])
    rows.append(Row("peak RSS of those Linux boots (unicorn engine vs TCG, 256 MiB guest)",
                    f"{h / 2**20:.1f} MiB", f"{q / 2**20:.1f} MiB", h / q, None))
    return rows


# -- the table ----------------------------------------------------------------------------------

def machine() -> str:
    """One line naming the host: CPU, cores, kernel, KVM flavour, and the versions in play."""
    cpu = "unknown CPU"
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    kvm = "kvm_pvm (nested, paravirtual)" if Path("/sys/module/kvm_pvm").exists() else \
        "kvm" if Path("/sys/module/kvm").exists() else "no KVM"
    sys.path.insert(0, str(base.REPO))
    from hvm.engine import uc_lib

    return (f"{cpu}, {os.cpu_count()} cores, Linux {platform.release()}, {kvm}; Python "
            f"{platform.python_version()}, {uc_lib.describe()}")


def render(rows: list[Row], header: str) -> str:
    lines = [header, "", "| measure | hvm | QEMU | ratio | target | |", "|---|---|---|---|---|---|"]
    for r in rows:
        target = "reported" if r.target is None else f"<= {r.target:g}"
        verdict = "" if r.target is None else "met" if r.passed else "**missed**"
        lines.append(f"| {r.what} | {r.hvm} | {r.peer} | {r.ratio:.2f} | {target} | {verdict} |")
    return "\n".join(lines)


def write_readme(text: str) -> None:
    doc = README.read_text()
    if BEGIN not in doc or END not in doc:
        raise SystemExit(f"speed_table: {README} has no speed-table markers ({BEGIN!r} ... {END!r})")
    head, rest = doc.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    README.write_text(f"{head}{BEGIN}\n{text}\n{END}{tail}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeat", type=int, default=3, metavar="R", help="runs per measurement (medians; default 3)")
    p.add_argument("--timeout", type=float, default=300, help="seconds per Linux boot (default 300)")
    p.add_argument("--write", action="store_true", help="write the table into benchmarks/README.md")
    args = p.parse_args(argv)
    qemu = shutil.which("qemu-system-x86_64")
    missing = [t for t in ("as", "ld") if shutil.which(t) is None]
    if qemu is None or missing or not os.access("/dev/kvm", os.R_OK | os.W_OK):
        base._say("speed_table: needs qemu-system-x86_64, GNU binutils and a usable /dev/kvm")
        return base.EX_ABSENT
    t0 = time.monotonic()
    rows: list[Row] = []
    try:
        with tempfile.TemporaryDirectory(prefix="hvm-speed-") as tmp:
            metrics, _ = base.measure(100_000, args.repeat, qemu, Path(tmp))
            by_name = {m.name.split(")")[0] + ")": m for m in metrics}
            for key, what in (("(a)", "KVM port-I/O write, POST port 0x80 (hvm: queued in KVM, coalesced)"),
                              ("(d)", "KVM port-I/O read, COM1 LSR (a reply each time)")):
                m = by_name[key]
                rows.append(Row(what, f"{m.hvm:.2f} µs", f"{m.qemu:.2f} µs", m.ratio, m.target))
            full = by_name["(a2)"]
            rows.append(Row("KVM port-I/O write exit, fw_cfg 0x510 (every write reaches the VMM)",
                            f"{full.hvm:.2f} µs", f"{full.qemu:.2f} µs", full.ratio, full.target))
            small_rss = by_name["(c)"]

            kernel = engines.build_guest(Path(tmp))
            vmms = {"hvm": engines.hvm_unicorn(kernel), "qemu": engines.qemu_tcg(qemu, kernel)}
            for run in vmms.values():
                run("c 10")
            bench = engines.Bench(vmms, args.repeat, 0.5)
            for measure, what, target in ((engines.interrupts, "unicorn: `int $0x30` + `iretq`", 30.0),
                                          (engines.compute, "unicorn: compute loop (5 instructions)", 2.5)):
                r = measure(bench)
                rows.append(Row(what, f"{_us(r.hvm)}/{r.op_unit}", f"{_us(r.qemu)}/{r.op_unit}", r.ratio, target))
            kvm = engines.hvm_unicorn(kernel, accel="kvm")
            kvm("f 10")
            insn, exit_, _, _ = engines.kvm_fallback(kvm, args.repeat, 0.5)
            rows.append(Row("KVM fallback instruction (`popcnt` at CPL0, run in unicorn) against one "
                            "port-I/O exit (`out` 0x510), both hvm", _us(insn), f"exit {_us(exit_)}",
                            insn / exit_, 3.0))
            rows.append(Row("peak RSS, 64 MiB multiboot guest, KVM (bench_vs_qemu (c))",
                            f"{small_rss.hvm:.1f} MiB", f"{small_rss.qemu:.1f} MiB", small_rss.ratio,
                            small_rss.target))
        rows[3:3] = linux_rows(args.repeat, args.timeout, qemu)
    except (base.BenchError, subprocess.CalledProcessError) as exc:
        base._say(f"speed_table: {exc}")
        return base.EX_BROKEN
    header = (f"Measured {datetime.date.today().isoformat()} by `benchmarks/speed_table.py --repeat "
              f"{args.repeat}` in {time.monotonic() - t0:.0f} s: {machine()}; {base._qemu_version(qemu)}. "
              f"Medians of {args.repeat} runs, alternating hvm and QEMU; ratio = hvm/QEMU (fallback: "
              f"its cost in port-I/O exits), lower is better.")
    text = render(rows, header)
    print(text, flush=True)
    if args.write:
        write_readme(text)
    return base.EX_OK if all(r.passed for r in rows) else base.EX_MISSED


if __name__ == "__main__":
    sys.exit(main())
