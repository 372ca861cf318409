"""An 82093AA-style I/O APIC with 24 inputs, as QEMU and KVM model it, as a pure state machine.

The guest selects a register by writing its index to IOREGSEL (offset 0x00) and reads or writes
it through IOWIN (offset 0x10); version 0x20 adds the EOI register at 0x40 (ICH datasheets).
Each input pin has a 64-bit redirection entry that turns a level change into an ApicMessage,
handed to ``deliver`` (normally ``ApicBus.route``).

Pin levels are electrical: with the polarity bit set (active low) a pin is asserted while its
level is 0.  A pin no device has ever driven counts as idle whatever its polarity, as boards pull
unused inputs to their inactive level.  Edge pins send one message per inactive→active change
and lose edges while masked; level pins send while asserted, set Remote IRR and send again only
after the EOI for their vector (82093AA datasheet 3.2.4).

Inputs may come from device threads, so state is guarded by a lock; messages are collected under
it and delivered after it is dropped, because delivery can come back here through an EOI.
"""
from __future__ import annotations

import threading
from typing import Callable

from ...irq import IrqLine
from ..base import Device
from .apic_bus import ApicMessage, DeliveryMode, DestMode, Trigger

PINS = 24
IOREGSEL = 0x00
IOWIN = 0x10
EOI_REG = 0x40

REG_ID, REG_VER, REG_ARB = 0x00, 0x01, 0x02
REG_REDTBL = 0x10

VERSION_82093AA = 0x11
VERSION_ICH = 0x20  # the version that has the EOI register

RTE_DELIVERY_STATUS = 1 << 12
RTE_POLARITY_LOW = 1 << 13
RTE_REMOTE_IRR = 1 << 14
RTE_LEVEL = 1 << 15
RTE_MASKED = 1 << 16
# Vector, delivery mode, destination mode, polarity, trigger mode, mask and the destination byte;
# delivery status and Remote IRR are read-only, the rest reserved.
RTE_WRITABLE = 0xFF00_0000_0001_AFFF
# 82093AA datasheet 3.2.4: 011 and 110 (STARTUP is a LAPIC-only message) are reserved.
_VALID_MODES = {m.value for m in DeliveryMode} - {DeliveryMode.STARTUP}


