"""`--device pc-testdev`, the device kvm-unit-tests needs: the same guest prints the same lines
under QEMU's TCG with `-device pc-testdev` and under both of hvm's engines (the scratch register
at every width and offset, its byte-wide twin, the I/O memory window, an interrupt raised through
a test line and taken through the 8259, and the STI shadow: an INT right after STI runs before
the interrupt that was waiting; NMI blocking: an NMI sent from an NMI handler waits for its IRET)."""
from __future__ import annotations

import subprocess

import pytest

from conftest import hvmrun, require_tool
from hvm.host import host_info

EXPECTED = [
    "testdev port 12345678 1234ab78 00001234 000000ab",
    "testdev byteport deadbeef 0000dead deadbeef",
    "testdev iomem cafef00d 11220000 00000077",
    "testdev irq5=1",
    "testdev shadow=SH",
    "testdev nmi=ABC",
]


def _lines(output: bytes) -> list[str]:
    text = output.decode(errors="replace")
    return [line[line.find("testdev"):] for line in text.splitlines() if "testdev" in line]


@pytest.mark.qemu
def test_qemu_prints_what_hvm_expects(guests):
    # The reference: QEMU's TCG (this host's KVM does not deliver the 8259's interrupt to QEMU's guest).
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    q = subprocess.run([qemu, "-accel", "tcg", "-machine", "pc", "-m", "64M", "-nographic", "-nodefaults",
                        "-display", "none", "-serial", "stdio", "-no-reboot", "-device", "pc-testdev",
                        "-device", "isa-debug-exit,iobase=0xf4,iosize=0x04", "-kernel", str(guests("testdev32"))],
                       capture_output=True, timeout=120, stdin=subprocess.DEVNULL)
    assert _lines(q.stdout) == EXPECTED
    assert q.returncode == 1, q.stderr


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_hvm_testdev_behaves_as_qemus(guests, accel):
    # kvm-unit-tests' command line names isa-debug-exit too: accepted where hvm has it.
    r = hvmrun("--accel", accel, "--device", "pc-testdev", "--device", "isa-debug-exit,iobase=0xf4,iosize=0x04",
               "--kernel", str(guests("testdev32")), "--timeout", "60")
    expected = list(EXPECTED)
    if accel == "kvm" and host_info().emulation_only:
        # Documented in the README: a KVM that only emulates loses the NMI sent from the handler.
        expected[-1] = "testdev nmi=AB"
    assert _lines(r.stdout) == expected, r.stderr
    assert r.returncode == 1


@pytest.mark.parametrize("args, says", [
    (["--device", "pci-testdev"], "unknown device"),
    (["--device", "pc-testdev,iobase=0x10"], "takes no options"),
    (["--device", "isa-debug-exit,iobase=0x501"], "always present, at iobase=0xf4"),
    (["--device", "pc-testdev", "--debugcon", "stdio"], "0xe9"),
    (["--device", "pc-testdev", "--device", "pc-testdev"], "once"),
])
def test_device_arguments_hvm_cannot_honour_are_usage_errors(guests, args, says):
    r = hvmrun(*args, "--kernel", str(guests("testdev32")), "--timeout", "30")
    assert r.returncode == 64 and says in r.stderr.decode(), r.stderr
