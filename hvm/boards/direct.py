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
from ..devices.cmos_rtc import CENTURY
from ..devices.fw_cfg import BASE_PORT as FW_CFG_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from ..devices.pc_testdev import PcTestdev
from ..devices.reset_control import RESET_PORT, RESET_VALUE
from ..firmware.acpi import ACPI_BASE, ACPI_LIMIT, AcpiPlatform, AcpiTables, build as build_acpi
from ..firmware.bios_data import write_bios_data
from ..outcome import End, Outcome
from . import Board
from .describe import acpi_isa_devices, add_machine_items, add_user_files
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
        # No boot order, SMBIOS or ACPI files: no firmware runs here to use them.
        add_machine_items(machine, fw_cfg, layout.e820_map(machine.memory))
        add_user_files(machine, fw_cfg)
        if testdev:
            self.testdev = PcTestdev(lambda gsi, level: machine.irq(gsi).set_level(level))
            self.testdev.attach(machine.add_port_device, machine.add_mmio_device)

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
        cpus = machine.config.cpus
        tables = build_acpi(AcpiPlatform(
            cpus=cpus, ioapic_id=cpus, ioapic_address=layout.IOAPIC_BASE,
            lapic_address=layout.LAPIC_BASE, pm_base=ACPI_PM_BASE, s5_sleep_type=SLP_TYP_S5,
            reset_port=RESET_PORT, reset_value=RESET_VALUE, has_8042=True, century_cmos_index=CENTURY,
            isa_devices=acpi_isa_devices(machine)))
        machine.memory.write(tables.base, tables.blob)
        return tables
