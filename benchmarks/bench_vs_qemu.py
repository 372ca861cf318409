#!/usr/bin/env python3
"""hvm and QEMU side by side: port-I/O exit costs, time to the first serial byte, peak RSS.

Both VMMs boot the same multiboot guest (tests/guests/outloop.S): it writes '<' to COM1, makes
COUNT accesses to one port (`out` to the POST port 0x80, `out` to fw_cfg's selector 0x510, `in`
from COM1's line status 0x3FD), writes '>' and powers off through ACPI PM1a_CNT (0x604).
The parent timestamps the '<' and '>' bytes as they arrive on the VMM's stdout pipe, so startup,
firmware and teardown costs drop out of the exit measurement. See benchmarks/README.md.

    python3 benchmarks/bench_vs_qemu.py [--count N] [--repeat R] [--json]

Exit status: 0 every target met, 1 a target missed, 2 qemu-system-x86_64 (or binutils) absent,
3 a run went wrong (no '<'/'>' on the serial line, hvm failed, ...).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

REPO = Path(__file__).resolve().parent.parent

# hvm is timed as an installed Python package runs: with its bytecode cached (pip compiles it at
# install time, an editable checkout on first run). An environment that turns the cache off
# (PYTHONDONTWRITEBYTECODE, as some sandboxes do) would add ~0.1 s of compiling to every hvm run
# here; every benchmark imports this module, so none of the VMMs they start inherits it.
os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
GUESTS = REPO / "tests" / "guests"
MEMORY = "64M"
START_BYTE, END_BYTE = b"<", b">"

EX_OK, EX_MISSED, EX_ABSENT, EX_BROKEN = 0, 1, 2, 3

# QEMU as the brief prescribes: the pc machine (its PIIX4 PM block is at 0x600, so the guest's
# 0x604 write powers it off once SeaBIOS has enabled it), no default devices, COM1 on stdio.
QEMU_ARGS = ["-enable-kvm", "-machine", "pc", "-m", MEMORY, "-nographic", "-nodefaults",
             "-serial", "stdio", "-display", "none", "-no-reboot"]


class BenchError(RuntimeError):
    """A run that produced no usable measurement."""


@dataclass
class Run:
    """What one VMM process showed the parent."""

    to_start: float              # seconds from just before Popen to the arrival of '<'
    start_to_end: float          # seconds from '<' to '>'
    peak_rss: int                # bytes: ru_maxrss from wait4, the kernel's high-water mark
    hwm_at_end: int | None       # bytes: VmHWM read from /proc right after '>' (None if already gone)
    returncode: int
    killed: bool                 # still alive after the grace period, so we killed it
    stderr: str = field(repr=False, default="")


@dataclass
class Metric:
    """One row of the table: medians of both VMMs, their ratio and the target it must meet."""

    name: str
    unit: str
    hvm: float
    qemu: float
    target: float
    hvm_samples: list[float]
    qemu_samples: list[float]

    @property
    def ratio(self) -> float:
        """hvm / QEMU; below 1 means hvm is cheaper."""
        return self.hvm / self.qemu if self.qemu else float("inf")

    @property
    def passed(self) -> bool:
        """Whether the ratio meets the target (lower is better for every metric)."""
        return self.ratio <= self.target


# -- guests ------------------------------------------------------------------------------------

def build_outloop(count: int, outdir: Path, port: int = 0x510, read: bool = False) -> Path:
    """Assemble and link the outloop guest (COUNT accesses to ``port``) as a 32-bit multiboot ELF."""
    # ELF32 on purpose: QEMU's -kernel refuses ELF64 multiboot images.
    stem = outdir / f"outloop-{count}-{port:x}-{'in' if read else 'out'}"
    obj, elf = stem.with_suffix(".o"), stem.with_suffix(".elf")
    subprocess.run(["as", "--32", "--defsym", f"COUNT={count}", "--defsym", f"PORT={port}",
                    "--defsym", f"READ={int(read)}", "-I", str(GUESTS), "-o", str(obj),
                    str(GUESTS / "outloop.S")], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "--no-warn-rwx-segments", "-T", str(GUESTS / "multiboot.ld"),
                    "-o", str(elf), str(obj)], check=True)
    return elf


@dataclass(frozen=True)
class Loop:
    """One port-access loop measured per access: the guest's port and direction, the device
    hvm's --stats must show with COUNT accesses (plus ``extra``), and the ratio's target."""

    key: str
    port: int
    read: bool
    device: str
    target: float
    extra: int = 0


LOOPS = (
    # POST codes: a write nobody waits on; hvm has KVM queue them (coalesced I/O), QEMU exits.
    Loop("(a) port-I/O write, POST port 0x80", 0x80, False, "post", 0.90),
    # fw_cfg's selector: a write every VMM must see at once, so both take the full exit.
    Loop("(a2) port-I/O write exit, fw_cfg 0x510", 0x510, False, "fw_cfg", 1.10),
    # COM1's line status, which a guest polls before each byte it prints: a reply each time.
    Loop("(d) port-I/O read, COM1 LSR 0x3fd", 0x3FD, True, "com1", 1.00, extra=2),
)


# -- one run -----------------------------------------------------------------------------------

def _vm_hwm(pid: int) -> int | None:
    # Best effort: the process may have exited (hvm powers off microseconds after '>').
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return None


def _reap(proc: subprocess.Popen, fd: int, grace: float) -> tuple[int, int, bool]:
    """Wait up to ``grace`` s for the child to exit (draining its stdout), then kill it; wait4 it.

    Returns (wait status, ru_maxrss in bytes, killed). wait4 rather than Popen.wait: its rusage
    gives the same kernel peak-RSS figure for both VMMs, taken after the process can grow no more.
    """
    deadline = time.monotonic() + grace
    killed = False
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() >= deadline:
            proc.kill()
            killed = True
            _, status, usage = os.wait4(proc.pid, 0)
            break
        # Keep the pipe drained so a chatty VMM cannot block on a full pipe and look hung.
        if select.select([fd], [], [], 0.005)[0]:
            os.read(fd, 65536)
    proc.returncode = os.waitstatus_to_exitcode(status)  # tell Popen it is reaped
    return status, usage.ru_maxrss * 1024, killed


def run_vmm(cmd: list[str], timeout: float, grace: float, env: dict[str, str] | None = None,
            cwd: Path | None = None) -> Run:
    """Start a VMM, timestamp '<' and '>' as they arrive on its stdout, then reap it."""
    with tempfile.TemporaryFile() as err:  # a file, not a pipe: stderr can never block the VMM
        t0 = time.perf_counter()
        # Own session: a Ctrl-C at the terminal reaches only us, and we kill the child cleanly.
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=env, cwd=cwd, bufsize=0, start_new_session=True)
        fd = proc.stdout.fileno()
        seen = bytearray()
        t_start = t_end = None
        start_at = -1
        hwm = None
        try:
            while t_end is None:
                left = t0 + timeout - time.perf_counter()
                if left <= 0:
                    raise BenchError(f"no '>' within {timeout:.0f} s")
                if not select.select([fd], [], [], left)[0]:
                    continue
                chunk = os.read(fd, 65536)
                now = time.perf_counter()  # right after the read: the byte's arrival time
                if not chunk:
                    raise BenchError("the VMM closed its stdout before '>'")
                seen += chunk
                # Firmware (SeaBIOS under QEMU) prints first; the guest's bytes are the first '<'
                # and the first '>' after it.
                if t_start is None:
                    start_at = seen.find(START_BYTE)
                    if start_at >= 0:
                        t_start = now
                if t_start is not None and seen.find(END_BYTE, start_at + 1) >= 0:
                    t_end = now
            hwm = _vm_hwm(proc.pid)
            status, maxrss, killed = _reap(proc, fd, grace)
        except BaseException as exc:
            if proc.returncode is None:
                proc.kill()
                proc.wait()
            err.seek(0)
            if isinstance(exc, BenchError):
                raise BenchError(f"{' '.join(cmd)}: {exc}; stdout {bytes(seen[-300:])!r}; "
                                 f"stderr {err.read()[-800:]!r}") from None
            raise
        finally:
            proc.stdout.close()
        err.seek(0)
        return Run(t_start - t0, t_end - t_start, maxrss, hwm, proc.returncode, killed,
                   err.read().decode(errors="replace"))


# -- the two VMMs ------------------------------------------------------------------------------

def hvm_runner(timeout: float) -> Callable[[Path], Run]:
    """A function running one guest under this checkout's hvm (`python3 -m hvm.cli`)."""
    env = dict(os.environ)
    # Benchmark the checkout next to this script, whatever hvm may be installed elsewhere.
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))

    def run(kernel: Path) -> Run:
        cmd = [sys.executable, "-m", "hvm.cli", "-m", MEMORY, "--serial", "stdio", "--stats",
               "--timeout", f"{timeout:.0f}", "--kernel", str(kernel)]
        r = run_vmm(cmd, timeout + 30, grace=30, env=env, cwd=REPO)
        if r.returncode != 0:
            raise BenchError(f"hvm exited with {r.returncode} (expected 0, ACPI power-off):\n{r.stderr}")
        return r

    return run


