"""The PC's two cascaded 8259A PICs plus the PIIX ELCR, as a pure state machine.

The master answers at ports 0x20-0x21 and the slave at 0xA0-0xA1; the slave's INT output is wired
to the master's IR2.  The ELCR (0x4D0-0x4D1) picks edge or level sensing per input, as the PIIX
south bridge does.  Nothing here knows about a CPU: the engine asks :meth:`Pic8259Pair.intr` and
runs the INTA cycle with :meth:`Pic8259Pair.acknowledge`.

Edge inputs latch: a rising edge sets IRR and a later falling edge does not clear it, so a request
survives until INTA.  The datasheet wants an edge input held high until INTA, but QEMU latches and
so does this model, because the PIT and other device cores only *pulse* their lines.
"""
from __future__ import annotations

import threading
from typing import Callable

from ...irq import IrqLine
from ..base import Device

MASTER_PORT = 0x20
SLAVE_PORT = 0xA0
ELCR_PORT = 0x4D0
CASCADE_IR = 2
SPURIOUS_IR = 7

# The PIIX wires these inputs as edge-only (timer, keyboard, cascade, RTC, FPU error).
ELCR_MASTER_WRITABLE = 0xF8
ELCR_SLAVE_WRITABLE = 0xDE

ICW1_IC4 = 0x01
ICW1_SNGL = 0x02
ICW1_LTIM = 0x08
ICW1 = 0x10
ICW4_AEOI = 0x02
OCW3 = 0x08
OCW3_RIS = 0x01
OCW3_RR = 0x02
OCW3_POLL = 0x04
OCW3_SMM = 0x20
OCW3_ESMM = 0x40

# Initialization progress: which ICW the data port expects next.
_READY, _WANT_ICW2, _WANT_ICW3, _WANT_ICW4 = range(4)


def _priority(bits: int, rotation: int) -> int:
    """Rank of the most urgent set bit (0 = most urgent), or 8 for none, under ``rotation``."""
    for rank in range(8):
        if bits & (1 << ((rank + rotation) & 7)):
            return rank
    return 8


