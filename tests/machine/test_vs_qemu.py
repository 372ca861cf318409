"""The same multiboot guest under hvmrun and under `qemu-system-x86_64 -kernel`: same serial lines
(command line, modules, the BIOS data area's COM1, EBDA and base memory) and the same exit code through isa-debug-exit."""
from __future__ import annotations

import subprocess

import pytest

from conftest import hvmrun, require_tool


def _qemu(kernel, append, initrd):
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    return subprocess.run([qemu, "-enable-kvm", "-machine", "pc", "-m", "64M", "-nographic", "-nodefaults",
                           "-display", "none", "-serial", "stdio", "-no-reboot",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                           "-kernel", str(kernel), "-append", append, "-initrd", initrd],
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


def _comparable(output: bytes) -> list[str]:
    # Firmware banners and memory maps differ by design; what the loader hands over must not.
    text = output.decode(errors="replace")
    return [line[line.find(p):] for line in text.splitlines()
            for p in ("cmdline=", "mods=", "mod=", "bios ") if p in line]


@pytest.mark.qemu
def test_multiboot_guest_matches_qemu(guests, tmp_path):
    kernel = guests("multiboot")
    mod = tmp_path / "first.mod"
    mod.write_bytes(b"MODULE-ONE-DATA")
    append = "hello world exit=5"
    q = _qemu(kernel, append, f"{mod} alpha beta")
    h = hvmrun("-m", "64M", "--kernel", str(kernel), "--append", append, "--module", f"{mod},alpha beta",
               "--timeout", "60")
    assert _comparable(h.stdout) == _comparable(q.stdout)
    assert _comparable(h.stdout)[0] == f"cmdline=[{kernel} {append}]"
    assert h.returncode == q.returncode == (5 << 1) | 1
