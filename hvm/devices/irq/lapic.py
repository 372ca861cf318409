"""A local APIC for the software engine: the xAPIC MMIO page, the x2APIC MSRs and the APIC timer.

Priorities follow Intel SDM vol. 3A 11.8.3.1: the processor priority (PPR) is the TPR or the class
of the highest vector in service, and the highest requested vector is delivered only when its
class is above the PPR's.  The engine sees the LAPIC the way it sees the 8259 pair: ``intr`` is
the INTR line and ``acknowledge`` the INTA cycle.  NMI, SMI, INIT and STARTUP are latched for the
vCPU scheduler to take (``take_nmi``, ``take_init``, ``take_sipi``).

The PC wires the 8259's INTR to LINT0.  When LINT0 is unmasked in ExtINT mode ("virtual wire"),
when the APIC is globally disabled, or after an ExtINT message from the IOAPIC, ``acknowledge``
runs the 8259's INTA instead.  The SDM has every LVT masked at reset (11.4.7.1), but the BSP's
LINT0 here reads as ExtINT and unmasked, the setting every BIOS leaves there: QEMU and KVM preset
it the same way, so PIC interrupts reach a CPU whose APIC the OS never touched.  Software-disabling
the APIC masks every LVT as the SDM says (11.4.7.2), and then nothing passes.

The timer is never decremented: like the 8254 model it remembers when its count started and
derives the current count from the clock.  It counts at ``bus_hz`` divided by the divide
configuration; the default 1 GHz is KVM's APIC bus (a guest can be told through CPUID 0x15/0x16
or the hypervisor timing leaf 0x40000010).  Directed EOI (EOI-broadcast suppression) and the CMCI
LVT are not advertised.  In x2APIC mode WRMSR raises #GP where the SDM is explicit (read-only and
absent registers, TPR/SELF IPI/ICR reserved bits, non-zero EOI/ESR writes, upper halves); other
reserved LVT bits are dropped as KVM drops them.  Relocating the page through IA32_APIC_BASE is
recorded (``base_address``) but the MMIO registration is the owner's business.

State is guarded by a lock because messages arrive from other threads (an IOAPIC input driven by
a device thread, another vCPU's IPI).  Everything that leaves the LAPIC (IPIs, EOI messages,
``on_intr``) is queued under the lock and done after it is dropped.
"""
from __future__ import annotations

import threading
import time
from typing import Callable, Protocol

from ..base import Device
from .apic_bus import ApicMessage, DeliveryMode, DestMode, Shorthand, Trigger

NS_PER_S = 1_000_000_000
DEFAULT_BUS_HZ = 1_000_000_000
# A periodic timer interrupts at most this often, as KVM's LAPIC does (min_timer_period_us, 200 by
# default: limit_periodic_timer_frequency in arch/x86/kvm/lapic.c). With TMICT 1 at divide-by-1 a
# guest would otherwise ask for one every nanosecond. The current count still runs at bus_hz.
MIN_PERIOD_NS = 200_000
DEFAULT_BASE = 0xFEE0_0000

MSR_APIC_BASE = 0x1B
MSR_TSC_DEADLINE = 0x6E0
MSR_X2APIC_FIRST, MSR_X2APIC_LAST = 0x800, 0x8FF

BASE_BSP = 1 << 8
BASE_EXTD = 1 << 10
BASE_EN = 1 << 11

VERSION = 0x14
LVT_COUNT = 6
VERSION_REG = (LVT_COUNT - 1) << 16 | VERSION

# Register indexes: xAPIC offset >> 4, and x2APIC MSR - 0x800 (SDM vol. 3A table 11-6).
ID, VER, TPR, APR, PPR, EOI, RRD, LDR, DFR, SVR = (
    0x02, 0x03, 0x08, 0x09, 0x0A, 0x0B, 0x0C, 0x0D, 0x0E, 0x0F)
ISR0, TMR0, IRR0, ESR = 0x10, 0x18, 0x20, 0x28
ICR_LO, ICR_HI = 0x30, 0x31
LVT0 = 0x32  # timer, thermal, performance counters, LINT0, LINT1, error
TMICT, TMCCT, TDCR, SELF_IPI = 0x38, 0x39, 0x3E, 0x3F

TIMER, THERMAL, PERF, LINT0, LINT1, ERROR = range(LVT_COUNT)
LVT_REMOTE_IRR = 1 << 14
LVT_LEVEL = 1 << 15
LVT_MASKED = 1 << 16
_LVT_WRITABLE = [0x3_00FF, 0x1_07FF, 0x1_07FF, 0x1_A7FF, 0x1_A7FF, 0x1_00FF]
TIMER_ONESHOT, TIMER_PERIODIC, TIMER_TSC_DEADLINE = 0, 1, 2

SVR_ENABLE = 1 << 8
SVR_WRITABLE = 0x3FF  # vector, software enable, focus checking (stored; P4+ do no focus checks)

