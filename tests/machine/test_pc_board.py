"""The PC board (-M pc) runs Debian's SeaBIOS from the reset vector to "No bootable device."
under both engines, and SeaBIOS's own log says it found what it finds on QEMU's pc machine:
the chipset, fw_cfg, the RAM, the CPUs, the keyboard and serial port. The expected lines are
taken from QEMU's run of the same firmware on the same machine (checked in the test itself)."""
from __future__ import annotations

import re
import shutil
import subprocess
import time

import pytest

from conftest import hvmrun, recipe_image, unavailable
from hvm.config import MachineConfig
from hvm.machine import Machine

# Lines of SeaBIOS's debug log (port 0x402) that QEMU's pc machine gives with `-nodefaults
# -m 256 -smp N` and hvm's must too; "{n}" is the CPU count.
EXPECTED = [
    "Running on QEMU (i440fx)",
    "Found QEMU fw_cfg",
    "QEMU fw_cfg DMA interface supported",
    "qemu/e820: addr 0x0000000000000000 len 0x0000000010000000 [RAM]",
    "PCI: init bdf=00:00.0 id=8086:1237",
    "PCI: init bdf=00:01.0 id=8086:7000",
    "PIIX3/PIIX4 init: elcr=00 0c",
    "PCI: init bdf=00:01.3 id=8086:7113",
    "Found {n} cpu(s) max supported {n} cpu(s)",
    "Found 1 serial ports",
    "PS2 keyboard initialized",
    "No bootable device.",
]


@pytest.fixture(scope="module")
def bios():
    return recipe_image("seabios", "SeaBIOS") / "bios-256k.bin"


