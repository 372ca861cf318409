#!/usr/bin/env python3
"""Firmware boots on the PC board: hvm ``-M pc`` against ``qemu-system-x86_64 -accel tcg -machine
pc``, same SeaBIOS, same CD image, same machine, one run.

    python3 benchmarks/bench_pc_boot.py [--repeat R] [--accel unicorn|kvm]

Measured: wall time from process start until GRUB's menu (the ``grub-rescue`` recipe's CD) is on
the VGA text screen. hvm's screen is read through ``machine.screen``; QEMU's by saving the text
buffer at 0xB8000 through its monitor (``pmemsave``) every 50 ms. Runs alternate between the two
VMMs; medians of R repeats. Target hvm/QEMU <= 1.0.
Exit status: 0 within target, 1 not, 2 QEMU absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_vs_qemu import EX_ABSENT, EX_BROKEN, EX_MISSED, EX_OK, REPO, BenchError  # noqa: E402

TARGET = 1.0
SCREEN = "GNU GRUB  version"
LIMIT = 300.0
HVM_CHILD = """
import sys, time
t0 = float(sys.argv[1])
from hvm.config import MachineConfig
from hvm.machine import Machine
m = Machine(MachineConfig(machine="pc", bios=sys.argv[2], accel=sys.argv[4], memory="256M", cdrom=sys.argv[3], boot="d"))
m.start()
while {screen!r} not in m.screen.text():
    if time.time() - t0 > {limit}:
        sys.exit(3)
    time.sleep(0.05)
print(time.time() - t0)
m.stop(); m.wait(); m.close()
""".format(screen=SCREEN, limit=LIMIT)


def _images() -> tuple[Path, Path]:
    sys.path.insert(0, str(REPO))
    import images

    return images.build("seabios") / "bios-256k.bin", images.build("grub-rescue")


def run_hvm(bios: Path, iso: Path, accel: str) -> float:
    """Seconds from starting hvm to GRUB's menu on its screen."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", HVM_CHILD, repr(time.time()), str(bios), str(iso), accel],
                       capture_output=True, text=True, env=env, timeout=LIMIT + 60)
    if r.returncode != 0:
        raise BenchError(f"hvm did not show GRUB's menu: {r.stderr.strip()[-300:]}")
    return float(r.stdout.strip().splitlines()[-1])


def run_qemu(qemu: str, bios: Path, iso: Path) -> float:
    """Seconds from starting QEMU to GRUB's menu in its text buffer."""
    with tempfile.TemporaryDirectory() as tmp:
        sock, dump = os.path.join(tmp, "monitor"), os.path.join(tmp, "text")
        t0 = time.time()
        proc = subprocess.Popen([qemu, "-accel", "tcg", "-machine", "pc", "-m", "256", "-bios", str(bios),
                                 "-cdrom", str(iso), "-boot", "d", "-display", "none", "-serial", "null",
                                 "-monitor", f"unix:{sock},server,nowait"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            while not os.path.exists(sock):
                time.sleep(0.01)
            mon = socket.socket(socket.AF_UNIX)
            mon.connect(sock)
            mon.settimeout(0.05)
            while time.time() - t0 < LIMIT:
                mon.sendall(f"pmemsave 0xb8000 4000 \"{dump}\"\n".encode())
                try:
                    mon.recv(65536)   # the monitor's echo: read, or QEMU stalls on a full socket
                except socket.timeout:
                    pass
                try:
                    text = Path(dump).read_bytes()[::2].decode("cp437")
                except FileNotFoundError:
                    continue
                if SCREEN in text:
                    return time.time() - t0
            raise BenchError("QEMU did not show GRUB's menu")
        finally:
            proc.kill()
            proc.wait()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--accel", default="unicorn", choices=["unicorn", "kvm"])
    args = p.parse_args()
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("qemu-system-x86_64 is not installed", file=sys.stderr)
        return EX_ABSENT
    try:
        bios, iso = _images()
        hvm, peer = [], []
        for _ in range(args.repeat):
            hvm.append(run_hvm(bios, iso, args.accel))
            peer.append(run_qemu(qemu, bios, iso))
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"bench_pc_boot: {exc}", file=sys.stderr)
        return EX_BROKEN
    ratio = statistics.median(hvm) / statistics.median(peer)
    print(f"grub-rescue CD to GRUB's menu: hvm ({args.accel}) {statistics.median(hvm):.2f} s "
          f"{[round(x, 2) for x in hvm]}, QEMU TCG {statistics.median(peer):.2f} s "
          f"{[round(x, 2) for x in peer]}, ratio {ratio:.2f} (target <= {TARGET})")
    return EX_OK if ratio <= TARGET else EX_MISSED


if __name__ == "__main__":
    sys.exit(main())
