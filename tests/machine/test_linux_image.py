"""The ``images`` linux recipe: Debian's kernel and a busybox initramfs that Linux can unpack and
whose /init finds the command to run on the kernel command line."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

import images  # noqa: E402
from images import linux  # noqa: E402


@pytest.fixture(scope="module")
def busybox(linux_image, tmp_path_factory) -> Path:
    # busybox picks the applet from argv[0]; a copy named "busybox" runs on the host (static).
    path = tmp_path_factory.mktemp("bb") / "busybox"
    shutil.copyfile(linux.recipe_dir() / "busybox" / "busybox", path)
    path.chmod(0o755)
    return path


@pytest.mark.slow
def test_recipe_gives_a_bzimage_and_an_initramfs_busybox_can_read(linux_image, busybox):
    kernel = (linux_image / "vmlinuz").read_bytes()
    assert kernel[0x202:0x206] == b"HdrS"  # the x86 boot protocol's setup header
    listing = subprocess.run([str(busybox), "cpio", "-tv"], stdin=open(linux_image / "initramfs.cpio", "rb"),
                             capture_output=True, check=True).stdout.decode()
    names = [line.split()[-1] if "->" not in line else line.split()[-3] for line in listing.splitlines()]
    assert {"init", "bin/busybox", "bin/sh", "dev/console"} <= set(names)
    assert any(line.startswith("crw") and line.endswith("dev/console") for line in listing.splitlines())
    assert images.build("linux") == linux_image  # the second run reuses the cache


@pytest.mark.slow
@pytest.mark.parametrize("cmdline,expected", [
    ("console=ttyS0 hvm.run='grep -c processor /proc/cpuinfo' quiet", "grep -c processor /proc/cpuinfo"),
    ('console=ttyS0 hvm.run="ls /" quiet', "ls /"),
    ("hvm.run=uname console=ttyS0", "uname"),
    ("console=ttyS0 quiet", ""),
])
def test_init_takes_the_command_from_the_kernel_command_line(busybox, cmdline, expected):
    # The very lines of /init that parse /proc/cmdline, run by the same busybox sh.
    script = linux.INIT_SCRIPT
    parse = script[script.index("run=\n"):script.index("esac") + 4]
    r = subprocess.run([str(busybox), "sh", "-c", f'cmdline="$1"\n{parse}\nprintf "%s" "$run"', "sh", cmdline],
                       capture_output=True, check=True)
    assert r.stdout.decode() == expected