def qemu_runner(qemu: str, timeout: float) -> Callable[[Path], Run]:
    """A function running one guest under `qemu-system-x86_64 -enable-kvm -kernel`."""
    def run(kernel: Path) -> Run:
        # QEMU normally exits by itself on the 0x604 write; the grace period only bounds a QEMU
        # that does not (the timestamps were taken already, so killing it changes nothing).
        return run_vmm([qemu, *QEMU_ARGS, "-kernel", str(kernel)], timeout, grace=10)

    return run


def hvm_accesses(stats: str, device: str) -> int | None:
    """``device``'s count under 'port I/O by device' in hvm's --stats output."""
    m = re.search(rf"^\s+{re.escape(device)}\s+(\d+)$", stats, re.MULTILINE)
    return int(m.group(1)) if m else None


# -- the benchmark -----------------------------------------------------------------------------

def _say(msg: str) -> None:
    sys.stderr.write(msg + "\n")
    sys.stderr.flush()


def measure(count: int, repeat: int, qemu: str, workdir: Path) -> tuple[list[Metric], dict]:
    """Run every loop's guests under both VMMs ``repeat`` times, alternating, and reduce to metrics."""
    kernels = {loop.key: (build_outloop(0, workdir, loop.port, loop.read),
                          build_outloop(count, workdir, loop.port, loop.read)) for loop in LOOPS}
    timeout = 120 + count * 200e-6  # generous: ~10 µs per exit on a nested host, 20x headroom
    vmms = {"hvm": hvm_runner(timeout), "qemu": qemu_runner(qemu, timeout)}
    runs: dict[str, dict[str, dict[str, list[Run]]]] = {
        v: {loop.key: {"0": [], "N": []} for loop in LOOPS} for v in vmms}
    notes: dict = {"qemu_killed": 0, "hvm_count_mismatch": []}

    # One untimed run each: page cache, dynamic linker and Python bytecode caches warm for both.
    for name, run in vmms.items():
        _say(f"warm-up: {name}")
        run(kernels[LOOPS[0].key][0])

    for i in range(repeat):
        # Alternate who goes first, so slow drift on the host (thermal, other tenants) hits both.
        order = list(vmms) if i % 2 == 0 else list(reversed(vmms))
        for name in order:
            for loop in LOOPS:
                for tag, kernel in zip(("0", "N"), kernels[loop.key]):
                    n = count if tag == "N" else 0
                    _say(f"repeat {i + 1}/{repeat}: {name} {loop.key} COUNT={n}")
                    r = vmms[name](kernel)
                    runs[name][loop.key][tag].append(r)
                    notes["qemu_killed"] += name == "qemu" and r.killed
                    if name == "hvm":
                        # Each access must have reached hvm's device, else we timed something else.
                        got = hvm_accesses(r.stderr, loop.device) or 0
                        if got != n + loop.extra:
                            notes["hvm_count_mismatch"].append((loop.device, n + loop.extra, got))

    def per_access(name: str, key: str) -> list[float]:
        # Pair each COUNT=N run with the COUNT=0 run of the same repeat: adjacent in time.
        rs = runs[name][key]
        return [(n.start_to_end - z.start_to_end) / count * 1e6 for n, z in zip(rs["N"], rs["0"])]

    def every(name: str) -> list[Run]:
        return [r for loop in LOOPS for tag in ("0", "N") for r in runs[name][loop.key][tag]]

    def to_start(name: str) -> list[float]:
        return [r.to_start for loop in LOOPS for r in runs[name][loop.key]["0"]]

    def rss(name: str) -> list[float]:
        return [r.peak_rss / 2**20 for r in every(name)]

    metrics = []
    for loop in LOOPS:
        h, q = per_access("hvm", loop.key), per_access("qemu", loop.key)
        metrics.append(Metric(loop.key, "us", statistics.median(h), statistics.median(q), loop.target, h, q))
    for key, unit, fn, target in (("(b) start to first serial byte", "s", to_start, 0.5),
                                  ("(c) peak VMM RSS, 64 MiB guest", "MiB", rss, 0.5)):
        h, q = fn("hvm"), fn("qemu")
        metrics.append(Metric(key, unit, statistics.median(h), statistics.median(q), target, h, q))

    notes["hwm_at_end_mib"] = {
        name: [None if r.hwm_at_end is None else round(r.hwm_at_end / 2**20, 1) for r in every(name)]
        for name in vmms}
    notes["start_to_end_s"] = {name: {key: {tag: [round(r.start_to_end, 6) for r in rs]
                                            for tag, rs in by_tag.items()}
                                      for key, by_tag in by_loop.items()}
                               for name, by_loop in runs.items()}
    notes["hvm_stats_last"] = runs["hvm"][LOOPS[-1].key]["N"][-1].stderr.strip().splitlines()
    return metrics, notes


