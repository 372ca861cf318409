"""The PC board (``-M pc``): QEMU's ``pc`` machine as firmware sees it, for unmodified guests.

An i440FX host bridge and PIIX3/PIIX4 functions on PCI bus 0, the legacy ISA devices, QEMU's
fw_cfg, and real firmware (SeaBIOS, ``--bios``) entered at the reset vector: the firmware finds
the devices, places the BARs, links hvm's ACPI tables into memory (fw_cfg's table-loader) and
boots. Device numbers follow QEMU's ``pc`` machine (00.0 host bridge, 01.0 ISA bridge, 01.3
power management) so guests and firmware meet the topology they know.
"""
from __future__ import annotations

import os
import struct
from typing import TYPE_CHECKING

from .. import layout
from ..boot.entry import EntryState, Mode
from ..cache import cache_root
from ..devices.acpi_pm import AcpiPm, DEFAULT_BASE as ACPI_PM_DEFAULT, LENGTH as ACPI_PM_LENGTH, SLP_TYP_S5
from ..devices.cmos_rtc import CENTURY
from ..devices.debugcon import DebugCon
from ..devices.fw_cfg import BASE_PORT as FW_CFG_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from ..devices.reset_control import RESET_PORT, RESET_VALUE
from ..devices.pci.chipset import ApmControl, I440fxHostBridge, Piix3Isa, Piix4Pm
from ..devices.pci.host import BusOps, PciHost, devfn
from ..devices.ide import AtaDisk, AtapiCdrom, DiskImage, PiixIde
from ..devices.vga import Vga
from ..errors import ConfigError, ImageError
from ..firmware import smbios
from ..firmware.acpi import LOADER_FILE, RSDP_FILE, TABLES_FILE, AcpiPlatform, PciRoot, loader_files
from ..formats.e820 import E820_RAM
from ..formats.iso9660 import DESCRIPTORS_AT, SECTOR, check_cd_image
from ..outcome import End, Outcome
from . import Board
from .describe import acpi_isa_devices, add_machine_items, add_user_files
from .legacy import LegacyDevices, add_legacy_devices
from .pc_memory import ISA_ROM_BASE, ISA_ROM_SIZE, PcMemoryMap, RomWrites

if TYPE_CHECKING:
    from ..config import MachineConfig
    from ..machine import Machine
    from ..memory import GuestMemory
    from ..physmap import PhysMap

BIOS_NAME = "bios-256k.bin"
VGA_BIOS_NAME = "vgabios-stdvga.bin"
VGA_SLOT = devfn(2)
IDE_SLOT = devfn(1, 1)
BOOT_CODES = {"a": 1, "c": 2, "d": 3, "n": 4}
CMOS_BOOT_FLAG1, CMOS_BOOT_FLAG2 = 0x38, 0x3D
SEABIOS_LOG_PORT = 0x402   # where SeaBIOS built for QEMU writes its debug log
APM_PORT = 0xB2
# What the reset vector finds (SDM vol. 3A §9.1.4): CS base FFFF0000 (selector F000), IP FFF0.
RESET_CS_BASE, RESET_IP = 0xFFFF0000, 0xFFF0


def default_firmware(name: str = BIOS_NAME) -> str | None:
    """A SeaBIOS firmware file: the seabios recipe's, else the host's (QEMU's package)."""
    for directory in (cache_root() / "seabios" / "firmware", "/usr/share/seabios"):
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            return path
    return None


def read_bios(path: str) -> bytes:
    """The firmware image, checked for what the board can map; ImageError names the problem."""
    try:
        with open(path, "rb") as f:
            data = f.read((16 << 20) + 1)
    except IsADirectoryError:
        raise ImageError(path, "is a directory, not a firmware image") from None
    except OSError as exc:
        raise ImageError(path, f"cannot be read: {exc.strerror}") from None
    if not data or len(data) % 0x10000 or len(data) > 16 << 20:
        raise ImageError(path, f"is {len(data)} bytes; a BIOS image is a multiple of 64 KiB, at most 16 MiB")
    return data


def ide_boot_path(place: int) -> str:
    """The firmware path of IDE place 0-3 (primary master, slave, secondary master, slave) as
    QEMU writes it in "bootorder" and SeaBIOS matches it (``/pci@i0cf8/*@1,1/drive@CH/disk@UNIT``)."""
    return f"/pci@i0cf8/ide@1,1/drive@{place // 2:x}/disk@{place % 2:x}"


