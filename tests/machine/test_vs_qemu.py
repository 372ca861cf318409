"""The same multiboot guest under hvmrun and under `qemu-system-x86_64 -kernel`: same serial lines
(command line, modules, the BIOS data area's COM1, EBDA and base memory, what fw_cfg reports through
its data port and its DMA interface) and the same exit code through isa-debug-exit."""
from __future__ import annotations

import subprocess

import pytest

from conftest import hvmrun, require_tool


def _qemu(kernel, append, initrd, greeting):
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    return subprocess.run([qemu, "-enable-kvm", "-machine", "pc", "-m", "64M", "-smp", "2", "-nographic", "-nodefaults",
                           "-display", "none", "-serial", "stdio", "-no-reboot",
                           "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
                           "-fw_cfg", f"name=opt/hvm/greeting,file={greeting}",
                           "-kernel", str(kernel), "-append", append, "-initrd", initrd],
                          capture_output=True, timeout=300, stdin=subprocess.DEVNULL)


def _comparable(output: bytes) -> list[str]:
    # Firmware banners and memory maps differ by design; what the loader hands over must not.
    text = output.decode(errors="replace")
    return [line[line.find(p):] for line in text.splitlines()
            for p in ("cmdline=", "mods=", "mod=", "bios ", "fw_cfg ") if p in line]


@pytest.mark.qemu
def test_multiboot_guest_matches_qemu(guests, tmp_path):
    kernel = guests("multiboot")
    mod = tmp_path / "first.mod"
    mod.write_bytes(b"MODULE-ONE-DATA")
    append = "hello world exit=5"
    greeting = tmp_path / "greeting.txt"
    greeting.write_bytes(b"hello from fw_cfg")
    q = _qemu(kernel, append, f"{mod} alpha beta", greeting)
    h = hvmrun("-m", "64M", "-c", "2", "--kernel", str(kernel), "--append", append, "--module", f"{mod},alpha beta",
               "--fw-cfg", f"name=opt/hvm/greeting,file={greeting}",
               "--timeout", "60")
    assert _comparable(h.stdout) == _comparable(q.stdout)
    assert _comparable(h.stdout)[0] == f"cmdline=[{kernel} {append}]"
    # QEMU's documented values (docs/specs/fw_cfg.rst), so that agreeing with QEMU means something
    assert "fw_cfg sig=QEMU id=3 cpus=2 maxcpus=2 ram=0000000004000000" in _comparable(h.stdout)
    assert "fw_cfg dma=QEMU CFG read=QEMU status=0" in _comparable(h.stdout)
    assert "fw_cfg e820=found size%20=0" in _comparable(h.stdout)
    assert "fw_cfg greeting=[hello from fw_cfg]" in _comparable(h.stdout)
    assert h.returncode == q.returncode == (5 << 1) | 1
