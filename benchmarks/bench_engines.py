#!/usr/bin/env python3
"""hvm's unicorn engine against QEMU's TCG: compute speed, port-I/O cost, interrupt cost.

Both VMMs boot the same multiboot guest (engine_loops.S, assembled here with GNU as/ld). It
enters long mode, writes '<' to COM1, runs the loop its command line names ("c N", "o N", "i N"),
writes '>' and ends through isa-debug-exit. As in bench_vs_qemu.py the parent timestamps '<' and
'>' on the VMM's stdout, and each figure is the difference of a run with N iterations and one with
N/10, divided by the iterations between them, so start-up, firmware, teardown and the one-off
translation of the loop all cancel. See benchmarks/README.md.

    python3 benchmarks/bench_engines.py [--repeat R] [--quick]

Exit status: 0 measured, 2 qemu-system-x86_64, binutils or unicorn absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
import bench_vs_qemu as base  # noqa: E402
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_OK, MEMORY, REPO, BenchError, Run  # noqa: E402

# TCG on one thread: the unicorn engine is one vCPU on one thread too.
QEMU_ARGS = ["-accel", "tcg,thread=single", "-machine", "pc", "-m", MEMORY, "-nographic",
             "-nodefaults", "-serial", "stdio", "-display", "none", "-monitor", "none",
             "-no-reboot", "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04"]
EXIT_DONE, EXIT_CHECK_FAILED = 1, 3  # isa-debug-exit 0 and 1: (value << 1) | 1 in both VMMs
TIMEOUT = 300.0                      # seconds per run; the default runs take about one
COMPUTE_INSNS = 5                    # instructions per iteration of the guest's compute loop

GUEST = Path(__file__).resolve().parent / "engine_loops.S"


def build_guest(outdir: Path) -> Path:
    """Assemble and link engine_loops.S as a 32-bit multiboot ELF."""
    obj, elf = outdir / "engines.o", outdir / "engines.elf"
    subprocess.run(["as", "--32", "-o", str(obj), str(GUEST)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "--no-warn-rwx-segments", "-T",
                    str(base.GUESTS / "multiboot.ld"), "-o", str(elf), str(obj)], check=True)
    return elf


# -- the two VMMs ------------------------------------------------------------------------------

Runner = Callable[[str], Run]  # guest command line -> what the VMM showed


def _check(name: str, r: Run) -> Run:
    if r.returncode == EXIT_CHECK_FAILED:
        raise BenchError(f"{name}: the guest's self-check failed (isa-debug-exit 1)\n{r.stderr}")
    if r.returncode != EXIT_DONE:
        raise BenchError(f"{name} exited with {r.returncode} (expected {EXIT_DONE}, isa-debug-exit 0)"
                         f":\n{r.stderr}")
    return r


def hvm_unicorn(kernel: Path, accel: str = "unicorn") -> Runner:
    """Runs the guest under this checkout's hvm with the unicorn engine (or ``accel``)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def run(append: str) -> Run:
        cmd = [sys.executable, "-m", "hvm.cli", "--accel", accel, "-m", MEMORY, "--serial", "stdio",
               "--stats", "--timeout", f"{TIMEOUT:.0f}", "--kernel", str(kernel), "--append", append]
        return _check("hvm", base.run_vmm(cmd, TIMEOUT + 30, grace=30, env=env, cwd=REPO))

    return run


def qemu_tcg(qemu: str, kernel: Path) -> Runner:
    """Runs the guest under `qemu-system-x86_64 -accel tcg`."""
    def run(append: str) -> Run:
        cmd = [qemu, *QEMU_ARGS, "-kernel", str(kernel), "-append", append]
        return _check("qemu", base.run_vmm(cmd, TIMEOUT, grace=10))

    return run


# -- measurements ------------------------------------------------------------------------------

@dataclass
class Row:
    """One line of the table: seconds per operation (medians) under each VMM."""

    name: str
    op_unit: str                 # what one operation is, e.g. "iter", "out"
    hvm: float
    qemu: float
    n: dict[str, int]            # iterations of the large run, per VMM
    hvm_samples: list[float]
    qemu_samples: list[float]
    insns_per_op: int | None = None  # set when instructions per second are worth showing

    @property
    def ratio(self) -> float:
        """hvm time / QEMU time per operation: below 1 means hvm is faster."""
        return self.hvm / self.qemu if self.qemu > 0 else float("inf")


