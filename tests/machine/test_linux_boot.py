"""Linux through the 64-bit boot protocol: malformed bzImages are refused with exit code 65 and a
message naming the file; Debian's stock kernel is loaded and runs to its init."""
from __future__ import annotations

import pytest

from conftest import hvmrun
from hvm.formats.bzimage import HEADER_OFFSET, SetupHeader


def _bzimage(tmp_path, version=0x020F, xloadflags=1, syssize=0x100, kernel_bytes=0x1000):
    header = dict(setup_sects=1, root_flags=0, syssize=syssize, ram_size=0, vid_mode=0, root_dev=0,
                  boot_flag=0xAA55, jump=0x66EB, header=b"HdrS", version=version, realmode_swtch=0,
                  start_sys_seg=0, kernel_version=0, type_of_loader=0, loadflags=1, setup_move_size=0,
                  code32_start=0x100000, ramdisk_image=0, ramdisk_size=0, bootsect_kludge=0,
                  heap_end_ptr=0, ext_loader_ver=0, ext_loader_type=0, cmd_line_ptr=0,
                  initrd_addr_max=0x7FFFFFFF, kernel_alignment=0x200000, relocatable_kernel=1,
                  min_alignment=21, xloadflags=xloadflags, cmdline_size=2047, hardware_subarch=0,
                  hardware_subarch_data=0, payload_offset=0, payload_length=0, setup_data=0,
                  pref_address=0x1000000, init_size=0x10000, handover_offset=0, kernel_info_offset=0)
    data = bytearray(1024 + kernel_bytes)
    data[HEADER_OFFSET:HEADER_OFFSET + SetupHeader.sizeof()] = SetupHeader.build(header)
    path = tmp_path / "bzImage-test"
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("kwargs,reason", [
    (dict(syssize=0x1000), "truncated bzImage"),
    (dict(version=0x0204), "boot protocol 2.4 is too old"),
    (dict(xloadflags=0), "no 64-bit entry point"),
])
def test_malformed_bzimage_is_refused(tmp_path, kwargs, reason):
    path = _bzimage(tmp_path, **kwargs)
    r = hvmrun("--accel", "unicorn", "--kernel", str(path))
    assert r.returncode == 65
    assert str(path).encode() in r.stderr and reason.encode() in r.stderr


def test_initrd_larger_than_ram_is_refused(tmp_path):
    initrd = tmp_path / "big.cpio"
    initrd.write_bytes(b"\0" * (15 << 20))
    r = hvmrun("--accel", "unicorn", "-m", "16M", "--kernel", str(_bzimage(tmp_path)), "--initrd", str(initrd))
    assert r.returncode == 65 and str(initrd).encode() in r.stderr and b"does not fit" in r.stderr


@pytest.mark.slow
def test_debian_kernel_runs_to_its_init_under_unicorn(linux_image):
    # The bzImage path with the kernel's own decompressor, 64-bit entry, e820 map and initrd from
    # boot_params. No ACPI tables yet, so the guest cannot power off: the run ends by timeout.
    r = hvmrun("--accel", "unicorn", "-m", "256M", "--kernel", str(linux_image / "vmlinuz"),
               "--initrd", str(linux_image / "initramfs.cpio"), "--append", "console=ttyS0",
               "--timeout", "40", timeout=120)
    out = r.stdout.decode(errors="replace")
    assert "Command line: console=ttyS0" in out
    assert "Run /init as init process" in out, out[-2000:]
