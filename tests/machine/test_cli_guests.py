"""Tiny guests booted through the hvmrun CLI on a real /dev/kvm: serial bytes and exit codes."""
from __future__ import annotations

import gzip
import lzma
import re

import pytest

from conftest import hvmrun


def test_real_mode_hello(guests):
    r = hvmrun("--kernel", str(guests("hello16")), "--timeout", "60")
    assert r.stdout == b"Hello from real mode!\r\n", r.stderr
    assert r.returncode == 0


def test_long_mode_guest_and_debug_exit_code(guests):
    r = hvmrun("--kernel", str(guests("long64")), "--flat-mode", "long", "--timeout", "60")
    assert r.stdout == b"long mode: 0000001234567890\n", r.stderr
    assert r.returncode == (0x21 << 1) | 1


def test_multiboot_cmdline_memory_map_and_modules(guests, tmp_path):
    kernel = guests("multiboot")
    mod1 = tmp_path / "first.mod"
    mod1.write_bytes(b"MODULE-ONE-DATA")
    mod2 = tmp_path / "second.mod"
    mod2.write_bytes(b"two" * 2000)
    r = hvmrun("-m", "64M", "--kernel", str(kernel), "--append", "hello world poweroff",
               "--module", f"{mod1},alpha beta", "--module", str(mod2), "--timeout", "60")
    out = r.stdout.decode()
    assert r.returncode == 0, r.stderr
    lines = out.splitlines()
    # QEMU passes "<kernel path> <append>" as the multiboot command line; so do we.
    assert lines[0] == f"cmdline=[{kernel} hello world poweroff]"
    assert lines[1] == "mem_lower=639 mem_upper=64512"  # from the memory map, below the EBDA
    assert lines[2] == "mods=2"
    assert lines[3] == f"mod=[{mod1} alpha beta] size=15 aligned=1 data=[MODULE-ONE-DATA]"
    assert lines[4] == f"mod=[{mod2}] size=6000 aligned=1 data=[twotwotwotwotwot]"
    mmap = [tuple(int(x, 16) if i < 2 else int(x) for i, x in enumerate(l.split()[1:]))
            for l in lines if l.startswith("mmap ")]
    assert (0, 0x9FC00, 1) in mmap
    assert (0x100000, 64 * 2**20 - 0x100000, 1) in mmap
    assert all(t in (1, 2) for _, _, t in mmap)
    # What SeaBIOS leaves a QEMU guest, which Xen's start-up relies on (test_vs_qemu compares).
    assert "bios com1=000003f8 ebda=00009fc0 basemem=639" in lines


def test_multiboot_empty_cmdline_is_path_and_space(guests):
    kernel = guests("multiboot")
    r = hvmrun("--kernel", str(kernel), "--timeout", "60")
    assert r.stdout.decode().splitlines()[0] == f"cmdline=[{kernel} ]"
    assert r.returncode == 0


@pytest.mark.parametrize("value", [0, 1, 0x10, 0x7F])
def test_isa_debug_exit_codes(guests, value):
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", f"exit={value}", "--timeout", "60")
    assert r.returncode == ((value << 1) | 1) & 0xFF, r.stderr


