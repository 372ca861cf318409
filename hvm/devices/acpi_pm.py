"""ACPI PM1a event/control blocks and PM timer at 0x600, where QEMU's ICH9/PIIX4 PM sits.

Writing SLP_EN with SLP_TYP 0 (the S5 value QEMU's DSDT and hvm's use) to PM1a_CNT powers the
machine off; the PM timer counts at 3.579545 MHz from the host's monotonic clock, in 32 bits (the
FADT sets TMR_VAL_EXT): QEMU's PIIX4 counts in 24, which wrap every 4.7 s, and Xen (which picks the
PM timer where no HPET is offered, as here) lost track of its time when it read the timer less
often than that while building dom0. Layout per the ACPI spec §4.8 (fixed hardware registers).
"""
from __future__ import annotations

import time
from typing import Callable

from .base import Device

DEFAULT_BASE = 0x600
LENGTH = 0x0C
PM1_EVT, PM1_EN, PM1_CNT, PM_TMR = 0x0, 0x2, 0x4, 0x8
SLP_EN = 1 << 13
SLP_TYP_SHIFT, SLP_TYP_MASK = 10, 0x7
SLP_TYP_S5 = 0
SCI_EN = 1
PM_TIMER_HZ = 3579545


class AcpiPm(Device):
    """PM1a_EVT (status/enable), PM1a_CNT (sleep control) and the 32-bit PM timer."""

    name = "acpi-pm"

    def __init__(self, on_poweroff: Callable[[], None], clock: Callable[[], int] = time.monotonic_ns):
        self._on_poweroff = on_poweroff
        self._clock = clock
        self._t0 = clock()
        self.status = 0
        self.enable = 0
        self.control = 0

    def set_sci_enabled(self, on: bool) -> None:
        """SCI_EN in PM1a_CNT, which hardware (an SMI handler) sets when the OS asks for ACPI mode."""
        self.control = self.control | SCI_EN if on else self.control & ~SCI_EN

    def _timer(self) -> int:
        return ((self._clock() - self._t0) * PM_TIMER_HZ // 1_000_000_000) & 0xFFFFFFFF

    def read(self, offset: int, size: int) -> int:
        """Registers are read byte-wise or whole; unaligned pieces are sliced from the register."""
        regs = self.status | self.enable << 16 | (self.control & ~SLP_EN) << 32 | self._timer() << 64
        return (regs >> (offset * 8)) & ((1 << (size * 8)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """Status bits are write-1-to-clear; SLP_EN with S5 powers off."""
        for i in range(size):
            self._write_byte(offset + i, (value >> (8 * i)) & 0xFF)

    def _write_byte(self, offset: int, byte: int) -> None:
        if offset < 2:
            self.status &= ~(byte << (8 * offset))
        elif offset < 4:
            shift = 8 * (offset - 2)
            self.enable = (self.enable & ~(0xFF << shift)) | byte << shift
        elif offset < 6:
            shift = 8 * (offset - 4)
            self.control = (self.control & ~(0xFF << shift)) | byte << shift
            if self.control & SLP_EN:
                typ = (self.control >> SLP_TYP_SHIFT) & SLP_TYP_MASK
                self.control &= ~SLP_EN
                if typ == SLP_TYP_S5:
                    self._on_poweroff()
