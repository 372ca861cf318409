"""The direct-boot board: hvm loads the kernel itself and stands in for the firmware.

What a kernel finds is what it would find after a PC BIOS and a boot loader: the legacy ISA
devices, an ACPI PM block for power-off, ACPI tables and a BIOS data area with real-mode
handlers in low memory (``hvm/firmware``), QEMU's fw_cfg device, and the kernel, initrd or modules
placed by the boot protocol the image speaks (``hvm/boot``)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from .. import layout
from ..boot.entry import EntryState
from ..boot.loader import load_kernel
from ..devices.acpi_pm import AcpiPm, DEFAULT_BASE as ACPI_PM_BASE, LENGTH as ACPI_PM_LENGTH, SLP_TYP_S5
from ..devices.cmos_rtc import CENTURY, PORT as RTC_PORT
from ..devices.fw_cfg import BASE_PORT as FW_CFG_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from ..devices.pc_testdev import PcTestdev
from ..devices.i8042 import COMMAND_PORT as I8042_COMMAND, DATA_PORT as I8042_DATA
from ..devices.reset_control import RESET_PORT, RESET_VALUE
from ..errors import ConfigError
from ..firmware.acpi import ACPI_BASE, ACPI_LIMIT, AcpiPlatform, AcpiTables, IsaDevice, build as build_acpi
from ..firmware.bios_data import write_bios_data
from ..formats import fw_cfg as keys
from ..formats.e820 import E820Entry
from ..outcome import End, Outcome
from . import Board
from .legacy import LegacyDevices, add_legacy_devices

if TYPE_CHECKING:
    from ..machine import Machine


class DirectBoard(Board):
    """A PC without firmware: the kernel given with ``--kernel`` runs first."""

    name = "direct"

    def __init__(self) -> None:
        self.legacy: LegacyDevices | None = None
        self.acpi: AcpiTables | None = None
        self.fw_cfg: FwCfg | None = None
        self.testdev: PcTestdev | None = None

    def attach(self, machine: "Machine") -> None:
        testdev = "pc-testdev" in machine.config.devices
        self.legacy = add_legacy_devices(machine, debugcon_port=not testdev)   # 0xe9 is pc-testdev's
        machine.add_port_device(ACPI_PM_BASE, ACPI_PM_LENGTH, AcpiPm(
            lambda: machine.finish(Outcome(End.POWEROFF, message="guest powered off"))))
        self.fw_cfg = fw_cfg = FwCfg(machine.memory)
        machine.add_port_device(FW_CFG_PORT, 2, fw_cfg.ports, "fw_cfg")
        machine.add_port_device(DMA_PORT, DMA_LENGTH, fw_cfg.dma, "fw_cfg")
        self._describe(machine, fw_cfg)
        if testdev:
            self.testdev = PcTestdev(lambda gsi, level: machine.irq(gsi).set_level(level))
            self.testdev.attach(machine.add_port_device, machine.add_mmio_device)

    @staticmethod
    def _describe(machine: "Machine", fw_cfg: FwCfg) -> None:
        """The items QEMU's PC machine offers that describe this machine (no boot order, SMBIOS
        or ACPI files: no firmware runs here to use them)."""
        cpus = machine.config.cpus
        fw_cfg.add_item(keys.UUID, bytes(16))
        fw_cfg.add_u64(keys.RAM_SIZE, machine.memory.size)
        fw_cfg.add_u16(keys.NOGRAPHIC, 1)
        fw_cfg.add_u16(keys.NB_CPUS, cpus)
        fw_cfg.add_u16(keys.MAX_CPUS, cpus)
        fw_cfg.add_u16(keys.BOOT_MENU, 0)
        fw_cfg.add_u32(keys.IRQ0_OVERRIDE, 1)   # IRQ 0 reaches IOAPIC pin 2, as the MADT says
        fw_cfg.add_file("etc/e820", b"".join(E820Entry.build(dict(addr=a, size=n, type=t))
                                             for a, n, t in layout.e820_map(machine.memory)))
        for user_file in machine.config.fw_cfg:
            if user_file.name == "etc/e820":
                raise ConfigError(f"--fw-cfg {user_file.name}: hvm provides this file itself")
            try:
                fw_cfg.add_file(user_file.name, user_file.data())
            except OSError as exc:
                raise ConfigError(f"--fw-cfg {user_file.name}: {user_file.path}: {exc.strerror}") from None

    def boot(self, machine: "Machine") -> EntryState:
        mem = machine.memory
        self.acpi = self._write_acpi_tables(machine)
        e820 = layout.e820_map(mem)
        write_bios_data(mem, [base for base, _gsi in machine.com_ports], e820)
        return load_kernel(mem, machine.config, e820, rsdp=self.acpi.rsdp if self.acpi else None,
                           host_decompress=machine.host_decompress,
                           linux_cmdline_additions=tuple(a for a, _ in machine.cmdline_additions))

    @staticmethod
    def _write_acpi_tables(machine: "Machine") -> AcpiTables | None:
        """Describe the machine in ACPI tables below 1 MiB, as firmware would. None when RAM does
        not reach that area."""
        if not any(r.gpa == 0 and r.end >= ACPI_BASE + ACPI_LIMIT for r in machine.memory.regions):
            return None
        devices = [IsaDevice(f"COM{i + 1}", "PNP0501", [(base, 8)], [gsi], uid=i + 1)
                   for i, (base, gsi) in enumerate(machine.com_ports)]
        devices += [IsaDevice("RTC", "PNP0B00", [(RTC_PORT, 2)], [8]),
                    IsaDevice("KBD", "PNP0303", [(I8042_DATA, 1), (I8042_COMMAND, 1)], [1]),
                    IsaDevice("FWCF", "QEMU0002", [(FW_CFG_PORT, DMA_PORT + DMA_LENGTH - FW_CFG_PORT)])]
        cpus = machine.config.cpus
        tables = build_acpi(AcpiPlatform(
            cpus=cpus, ioapic_id=cpus, ioapic_address=layout.IOAPIC_BASE,
            lapic_address=layout.LAPIC_BASE, pm_base=ACPI_PM_BASE, s5_sleep_type=SLP_TYP_S5,
            reset_port=RESET_PORT, reset_value=RESET_VALUE, has_8042=True, century_cmos_index=CENTURY,
            isa_devices=devices))
        machine.memory.write(tables.base, tables.blob)
        return tables