class PcBoard(Board):
    """i440FX + PIIX, SeaBIOS, fw_cfg: what QEMU's ``-machine pc`` gives firmware and guests."""

    name = "pc"

    def __init__(self) -> None:
        self.legacy: LegacyDevices | None = None
        self.memory_layout: PcMemoryMap | None = None
        self.fw_cfg: FwCfg | None = None
        self.pci: PciHost | None = None
        self.firmware_log: DebugCon | None = None
        self.bios_path: str | None = None
        self.vga: Vga | None = None
        self.ide: PiixIde | None = None
        self.boot_devices: list[tuple[int, str]] = []   # (bootindex, firmware path)
        self.isa: Piix3Isa | None = None
        self.pm: Piix4Pm | None = None

    def memory_map(self, memory: "GuestMemory", config: "MachineConfig") -> "PhysMap":
        path = config.bios or default_firmware()
        if path is None:
            raise ConfigError("-M pc needs firmware: run `python3 -m images seabios` (Debian's SeaBIOS "
                              "into hvm's cache) or give --bios PATH")
        self.bios_path = path
        self.memory_layout = PcMemoryMap(memory, read_bios(path), os.path.basename(path))
        return self.memory_layout.physmap

    def attach(self, machine: "Machine") -> None:
        layout = self.memory_layout
        machine.mmio.register(ISA_ROM_BASE, ISA_ROM_SIZE, layout, "pam")
        machine.mmio.register(layout.bios_base, layout.bios.size, RomWrites(), "bios-rom")
        self.legacy = add_legacy_devices(machine)
        self.firmware_log = DebugCon(self.legacy.debugcon.backend)
        machine.add_port_device(SEABIOS_LOG_PORT, 1, self.firmware_log, "firmware-log")

        self.pci = pci = PciHost(BusOps(machine.add_port_device, machine.pio.unregister,
                                        machine.add_mmio_device, machine.mmio.unregister))
        pci.attach(machine.add_port_device)
        pci.add(devfn(0), I440fxHostBridge(layout.set_pam))
        self.isa = Piix3Isa(machine.irq)
        pci.add(devfn(1, 0), self.isa)
        pm = AcpiPm(lambda: machine.finish(Outcome(End.POWEROFF, message="guest powered off")))
        self.pm = Piix4Pm(pm, ACPI_PM_LENGTH, machine.add_port_device, machine.pio.unregister)
        pci.add(devfn(1, 3), self.pm)
        machine.add_port_device(APM_PORT, 2, ApmControl(pm.set_sci_enabled), "apm")
        self.ide = self._ide(machine)
        pci.add(IDE_SLOT, self.ide)
        self._boot_order(machine.config.boot)
        if machine.config.vga == "std":
            self.vga = self._standard_vga(machine)
            pci.add(VGA_SLOT, self.vga.pci)

        self.fw_cfg = fw_cfg = FwCfg(machine.memory)
        machine.add_port_device(FW_CFG_PORT, 2, fw_cfg.ports, "fw_cfg")
        machine.add_port_device(DMA_PORT, DMA_LENGTH, fw_cfg.dma, "fw_cfg")
        self._describe(machine, fw_cfg)

    def _ide(self, machine: "Machine") -> PiixIde:
        """The PIIX3 IDE function with the user's drives where QEMU puts them: --cdrom on the
        secondary master, disks on the primary master and slave, then the secondary's free places."""
        cfg = machine.config
        places: list = [None, None, None, None]       # primary master/slave, secondary master/slave
        specs: list = [None, None, None, None]
        if cfg.cdrom is not None:
            path = cfg.cdrom.path
            image = DiskImage.open(path, readonly=True)
            problem = check_cd_image(path, image.read(0, DESCRIPTORS_AT + SECTOR), image.size)
            if problem is not None:
                image.close()
                raise ImageError(path, problem)
            places[2], specs[2] = AtapiCdrom(image), cfg.cdrom
        free = [i for i in (0, 1, 3, 2) if places[i] is None]
        for disk, index in zip(cfg.disks, free):
            places[index] = AtaDisk(DiskImage.open(disk.path, readonly=disk.readonly))
            specs[index] = disk
        self.boot_devices = sorted((spec.bootindex, ide_boot_path(index)) for index, spec in enumerate(specs)
                                   if spec is not None and spec.bootindex is not None)
        ide = PiixIde(machine.memory, machine.irq(14), machine.irq(15), primary=(places[0], places[1]),
                      secondary=(places[2], places[3]))
        ide.attach(machine.add_port_device)
        return ide

    def _boot_order(self, order: str) -> None:
        # The CMOS boot flags SeaBIOS reads on QEMU (as QEMU's -boot sets them): the first two
        # devices in 0x3D's nibbles, the third in 0x38's high nibble.
        codes = [BOOT_CODES[c] for c in order[:3]] + [0, 0, 0]
        self.legacy.rtc.ram[CMOS_BOOT_FLAG2] = codes[0] | codes[1] << 4
        self.legacy.rtc.ram[CMOS_BOOT_FLAG1] = codes[2] << 4

    def _standard_vga(self, machine: "Machine") -> Vga:
        """QEMU's standard VGA with SeaBIOS's VGA BIOS (from beside the BIOS, else the usual places)
        as its expansion ROM, which the firmware finds and runs."""
        beside = os.path.join(os.path.dirname(self.bios_path), VGA_BIOS_NAME)
        rom_path = beside if os.path.isfile(beside) else default_firmware(VGA_BIOS_NAME)
        if rom_path is None:
            raise ConfigError(f"--vga std needs {VGA_BIOS_NAME}: run `python3 -m images seabios` or "
                              f"give --vga none")
        try:
            with open(rom_path, "rb") as f:
                rom = f.read(1 << 20)
        except OSError as exc:
            raise ImageError(rom_path, f"cannot be read: {exc.strerror}") from None
        vga = Vga()
        vga.set_bios(rom)
        vga.attach(machine.add_port_device, machine.add_mmio_device)
        return vga

    def _describe(self, machine: "Machine", fw_cfg: FwCfg) -> None:
        # RAM as it is, holes included: the firmware reserves what it uses (as QEMU's e820 file).
        add_machine_items(machine, fw_cfg, ((r.gpa, r.size, E820_RAM) for r in machine.memory.regions))
        # No reboot when nothing boots: "No bootable device." and wait (QEMU's default).
        fw_cfg.add_file("etc/boot-fail-wait", struct.pack("<I", 0xFFFFFFFF))
        if self.boot_devices:
            # QEMU's "bootorder": the bootindex'd devices' firmware paths, lowest index first, one
            # a line, NUL-terminated; SeaBIOS tries them before its CMOS-flag defaults (boot.c).
            fw_cfg.add_file("bootorder", "\n".join(path for _, path in self.boot_devices).encode() + b"\0")
        # SMBIOS as QEMU hands it to SeaBIOS, which adds its own type 0 and places the tables. The
        # vCPUs are one socket's cores, as hvm's CPUID leaf 1 (one package) and QEMU's -smp N say.
        cpus = machine.config.cpus
        anchor, tables = smbios.build(cpus, [(r.gpa, r.size) for r in machine.memory.regions],
                                      cores_per_socket=cpus)
        fw_cfg.add_file(smbios.ANCHOR_FILE, anchor)
        fw_cfg.add_file(smbios.TABLES_FILE, tables)
        # The ACPI tables are made when the firmware reads them, after it has placed the PM
        # block and routed the PCI interrupts, so that they say where it put them.
        linked = loader_files(self._acpi_platform(machine))
        fw_cfg.add_generated_file(TABLES_FILE, lambda: loader_files(self._acpi_platform(machine)).tables)
        fw_cfg.add_file(RSDP_FILE, linked.rsdp)
        fw_cfg.add_file(LOADER_FILE, linked.loader)
        add_user_files(machine, fw_cfg)

    def _acpi_platform(self, machine: "Machine") -> AcpiPlatform:
        cpus = machine.config.cpus
        # The 32-bit PCI window: from the top of RAM below 4 GiB to the IOAPIC, as on QEMU's pc.
        window = (machine.memory.below_4g, layout.IOAPIC_BASE - 1)
        return AcpiPlatform(
            cpus=cpus, ioapic_id=cpus, ioapic_address=layout.IOAPIC_BASE, lapic_address=layout.LAPIC_BASE,
            pm_base=self.pm.pm_base or ACPI_PM_DEFAULT, s5_sleep_type=SLP_TYP_S5, reset_port=RESET_PORT,
            reset_value=RESET_VALUE, has_8042=True, century_cmos_index=CENTURY,
            isa_devices=acpi_isa_devices(machine),
            pci=PciRoot([self.isa.pirq_irq(i) for i in range(4)], window, isa_bridge_devfn=devfn(1, 0)),
            smi_cmd=APM_PORT, acpi_enable=ApmControl.ACPI_ENABLE, acpi_disable=ApmControl.ACPI_DISABLE)

    def boot(self, machine: "Machine") -> EntryState:
        return EntryState(Mode.RESET, RESET_CS_BASE + RESET_IP, regs={"edx": 0x600},
                          description="firmware reset vector")
