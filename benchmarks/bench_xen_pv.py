#!/usr/bin/env python3
"""Xen PV hypercalls under each of hvm's engines, against the same engine's port-I/O exit.

Per engine (unicorn; KVM when /dev/kvm is usable), one run each of:
  (1) a port-I/O exit: tests/guests/outloop.S (as bench_vs_qemu.py boots it) with N `out`s to
      fw_cfg's selector port (0x510) and with none, timed from '<' to '>' on COM1;
  (2) a hypercall round trip: tests/guests/pvbench64.S making N xen_version(XENVER_version)
      calls, and none, timed from '<' to '>' on the PV console (console_io);
  (3) page-table updates: pvbench64.S making B mmu_update calls of E entries each (every one a
      real remap, validated), against the empty run.
Each figure is (time of the run - time of the empty run) / operations. The hypercall is also
shown as a multiple of the engine's port-I/O exit: on KVM every hypercall is a trip from the
guest's ring 3 through hvm's ring 0 (paravirt/ring0.py), under unicorn a SYSCALL hook.

    python3 benchmarks/bench_xen_pv.py [--count N] [--batches B] [--entries E] [--accel ENGINE]

Self-checks: --stats must show exactly N xen_version and B mmu_update hypercalls (the guest
checks every answer and crashes the domain on a wrong one), and N more `out` exits than the empty run.
Exit status: 0 measured, 2 binutils absent, 3 a run went wrong. See benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # importable however we are started
import bench_vs_qemu as base  # noqa: E402
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_OK, MEMORY, REPO, BenchError, Run  # noqa: E402

TIMEOUT_PER_OP = 2e-3        # seconds allowed per hypercall or exit (~10x the slowest measured)


def build_pvbench(outdir: Path, count: int = 0, batches: int = 0, entries: int = 0) -> Path:
    """Assemble and link pvbench64.S with its loop counts (an ELF64 with Xen's notes)."""
    tag = f"pvbench-{count}-{batches}-{entries}"
    obj, elf = outdir / f"{tag}.o", outdir / f"{tag}.elf"
    defs = [a for k, v in (("COUNT", count), ("BATCHES", batches), ("ENTRIES", entries))
            for a in ("--defsym", f"{k}={v}")]
    subprocess.run(["as", "--64", *defs, "-I", str(base.GUESTS), "-o", str(obj),
                    str(base.GUESTS / "pvbench64.S")], check=True)
    subprocess.run(["ld", "--no-warn-rwx-segments", "-T", str(base.GUESTS / "multiboot.ld"),
                    "-o", str(elf), str(obj)], check=True)
    return elf


def run_hvm(accel: str, kernel: Path, ops: int, pv: bool) -> Run:
    """One hvmrun of ``kernel`` under ``accel``; it must power off (exit 0)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    timeout = 60 + ops * TIMEOUT_PER_OP
    cmd = [sys.executable, "-m", "hvm.cli", *(["-M", "xenpv"] if pv else []), "--accel", accel,
           "-m", MEMORY, "--serial", "stdio", "--stats", "--timeout", f"{timeout:.0f}", "--kernel", str(kernel)]
    r = base.run_vmm(cmd, timeout + 30, grace=30, env=env, cwd=REPO)
    if r.returncode != 0:
        raise BenchError(f"hvm --accel {accel} {kernel.name} exited with {r.returncode} (expected 0, "
                         f"poweroff):\n{r.stderr}")
    return r


def io_outs(stats: str) -> int:
    """The IoOut exits hvm's --stats counted (each `out` the guest made, whoever served it)."""
    m = re.search(r"^\s*IoOut\s+(\d+)", stats, re.MULTILINE)
    return int(m.group(1)) if m else 0


def hypercall_count(stats: str, name: str) -> int:
    """How many ``name`` hypercalls hvm's --stats line 'xen pv: hypercalls: ...' counted."""
    m = re.search(rf"xen pv: hypercalls:.*\b{name} (\d+)", stats)
    return int(m.group(1)) if m else 0


@dataclass
class Figures:
    """One engine's results, seconds per operation."""

    engine: str
    exit: float
    hypercall: float
    batch: float
    entries: int

    def lines(self) -> list[str]:
        return [f"{self.engine}:",
                f"  (1) port-I/O exit (`out` to port 0x510)       {self.exit * 1e6:9.2f} µs",
                f"  (2) xen_version hypercall round trip           {self.hypercall * 1e6:9.2f} µs"
                f"   = {self.hypercall / self.exit:.1f} port-I/O exits",
                f"  (3) mmu_update of {self.entries} entries                   {self.batch * 1e6:9.1f} µs"
                f"   = {self.batch / self.entries * 1e6:.2f} µs per entry, "
                f"{self.entries / self.batch:,.0f} entries/s"]


def measure(engine: str, count: int, batches: int, entries: int, workdir: Path) -> Figures:
    """The three figures for ``engine``: each run once, against its empty run."""
    out_empty, out_loop = base.build_outloop(0, workdir), base.build_outloop(count, workdir)
    pv_empty = build_pvbench(workdir)
    pv_calls = build_pvbench(workdir, count=count)
    pv_mmu = build_pvbench(workdir, batches=batches, entries=entries)

    base._say(f"{engine}: port I/O, {count} exits and none")
    empty, loop = run_hvm(engine, out_empty, 0, pv=False), run_hvm(engine, out_loop, count, pv=False)
    if io_outs(loop.stderr) - io_outs(empty.stderr) != count:
        raise BenchError(f"{engine}: --stats shows {io_outs(loop.stderr) - io_outs(empty.stderr)} more `out`s "
                         f"than the empty run, not {count}")
    exit_cost = (loop.start_to_end - empty.start_to_end) / count

    base._say(f"{engine}: {count} xen_version hypercalls and none")
    pv0, calls = run_hvm(engine, pv_empty, 0, pv=True), run_hvm(engine, pv_calls, count, pv=True)
    if hypercall_count(calls.stderr, "xen_version") != count:
        raise BenchError(f"{engine}: --stats shows {hypercall_count(calls.stderr, 'xen_version')} "
                         f"xen_version hypercalls, not {count}:\n{calls.stderr}")
    hypercall = (calls.start_to_end - pv0.start_to_end) / count

    base._say(f"{engine}: {batches} mmu_update calls of {entries} entries")
    mmu = run_hvm(engine, pv_mmu, batches * entries, pv=True)
    want = batches + batches % 2           # an odd number of batches maps the window back once more
    if hypercall_count(mmu.stderr, "mmu_update") != want:
        raise BenchError(f"{engine}: --stats shows {hypercall_count(mmu.stderr, 'mmu_update')} "
                         f"mmu_update hypercalls, not {want}:\n{mmu.stderr}")
    batch = (mmu.start_to_end - pv0.start_to_end) / want
    return Figures(engine, exit_cost, hypercall, batch, entries)


def kvm_usable() -> str | None:
    """None if hvm can run a VM on /dev/kvm here, else why not."""
    sys.path.insert(0, str(REPO))
    from hvm.host import kvm_problem

    return kvm_problem("/dev/kvm")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit status described in the module docstring."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--count", type=int, default=100_000, metavar="N",
                   help="hypercalls, and port-I/O exits, per run (default 100000)")
    p.add_argument("--batches", type=int, default=1000, metavar="B", help="mmu_update calls (default 1000)")
    p.add_argument("--entries", type=int, default=64, metavar="E",
                   help="page-table updates per mmu_update call, 1-64 (default 64)")
    p.add_argument("--accel", choices=("unicorn", "kvm", "both"), default="both",
                   help="engine(s) to measure (default both; KVM only where /dev/kvm works)")
    args = p.parse_args(argv)
    if args.count < 1 or args.batches < 1 or not 1 <= args.entries <= 64:
        p.error("--count and --batches must be at least 1, --entries 1 to 64")
    missing = [t for t in ("as", "ld") if shutil.which(t) is None]
    if missing:
        base._say(f"bench_xen_pv: GNU binutils needed to build the guests ({', '.join(missing)} missing)")
        return EX_ABSENT
    engines = ["unicorn", "kvm"] if args.accel == "both" else [args.accel]
    if "kvm" in engines:
        problem = kvm_usable()
        if problem is not None:
            if args.accel == "kvm":
                base._say(f"bench_xen_pv: {problem}")
                return EX_BROKEN
            base._say(f"bench_xen_pv: KVM skipped: {problem}")
            engines.remove("kvm")
    results = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-xen-pv-") as tmp:
            for engine in engines:
                results.append(measure(engine, args.count, args.batches, args.entries, Path(tmp)))
    except (BenchError, subprocess.CalledProcessError) as exc:
        base._say(f"bench_xen_pv: {exc}")
        return EX_BROKEN
    print(f"Xen PV on hvm, one run each: {args.count} hypercalls and port-I/O exits, "
          f"{args.batches} mmu_update calls of {args.entries} entries")
    for figures in results:
        print("\n".join(figures.lines()))
    if len(results) == 2:
        u, k = results
        print(f"KVM / unicorn: hypercall {k.hypercall / u.hypercall:.2f}, mmu_update {k.batch / u.batch:.2f} "
              f"(below 1: KVM is faster)")
    return EX_OK


if __name__ == "__main__":
    sys.exit(main())