def _fmt(value: float, unit: str) -> str:
    return {"us": f"{value:.2f} µs", "s": f"{value:.3f} s", "MiB": f"{value:.1f} MiB"}[unit]


def table(metrics: list[Metric]) -> str:
    """The human-readable result table."""
    rows = [("metric", "hvm", "qemu", "ratio", "target", "result")]
    for m in metrics:
        rows.append((m.name, _fmt(m.hvm, m.unit), _fmt(m.qemu, m.unit), f"{m.ratio:.2f}",
                     f"<= {m.target:.2f}", "pass" if m.passed else "FAIL"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in rows]
    lines.insert(1, "-" * len(lines[0]))
    return "\n".join(lines)


def _qemu_version(qemu: str) -> str:
    out = subprocess.run([qemu, "--version"], capture_output=True, text=True).stdout
    return out.splitlines()[0] if out else "unknown"


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status described in the module docstring."""
    p = argparse.ArgumentParser(description="hvm vs qemu-system-x86_64 (KVM): exit cost, startup, RSS.")
    p.add_argument("--count", type=int, default=100_000, metavar="N",
                   help="port accesses in each loop guest (default 100000)")
    p.add_argument("--repeat", type=int, default=5, metavar="R", help="runs per measurement (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print JSON results on stdout (the table then goes to stderr)")
    p.add_argument("--qemu", default="qemu-system-x86_64", metavar="PATH", help="QEMU binary to compare with")
    args = p.parse_args(argv)
    if args.count < 1 or args.repeat < 1:
        p.error("--count and --repeat must be at least 1")

    qemu = shutil.which(args.qemu)
    if qemu is None:
        _say(f"bench_vs_qemu: {args.qemu} not found; install it (Debian: apt-get install qemu-system-x86)")
        return EX_ABSENT
    missing = [t for t in ("as", "ld") if shutil.which(t) is None]
    if missing:
        _say(f"bench_vs_qemu: GNU binutils needed to build the guest ({', '.join(missing)} missing)")
        return EX_ABSENT

    t0 = time.monotonic()
    try:
        with tempfile.TemporaryDirectory(prefix="hvm-bench-") as tmp:
            metrics, notes = measure(args.count, args.repeat, qemu, Path(tmp))
    except (BenchError, subprocess.CalledProcessError) as exc:
        _say(f"bench_vs_qemu: {exc}")
        return EX_BROKEN
    elapsed = time.monotonic() - t0

    text = [table(metrics), "",
            f"COUNT={args.count}, {args.repeat} repeats (medians), {_qemu_version(qemu)}, "
            f"{elapsed:.0f} s in all",
            *(f"{m.name.split(')')[0]}) samples, µs: hvm {[round(x, 2) for x in m.hvm_samples]}, "
              f"qemu {[round(x, 2) for x in m.qemu_samples]}" for m in metrics if m.unit == "us")]
    if notes["qemu_killed"]:
        text.append(f"note: QEMU did not exit on the 0x604 power-off {notes['qemu_killed']} time(s); "
                    f"killed after '>' (timestamps unaffected)")
    if notes["hvm_count_mismatch"]:
        text.append(f"warning: hvm's --stats access counts differed from the guest's (device, want, got): "
                    f"{notes['hvm_count_mismatch']}")
    out = sys.stderr if args.json else sys.stdout
    print("\n".join(text), file=out, flush=True)
    if args.json:
        json.dump({"count": args.count, "repeat": args.repeat, "qemu": _qemu_version(qemu),
                   "elapsed_s": round(elapsed, 1),
                   "metrics": [{**{k: v for k, v in asdict(m).items()}, "ratio": m.ratio, "pass": m.passed}
                               for m in metrics],
                   "notes": notes}, sys.stdout, indent=2)
        print()
    return EX_OK if all(m.passed for m in metrics) else EX_MISSED


if __name__ == "__main__":
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)  # `| head` should end us quietly
    sys.exit(main())