class _Chip(Device):
    """One 8259A.  All state is guarded by the owning pair's lock, taken in ``read``/``write``."""

    def __init__(self, pair: Pic8259Pair, name: str):
        self.name = name
        self._pair = pair
        self.base = 0
        self.elcr = 0
        self.lines = 0  # input pin levels as last driven
        self.ltim = self.single = False
        self.reset()

    def reset(self) -> None:
        """What ICW1 does; pin levels survive so an input already high needs a fresh edge."""
        self.latched = 0  # edge-sensed requests not yet acknowledged
        self.imr = self.isr = 0
        self.rotation = 0  # the IR level that currently has top priority
        self.read_isr = self.poll = self.special_mask = False
        self.auto_eoi = self.rotate_on_aeoi = False
        self.want_icw4 = False
        self.init = _READY

    @property
    def level_mask(self) -> int:
        return 0xFF if self.ltim else self.elcr

    @property
    def irr(self) -> int:
        level = self.level_mask
        return (self.latched & ~level) | (self.lines & level)

    def set_input(self, ir: int, level: bool) -> None:
        bit = 1 << ir
        if level and not self.lines & bit and not self.level_mask & bit:
            self.latched |= bit
        self.lines = self.lines | bit if level else self.lines & ~bit

    def pending(self) -> int | None:
        """The IR this chip would signal on INT now, honouring masks and in-service nesting."""
        rank = _priority(self.irr & ~self.imr, self.rotation)
        if rank == 8:
            return None
        # In special mask mode a masked in-service level stops blocking the levels beneath it,
        # which is how a handler lets lower-priority devices in while it runs.
        blocking = self.isr & ~self.imr if self.special_mask else self.isr
        if rank < _priority(blocking, self.rotation):
            return (rank + self.rotation) & 7
        return None

    def intack(self, ir: int) -> None:
        bit = 1 << ir
        if self.auto_eoi:
            if self.rotate_on_aeoi:
                self.rotation = (ir + 1) & 7
        else:
            self.isr |= bit
        self.latched &= ~bit  # a level input keeps requesting until its device lets go

    def _eoi(self, ir: int | None, rotate: bool) -> None:
        if ir is None:
            rank = _priority(self.isr, self.rotation)
            if rank == 8:
                return
            ir = (rank + self.rotation) & 7
        self.isr &= ~(1 << ir)
        if rotate:
            self.rotation = (ir + 1) & 7

    def _poll_read(self) -> int:
        ir = self.pending()
        if ir is None:
            return 0
        self.intack(ir)
        return 0x80 | ir

    # -- guest ports (called with the pair's lock held) -----------------------------------------

    def read_locked(self, offset: int) -> int:
        if self.poll:
            # The datasheet treats whichever read follows the poll command as the INTA.
            self.poll = False
            return self._poll_read()
        if offset:
            return self.imr
        return self.isr if self.read_isr else self.irr

    def write_locked(self, offset: int, value: int) -> None:
        if offset == 0:
            if value & ICW1:
                self._icw1(value)
            elif value & OCW3:
                self._ocw3(value)
            else:
                self._ocw2(value)
        elif self.init == _WANT_ICW2:
            self.base = value & 0xF8
            if not self.single:
                self.init = _WANT_ICW3
            else:
                self.init = _WANT_ICW4 if self.want_icw4 else _READY
        elif self.init == _WANT_ICW3:
            self.init = _WANT_ICW4 if self.want_icw4 else _READY  # the PC's wiring is fixed
        elif self.init == _WANT_ICW4:
            self.auto_eoi = bool(value & ICW4_AEOI)
            self.init = _READY
        else:
            self.imr = value

    def _icw1(self, value: int) -> None:
        self.reset()
        self.ltim = bool(value & ICW1_LTIM)
        self.single = bool(value & ICW1_SNGL)
        self.want_icw4 = bool(value & ICW1_IC4)
        self.init = _WANT_ICW2

    def _ocw2(self, value: int) -> None:
        command, ir = value >> 5, value & 7
        if command == 0b001:
            self._eoi(None, rotate=False)
        elif command == 0b011:
            self._eoi(ir, rotate=False)
        elif command == 0b101:
            self._eoi(None, rotate=True)
        elif command == 0b111:
            self._eoi(ir, rotate=True)
        elif command == 0b100:
            self.rotate_on_aeoi = True
        elif command == 0b000:
            self.rotate_on_aeoi = False
        elif command == 0b110:
            self.rotation = (ir + 1) & 7  # IR ``ir`` becomes the least urgent

    def _ocw3(self, value: int) -> None:
        if value & OCW3_RR:
            self.read_isr = bool(value & OCW3_RIS)
        if value & OCW3_ESMM:
            self.special_mask = bool(value & OCW3_SMM)
        if value & OCW3_POLL:
            self.poll = True

    def read(self, offset: int, size: int) -> int:
        """Command port: IRR or ISR (per OCW3) or a poll answer; data port: IMR."""
        return self._pair._locked(self.read_locked, offset & 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """ICW1/OCW2/OCW3 on the command port, ICW2-4 then IMR on the data port; low byte only."""
        self._pair._locked(self.write_locked, offset & 1, value & 0xFF)


class _Elcr(Device):
    """The PIIX edge/level control pair: offset 0 covers IRQ0-7, offset 1 IRQ8-15."""

    name = "elcr"

    def __init__(self, pair: Pic8259Pair):
        self._pair = pair

    def _read_locked(self) -> int:
        return self._pair.master.elcr | self._pair.slave.elcr << 8

    def _write_locked(self, offset: int, size: int, value: int) -> None:
        for i in range(min(size, 2 - offset)):
            chip = (self._pair.master, self._pair.slave)[offset + i]
            writable = ELCR_MASTER_WRITABLE if chip is self._pair.master else ELCR_SLAVE_WRITABLE
            chip.elcr = (value >> (8 * i)) & writable
            chip.latched &= ~chip.level_mask  # stale edge latches must not fire if switched back

    def read(self, offset: int, size: int) -> int:
        """Both registers as one little-endian word, sliced by offset and size."""
        word = self._pair._locked(self._read_locked)
        return (word >> (8 * offset)) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """Set the level-sensed inputs; the PIIX's hard-wired edge inputs stay edge."""
        if 0 <= offset < 2:
            self._pair._locked(self._write_locked, offset, size, value)


class Pic8259Pair:
    """Master and slave 8259A with the ELCR; ``on_intr`` hears each rise of the master's INT."""

    def __init__(self, on_intr: Callable[[], None]):
        self._on_intr = on_intr
        self._lock = threading.Lock()
        self.master = _Chip(self, "pic-master")
        self.slave = _Chip(self, "pic-slave")
        self.elcr = _Elcr(self)
        self._lines: dict[int, IrqLine] = {}
        self._ir2_external = False
        self._int = False
        # The CPU commits to an INTA once it has seen INT, so a request withdrawn in between is
        # answered with the spurious IR7 vector; with no INT since the last INTA there is nothing.
        self._int_seen = False

    # -- state changes: always under the lock, with on_intr called after it is dropped ----------

    def _locked(self, fn, *args):
        with self._lock:
            result = fn(*args)
            rose = self._propagate()
        if rose:
            self._on_intr()
        return result

    def _propagate(self) -> bool:
        """Feed the slave's INT to master IR2 and report whether the master's INT just rose."""
        slave_int = not self.master.single and self.slave.pending() is not None
        self.master.set_input(CASCADE_IR, slave_int or self._ir2_external)
        now = self.master.pending() is not None
        rose = now and not self._int
        self._int = now
        self._int_seen |= now
        return rose

    def _set_irq_locked(self, irq: int, level: bool) -> None:
        if irq == CASCADE_IR:
            self._ir2_external = level  # wired-OR with the cascade; nothing on a PC drives it
        elif irq < 8:
            self.master.set_input(irq, level)
        else:
            self.slave.set_input(irq - 8, level)

    def set_irq(self, irq: int, level: bool) -> None:
        """Drive ISA interrupt input ``irq`` (0-15) to ``level``."""
        if not 0 <= irq < 16:
            raise ValueError(f"PIC input {irq} out of range 0-15")
        self._input(irq, (bool(level),))

    def retrigger(self, irq: int) -> None:
        """Input ``irq`` drops and rises again at once (``IrqLine.retrigger``)."""
        if not 0 <= irq < 16:
            raise ValueError(f"PIC input {irq} out of range 0-15")
        self._input(irq, (False, True))

    def _input(self, irq: int, levels: tuple[bool, ...]) -> None:
        if irq == CASCADE_IR:
            for level in levels:
                self._locked(self._set_irq_locked, irq, level)
            return
        chip, ir = (self.master, irq) if irq < 8 else (self.slave, irq - 8)
        with self._lock:
            for level in levels:
                chip.set_input(ir, level)
            if chip.imr >> ir & 1:
                return   # masked: what the chip signals cannot change (a guest on the IOAPIC)
            rose = self._propagate()
        if rose:
            self._on_intr()

    def irq_line(self, irq: int) -> IrqLine:
        """A line a device core can drive; one per input, handed out again on each call."""
        if not 0 <= irq < 16:
            raise ValueError(f"PIC input {irq} out of range 0-15")
        line = self._lines.get(irq)
        if line is None:
            line = self._lines.setdefault(irq, IrqLine(irq, self.set_irq))
        return line

    def intr(self) -> bool:
        """Whether the master's INT output is asserted."""
        with self._lock:
            return self._int

    def _acknowledge_locked(self) -> int | None:
        master, slave = self.master, self.slave
        ir = master.pending()
        if ir is None:
            if not self._int_seen:
                return None
            vector = master.base | SPURIOUS_IR
        elif ir == CASCADE_IR and not master.single:
            sub = slave.pending()
            if sub is None:
                vector = slave.base | SPURIOUS_IR  # the master still puts IR2 in service
            else:
                slave.intack(sub)
                vector = slave.base | sub
            master.intack(ir)
        else:
            master.intack(ir)
            vector = master.base | ir
        self._int_seen = False  # _propagate sets it again if INT stays up (auto-EOI, SMM)
        return vector

    def acknowledge(self) -> int | None:
        """Run the INTA cycle: the vector to deliver (now in service), or None if INT never rose."""
        return self._locked(self._acknowledge_locked)