class Bench:
    """What a measurement function needs: the VMMs, the repeat count and the scale of N."""

    def __init__(self, vmms: dict[str, Runner], repeat: int, scale: float):
        self.vmms = vmms
        self.repeat = repeat
        self.scale = scale

    def per_op(self, op: str, n: dict[str, int],
               check: Callable[[str, int, Run], None] | None = None) -> dict[str, list[float]]:
        """Seconds per iteration of guest loop ``op`` under each VMM, one sample per repeat.

        ``n`` is the large iteration count per VMM (already scaled): the binary is the same, but
        an interrupt costs ~1000x more under one than the other, so no single N keeps both runs
        measurable and short. ``check(vmm, iterations, run)`` may inspect each run.
        """
        samples: dict[str, list[float]] = {k: [] for k in self.vmms}
        for i in range(self.repeat):
            # Alternate who goes first, so slow drift on the host (other tenants) hits both.
            order = list(self.vmms) if i % 2 == 0 else list(reversed(self.vmms))
            for name in order:
                big, small = n[name], n[name] // 10
                base._say(f"repeat {i + 1}/{self.repeat}: {name} {op} {big} and {small}")
                runs = {}
                for count in (big, small):
                    runs[count] = self.vmms[name](f"{op} {count}")
                    if check is not None:
                        check(name, count, runs[count])
                samples[name].append((runs[big].start_to_end - runs[small].start_to_end) / (big - small))
        return samples

    def row(self, name: str, op_unit: str, op: str, n: dict[str, int],
            check: Callable[[str, int, Run], None] | None = None, insns_per_op: int | None = None) -> Row:
        """Measure guest loop ``op`` with ``n`` (scaled by --quick) and reduce it to medians."""
        n = {k: max(10, round(v * self.scale)) for k, v in n.items()}
        s = self.per_op(op, n, check)
        return Row(name, op_unit, statistics.median(s["hvm"]), statistics.median(s["qemu"]), n,
                   s["hvm"], s["qemu"], insns_per_op)


# Each measurement is one function of a Bench returning a Row; MEASUREMENTS runs them in order.
# N per VMM is chosen so the large run's loop lasts ~1 s here (--quick: a quarter of that).

def compute(bench: Bench) -> Row:
    """(1) A register-only arithmetic loop: how fast translated code runs."""
    return bench.row(f"(1) compute loop, {COMPUTE_INSNS} insns/iter", "iter", "c",
                     {"hvm": 150_000_000, "qemu": 500_000_000}, insns_per_op=COMPUTE_INSNS)


def port_io(bench: Bench) -> Row:
    """(2) `out` to port 0x80: one trip from translated code to the VMM's port bus and back."""
    def check(vmm: str, count: int, r: Run) -> None:
        # Every out must have reached hvm's POST device, or we timed something else.
        if vmm != "hvm":
            return
        m = re.search(r"^\s+post\s+(\d+)$", r.stderr, re.M)
        if m is None or int(m.group(1)) != count:
            raise BenchError(f"hvm: expected {count} writes to the POST port, --stats says:\n{r.stderr}")

    return bench.row("(2) port-I/O exit, out 0x80", "out", "o",
                     {"hvm": 1_000_000, "qemu": 20_000_000}, check=check)


def interrupts(bench: Bench) -> Row:
    """(3) `int $0x30` to a handler that does iretq: one exception delivery and return."""
    # With hvm's rebuilt unicorn the CPU delivers it itself, as fast as QEMU; on PyPI's library hvm
    # delivers each one in Python, ~1000 times slower, so its run is that much shorter.
    from hvm.engine import uc_lib

    native = uc_lib.patched_dir() is not None and not any(
        os.environ.get(v) for v in ("HVM_STOCK_UNICORN", "HVM_UNICORN_PY_EVENTS"))
    n = 3_000_000 if native else 2_000
    return bench.row("(3) int $0x30 + iretq", "int", "i", {"hvm": n, "qemu": 3_000_000})


def kvm_fallback(kvm: Runner, repeat: int, scale: float) -> tuple[float, float, list[float], list[float]]:
    """(4) Under KVM: one instruction KVM's emulator refuses (popcnt at CPL0, executed by hvm's
    unicorn fallback) and one port-I/O exit (`out` to fw_cfg's selector: POST writes are queued
    in the kernel under KVM and exit only when the queue fills), both hvm on KVM: (fallback,
    exit, samples...)."""
    bench = Bench({"hvm": kvm}, repeat, scale)
    n = max(100, round(20_000 * scale))
    fallback = bench.per_op("p", {"hvm": n})["hvm"]
    port = bench.per_op("f", {"hvm": n})["hvm"]
    return statistics.median(fallback), statistics.median(port), fallback, port


MEASUREMENTS: list[Callable[[Bench], Row]] = [compute, port_io, interrupts]


# -- output ------------------------------------------------------------------------------------

