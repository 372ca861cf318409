"""The PC's chipset functions on PCI bus 0: the i440FX host bridge (with its PAM registers), the
PIIX3 PCI-to-ISA bridge (PIRQ routing of the PCI interrupt lines to ISA IRQs) and the PIIX4 power-management function (the ACPI PM
registers, placed where the firmware says).

Register offsets and reset values from Intel's 82441FX PMC datasheet (290549, §3.2: PAM0-PAM6 at
0x59-0x5F, SMRAM at 0x72) and 82371AB PIIX4 datasheet (290562, §3.1 PIRQRC 0x60-0x63 reset 0x80,
§7.1 PMBA 0x40, PMREGMISC 0x80 bit 0 PMIOSE); IDs as QEMU's `pc` machine shows them to guests.
"""
from __future__ import annotations

import threading
from typing import Callable

from ...irq import IrqLine
from ..base import Device
from .config import PciFunction

# Every function of QEMU's machines carries Red Hat's subsystem ID; SeaBIOS recognises QEMU by
# the host bridge's (and then takes its configuration from fw_cfg).
QEMU_SUBSYSTEM = (0x1AF4, 0x1100)
PAM0, PAM_COUNT = 0x59, 7
SMRAM = 0x72
PIRQ_ROUTE = 0x60
PMBA, PMREGMISC, PMIOSE = 0x40, 0x80, 1
DEVACTB, DEVACTB_APMC_EN = 0x58, 1 << 25
SMBBA, SMBHSTCFG = 0x90, 0xD2
RESERVED_IRQS = frozenset({0, 1, 2, 8, 13})   # PIRQRC values the PIIX3 datasheet reserves


class I440fxHostBridge(PciFunction):
    """Device 0: the host bridge. ``on_pam(values)`` hears the seven PAM registers after every
    write that touches them."""

    name = "i440fx"

    def __init__(self, on_pam: Callable[[bytes], None]):
        super().__init__(0x8086, 0x1237, 0x060000, revision=0x02, subsystem=QEMU_SUBSYSTEM)
        self.on_pam = on_pam
        self.writable(PAM0, PAM_COUNT, int.from_bytes(bytes([0x30] + [0x33] * 6), "little"))
        self.writable(SMRAM, 1, 0x78)    # D_OPEN, D_CLS, D_LCK (no SMM here: nothing else changes)
        self.set_config(SMRAM, 1, 0x02)

    def pam(self) -> bytes:
        """The PAM0-PAM6 registers."""
        return bytes(self.config[PAM0:PAM0 + PAM_COUNT])

    def config_written(self, offset: int, size: int, value: int) -> None:
        if offset < PAM0 + PAM_COUNT and offset + size > PAM0:
            self.on_pam(self.pam())


class Piix3Isa(PciFunction):
    """Device 1 function 0: the PCI-to-ISA bridge; a multi-function device (IDE and PM follow).
    ``interrupt(slot, pin)`` is the line a PCI device's INTA-INTD drives; the PIRQ registers
    steer it to an ISA IRQ (``isa_irq(n)`` gives the board's IRQ lines)."""

    name = "piix3"
    PIRQS = 4

    def __init__(self, isa_irq: Callable[[int], IrqLine] | None = None) -> None:
        self._isa_irq = isa_irq
        self._lock = threading.Lock()
        self._asserted: list[set[tuple[int, int]]] = [set() for _ in range(self.PIRQS)]
        self._driven: set[int] = set()   # ISA IRQs held up by PCI interrupts now
        super().__init__(0x8086, 0x7000, 0x060100, header_type=0x80, subsystem=QEMU_SUBSYSTEM)
        self.set_config(PIRQ_ROUTE, 4, 0x80808080)   # every PIRQ line disabled until routed
        self.writable(PIRQ_ROUTE, 4, 0x8F8F8F8F)
        self.writable(0x4C, 1, 0xFF)                 # IORT
        self.writable(0x4E, 2, 0xFFFF)               # XBCS
        self.writable(0x69, 1, 0xFE)                 # TOM
        self.writable(0x6A, 2, 0xFFFF)               # MSTAT
        self.writable(0xA0, 0x20, (1 << 256) - 1)     # power management (SMI) block, unused

    def pirq_irq(self, pirq: int) -> int | None:
        """The ISA IRQ PIRQ ``pirq`` (0-3 for A-D) is routed to, or None when disabled (or
        routed to an IRQ the PIIX3 reserves: 0-2, 8 and 13)."""
        value = self.config[PIRQ_ROUTE + pirq]
        irq = value & 0x0F
        return None if value & 0x80 or irq in RESERVED_IRQS else irq

    def interrupt(self, slot: int, pin: int) -> "PciInterrupt":
        """The line INTA-INTD (``pin`` 0-3) of the device in ``slot``: it reaches PIRQ
        (slot - 1 + pin) mod 4, the rotation PC boards wire and their BIOSes and ACPI tables assume."""
        if not 0 < slot < 32 or not 0 <= pin < 4:
            raise ValueError(f"no PCI interrupt INT{'ABCD'[pin % 4]} for slot {slot}")
        return PciInterrupt(self, (slot, pin), (slot - 1 + pin) % self.PIRQS)

    def _pin_level(self, source: tuple[int, int], pirq: int, level: bool) -> None:
        with self._lock:
            (self._asserted[pirq].add if level else self._asserted[pirq].discard)(source)
            self._drive()

    def config_written(self, offset: int, size: int, value: int) -> None:
        if offset < PIRQ_ROUTE + self.PIRQS and offset + size > PIRQ_ROUTE:
            with self._lock:
                self._drive()

    def _drive(self) -> None:
        # An ISA IRQ is up while any PCI interrupt routed to it is (the lines are shared, level).
        wanted = {self.pirq_irq(p) for p in range(self.PIRQS) if self._asserted[p]} - {None}
        if self._isa_irq is None:
            return
        for irq in sorted(self._driven - wanted):
            self._isa_irq(irq).set_level(False)
        for irq in sorted(wanted - self._driven):
            self._isa_irq(irq).set_level(True)
        self._driven = wanted


