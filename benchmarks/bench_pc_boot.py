#!/usr/bin/env python3
"""Firmware boots on the PC board: hvm ``-M pc`` against ``qemu-system-x86_64 -machine pc``, same
SeaBIOS, same CD image, same machine, one run.

    python3 benchmarks/bench_pc_boot.py [--repeat R] [--accel unicorn|kvm] [--peer-accel tcg|kvm]
                                        [--only grub|linux]

Measured, wall time from process start:
- grub: until GRUB's menu (the ``grub-rescue`` recipe's CD) is on the VGA text screen. hvm's
  screen is read through ``machine.screen``; QEMU's by saving the text buffer at 0xB8000 through
  its monitor (``pmemsave``) every 50 ms.
- linux: hvm's own ISO (the ``linux-iso`` recipe: SeaBIOS, GRUB, Debian's kernel, busybox) from
  the CD to its shell on COM1, where ``exit`` is typed, to the VMM's exit after ACPI power-off.
Runs alternate between the two VMMs; medians of R repeats. Target hvm/QEMU <= 1.0 for each.
Exit status: 0 within target, 1 not, 2 QEMU absent, 3 a run went wrong.
"""
from __future__ import annotations

import argparse
import os
import selectors
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


PROMPT = b"/ # "


def _image(recipe: str) -> Path:
    sys.path.insert(0, str(REPO))
    import images

    return images.build(recipe)


def run_to_poweroff(argv: list[str], env: dict | None = None) -> float:
    """Seconds from starting ``argv`` (its serial port on stdin/stdout) until it exits, having
    typed ``exit`` at the guest's shell prompt."""
    t0 = time.time()
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            env=env)
    seen, typed = b"", False
    try:
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        while time.time() - t0 < LIMIT:
            if not sel.select(timeout=1.0):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                break
            seen = (seen + chunk)[-4096:]
            if not typed and PROMPT in seen:
                proc.stdin.write(b"exit\n")
                proc.stdin.flush()
                typed = True
        code = proc.wait(timeout=max(1.0, LIMIT - (time.time() - t0)))
    except subprocess.TimeoutExpired:
        raise BenchError(f"{argv[0]} did not power off within {LIMIT:.0f} s") from None
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    if not typed or code != 0:
        raise BenchError(f"{Path(argv[0]).name} ended with {code} (shell {'reached' if typed else 'not reached'}): "
                         f"{seen[-300:]!r}")
    return time.time() - t0


def run_hvm(bios: Path, iso: Path, accel: str) -> float:
    """Seconds from starting hvm to GRUB's menu on its screen."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    r = subprocess.run([sys.executable, "-c", HVM_CHILD, repr(time.time()), str(bios), str(iso), accel],
                       capture_output=True, text=True, env=env, timeout=LIMIT + 60)
    if r.returncode != 0:
        raise BenchError(f"hvm did not show GRUB's menu: {r.stderr.strip()[-300:]}")
    return float(r.stdout.strip().splitlines()[-1])


def run_qemu(qemu: str, bios: Path, iso: Path, accel: str) -> float:
    """Seconds from starting QEMU to GRUB's menu in its text buffer."""
    with tempfile.TemporaryDirectory() as tmp:
        sock, dump = os.path.join(tmp, "monitor"), os.path.join(tmp, "text")
        t0 = time.time()
        proc = subprocess.Popen([qemu, "-accel", accel, "-machine", "pc", "-m", "256", "-bios", str(bios),
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


def linux_runs(qemu: str, bios: Path, accel: str, peer_accel: str) -> tuple[float, float]:
    iso = _image("linux-iso")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    hvm = run_to_poweroff([sys.executable, "-m", "hvm.cli", "-M", "pc", "--bios", str(bios), "--accel", accel,
                           "-m", "256M", "--cdrom", str(iso), "--boot", "d"], env)
    peer = run_to_poweroff([qemu, "-accel", peer_accel, "-machine", "pc", "-m", "256", "-bios", str(bios),
                            "-cdrom", str(iso), "-boot", "d", "-display", "none", "-serial", "stdio",
                            "-monitor", "none", "-no-reboot"])
    return hvm, peer


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--accel", default="unicorn", choices=["unicorn", "kvm"])
    p.add_argument("--peer-accel", default="tcg", choices=["tcg", "kvm"])
    p.add_argument("--only", choices=["grub", "linux"])
    args = p.parse_args()
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        print("qemu-system-x86_64 is not installed", file=sys.stderr)
        return EX_ABSENT
    scenarios = {"grub": "grub-rescue CD to GRUB's menu", "linux": "hvm's Linux ISO to poweroff"}
    worst = 0.0
    try:
        bios = _image("seabios") / "bios-256k.bin"
        for name in [args.only] if args.only else list(scenarios):
            hvm, peer = [], []
            for _ in range(args.repeat):
                if name == "grub":
                    iso = _image("grub-rescue")
                    hvm.append(run_hvm(bios, iso, args.accel))
                    peer.append(run_qemu(qemu, bios, iso, args.peer_accel))
                else:
                    ours, theirs = linux_runs(qemu, bios, args.accel, args.peer_accel)
                    hvm.append(ours)
                    peer.append(theirs)
            ratio = statistics.median(hvm) / statistics.median(peer)
            worst = max(worst, ratio)
            print(f"{scenarios[name]}: hvm ({args.accel}) {statistics.median(hvm):.2f} s "
                  f"{[round(x, 2) for x in hvm]}, QEMU {args.peer_accel.upper()} {statistics.median(peer):.2f} s "
                  f"{[round(x, 2) for x in peer]}, ratio {ratio:.2f} (target <= {TARGET})", flush=True)
    except (BenchError, subprocess.TimeoutExpired) as exc:
        print(f"bench_pc_boot: {exc}", file=sys.stderr)
        return EX_BROKEN
    return EX_OK if worst <= TARGET else EX_MISSED


if __name__ == "__main__":
    sys.exit(main())