def _time(seconds: float) -> str:
    for unit, scale in (("ns", 1e-9), ("µs", 1e-6), ("ms", 1e-3)):
        if abs(seconds) < 1000 * scale:
            return f"{seconds / scale:.3g} {unit}"
    return f"{seconds:.3g} s"


def _figure(seconds: float, row: Row) -> str:
    text = f"{_time(seconds)}/{row.op_unit}"
    if row.insns_per_op:
        text += f" ({row.insns_per_op / seconds / 1e6:,.0f} M insn/s)" if seconds > 0 else " (?)"
    return text


def table(rows: list[Row]) -> str:
    """The result table; the ratio is always time per operation, hvm over QEMU."""
    lines = [("measurement", "hvm (unicorn)", "QEMU (TCG)", "hvm/QEMU")]
    for r in rows:
        lines.append((r.name, _figure(r.hvm, r), _figure(r.qemu, r), f"{r.ratio:.2f}"))
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]))]
    text = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths)))
            for line in lines]
    text.insert(1, "-" * len(text[0]))
    return "\n".join(text)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status described in the module docstring."""
    p = argparse.ArgumentParser(description="hvm's unicorn engine vs qemu-system-x86_64 -accel tcg: "
                                            "compute speed, port-I/O exit and interrupt cost.")
    p.add_argument("--repeat", type=int, metavar="R",
                   help="runs per measurement and VMM; the medians are reported (default 5, --quick 3)")
    p.add_argument("--quick", action="store_true", help="a quarter of the iterations, 3 repeats")
    p.add_argument("--qemu", default="qemu-system-x86_64", metavar="PATH", help="QEMU binary to compare with")
    args = p.parse_args(argv)
    repeat = args.repeat if args.repeat is not None else 3 if args.quick else 5
    if repeat < 1:
        p.error("--repeat must be at least 1")

    qemu = shutil.which(args.qemu)
    if qemu is None:
        base._say(f"bench_engines: {args.qemu} not found; install it (Debian: apt-get install qemu-system-x86)")
        return EX_ABSENT
    missing = [t for t in ("as", "ld") if shutil.which(t) is None]
    if missing:
        base._say(f"bench_engines: GNU binutils needed to build the guest ({', '.join(missing)} missing; "
                  f"Debian: apt-get install binutils)")
        return EX_ABSENT
    if importlib.util.find_spec("unicorn") is None:
        base._say("bench_engines: the unicorn Python package is missing (pip install unicorn==2.1.4)")
        return EX_ABSENT

    t0 = time.monotonic()
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="hvm-bench-") as tmp:
            kernel = build_guest(Path(tmp))
            vmms = {"hvm": hvm_unicorn(kernel), "qemu": qemu_tcg(qemu, kernel)}
            # One untimed run each: page cache, dynamic linker and bytecode caches warm for both.
            for name, run in vmms.items():
                base._say(f"warm-up: {name}")
                run("c 10")
            scale = 0.25 if args.quick else 1.0
            bench = Bench(vmms, repeat, scale)
            for measure in MEASUREMENTS:
                rows.append(measure(bench))
            fallback = None
            if os.access("/dev/kvm", os.R_OK | os.W_OK):
                base._say("warm-up: hvm --accel kvm")
                kvm = hvm_unicorn(kernel, accel="kvm")
                kvm("o 10")
                fallback = kvm_fallback(kvm, repeat, scale)
    except (BenchError, subprocess.CalledProcessError) as exc:
        base._say(f"bench_engines: {exc}")
        return EX_BROKEN
    elapsed = time.monotonic() - t0

    text = [table(rows), "",
            "hvm/QEMU: time per operation under hvm over that under QEMU (lower is better for hvm).",
            f"{repeat} repeats (medians), {base._qemu_version(qemu)}, {elapsed:.0f} s in all; "
            f"samples per operation, and N of the large run (the small one is N/10):"]
    for r in rows:
        text.append(f"  {r.name}: hvm {[_time(x) for x in r.hvm_samples]} N={r.n['hvm']:,}; "
                    f"qemu {[_time(x) for x in r.qemu_samples]} N={r.n['qemu']:,}")
    if fallback is not None:
        insn, port, insn_samples, port_samples = fallback
        text += ["", f"(4) hvm --accel kvm: one instruction KVM's emulator refuses (popcnt at CPL0, run by the "
                     f"unicorn fallback) {_time(insn)}, one port-I/O exit (out 0x510) {_time(port)}: "
                     f"fallback/exit = {insn / port:.1f}",
                 f"  samples: fallback {[_time(x) for x in insn_samples]}; exit {[_time(x) for x in port_samples]}"]
    else:
        text += ["", "(4) skipped: /dev/kvm is not usable here"]
    print("\n".join(text), flush=True)
    return EX_OK


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` should end us quietly
    sys.exit(main())