class PciInterrupt:
    """One PCI device's interrupt pin, as its device model drives it (level-triggered)."""

    def __init__(self, bridge: Piix3Isa, source: tuple[int, int], pirq: int):
        self._bridge, self._source, self.pirq = bridge, source, pirq

    def set_level(self, level: bool) -> None:
        self._bridge._pin_level(self._source, self.pirq, level)


class Piix4Pm(PciFunction):
    """Device 1 function 3: power management; its ACPI register block (``pm``) appears at PMBA
    when PMREGMISC enables it. ``map_port``/``unmap_port`` place it on the port bus."""

    name = "piix4-pm"
    BLOCK = 0x40

    def __init__(self, pm: Device, length: int, map_port: Callable[[int, int, Device, str], None],
                 unmap_port: Callable[[int], None]):
        super().__init__(0x8086, 0x7113, 0x068000, revision=0x03, irq_pin=1, subsystem=QEMU_SUBSYSTEM)
        self.pm, self.length = pm, length
        self._map, self._unmap = map_port, unmap_port
        self._at: int | None = None
        self.set_config(PMBA, 4, 1)                  # an I/O base
        self.writable(PMBA, 4, 0xFFC0)
        self.writable(PMREGMISC, 1, PMIOSE)
        # No SMM here: DEVACTB reports the APM-control SMI as already enabled, which tells
        # firmware SMM is set up and keeps SeaBIOS from waiting on an SMI that never comes (QEMU
        # does the same with -machine smm=off).
        self.set_config(DEVACTB, 4, DEVACTB_APMC_EN)
        self.set_config(SMBBA, 4, 1)
        self.writable(SMBBA, 4, 0xFFF0)
        self.writable(SMBHSTCFG, 1, 0x0F)

    @property
    def pm_base(self) -> int | None:
        """Where the PM registers decode now."""
        if not self.config[PMREGMISC] & PMIOSE:
            return None
        base = self.config_read(PMBA, 4) & 0xFFC0
        return base or None

    def config_written(self, offset: int, size: int, value: int) -> None:
        base = self.pm_base
        if base == self._at:
            return
        if self._at is not None:
            self._unmap(self._at)
            self._at = None
        if base is not None:
            try:
                self._map(base, self.length, self.pm, "acpi-pm")
            except ValueError:
                return   # collides with another device: the block decodes nothing
            self._at = base


class ApmControl(Device):
    """The APM control and status ports (0xB2/0xB3) the PIIX4 decodes. The FADT names 0xB2 as
    SMI_CMD: an OS writes ACPI_ENABLE (0xF1) there and waits for SCI_EN in PM1a_CNT, which the
    firmware's SMI handler would set. With no SMM here the port does it directly (as QEMU's
    PIIX4 does; ACPI 3.0 §4.7.2.5); 0xF0 clears it again. The status port is a plain register."""

    name = "apm"
    ACPI_ENABLE, ACPI_DISABLE = 0xF1, 0xF0

    def __init__(self, set_sci_enabled: Callable[[bool], None]):
        self._set_sci = set_sci_enabled
        self.command = self.status = 0

    def read(self, offset: int, size: int) -> int:
        value = self.command | self.status << 8
        return (value >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            byte, port = (value >> (8 * i)) & 0xFF, offset + i
            if port == 0:
                self.command = byte
                if byte in (self.ACPI_ENABLE, self.ACPI_DISABLE):
                    self._set_sci(byte == self.ACPI_ENABLE)
            elif port == 1:
                self.status = byte
