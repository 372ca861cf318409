"""The chipset's Reset Control Register at port 0xCF9 (Intel PIIX3/PIIX4 and ICH datasheets):
writing it with RST_CPU (bit 2) set resets the machine; SYS_RST (bit 1) asks for a hard reset
and is remembered. The FADT names this register and value 0x06 as the ACPI reset register.
"""
from __future__ import annotations

from typing import Callable

from .base import Device

RESET_PORT = 0xCF9
SYS_RST = 1 << 1
RST_CPU = 1 << 2
RESET_VALUE = SYS_RST | RST_CPU


class ResetControl(Device):
    """Port 0xCF9; ``on_reset`` is called when the guest resets the machine through it."""

    name = "reset-control"

    def __init__(self, on_reset: Callable[[str], None]):
        self._on_reset = on_reset
        self.value = 0

    def read(self, offset: int, size: int) -> int:
        return self.value & SYS_RST

    def write(self, offset: int, size: int, value: int) -> None:
        if value & RST_CPU:
            self._on_reset(f"reset through port {RESET_PORT:#x} (value {value & 0xFF:#04x})")
            return
        self.value = value & SYS_RST