class IoApic(Device):
    """Twenty-four inputs (GSIs 0-23); ``deliver`` gets each message once the lock is dropped."""

    name = "ioapic"

    def __init__(self, deliver: Callable[[ApicMessage], None], *, version: int = VERSION_ICH,
                 ioapic_id: int = 0):
        if version not in (VERSION_82093AA, VERSION_ICH):
            raise ValueError(f"IOAPIC version {version:#x} is not 0x11 or 0x20")
        self._deliver = deliver
        self.version = version
        self._lock = threading.Lock()
        self._lines: dict[int, IrqLine] = {}
        self._levels = 0  # electrical pin levels, one bit per pin
        self._driven = 0  # pins some device has set at least once
        self._outbox: list[ApicMessage] = []
        self._messages: dict[int, tuple[int, ApicMessage]] = {}  # pin -> (entry, its message)
        self._initial_id = ioapic_id & 0xF
        self.reset()

    def reset(self) -> None:
        """Power-on state: every pin masked, ID as constructed; pin levels are the devices'."""
        with self._lock:
            self._id = self._initial_id
            self._select = 0
            self._rte = [RTE_MASKED] * PINS

    # -- the lock discipline ----------------------------------------------------------------------

    def _locked(self, fn, *args):
        with self._lock:
            result = fn(*args)
            out, self._outbox = self._outbox, []
        for msg in out:
            self._deliver(msg)
        return result

    def _asserted(self, pin: int) -> bool:
        bit = 1 << pin
        if not self._driven & bit:
            return False
        return bool(self._levels & bit) != bool(self._rte[pin] & RTE_POLARITY_LOW)

    def _send(self, pin: int) -> None:
        """Queue the message for ``pin``; a level entry is then busy until its EOI."""
        rte = self._rte[pin]
        mode = (rte >> 8) & 7
        if mode not in _VALID_MODES:
            return
        level = bool(rte & RTE_LEVEL)
        if level and mode in (DeliveryMode.FIXED, DeliveryMode.LOWEST):
            # Remote IRR tracks an interrupt the LAPIC will EOI; NMI/SMI/INIT/ExtINT are never
            # EOI'd, so (as the datasheet requires them to be edge) we do not wait for one.
            self._rte[pin] = rte | RTE_REMOTE_IRR
        cached = self._messages.get(pin)
        if cached is None or cached[0] != rte:
            cached = self._messages[pin] = (rte, ApicMessage(
                dest=rte >> 56, dest_mode=DestMode((rte >> 11) & 1), delivery_mode=DeliveryMode(mode),
                vector=rte & 0xFF, trigger=Trigger(level)))
        self._outbox.append(cached[1])

    def _service_level(self, pin: int) -> None:
        """A level pin sends when it is asserted, unmasked and not waiting for an EOI."""
        rte = self._rte[pin]
        if rte & RTE_LEVEL and not rte & (RTE_MASKED | RTE_REMOTE_IRR) and self._asserted(pin):
            self._send(pin)

    # -- input side -------------------------------------------------------------------------------

    def _set_irq_locked(self, gsi: int, level: bool) -> None:
        was = self._asserted(gsi)
        bit = 1 << gsi
        self._driven |= bit
        self._levels = self._levels | bit if level else self._levels & ~bit
        rte = self._rte[gsi]
        if rte & RTE_LEVEL:
            self._service_level(gsi)
        elif self._asserted(gsi) and not was and not rte & RTE_MASKED:
            self._send(gsi)

    def set_irq(self, gsi: int, level: bool) -> None:
        """Drive input ``gsi`` (0-23) to electrical ``level``."""
        if not 0 <= gsi < PINS:
            raise ValueError(f"IOAPIC input {gsi} out of range 0-{PINS - 1}")
        self._locked(self._set_irq_locked, gsi, bool(level))

    def retrigger(self, gsi: int) -> None:
        """Input ``gsi`` drops and rises again at once (``IrqLine.retrigger``)."""
        if not 0 <= gsi < PINS:
            raise ValueError(f"IOAPIC input {gsi} out of range 0-{PINS - 1}")
        self._locked(self._retrigger_locked, gsi)

    def _retrigger_locked(self, gsi: int) -> None:
        self._set_irq_locked(gsi, False)
        self._set_irq_locked(gsi, True)

    def irq_line(self, gsi: int) -> IrqLine:
        """A line a device core can drive; the same object for every call with ``gsi``."""
        if not 0 <= gsi < PINS:
            raise ValueError(f"IOAPIC input {gsi} out of range 0-{PINS - 1}")
        line = self._lines.get(gsi)
        if line is None:
            line = self._lines.setdefault(gsi, IrqLine(gsi, self.set_irq))
        return line

    def _eoi_locked(self, vector: int) -> None:
        for pin, rte in enumerate(self._rte):
            if rte & RTE_REMOTE_IRR and rte & 0xFF == vector:
                self._rte[pin] = rte & ~RTE_REMOTE_IRR
                self._service_level(pin)  # a line still asserted interrupts again

    def eoi(self, vector: int) -> None:
        """A LAPIC EOI'd level-triggered ``vector``: clear Remote IRR of the entries using it."""
        self._locked(self._eoi_locked, vector & 0xFF)

    # -- registers --------------------------------------------------------------------------------

    def _read_reg(self, index: int) -> int:
        if index == REG_ID:
            return self._id << 24
        if index == REG_VER:
            return (PINS - 1) << 16 | self.version
        if index == REG_ARB:
            return self._id << 24  # the 82093AA loads the arbitration ID from the ID register
        pin, high = divmod(index - REG_REDTBL, 2)
        if 0 <= pin < PINS:
            return (self._rte[pin] >> (32 * high)) & 0xFFFF_FFFF
        return 0

    def _write_reg(self, index: int, value: int) -> None:
        if index == REG_ID:
            self._id = (value >> 24) & 0xF
            return
        pin, high = divmod(index - REG_REDTBL, 2)
        if not 0 <= pin < PINS:
            return  # version, arbitration and unimplemented indexes are read-only
        old = self._rte[pin]
        shift = 32 * high
        merged = (old & ~(0xFFFF_FFFF << shift)) | (value << shift)
        rte = (merged & RTE_WRITABLE) | (old & RTE_REMOTE_IRR)
        if not rte & RTE_LEVEL:
            rte &= ~RTE_REMOTE_IRR  # switching to edge abandons the EOI wait, as QEMU and KVM do
        self._rte[pin] = rte
        # Unmasking (or switching to level) an asserted level pin delivers it now.
        self._service_level(pin)

    def _read_locked(self, offset: int) -> int:
        if offset == IOREGSEL:
            return self._select
        if offset == IOWIN:
            return self._read_reg(self._select)
        return 0

    def _write_locked(self, offset: int, value: int) -> None:
        if offset == IOREGSEL:
            self._select = value & 0xFF
        elif offset == IOWIN:
            self._write_reg(self._select, value)
        elif offset == EOI_REG and self.version == VERSION_ICH:
            self._eoi_locked(value & 0xFF)

    def read(self, offset: int, size: int) -> int:
        """IOREGSEL, or the register it selects through IOWIN; narrow reads take a slice."""
        base, shift = offset & ~3, 8 * (offset & 3)
        word = self._locked(self._read_locked, base)
        return (word >> shift) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """IOREGSEL, IOWIN or (version 0x20) EOI; a narrow IOWIN write merges into the register."""
        base, shift = offset & ~3, 8 * (offset & 3)
        width = min(size, 4 - (offset & 3))
        mask = ((1 << (8 * width)) - 1) << shift
        value = (value << shift) & mask

        def write_locked() -> None:
            word = value
            if mask != 0xFFFF_FFFF:
                word |= self._read_locked(base) & ~mask
            self._write_locked(base, word)

        self._locked(write_locked)