def test_triple_fault_is_a_crash_with_registers(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", "triple", "--timeout", "60")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "triple fault next" in r.stdout.decode()
    assert "guest crashed on vCPU 0: triple fault" in err
    assert re.search(r"rip=[0-9a-f]{16}", err)
    assert "cr0=" in err and "idt=0/0" in err


def test_emulation_failure_reported_with_disassembly(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", "popcnt", "--no-fallback", "--timeout", "60")
    err = r.stderr.decode()
    assert r.returncode == 2, err
    assert "popcnt on mmio next" in r.stdout.decode()
    assert "instruction emulation failed" in err, err
    assert "cannot execute popcnt eax, dword ptr [0xd0000000]" in err, err
    assert "f3 0f b8 05 00 00 00 d0" in err


def test_timeout_exit_code(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", "hang", "--timeout", "2")
    assert r.returncode == 124
    assert b"timed out after 2 s" in r.stderr


def test_interrupt_driven_uart_echo(guests):
    r = hvmrun("--kernel", str(guests("echo16")), "--timeout", "60", input=b"hello, hvm.")
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"ready\nHELLO, HVM", r.stderr


def test_stats_report(guests):
    r = hvmrun("--kernel", str(guests("hello16")), "--stats", "--timeout", "60")
    err = r.stderr.decode()
    assert r.returncode == 0
    # hello16 writes 23 characters to COM1 and polls its LSR before each: counts, not just fields.
    assert re.search(r"IoOut\s+[1-9]\d*", err) and re.search(r"com1\s+(4[6-9]|[5-9]\d|\d{3,})\b", err), err
    assert "peak RSS" in err and "VMM CPU time" in err


def test_serial_to_file(guests, tmp_path):
    out = tmp_path / "serial.log"
    r = hvmrun("--kernel", str(guests("hello16")), "--serial", f"file:{out}", "--timeout", "60")
    assert r.returncode == 0
    assert r.stdout == b""
    assert out.read_bytes() == b"Hello from real mode!\r\n"


# -- refused input: each with its exit code and a message naming the file and the reason -----------

def test_missing_kernel_file(tmp_path):
    r = hvmrun("--kernel", str(tmp_path / "nope.elf"))
    assert r.returncode == 66
    assert f"{tmp_path / 'nope.elf'}: no such file".encode() in r.stderr


def test_usage_errors():
    assert hvmrun("--bogus").returncode == 64
    assert hvmrun("-m", "lots", "--kernel", "x").returncode == 64
    r = hvmrun()
    assert r.returncode == 64 and b"nothing to boot" in r.stderr


def test_elf_without_entry_note_refused(tmp_path):
    import shutil
    elf = tmp_path / "true.elf"
    shutil.copy("/bin/true", elf)
    r = hvmrun("--kernel", str(elf))
    assert r.returncode == 65
    assert str(elf).encode() in r.stderr and b"ELF image without an entry note" in r.stderr


def test_truncated_multiboot_image_refused(guests, tmp_path):
    data = guests("multiboot").read_bytes()
    cut = tmp_path / "cut.elf"
    cut.write_bytes(data[:0x1100])  # header intact, segment data cut short
    r = hvmrun("--kernel", str(cut))
    assert r.returncode == 65
    assert str(cut).encode() in r.stderr and b"truncated" in r.stderr


def test_image_too_big_for_ram(tmp_path):
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x90" * (3 << 20))
    r = hvmrun("-m", "2M", "--kernel", str(big), "--flat-mode", "protected")
    assert r.returncode == 65
    assert str(big).encode() in r.stderr and b"too big" in r.stderr


def test_unusable_kvm_device(tmp_path, guests, monkeypatch):
    node = tmp_path / "kvm"
    monkeypatch.setenv("HVM_KVM_DEVICE", str(node))
    r = hvmrun("--kernel", str(guests("hello16")))
    assert r.returncode == 69 and b"does not exist" in r.stderr
    node.write_bytes(b"")  # a regular file: opens, but is no KVM
    r = hvmrun("--kernel", str(guests("hello16")))
    assert r.returncode == 69 and str(node).encode() in r.stderr


def test_second_serial_port(guests, tmp_path):
    com1, com2 = tmp_path / "com1.log", tmp_path / "com2.log"
    r = hvmrun("--kernel", str(guests("multiboot")), "--append", "com2", "--serial", f"file:{com1}",
               "--serial", f"file:{com2}", "--timeout", "60")
    assert r.returncode == 0, r.stderr
    assert com2.read_bytes() == b"hello on COM2\n"
    assert com1.read_bytes().startswith(b"cmdline=[")


@pytest.mark.parametrize("how", [1, 2])       # 1: port 0xCF9, 2: the i8042's reset pulse
@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_guest_reset_reboots_or_exits_with_no_reboot(guests, how, accel):
    kernel = str(guests("hello16", RESET_WITH=how))
    r = hvmrun("--accel", accel, "--kernel", kernel, "--no-reboot", "--timeout", "60")
    assert r.returncode == 0 and r.stdout.count(b"Hello from real mode!") == 1
    assert b"guest reset the machine" in r.stderr
    r = hvmrun("--accel", accel, "--kernel", kernel, "--timeout", "4")
    assert r.returncode == 124 and r.stdout.count(b"Hello from real mode!") >= 2   # booted again, and again
    assert b"booting again" in r.stderr


@pytest.mark.parametrize("compress", ["gzip", "xz"])
def test_compressed_multiboot_kernel_boots_and_modules_pass_through(guests, tmp_path, compress):
    # As GRUB opens xen-4.17-amd64.gz: the kernel file is decompressed, a module is handed over
    # exactly as it is on disk (the kernel decides what to do with it).
    pack = {"gzip": lambda b: gzip.compress(b, mtime=0), "xz": lzma.compress}[compress]
    kernel = tmp_path / f"multiboot.{compress}"
    kernel.write_bytes(pack(guests("multiboot").read_bytes()))
    module = tmp_path / "initrd.gz"
    packed_module = gzip.compress(b"MODULE-DATA" * 100, mtime=0)
    module.write_bytes(packed_module)
    r = hvmrun("--kernel", str(kernel), "--append", "poweroff", "--module", str(module), "--timeout", "60")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.split(b"\n")
    assert lines[0] == f"cmdline=[{kernel} poweroff]".encode()
    assert lines[2] == b"mods=1"
    assert b"\n".join(lines[3:]).startswith(
        f"mod=[{module}] size={len(packed_module)} aligned=1 data=[".encode() + packed_module[:16] + b"]")


def test_damaged_or_oversized_compressed_kernel_is_refused(guests, tmp_path):
    damaged = tmp_path / "damaged.gz"
    damaged.write_bytes(gzip.compress(guests("multiboot").read_bytes())[:-40])
    r = hvmrun("--kernel", str(damaged), "--timeout", "30")
    assert r.returncode == 65 and b"damaged.gz" in r.stderr and b"gzip-compressed kernel image is damaged" in r.stderr
    bomb = tmp_path / "bomb.gz"
    bomb.write_bytes(gzip.compress(bytes(64 << 20)))  # 64 MiB of zeros for a 16 MiB guest
    r = hvmrun("-m", "16M", "--kernel", str(bomb), "--timeout", "30")
    assert r.returncode == 65 and b"decompresses to more than" in r.stderr, r.stderr


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_real_mode_bios_calls_are_answered(guests, accel):
    # What a boot sector or a kernel's real-mode start-up asks the BIOS (Ralf Brown's interrupt
    # list defines the answers): the E820 map entry by entry for -m 64M, E801 (KiB 1-16 MiB,
    # 64 KiB blocks above), 88h (KiB above 1 MiB), and "not supported" (CF=1, AH=86h) for int 13h
    # and int 10h, where hvm has neither disks nor video.
    r = hvmrun("--accel", accel, "-m", "64M", "--kernel", str(guests("bios16")), "--timeout", "30")
    assert r.returncode == 0, r.stderr
    assert r.stdout.decode().splitlines() == [
        "e820 0 9fc00 1", "e820 9fc00 400 2", "e820 e0000 20000 2", "e820 100000 3f00000 1",
        "e820 fffbc000 4000 2",
        f"e801 3c00 {48 * 16:x} 3c00 {48 * 16:x} cf=0",
        f"88 {63 * 1024:x} cf=0",
        "int13 ah=86 cf=1", "int10 ah=86 cf=1"]


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_post_codes_reach_the_device_in_order_before_the_next_read(guests, accel):
    # 1000 codes, more than KVM's coalesced ring holds (170 entries), so under KVM it fills and
    # is emptied midway; the guest then reads port 0x80 back and prints it with COM1's LSR.
    r = hvmrun("--accel", accel, "--kernel", str(guests("post16")), "--stats", "--timeout", "60")
    err = r.stderr.decode()
    assert r.returncode == 0, err
    # 999 mod 256 = 0xE7, the last code written; LSR of an idle transmitter is THRE|TEMT (0x60).
    assert r.stdout == b"E7L60\n", err
    # Every write and the read reached the POST device, however the engine carried them.
    assert re.search(r"^\s+post\s+1001$", err, re.MULTILINE), err
    # Six characters, each after at least one LSR poll, and the LSR read itself: all counted,
    # also those answered from the published register without a call into the device.
    com1 = int(re.search(r"^\s+com1\s+(\d+)$", err, re.MULTILINE).group(1))
    assert com1 >= 13, err
