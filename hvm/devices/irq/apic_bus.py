"""Interrupt messages between IOAPICs and local APICs, and the bus that routes them.

On a Pentium 4 or later these are messages on the system bus (Intel SDM vol. 3A 11.6); here a
message is a function call that reaches every target before ``route`` returns, which is why the
delivery-status bits of the ICR and of the redirection entries always read idle.

Nothing here holds a lock: every LAPIC and IOAPIC guards its own state and calls the bus only
after dropping its lock, so a message may travel LAPIC → bus → LAPIC (a self IPI) or
LAPIC → bus → IOAPIC → bus → LAPIC (an EOI re-delivering a level interrupt) without deadlock.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any, Callable

if TYPE_CHECKING:
    from .lapic import LocalApic

XAPIC_BROADCAST = 0xFF
X2APIC_BROADCAST = 0xFFFF_FFFF


class DeliveryMode(IntEnum):
    """ICR / redirection entry bits 8-10 (SDM vol. 3A 11.6.1); 3 is reserved."""

    FIXED = 0
    LOWEST = 1
    SMI = 2
    NMI = 4
    INIT = 5
    STARTUP = 6
    EXTINT = 7


class DestMode(IntEnum):
    PHYSICAL = 0
    LOGICAL = 1


class Trigger(IntEnum):
    EDGE = 0
    LEVEL = 1


class Shorthand(IntEnum):
    """ICR bits 18-19."""

    NONE = 0
    SELF = 1
    ALL = 2  # all including self
    OTHERS = 3  # all excluding self


@dataclass(frozen=True)
class ApicMessage:
    """One interrupt message; ``x2apic`` says ``dest`` is a 32-bit x2APIC ID or logical ID."""

    dest: int
    dest_mode: DestMode
    delivery_mode: DeliveryMode
    vector: int
    trigger: Trigger = Trigger.EDGE
    level: bool = True
    shorthand: Shorthand = Shorthand.NONE
    x2apic: bool = False
    sender: Any = field(default=None, compare=False, repr=False)  # the LocalApic, for shorthands


class ApicBus:
    """Delivers messages to the LAPICs in ``lapics``; EOIs of level vectors go to the IOAPICs."""

    def __init__(self) -> None:
        self.lapics: list[LocalApic] = []
        self._eoi_listeners: list[Callable[[int], None]] = []
        # Who a directed message reaches, by (dest, dest mode, x2APIC format): forgotten whenever
        # a LAPIC's addressing (enable, mode, ID, LDR, DFR) changes. A UART's THRE edge per byte
        # sent would otherwise ask every LAPIC again.
        self._targets: dict[tuple, list[LocalApic]] = {}

    def add_lapic(self, lapic: LocalApic) -> None:
        """Put a local APIC on the bus."""
        self.lapics.append(lapic)
        lapic.on_addressing = self.forget_targets
        self._targets = {}

    def forget_targets(self) -> None:
        """A LAPIC's addressing changed (it calls this)."""
        self._targets = {}

    def add_ioapic(self, ioapic: Any) -> None:
        """Let ``ioapic.eoi(vector)`` hear every EOI of a level-triggered vector."""
        self._eoi_listeners.append(ioapic.eoi)

    def targets(self, msg: ApicMessage) -> list[LocalApic]:
        """The LAPICs ``msg`` is addressed to, before lowest-priority arbitration."""
        if msg.shorthand == Shorthand.SELF:
            return [msg.sender] if msg.sender is not None else []
        if msg.shorthand == Shorthand.ALL:
            return [a for a in self.lapics if a.present]
        if msg.shorthand == Shorthand.OTHERS:
            return [a for a in self.lapics if a.present and a is not msg.sender]
        key = (msg.dest, msg.dest_mode, msg.x2apic)
        cache = self._targets
        found = cache.get(key)
        if found is None:
            found = cache[key] = [a for a in self.lapics
                                  if a.matches(msg.dest, msg.dest_mode == DestMode.LOGICAL, msg.x2apic)]
        return found

    def route(self, msg: ApicMessage) -> None:
        """Deliver ``msg`` (from an IOAPIC or an ICR write) to its destination(s)."""
        targets = self.targets(msg)
        if msg.delivery_mode == DeliveryMode.LOWEST and len(targets) > 1:
            # The SDM leaves the choice among equals to the chipset (11.6.2.4); we pick the
            # lowest processor priority, then the lowest APIC ID, so the result is reproducible.
            # An APIC that would drop a fixed interrupt (software-disabled) is not a candidate.
            willing = [a for a in targets if a.accepts_fixed] or targets
            targets = [min(willing, key=lambda a: (a.ppr, a.apic_id))]
        for lapic in targets:
            lapic.accept(msg)

    def eoi(self, vector: int) -> None:
        """A LAPIC EOI'd a level-triggered ``vector``: the IOAPICs' directed EOI."""
        for listener in self._eoi_listeners:
            listener(vector)