def _qemu_log(bios, cpus: int, tmp_path) -> list[str]:
    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        unavailable("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    log = tmp_path / "qemu-firmware.log"
    proc = subprocess.Popen([qemu, "-accel", "tcg", "-machine", "pc", "-nodefaults", "-m", "256", "-smp", str(cpus),
                             "-bios", str(bios), "-display", "none", "-serial", "null", "-chardev",
                             f"file,id=log,path={log}", "-device", "isa-debugcon,iobase=0x402,chardev=log"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:   # SeaBIOS waits for ever after "No bootable device."
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not (log.exists() and b"No bootable device." in log.read_bytes()):
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    return log.read_text(errors="replace").splitlines()


@pytest.mark.parametrize("accel, cpus", [("unicorn", 1), ("unicorn", 2), ("kvm", 1)])
def test_seabios_finds_the_pc(bios, accel, cpus, tmp_path):
    expected = [line.format(n=cpus) for line in EXPECTED]
    qemu = _qemu_log(bios, cpus, tmp_path)
    assert [line for line in expected if line not in qemu] == [], "QEMU's own log lacks these"

    config = MachineConfig(machine="pc", bios=str(bios), accel=accel, memory="256M", cpus=cpus)
    with Machine(config) as machine:
        machine.start()
        machine.debugcon_output.wait_for("No bootable device.", timeout=90)
        # With no screen (fw_cfg NOGRAPHIC), SeaBIOS shows its screen on COM1.
        on_serial = machine.serial.wait_for("No bootable device.", timeout=10)
        ours = machine.debugcon_output.text.splitlines()
    assert [line for line in expected if line not in ours] == []
    assert on_serial


@pytest.mark.parametrize("args, code, says", [
    (["--bios", "/nonexistent/bios.bin"], 66, "/nonexistent/bios.bin"),
    (["--bios", "/"], 65, "/: is a directory"),
    (["--bios", "/etc/hostname"], 65, "multiple of 64 KiB"),
    (["--kernel", "/etc/hostname"], 64, "--kernel is for -M direct"),
])
def test_bad_firmware_arguments(args, code, says):
    r = hvmrun("-M", "pc", "--accel", "unicorn", *args, "--timeout", "10")
    assert r.returncode == code, r.stderr
    assert says in r.stderr.decode() and "Traceback" not in r.stderr.decode()


def test_bios_only_for_the_pc_board(guests):
    r = hvmrun("--kernel", str(guests("multiboot")), "--bios", "/etc/hostname")
    assert r.returncode == 64 and "--bios, --cdrom and --disk are for -M pc" in r.stderr.decode()


@pytest.mark.parametrize("accel", ["unicorn", "kvm"])
def test_the_vga_bios_draws_the_screen(bios, accel, tmp_path):
    """SeaBIOS finds the standard VGA, runs its VGA BIOS from the ROM BAR, and what it prints
    is on the text screen and in the picture; the version is the one its own log reports."""
    from io import BytesIO

    from PIL import Image

    config = MachineConfig(machine="pc", bios=str(bios), accel=accel, memory="256M")
    with Machine(config) as machine:
        machine.start()
        assert machine.debugcon_output.wait_for("No bootable device.", timeout=90)
        log = machine.debugcon_output.text
        deadline = time.monotonic() + 10
        while "No bootable device." not in machine.screen.text() and time.monotonic() < deadline:
            time.sleep(0.1)
        text, mode, png = machine.screen.text(), machine.screen.mode(), machine.screen.png()
    version = next(line for line in log.splitlines() if line.startswith("SeaBIOS (version "))
    assert "Running option rom at c000:0003" in log and "set VGA mode 3" in log
    assert mode == "text 80x25"
    lines = text.splitlines()
    assert lines[0] == version and "No bootable device." in lines
    picture = Image.open(BytesIO(png)).convert("RGB")
    assert picture.size == (720, 400)                       # 80x25 cells of 9x16 dots
    # The first cell holds an "S" in light grey on black: some of its dots are lit, not all.
    cell = [picture.getpixel((x, y)) for x in range(9) for y in range(16)]
    assert (0, 0, 0) in cell and any(p != (0, 0, 0) for p in cell)


def test_screenshot_from_the_command_line(bios, tmp_path):
    shot = tmp_path / "screen.png"
    r = hvmrun("-M", "pc", "--bios", str(bios), "--accel", "unicorn", "--timeout", "20",
               "--screenshot", str(shot), timeout=60)
    assert r.returncode == 124, r.stderr
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = hvmrun("-M", "pc", "--vga", "none", "--accel", "unicorn", "--screenshot", str(shot))
    assert r.returncode == 64 and "needs a screen" in r.stderr.decode()


@pytest.mark.parametrize("accel", ["unicorn", "kvm"])
def test_a_boot_sector_writes_the_ide_disk(bios, guests, accel, tmp_path):
    """SeaBIOS boots a hard disk image from IDE (--boot c), the boot sector writes a sector
    through INT 13h and reads it back; the bytes are in the image file afterwards. The payload
    (the guest's second sector) is the reference."""
    code = guests("disk16").read_bytes()
    payload = code[512:1024]
    image = tmp_path / "disk.img"
    image.write_bytes(code[:1024] + bytes((1 << 20) - 1024))
    r = hvmrun("-M", "pc", "--bios", str(bios), "--accel", accel, "--disk", str(image), "--boot", "c",
               "--timeout", "120", timeout=180)
    assert r.returncode == 3, (r.returncode, r.stdout[-300:], r.stderr)   # isa-debug-exit 1
    assert b"disk16: wrote LBA 2 and read it back" in r.stdout
    assert image.read_bytes()[1024:1536] == payload


def test_a_read_only_disk_refuses_the_write(bios, guests, tmp_path):
    code = guests("disk16").read_bytes()
    image = tmp_path / "disk.img"
    image.write_bytes(code[:1024] + bytes((1 << 20) - 1024))
    r = hvmrun("-M", "pc", "--bios", str(bios), "--accel", "unicorn", "--disk", f"{image},ro", "--boot", "c",
               "--timeout", "60", timeout=120)
    assert r.returncode == 5 and b"disk16: disk call failed" in r.stdout   # isa-debug-exit 2
    assert image.read_bytes()[1024:1536] == bytes(512)


@pytest.mark.parametrize("accel", ["unicorn", "kvm"])
def test_stores_into_shadowed_bios_and_vga_rom_are_dropped(bios, guests, accel, tmp_path):
    """After POST SeaBIOS write-protects its shadow copy and the VGA BIOS through the PAM
    registers: a boot sector's stores there leave the bytes as they were (i440FX datasheet,
    PAM "read only" segments), while its store into RAM lands. QEMU 7.2 (TCG, same firmware
    and disk) prints the same line."""
    image = tmp_path / "disk.img"
    image.write_bytes(guests("rom16").read_bytes() + bytes((1 << 20) - 512))
    r = hvmrun("-M", "pc", "--bios", str(bios), "--accel", accel, "--disk", str(image), "--boot", "c",
               "--timeout", "120", timeout=180)
    assert r.returncode == 3 and b"rom16: ROM kept its bytes, RAM took the store" in r.stdout, \
        (r.returncode, r.stdout[-300:], r.stderr)


def _named_disk(guests, tmp_path, name: str):
    sector = bytearray(guests("name16").read_bytes()[:512])
    sector[0x180:0x180 + len(name)] = name.encode()
    path = tmp_path / f"{name}.img"
    path.write_bytes(bytes(sector) + bytes((1 << 20) - 512))
    return path


def test_bootindex_chooses_the_disk_the_firmware_boots(bios, guests, tmp_path):
    """Two bootable disks: SeaBIOS boots the primary master for --boot c, and the primary slave
    once bootindex=0 puts it in fw_cfg's "bootorder", as QEMU does with the same property."""
    first, second = _named_disk(guests, tmp_path, "first"), _named_disk(guests, tmp_path, "second")

    def boot(*disks):
        return hvmrun("-M", "pc", "--bios", str(bios), "--accel", "unicorn", *[a for d in disks for a in ("--disk", d)],
                      "--boot", "c", "--timeout", "60", timeout=120)

    r = boot(str(first), str(second))
    assert r.returncode == 3 and b"booted: first\r\n" in r.stdout, (r.stdout[-300:], r.stderr)
    r = boot(str(first), f"{second},bootindex=0")
    assert r.returncode == 3 and b"booted: second\r\n" in r.stdout, (r.stdout[-300:], r.stderr)

    qemu = shutil.which("qemu-system-x86_64")
    if qemu is None:
        unavailable("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)")
    drives = []
    for unit, (path, extra) in enumerate(((first, ""), (second, ",bootindex=0"))):
        drives += ["-drive", f"file={path},format=raw,if=none,id=d{unit}",
                   "-device", f"ide-hd,drive=d{unit},bus=ide.0,unit={unit}{extra}"]
    q = subprocess.run([qemu, "-accel", "tcg", "-machine", "pc", "-m", "256", "-display", "none", "-bios", str(bios),
                        "-serial", "stdio", "-device", "isa-debug-exit,iobase=0xf4,iosize=4", *drives],
                       capture_output=True, timeout=120)
    assert q.returncode == 3 and b"booted: second\r\n" in q.stdout, (q.stdout[-300:], q.stderr)


def shows(machine, text, timeout=120.0):
    """Wait until ``text`` is on the machine's screen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in machine.screen.text():
            return True
        time.sleep(0.2)
    return False


def _cd_machine(bios, iso, memory="256M"):
    return Machine(MachineConfig(machine="pc", bios=str(bios), accel="unicorn", memory=memory, cdrom=str(iso),
                                 boot="d"))


@pytest.fixture(scope="module")
def grub_rescue():
    return recipe_image("grub-rescue", "GRUB's rescue CD")


def test_grub_rescue_cd_to_its_command_line(bios, grub_rescue, tmp_path):
    """The issue's yardstick: Debian's GRUB rescue CD boots from the IDE CD-ROM to GRUB's menu
    (as under QEMU: "GNU GRUB  version 2.06-..."); 'c' opens its command line, and GRUB's own
    lspci lists the functions hvm's PC has (IDs as QEMU's pc machine shows them)."""
    from io import BytesIO

    from PIL import Image

    with _cd_machine(bios, grub_rescue) as machine:
        machine.start()
        assert shows(machine, "GNU GRUB  version 2.06"), machine.screen.text()
        machine.keyboard.press("c")
        assert shows(machine, "grub>"), machine.screen.text()
        machine.keyboard.type("lspci\n")
        assert shows(machine, "00:02.0 1234:1111 [0300]"), machine.screen.text()
        machine.keyboard.type("ls\n")
        assert shows(machine, "(cd) (cd,msdos1)"), machine.screen.text()   # the BIOS drive it booted from
        text, png = machine.screen.text(), machine.screen.png()
    for line in ("00:00.0 8086:1237 [0600] Host Bridge", "00:01.0 8086:7000 [0601] ISA Bridge",
                 "00:01.1 8086:7010 [0101] IDE Controller [PI 80]"):
        assert line in text
    assert Image.open(BytesIO(png)).size == (720, 400)


def _package_version(image) -> str:
    """The Debian version of the package an images recipe took ``image`` from (its manifest)."""
    import json

    manifest = json.loads((image.parent / "debs" / "manifest.json").read_text())
    return next(iter(manifest.values()))["version"]


def test_ipxe_cd_shows_its_banner(bios):
    """Debian's iPXE CD (isolinux, then iPXE) prints its banner with the package's version and,
    with no network card on the board, says so."""
    iso = recipe_image("ipxe", "iPXE")
    with _cd_machine(bios, iso) as machine:
        machine.start()
        assert shows(machine, f"iPXE {_package_version(iso)} -- Open Source Network Boot Firmware"), \
            machine.screen.text()
        assert shows(machine, "No more network devices"), machine.screen.text()


def test_memtest86_reaches_its_main_screen(bios):
    """memtest86+ (its own 64-bit kernel, from its CD) draws its main screen, sees the RAM it was
    given and tests it without errors."""
    iso = recipe_image("memtest86+", "memtest86+")
    version = _package_version(iso).split("-")[0]
    with _cd_machine(bios, iso) as machine:
        machine.start()
        assert shows(machine, f"Memtest86+ v{version}"), machine.screen.text()
        assert shows(machine, "Status: Testing"), machine.screen.text()
        text = machine.screen.text()
    assert "Memory  :  256MB" in text and "Errors: 0" in text


def test_bad_cd_and_disk_images(tmp_path, grub_rescue):
    """A missing, truncated or non-ISO CD image, a directory, an unreadable file: exit 65/66 with
    the file and the reason, never a traceback. "Truncated" is measured against the volume size
    the ISO's own primary volume descriptor states (ECMA-119 8.4)."""
    iso = grub_rescue.read_bytes()
    truncated = tmp_path / "truncated.iso"
    truncated.write_bytes(iso[:len(iso) // 2])
    short = tmp_path / "short.iso"
    short.write_bytes(iso[:4096])
    text = tmp_path / "notes.txt"
    text.write_bytes(b"not a CD\n" * 5000)
    locked = tmp_path / "locked.img"
    locked.write_bytes(bytes(1 << 20))
    locked.chmod(0)
    cases = [(["--cdrom", str(tmp_path / "absent.iso")], 66, "absent.iso"),
             (["--cdrom", str(truncated)], 65, "is truncated: its volume is"),
             (["--cdrom", str(short)], 65, "too short for an ISO 9660 image"),
             (["--cdrom", str(text)], 65, "no primary volume descriptor"),
             (["--cdrom", str(tmp_path)], 65, "is a directory"),
             (["--disk", str(tmp_path)], 65, "is a directory")]
    import os
    if os.geteuid() != 0:     # root reads any file
        cases.append((["--disk", str(locked)], 65, "Permission denied"))
    for args, code, says in cases:
        r = hvmrun("-M", "pc", "--accel", "unicorn", *args, "--timeout", "10")
        err = r.stderr.decode()
        assert r.returncode == code and says in err and "Traceback" not in err, (args, r.returncode, err)


@pytest.fixture(scope="module")
def linux_iso():
    return recipe_image("linux-iso", "hvm's Linux ISO")


def _shell(machine, cpus: int) -> None:
    """At the busybox prompt: the kernel reports ``cpus`` CPUs."""
    assert machine.serial.wait_for("/ # ", timeout=400), machine.serial.text[-2000:]
    machine.serial.send("nproc\n")
    assert machine.serial.wait_for(f"nproc\r\n{cpus}\r\n", timeout=60), machine.serial.text[-500:]


@pytest.mark.slow
def test_hvm_iso_boots_linux_from_cd_and_powers_off(bios, linux_iso):
    """hvm's own ISO (GRUB for BIOS PCs, Debian's kernel, busybox) boots from the IDE CD-ROM
    through SeaBIOS and GRUB to a shell on COM1; the kernel counts the two vCPUs, takes hvm's ACPI
    tables as SeaBIOS placed them (the PCI root bridge, the interrupt links on the IRQs SeaBIOS
    routed PIRQ A-D to: 10, 10, 11, 11) and SMBIOS tables, enters ACPI mode through the FADT's SMI_CMD and powers
    the machine off when the shell exits."""
    config = MachineConfig(machine="pc", bios=str(bios), accel="unicorn", memory="256M", cpus=2,
                           cdrom=str(linux_iso), boot="d")
    with Machine(config) as machine:
        machine.start()
        _shell(machine, 2)
        machine.serial.send("exit\n")
        outcome = machine.wait(120)
    assert outcome.end.value == "poweroff" and outcome.exit_code == 0, outcome
    log = machine.serial.text
    assert "GRUB: starting Debian's kernel from hvm's ISO" in log
    assert "ACPI: Unable to enable ACPI" not in log
    assert re.search(r"ACPI: DSDT 0x[0-9A-F]+ [0-9A-F]+ \(v02 HVM    HVMPC ", log), log[:3000]
    assert "ACPI: PCI Root Bridge [PCI0] (domain 0000 [bus 00-ff])" in log
    for link, irq in zip("ABCD", (10, 10, 11, 11)):
        assert f"ACPI: PCI: Interrupt link LNK{link} configured for IRQ {irq}" in log
    assert "i8042: PNP: PS/2 Controller [PNP0303:KBD,PNP0f13:MOU] at 0x60,0x64 irq 1,12" in log
    # hvm's SMBIOS system structure, with the BIOS information SeaBIOS adds in front of it.
    assert re.search(r"DMI: hvm Standard PC \(i440FX \+ PIIX, 1996\), BIOS 1\.16\.\d", log), log[:2000]


@pytest.mark.slow
def test_hvm_iso_boots_as_a_disk_and_linux_writes_by_dma(bios, linux_iso, tmp_path):
    """The same file as an IDE hard disk (--boot c: its MBR holds GRUB's boot sector) boots too;
    Linux's ata_piix writes a second disk by bus-master DMA, and the bytes are in the image file,
    flushed (FLUSH CACHE is fsync)."""
    scratch = tmp_path / "scratch.img"
    scratch.write_bytes(bytes(1 << 20))
    config = MachineConfig(machine="pc", bios=str(bios), accel="unicorn", memory="256M", cpus=1,
                           disks=[f"{linux_iso},ro", str(scratch)], boot="c")
    with Machine(config) as machine:
        machine.start()
        _shell(machine, 1)
        engine = machine.board.ide.busmaster.channels[0]
        before = engine.written
        # Disk names follow probe order, which is asynchronous: the scratch disk is the 1 MiB one.
        machine.serial.send("for d in /sys/block/sd*; do [ $(cat $d/size) = 2048 ] && dev=/dev/${d##*/}; done; "
                            "echo hvm-dma-test > /t; dd if=/t of=$dev bs=512 seek=3 conv=sync,fsync; echo dd=$?\n")
        assert machine.serial.wait_for("dd=0", timeout=120), machine.serial.text[-800:]
        written = engine.written - before
        machine.serial.send("exit\n")
        outcome = machine.wait(120)
    assert outcome.exit_code == 0, outcome
    data = scratch.read_bytes()
    assert data[3 * 512:3 * 512 + 13] == b"hvm-dma-test\n" and data[:3 * 512] == bytes(3 * 512)
    assert written >= 512, "the write did not go through the bus master"
