"""What every board tells firmware and kernels about the machine: the fw_cfg items QEMU's PC
machines offer, the user's own fw_cfg files, and the ISA devices its DSDT declares."""
from __future__ import annotations

from typing import TYPE_CHECKING, Iterable

from ..devices.cmos_rtc import PORT as RTC_PORT
from ..devices.fw_cfg import BASE_PORT as FW_CFG_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from ..devices.i8042 import COMMAND_PORT as I8042_COMMAND, DATA_PORT as I8042_DATA
from ..errors import ConfigError
from ..firmware.acpi import IsaDevice
from ..formats import fw_cfg as keys
from ..formats.e820 import E820Entry

if TYPE_CHECKING:
    from ..machine import Machine

KEYBOARD_IRQ, MOUSE_IRQ, RTC_IRQ = 1, 12, 8


def add_machine_items(machine: "Machine", fw_cfg: FwCfg, e820: Iterable[tuple[int, int, int]]) -> None:
    """The numbered items and ``etc/e820`` (``(address, size, type)`` entries)."""
    cpus = machine.config.cpus
    fw_cfg.add_item(keys.UUID, bytes(16))
    fw_cfg.add_u64(keys.RAM_SIZE, machine.memory.size)
    # NOGRAPHIC makes SeaBIOS mirror its screen on COM1: wanted unless the screen is shown.
    fw_cfg.add_u16(keys.NOGRAPHIC, 0 if machine.config.display == "text" else 1)
    fw_cfg.add_u16(keys.NB_CPUS, cpus)
    fw_cfg.add_u16(keys.MAX_CPUS, cpus)
    fw_cfg.add_u16(keys.BOOT_MENU, 0)
    fw_cfg.add_u32(keys.IRQ0_OVERRIDE, 1)   # IRQ 0 reaches IOAPIC pin 2, as the MADT says
    fw_cfg.add_file("etc/e820", b"".join(E820Entry.build(dict(addr=a, size=n, type=t)) for a, n, t in e820))


def add_user_files(machine: "Machine", fw_cfg: FwCfg) -> None:
    """The ``--fw-cfg`` files, after hvm's own (whose names they may not take)."""
    for user_file in machine.config.fw_cfg:
        if fw_cfg.has_file(user_file.name):
            raise ConfigError(f"--fw-cfg {user_file.name}: hvm provides this file itself")
        try:
            fw_cfg.add_file(user_file.name, user_file.data())
        except OSError as exc:
            raise ConfigError(f"--fw-cfg {user_file.name}: {user_file.path}: {exc.strerror}") from None
        except ValueError as exc:
            raise ConfigError(f"--fw-cfg {user_file.name}: {exc}") from None


def acpi_isa_devices(machine: "Machine") -> list[IsaDevice]:
    """The ISA devices of the legacy set (``boards.legacy``) and fw_cfg, as the DSDT lists them."""
    devices = [IsaDevice(f"COM{i + 1}", "PNP0501", [(base, 8)], [gsi], uid=i + 1)
               for i, (base, gsi) in enumerate(machine.com_ports)]
    return devices + [
        IsaDevice("RTC", "PNP0B00", [(RTC_PORT, 2)], [RTC_IRQ]),
        IsaDevice("KBD", "PNP0303", [(I8042_DATA, 1), (I8042_COMMAND, 1)], [KEYBOARD_IRQ]),
        # The i8042's auxiliary port: without it Linux's i8042 driver leaves the port unprobed.
        IsaDevice("MOU", "PNP0F13", [], [MOUSE_IRQ]),
        IsaDevice("FWCF", "QEMU0002", [(FW_CFG_PORT, DMA_PORT + DMA_LENGTH - FW_CFG_PORT)]),
    ]
