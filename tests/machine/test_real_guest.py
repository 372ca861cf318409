"""A real guest from Debian packages: GRUB 2 built by the ``images`` grub recipe, booted by hvmrun."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

from conftest import hvmrun, recipe_image, require_tool

BANNER = re.compile(rb"GRUB 2\.\S+ \(i386-coreboot\) booted as a multiboot kernel\r?\n")
REGION = re.compile(rb"base_addr = (0x[0-9a-f]+), length = (0x[0-9a-f]+), (available|reserved) RAM")


@pytest.fixture(scope="module")
def grub_image() -> Path:
    """The grub recipe's image, built once into the user's cache (reused when already there)."""
    return recipe_image("grub", "GRUB")


def _regions(stdout: bytes) -> dict[int, tuple[int, bytes]]:
    return {int(a, 16): (int(n, 16), kind) for a, n, kind in REGION.findall(stdout)}


@pytest.mark.slow
@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_grub_prints_banner_and_powers_off(grub_image, accel):
    r = hvmrun("--accel", accel, "--kernel", str(grub_image), "--timeout", "120", timeout=180)
    assert BANNER.search(r.stdout), (r.stdout, r.stderr)
    assert b"powering off" in r.stdout
    assert r.returncode == 0, r.stderr


@pytest.mark.slow
@pytest.mark.parametrize("memory,upper", [("16M", 15 << 20), ("200M", 199 << 20)])
def test_grub_sees_hvms_memory_map(grub_image, memory, upper):
    # GRUB learns memory only from the LBIO table the shim builds out of the multiboot map, so
    # lsmmap printing hvm's e820 map (RAM from 1 MiB to the -m size) shows the shim at work.
    r = hvmrun("-m", memory, "--kernel", str(grub_image), "--timeout", "120", timeout=180)
    assert r.returncode == 0, r.stderr
    regions = _regions(r.stdout)
    assert regions[0] == (0x9FC00, b"available")
    assert regions[0x100000] == (upper, b"available")


@pytest.mark.slow
@pytest.mark.qemu
def test_grub_image_also_boots_under_qemu(grub_image):
    # The same file under QEMU's -kernel multiboot loader (SeaBIOS, then its multiboot option
    # ROM): the banner, then power-off through PIIX4's PM1a_CNT, which QEMU reports as exit 0.
    r = subprocess.run([require_tool("qemu-system-x86_64", "qemu-system-x86"), "-enable-kvm", "-m", "128M", "-nographic", "-nodefaults",
                        "-serial", "stdio", "-display", "none", "-no-reboot", "-kernel", str(grub_image)],
                       capture_output=True, timeout=180, stdin=subprocess.DEVNULL)
    assert BANNER.search(r.stdout), (r.stdout, r.stderr)
    assert b"powering off" in r.stdout
    assert r.returncode == 0, r.stderr