ESR_SEND_ILLEGAL_VECTOR = 1 << 5
ESR_RECEIVE_ILLEGAL_VECTOR = 1 << 6
ESR_ILLEGAL_REGISTER = 1 << 7

ICR_WRITABLE = 0xC_CFFF  # bit 12 (delivery status) is read-only and reads idle
ICR_RESERVED_X2APIC = 0xFFF3_2000  # bits a WRMSR may not set in the low half (SDM 11.12.9);
# bit 12 is ignored rather than refused, as KVM does, since it reads back as zero anyway

MODE_DISABLED, MODE_XAPIC, MODE_X2APIC = "disabled", "xapic", "x2apic"

_X2APIC_READABLE = {ID, VER, TPR, PPR, LDR, SVR, ESR, ICR_LO, TMICT, TMCCT, TDCR,
                    *range(ISR0, ESR), *range(LVT0, LVT0 + LVT_COUNT)}
_XAPIC_READABLE = (_X2APIC_READABLE | {APR, EOI, RRD, DFR, ICR_HI})
_READ_ONLY = {VER, APR, PPR, RRD, TMCCT, *range(ISR0, ESR)}
_X2APIC_WRITABLE = {TPR, EOI, SVR, ESR, TMICT, TDCR, *range(LVT0, LVT0 + LVT_COUNT)}


class ExtIntSource(Protocol):
    """The 8259 pair as LINT0 sees it."""

    def intr(self) -> bool: ...

    def acknowledge(self) -> int | None: ...


class TscView(Protocol):
    """The guest TSC over the same clock as the LAPIC (``hvm.clock.GuestClock``)."""

    tsc_hz: int

    def ns_to_tsc(self, ns: int) -> int: ...

    def tsc_to_ns(self, tsc: int) -> int: ...


def _mode_of(apic_base: int) -> str:
    if not apic_base & BASE_EN:
        return MODE_DISABLED
    return MODE_X2APIC if apic_base & BASE_EXTD else MODE_XAPIC


def _bit_index(bits: int) -> int:
    """The highest set bit's index, or -1."""
    return bits.bit_length() - 1


class LocalApic(Device):
    """One CPU's local APIC; register it on the MMIO bus at ``base_address`` (0xFEE00000).

    ``send`` carries IPIs to the bus, ``eoi`` tells the IOAPICs a level-triggered vector was
    EOI'd, and ``on_intr`` (the engine's ``poke``) is called whenever there may be something new
    to deliver: INTR rising, an NMI/SMI/INIT/STARTUP latched, or the PIC newly let through.
    """

    name = "lapic"

    def __init__(self, apic_id: int, *, send: Callable[[ApicMessage], None],
                 eoi: Callable[[int], None], on_intr: Callable[[], None], bsp: bool | None = None,
                 extint: ExtIntSource | None = None, clock: Callable[[], int] = time.monotonic_ns,
                 tsc: TscView | None = None, bus_hz: int = DEFAULT_BUS_HZ, x2apic: bool = True,
                 phys_bits: int = 52):
        self._send = send
        self._eoi_out = eoi
        self._on_intr = on_intr
        self.extint = extint
        self._clock = clock
        self._tsc = tsc
        self.bus_hz = bus_hz
        self._base_reserved = (0xFF | 1 << 9 | ~((1 << phys_bits) - 1)) & (1 << 64) - 1
        if not x2apic:
            self._base_reserved |= BASE_EXTD
        self._initial_id = apic_id
        self._bsp = apic_id == 0 if bsp is None else bsp
        self._lock = threading.Lock()
        self._outbox: list[Callable[[], None]] = []
        self.deadline_listener: Callable[[], None] | None = None  # the engine's (Timer protocol)
        self.on_addressing: Callable[[], None] = lambda: None  # the bus's: who matches changed
        self.reset()

    # -- reset states -----------------------------------------------------------------------------

    def reset(self) -> None:
        """Power-on: xAPIC mode at DEFAULT_BASE, software-disabled, nothing pending."""
        with self._lock:
            self._apic_base = DEFAULT_BASE | BASE_EN | (BASE_BSP if self._bsp else 0)
            self._id = self._initial_id
            self._nmi = self._smi = self._init = False
            self._wait_sipi = False
            self._sipi_vector: int | None = None
            self._lint_levels = [False, False]
            self._int = self._int_seen = self._pic_open = False
            self._wake = False
            self._reset_registers()
            self.on_addressing()

    def _reset_registers(self) -> None:
        """Power-up register state (SDM 11.4.7.1); INIT (11.4.7.3) and a global disable (11.4.3)
        do the same, keeping the APIC ID."""
        self._tpr = 0
        self._ldr = self._x2apic_ldr() if self.mode == MODE_X2APIC else 0
        self._dfr = 0xFFFF_FFFF
        self.on_addressing()
        self._svr = 0xFF
        self._irr = self._isr = self._tmr = 0
        self._esr = self._esr_pending = 0
        self._icr_lo = self._icr_hi = 0
        self._lvt = [LVT_MASKED] * LVT_COUNT
        if self._apic_base & BASE_BSP:
            # The BIOS's virtual wire, preset on the BSP as QEMU and KVM do (see module doc).
            self._lvt[LINT0] = DeliveryMode.EXTINT << 8
        self._lint_rirr = 0
        self._extint_msg = False
        self._tdcr = 0
        self._tmict = 0
        self._t_start: int | None = None  # clock time the count in ``_t_count`` was loaded
        self._t_count = 0
        self._t_fired = 0  # expirations reported since ``_t_start``
        self._t_last_fire: int | None = None  # clock time of the last periodic interrupt
        self._tsc_deadline = 0

    # -- the lock discipline ----------------------------------------------------------------------

    def _locked(self, fn, *args):
        with self._lock:
            result = fn(*args)
            poke = self._propagate()
            out, self._outbox = self._outbox, []
        for action in out:
            action()
        if poke:
            self._on_intr()
        return result

    def _propagate(self) -> bool:
        """Recompute INTR; report whether the engine should look again."""
        now = self._deliverable() is not None
        pic_open = self._pic_allowed()
        poke = (now and not self._int) or (pic_open and not self._pic_open) or self._wake
        self._int, self._pic_open, self._wake = now, pic_open, False
        return poke

    # -- modes and identity -----------------------------------------------------------------------

    @property
    def mode(self) -> str:
        """``disabled``, ``xapic`` or ``x2apic``, from IA32_APIC_BASE."""
        return _mode_of(self._apic_base)

    @property
    def base_address(self) -> int:
        """Where the guest wants the xAPIC page (IA32_APIC_BASE bits 12 and up)."""
        return self._apic_base & ~0xFFF

    @property
    def bsp(self) -> bool:
        """The boot processor's APIC (IA32_APIC_BASE.BSP): INIT resets it instead of making it
        wait for a STARTUP IPI."""
        return bool(self._apic_base & BASE_BSP)

    @property
    def present(self) -> bool:
        """Globally enabled: a disabled APIC takes no part in bus messages (SDM 11.4.3)."""
        return bool(self._apic_base & BASE_EN)

    @property
    def software_enabled(self) -> bool:
        """SVR bit 8: the APIC accepts and delivers fixed interrupts."""
        return bool(self._svr & SVR_ENABLE)

    @property
    def accepts_fixed(self) -> bool:
        """Whether a fixed interrupt sent now would be kept (not dropped)."""
        return self.present and self.software_enabled

    @property
    def apic_id(self) -> int:
        """The current APIC ID (the full 32 bits in x2APIC mode)."""
        return self._id

    def _x2apic_ldr(self) -> int:
        # SDM 11.12.10.2: cluster = ID[19:4] in bits 31:16, one bit for ID[3:0] in bits 15:0.
        return (self._id >> 4) << 16 | 1 << (self._id & 0xF)

    def matches(self, dest: int, logical: bool, x2apic_format: bool) -> bool:
        """Whether a message for ``dest`` is addressed to this APIC (SDM 11.6.2.1-11.6.2.2)."""
        with self._lock:
            if not self.present:
                return False
            x2 = self.mode == MODE_X2APIC
            if x2apic_format and dest == 0xFFFF_FFFF:
                return True
            if not x2apic_format:
                dest &= 0xFF
                if dest == 0xFF:
                    return True  # xAPIC broadcast, also to x2APIC-mode APICs as KVM does
            if not logical:
                return dest == (self._id if x2 or x2apic_format else self._id & 0xFF)
            if x2:
                return dest >> 16 == self._ldr >> 16 and bool(dest & self._ldr & 0xFFFF)
            mda, ldr = dest & 0xFF, self._ldr >> 24
            if self._dfr >> 28 == 0xF:  # flat model
                return bool(mda & ldr)
            cluster = mda >> 4
            return (cluster == 0xF or cluster == ldr >> 4) and bool(mda & ldr & 0xF)

    # -- priorities -------------------------------------------------------------------------------

    def _ppr(self) -> int:
        isrv = max(_bit_index(self._isr), 0)
        return self._tpr if self._tpr >> 4 >= isrv >> 4 else isrv & 0xF0

    @property
    def ppr(self) -> int:
        """The processor priority register."""
        with self._lock:
            return self._ppr()

    def _apr(self) -> int:
        # SDM 11.8.3 (figure "Arbitration Priority Register"), written as the SDM states it.
        tpr = self._tpr >> 4
        isrv, irrv = max(_bit_index(self._isr), 0) >> 4, max(_bit_index(self._irr), 0) >> 4
        if tpr >= irrv and tpr > isrv:
            return self._tpr
        return max(tpr & isrv, irrv) << 4

    def _deliverable(self) -> int | None:
        """The vector INTA would take now, or None."""
        if not (self.present and self.software_enabled):
            return None
        vector = _bit_index(self._irr)
        if vector >= 0 and vector >> 4 > self._ppr() >> 4:
            return vector
        return None

    def _pic_allowed(self) -> bool:
        lint0 = self._lvt[LINT0]
        virtual_wire = not lint0 & LVT_MASKED and (lint0 >> 8) & 7 == DeliveryMode.EXTINT
        return self.extint is not None and (not self.present or virtual_wire or self._extint_msg)

    # -- the engine's side ------------------------------------------------------------------------

    def intr(self) -> bool:
        """Whether INTR is asserted: an APIC interrupt is deliverable or the 8259 passes through."""
        with self._lock:
            if self._int:
                self._int_seen = True  # the CPU has seen INTR and will run an INTA
                return True
            pic_open = self._pic_allowed()
        return pic_open and self.extint.intr()

    def acknowledge(self) -> int | None:
        """INTA: the vector to deliver, now in service (or the spurious vector); None if none.

        A deliverable APIC interrupt goes before the 8259's, the order QEMU uses."""
        with self._lock:
            pic_open = self._pic_allowed() and not self._int
        if pic_open and self.extint.intr():
            vector = self.extint.acknowledge()
            if vector is not None:
                self._locked(self._extint_acknowledged)
                return vector
        return self._locked(self._acknowledge_locked)

    def _extint_acknowledged(self) -> None:
        self._extint_msg = False

    def _acknowledge_locked(self) -> int | None:
        vector = self._deliverable()
        seen, self._int_seen = self._int_seen, False
        if vector is not None:
            self._irr &= ~(1 << vector)
            self._isr |= 1 << vector
            return vector
        if seen and self.present:
            # INTR was up but the request went away (TPR raised, say) before INTA: the APIC
            # answers with the spurious vector and puts nothing in service (SDM 11.9).
            return self._svr & 0xFF
        return None

    @property
    def nmi_pending(self) -> bool:
        """An NMI is latched for the CPU."""
        return self._nmi

    def take_nmi(self) -> bool:
        """Consume a latched NMI (from LINT1 or an NMI message)."""
        with self._lock:
            taken, self._nmi = self._nmi, False
            return taken

    @property
    def smi_pending(self) -> bool:
        """An SMI is latched for the CPU."""
        return self._smi

    def take_smi(self) -> bool:
        """Consume a latched SMI (there is no SMM; recorded so a guest's SMI is visible)."""
        with self._lock:
            taken, self._smi = self._smi, False
            return taken

    def take_init(self) -> bool:
        """Consume a received INIT: the CPU must be reset (the APIC already is)."""
        with self._lock:
            taken, self._init = self._init, False
            return taken

    @property
    def waiting_for_sipi(self) -> bool:
        """An AP after INIT, not yet started by a STARTUP IPI."""
        return self._wait_sipi

    def take_sipi(self) -> int | None:
        """Consume an accepted STARTUP: its vector (start at CS = vector << 8, IP = 0), or None."""
        with self._lock:
            vector, self._sipi_vector = self._sipi_vector, None
            return vector

    def set_lint(self, pin: int, level: bool) -> None:
        """Drive LINT0 (0) or LINT1 (1, the PC's NMI); ExtINT on LINT0 uses ``extint`` instead."""
        if pin not in (0, 1):
            raise ValueError(f"LINT{pin} does not exist")
        self._locked(self._set_lint_locked, pin, bool(level))

    def _set_lint_locked(self, pin: int, level: bool) -> None:
        was, self._lint_levels[pin] = self._lint_levels[pin], level
        lvt = self._lvt[LINT0 + pin]
        if (lvt >> 8) & 7 == DeliveryMode.FIXED and lvt & LVT_LEVEL:
            self._service_lint(pin)
        elif level and not was:
            self._local_deliver(LINT0 + pin)

    def _service_lint(self, pin: int) -> None:
        """A level-triggered fixed LINT sends while asserted, then waits for its EOI (Remote IRR,
        SDM 11.5.1)."""
        lvt = self._lvt[LINT0 + pin]
        if ((lvt >> 8) & 7 == DeliveryMode.FIXED and lvt & LVT_LEVEL and not lvt & LVT_MASKED
                and self._lint_levels[pin] and not self._lint_rirr & 1 << pin):
            self._lint_rirr |= 1 << pin
            self._local_deliver(LINT0 + pin)

    # -- receiving --------------------------------------------------------------------------------

    def accept(self, msg: ApicMessage) -> None:
        """Take a message the bus addressed here."""
        self._locked(self._accept_locked, msg)

    def _accept_locked(self, msg: ApicMessage) -> None:
        if not self.present:
            return
        mode = msg.delivery_mode
        if mode in (DeliveryMode.FIXED, DeliveryMode.LOWEST):
            if self.software_enabled:  # a software-disabled APIC drops them (SDM 11.4.7.2)
                self._accept_fixed(msg.vector, msg.trigger == Trigger.LEVEL)
        elif mode == DeliveryMode.NMI:
            self._nmi = self._wake = True
        elif mode == DeliveryMode.SMI:
            self._smi = self._wake = True
        elif mode == DeliveryMode.INIT:
            if msg.trigger == Trigger.LEVEL and not msg.level:
                return  # INIT level de-assert: no effect on P4 and later (SDM 11.6.1)
            self._accept_init()
        elif mode == DeliveryMode.STARTUP:
            if self._wait_sipi:  # a STARTUP outside wait-for-SIPI is ignored
                self._wait_sipi = False
                self._sipi_vector = msg.vector
                self._wake = True
        elif mode == DeliveryMode.EXTINT:
            self._extint_msg = True  # the next INTA goes to the 8259

    def _accept_fixed(self, vector: int, level: bool) -> None:
        if vector < 16:
            # Vectors 0-15 are never put in IRR (SDM 11.5.3, "Received Illegal Vector").
            self._error(ESR_RECEIVE_ILLEGAL_VECTOR)
            return
        bit = 1 << vector
        self._irr |= bit
        self._tmr = self._tmr | bit if level else self._tmr & ~bit  # SDM 11.8.4

    def _accept_init(self) -> None:
        self._reset_registers()  # SDM 11.4.7.3; the x2APIC mode survives INIT (11.12.5.1)
        self._init = self._wake = True
        if not self._apic_base & BASE_BSP:
            self._wait_sipi = True
            self._sipi_vector = None

    def _local_deliver(self, index: int) -> None:
        """An LVT source fired: act on its entry (SDM 11.5.1)."""
        lvt = self._lvt[index]
        if lvt & LVT_MASKED:
            return
        mode = DeliveryMode.FIXED if index in (TIMER, ERROR) else (lvt >> 8) & 7
        if mode == DeliveryMode.FIXED:
            level = index in (LINT0, LINT1) and bool(lvt & LVT_LEVEL)
            self._accept_fixed(lvt & 0xFF, level)
        elif mode == DeliveryMode.NMI:
            self._nmi = self._wake = True
        elif mode == DeliveryMode.SMI:
            self._smi = self._wake = True
        elif mode == DeliveryMode.INIT:
            self._accept_init()
        # ExtINT is the 8259 pass-through, handled by intr/acknowledge.

    def _error(self, bits: int) -> None:
        new = bits & ~self._esr_pending
        self._esr_pending |= bits
        if new:
            self._local_deliver(ERROR)

    # -- EOI and IPIs -----------------------------------------------------------------------------

    def _eoi(self) -> None:
        vector = _bit_index(self._isr)
        if vector < 0:
            return
        bit = 1 << vector
        self._isr &= ~bit
        if self._tmr & bit:
            # SDM 11.8.5: EOI of a level-triggered vector is broadcast to the IOAPICs.
            self._outbox.append(lambda: self._eoi_out(vector))
            for pin in (0, 1):
                if self._lint_rirr & 1 << pin and self._lvt[LINT0 + pin] & 0xFF == vector:
                    self._lint_rirr &= ~(1 << pin)
                    self._service_lint(pin)

    def _send_ipi(self, lo: int, dest: int, x2apic: bool) -> None:
        """Turn an ICR (or SELF IPI) write into a message (SDM 11.6.1)."""
        vector, mode, shorthand = lo & 0xFF, (lo >> 8) & 7, Shorthand((lo >> 18) & 3)
        trigger, level = Trigger((lo >> 15) & 1), bool(lo & 1 << 14)
        if mode in (3, 7):
            return  # reserved in the ICR
        mode = DeliveryMode(mode)
        if mode == DeliveryMode.INIT and trigger == Trigger.LEVEL and not level:
            return  # INIT level de-assert is not sent by P4 and later
        if mode in (DeliveryMode.FIXED, DeliveryMode.LOWEST) and vector < 16:
            self._error(ESR_SEND_ILLEGAL_VECTOR)
            return
        if shorthand == Shorthand.SELF and mode != DeliveryMode.FIXED:
            return  # the only valid self IPI is fixed (SDM table 11-3)
        msg = ApicMessage(dest=dest, dest_mode=DestMode((lo >> 11) & 1), delivery_mode=mode,
                          vector=vector, trigger=trigger, level=level, shorthand=shorthand,
                          x2apic=x2apic, sender=self)
        self._outbox.append(lambda: self._send(msg))

    # -- timer ------------------------------------------------------------------------------------

    def _timer_mode(self) -> int:
        return (self._lvt[TIMER] >> 17) & 3

    def _divisor(self) -> int:
        code = (self._tdcr & 3) | (self._tdcr >> 1) & 4  # SDM figure 11-10: bits 3, 1, 0
        return 1 if code == 7 else 2 << code

    def _ticks(self, now: int) -> int:
        return (now - self._t_start) * self.bus_hz // (NS_PER_S * self._divisor())

    def _ns_for_ticks(self, ticks: int) -> int:
        return -(-ticks * NS_PER_S * self._divisor() // self.bus_hz)

    def _expirations(self, now: int) -> int:
        if self._t_start is None:
            return 0
        ticks = self._ticks(now)
        if ticks < self._t_count:
            return 0
        if self._timer_mode() == TIMER_PERIODIC:
            return 1 + (ticks - self._t_count) // self._tmict
        return 1

    def _current_count(self, now: int) -> int:
        if self._t_start is None or self._timer_mode() == TIMER_TSC_DEADLINE:
            return 0
        ticks = self._ticks(now)
        if ticks < self._t_count:
            return self._t_count - ticks
        if self._timer_mode() == TIMER_PERIODIC:
            return self._tmict - (ticks - self._t_count) % self._tmict  # reloaded, counting again
        return 0

    def _restart_timer(self, now: int, count: int) -> None:
        """Count down from ``count`` starting now (0 stops the timer)."""
        self._t_start = now if count else None
        self._t_count = count
        self._t_fired = 0
        self._t_last_fire = None  # the first expiry of a new count is not held back

    def _update_timer(self, now: int) -> None:
        """Raise what the timer did since it was last looked at; several periods coalesce."""
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            if self._tsc_deadline and self._tsc.ns_to_tsc(now) >= self._tsc_deadline:
                self._tsc_deadline = 0  # the timer disarms itself when it fires (SDM 11.5.4.1)
                self._local_deliver(TIMER)
            return
        expired = self._expirations(now)
        if expired > self._t_fired and not self._too_soon(now):
            self._t_fired = expired
            if self._timer_mode() == TIMER_PERIODIC and not self._lvt[TIMER] & LVT_MASKED:
                self._t_last_fire = now
            self._local_deliver(TIMER)

    def _too_soon(self, now: int) -> bool:
        last = self._t_last_fire
        return last is not None and now - last < MIN_PERIOD_NS

    def tick(self) -> None:
        """Bring the timer up to the clock: raise its interrupt if an expiry has passed."""
        with self._lock:   # the engine ticks before every slice: most find nothing due
            if not self._timer_due(self._clock()):
                return
        self._locked(lambda: self._update_timer(self._clock()))

    def _timer_due(self, now: int) -> bool:
        """Whether ``_update_timer`` at ``now`` would raise the timer's interrupt."""
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            return bool(self._tsc_deadline) and self._tsc.ns_to_tsc(now) >= self._tsc_deadline
        return self._expirations(now) > self._t_fired and not self._too_soon(now)

    def next_deadline_ns(self) -> int | None:
        """Clock time of the next timer interrupt ``tick`` must raise, or None."""
        with self._lock:
            if self._lvt[TIMER] & LVT_MASKED:
                return None  # counting on, but nothing to raise; an unmask catches up first
            if self._timer_mode() == TIMER_TSC_DEADLINE:
                return self._tsc.tsc_to_ns(self._tsc_deadline) if self._tsc_deadline else None
            if self._t_start is None:
                return None
            if self._timer_mode() == TIMER_PERIODIC:
                target = self._t_count + self._t_fired * self._tmict
            elif self._t_fired:
                return None
            else:
                target = self._t_count
            due = self._t_start + self._ns_for_ticks(target)
            if self._t_last_fire is not None:
                due = max(due, self._t_last_fire + MIN_PERIOD_NS)
            return due

    def _timer_moved(self) -> None:
        """The timer was programmed: the engine is told once the lock is released."""
        if self.deadline_listener is not None:
            self._outbox.append(self.deadline_listener)

    def _write_timer_lvt(self, value: int) -> None:
        self._timer_moved()
        now = self._clock()
        self._update_timer(now)  # expiries before the write happen under the old setting
        old_mode = self._timer_mode()
        count = self._current_count(now)
        writable = _LVT_WRITABLE[TIMER] | (0x4_0000 if self._tsc is not None else 0)
        self._lvt[TIMER] = value & writable | (0 if self.software_enabled else LVT_MASKED)
        new_mode = self._timer_mode()
        if (old_mode == TIMER_TSC_DEADLINE) != (new_mode == TIMER_TSC_DEADLINE):
            # Switching into or out of TSC-deadline mode disarms the timer (SDM 11.5.4.1).
            self._tmict = self._tsc_deadline = 0
            self._restart_timer(now, 0)
        elif old_mode != new_mode and self._t_start is not None:
            # One-shot <-> periodic: the count in progress carries on under the new mode, and an
            # expired one-shot (count 0) stays stopped.
            self._restart_timer(now, count)

    def _write_tmict(self, value: int) -> None:
        if self._timer_mode() == TIMER_TSC_DEADLINE:
            return  # ignored in TSC-deadline mode (SDM 11.5.4.1)
        self._timer_moved()
        now = self._clock()
        self._update_timer(now)
        self._tmict = value
        self._restart_timer(now, value)

    def _write_tdcr(self, value: int) -> None:
        self._timer_moved()
        now = self._clock()
        self._update_timer(now)
        count = self._current_count(now)
        self._tdcr = value & 0xB
        if self._t_start is not None:
            self._restart_timer(now, count)  # the count carries on at the new rate

    # -- registers --------------------------------------------------------------------------------

    def _read_reg(self, index: int) -> int:
        if index == ID:
            return self._id if self.mode == MODE_X2APIC else (self._id & 0xFF) << 24
        if index == VER:
            return VERSION_REG
        if index == TPR:
            return self._tpr
        if index == APR:
            return self._apr()
        if index == PPR:
            return self._ppr()
        if index == LDR:
            return self._ldr
        if index == DFR:
            return self._dfr
        if index == SVR:
            return self._svr
        if ISR0 <= index < ESR:
            bits = (self._isr, self._tmr, self._irr)[(index - ISR0) >> 3]
            return (bits >> (32 * (index & 7))) & 0xFFFF_FFFF
        if index == ESR:
            return self._esr
        if index == ICR_LO:
            return self._icr_lo
        if index == ICR_HI:
            return self._icr_hi
        if LVT0 <= index < LVT0 + LVT_COUNT:
            n = index - LVT0
            lvt = self._lvt[n]
            if n in (LINT0, LINT1) and self._lint_rirr & 1 << (n - LINT0):
                lvt |= LVT_REMOTE_IRR
            return lvt
        if index == TMICT:
            return self._tmict
        if index == TMCCT:
            return self._current_count(self._clock())
        if index == TDCR:
            return self._tdcr
        return 0  # EOI and the remote read register read as zero

    def _write_reg(self, index: int, value: int) -> None:
        """A write both interfaces share; the callers have filtered what their mode forbids."""
        if index == ID:
            self._id = value >> 24  # xAPIC only: software may renumber (SDM 11.4.6)
            self.on_addressing()
        elif index == TPR:
            self._tpr = value & 0xFF
        elif index == EOI:
            self._eoi()
        elif index == LDR:
            self._ldr = value & 0xFF00_0000
            self.on_addressing()
        elif index == DFR:
            self._dfr = value | 0x0FFF_FFFF  # only the model bits 31:28 are writable
            self.on_addressing()
        elif index == SVR:
            self._write_svr(value)
        elif index == ESR:
            # SDM 11.5.3: a write latches the errors seen since the previous write.
            self._esr, self._esr_pending = self._esr_pending, 0
        elif index == ICR_LO:
            self._icr_lo = value & ICR_WRITABLE
            self._send_ipi(self._icr_lo, self._icr_hi >> 24, x2apic=False)
        elif index == ICR_HI:
            self._icr_hi = value & 0xFF00_0000
        elif index == LVT0 + TIMER:
            self._write_timer_lvt(value)
        elif LVT0 <= index < LVT0 + LVT_COUNT:
            n = index - LVT0
            # While software-disabled every LVT stays masked (SDM 11.4.7.2).
            self._lvt[n] = value & _LVT_WRITABLE[n] | (0 if self.software_enabled else LVT_MASKED)
            if n in (LINT0, LINT1):
                self._service_lint(n - LINT0)
        elif index == TMICT:
            self._write_tmict(value)
        elif index == TDCR:
            self._write_tdcr(value)

    def _write_svr(self, value: int) -> None:
        was_enabled = self.software_enabled
        if was_enabled and not value & SVR_ENABLE:
            self._update_timer(self._clock())
            self._lvt = [lvt | LVT_MASKED for lvt in self._lvt]
        self._svr = value & SVR_WRITABLE

    # -- the xAPIC page ---------------------------------------------------------------------------

    def _mmio_read_locked(self, index: int) -> int:
        if index not in _XAPIC_READABLE:
            self._error(ESR_ILLEGAL_REGISTER)
            return 0
        return self._read_reg(index)

    def _mmio_write_locked(self, index: int, value: int) -> None:
        if index not in _XAPIC_READABLE:
            self._error(ESR_ILLEGAL_REGISTER)
        elif index not in _READ_ONLY:
            self._write_reg(index, value)

    def read(self, offset: int, size: int) -> int:
        """A register of the xAPIC page; all ones when nothing decodes it (disabled, x2APIC)."""
        if self.mode != MODE_XAPIC:
            return (1 << (8 * size)) - 1
        if offset & 0xF >= 4:
            return 0  # the rest of each 16-byte slot
        value = self._locked(self._mmio_read_locked, (offset >> 4) & 0xFF)
        return (value >> (8 * (offset & 3))) & ((1 << (8 * size)) - 1)

    def write(self, offset: int, size: int, value: int) -> None:
        """Aligned 32-bit register writes (wider: the low dword); others are dropped, as by KVM."""
        if self.mode != MODE_XAPIC or offset & 0xF or size < 4:
            return
        self._locked(self._mmio_write_locked, (offset >> 4) & 0xFF, value & 0xFFFF_FFFF)

    # -- MSRs -------------------------------------------------------------------------------------

    @staticmethod
    def handles_msr(index: int) -> bool:
        """Whether ``index`` is an MSR this class serves."""
        return (index in (MSR_APIC_BASE, MSR_TSC_DEADLINE)
                or MSR_X2APIC_FIRST <= index <= MSR_X2APIC_LAST)

    def msr_read(self, index: int) -> int | None:
        """RDMSR of an APIC MSR; None where the CPU raises #GP."""
        if index == MSR_APIC_BASE:
            return self._apic_base
        if index == MSR_TSC_DEADLINE:
            if self._tsc is None:
                return None  # no TSC-deadline timer advertised
            with self._lock:
                return self._tsc_deadline if self._timer_mode() == TIMER_TSC_DEADLINE else 0
        if MSR_X2APIC_FIRST <= index <= MSR_X2APIC_LAST:
            return self._locked(self._x2apic_read_locked, index - MSR_X2APIC_FIRST)
        return None

    def _x2apic_read_locked(self, index: int) -> int | None:
        if self.mode != MODE_X2APIC or index not in _X2APIC_READABLE:
            return None
        if index == ICR_LO:
            return self._icr_hi << 32 | self._icr_lo
        return self._read_reg(index)

    def msr_write(self, index: int, value: int) -> bool:
        """WRMSR of an APIC MSR; False where the CPU raises #GP."""
        if not 0 <= value < 1 << 64:
            return False
        if index == MSR_APIC_BASE:
            return self._locked(self._write_apic_base, value)
        if index == MSR_TSC_DEADLINE:
            if self._tsc is None:
                return False
            self._locked(self._write_tsc_deadline, value)
            return True
        if MSR_X2APIC_FIRST <= index <= MSR_X2APIC_LAST:
            return self._locked(self._x2apic_write_locked, index - MSR_X2APIC_FIRST, value)
        return False

    def _write_tsc_deadline(self, value: int) -> None:
        if self._timer_mode() != TIMER_TSC_DEADLINE:
            return  # ignored in the other timer modes (SDM 11.5.4.1)
        self._tsc_deadline = value
        self._timer_moved()
        self._update_timer(self._clock())  # a deadline already past fires at once

    def _write_apic_base(self, value: int) -> bool:
        # SDM 11.12.5 (figure "Local x2APIC State Transitions"): EXTD without EN is invalid, and
        # x2APIC -> xAPIC or disabled -> x2APIC must go through the other state; KVM agrees.
        if value & self._base_reserved or (value & BASE_EXTD and not value & BASE_EN):
            return False
        old, new = self.mode, _mode_of(value)
        if (old, new) in ((MODE_X2APIC, MODE_XAPIC), (MODE_DISABLED, MODE_X2APIC)):
            return False
        self._apic_base = value
        if new == MODE_DISABLED and old != MODE_DISABLED:
            self._id = self._initial_id
            self._reset_registers()  # SDM 11.4.3: a global disable may lose all APIC state
        elif new == MODE_X2APIC and old == MODE_XAPIC:
            self._id = self._initial_id  # the x2APIC ID is the initial APIC ID (SDM 11.12.5.1)
            self._ldr = self._x2apic_ldr()
        self.on_addressing()   # enabled, disabled or switched mode
        return True

    def _x2apic_write_locked(self, index: int, value: int) -> bool:
        if self.mode != MODE_X2APIC:
            return False
        if index == ICR_LO:
            if value & ICR_RESERVED_X2APIC:
                return False
            self._icr_lo, self._icr_hi = value & ICR_WRITABLE, value >> 32
            self._send_ipi(self._icr_lo, self._icr_hi, x2apic=True)
            return True
        if value >> 32:
            return False  # only the ICR is 64 bits wide
        if index == SELF_IPI:
            if value & ~0xFF:
                return False
            if value < 16:
                self._error(ESR_SEND_ILLEGAL_VECTOR)
            elif self.software_enabled:
                self._accept_fixed(value, level=False)
            return True
        if index not in _X2APIC_WRITABLE:
            return False  # read-only (ID and LDR too) or absent in x2APIC mode
        if index == TPR and value & ~0xFF:
            return False
        if index in (EOI, ESR) and value:
            return False  # SDM 11.12.1.2: only zero may be written
        if index == SVR and value & ~SVR_WRITABLE:
            return False
        self._write_reg(index, value)
        return True
