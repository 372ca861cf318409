"""Local APIC behaviour through the xAPIC page and the MSRs, with the APIC bus, a real IOAPIC and
a real 8259 pair, against a fake nanosecond clock."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, strategies as st

from hvm.clock import GuestClock
from hvm.devices.irq.apic_bus import ApicBus, ApicMessage, DeliveryMode, DestMode, Trigger
from hvm.devices.irq.ioapic import IoApic
from hvm.devices.irq.lapic import LocalApic
from hvm.devices.irq.pic8259 import Pic8259Pair

NS = 1_000_000_000
T0 = 5 * NS
ID, VER, TPR, APR, PPR, EOI, LDR, DFR, SVR = 0x20, 0x30, 0x80, 0x90, 0xA0, 0xB0, 0xD0, 0xE0, 0xF0
ISR, TMR, IRR, ESR, ICR_LO, ICR_HI = 0x100, 0x180, 0x200, 0x280, 0x300, 0x310
LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT0, LVT_LINT1, LVT_ERROR = range(0x320, 0x380, 0x10)
TMICT, TMCCT, TDCR = 0x380, 0x390, 0x3E0
MASKED, PERIODIC, TSC_DEADLINE = 1 << 16, 1 << 17, 1 << 18
APIC_BASE, TSC_DEADLINE_MSR = 0x1B, 0x6E0
EN, EXTD, BSP = 1 << 11, 1 << 10, 1 << 8
DIVIDERS = {0x0: 2, 0x1: 4, 0x2: 8, 0x3: 16, 0x8: 32, 0x9: 64, 0xA: 128, 0xB: 1}


class FakeClock:
    def __init__(self) -> None:
        self.ns = T0

    def __call__(self) -> int:
        return self.ns


class System:
    """An ApicBus with ``n`` LAPICs and an IOAPIC; ``pokes[i]`` counts LAPIC i's on_intr calls."""

    def __init__(self, n: int = 1, *, extint=None, tsc_hz: int | None = None, **kw) -> None:
        self.clock = FakeClock()
        self.bus = ApicBus()
        self.ioapic = IoApic(self.bus.route)
        self.bus.add_ioapic(self.ioapic)
        self.tsc = GuestClock(tsc_hz, self.clock) if tsc_hz else None
        self.pokes = [0] * n
        self.eois: list[int] = []
        for i in range(n):
            apic = LocalApic(i, send=self.bus.route, eoi=self._eoi, on_intr=self._poker(i),
                             extint=extint if i == 0 else None, clock=self.clock, tsc=self.tsc,
                             **kw)
            self.bus.add_lapic(apic)

    def _poker(self, i: int):
        def poke() -> None:
            self.pokes[i] += 1
        return poke

    def _eoi(self, vector: int) -> None:
        self.eois.append(vector)
        self.bus.eoi(vector)

    @property
    def cpus(self) -> list[LocalApic]:
        return self.bus.lapics


def make(n: int = 1, **kw) -> tuple[System, LocalApic]:
    system = System(n, **kw)
    return system, system.cpus[0]


def enable(apic: LocalApic, svr: int = 0x1FF) -> None:
    apic.write(SVR, 4, svr)


def bits(apic: LocalApic, base: int) -> int:
    return sum(apic.read(base + 0x10 * i, 4) << (32 * i) for i in range(8))


def fixed(vector: int, dest: int = 0, level: bool = False, logical: bool = False,
          mode: DeliveryMode = DeliveryMode.FIXED) -> ApicMessage:
    return ApicMessage(dest=dest, dest_mode=DestMode(logical), delivery_mode=mode, vector=vector,
                       trigger=Trigger(level))


def icr(apic: LocalApic, low: int, dest: int = 0) -> None:
    apic.write(ICR_HI, 4, dest << 24)
    apic.write(ICR_LO, 4, low)


def esr(apic: LocalApic) -> int:
    apic.write(ESR, 4, 0)
    return apic.read(ESR, 4)


# -- reset state --------------------------------------------------------------------------------

def test_power_on_registers() -> None:
    system, bsp = make(2)
    ap = system.cpus[1]
    assert bsp.read(ID, 4) == 0 and ap.read(ID, 4) == 1 << 24
    assert bsp.read(VER, 4) == 0x0005_0014  # version 0x14, six LVT entries
    assert bsp.read(SVR, 4) == 0xFF and not bsp.software_enabled
    assert bsp.read(DFR, 4) == 0xFFFF_FFFF and bsp.read(LDR, 4) == 0 and bsp.read(TPR, 4) == 0
    for reg in (LVT_TIMER, LVT_THERMAL, LVT_PERF, LVT_LINT1, LVT_ERROR):
        assert bsp.read(reg, 4) == MASKED
    assert bsp.read(LVT_LINT0, 4) == 0x700  # the BSP's virtual wire: ExtINT, unmasked
    assert ap.read(LVT_LINT0, 4) == MASKED
    assert bsp.msr_read(APIC_BASE) == 0xFEE0_0000 | EN | BSP
    assert ap.msr_read(APIC_BASE) == 0xFEE0_0000 | EN
    assert bsp.read(TMICT, 4) == bsp.read(TMCCT, 4) == bsp.read(TDCR, 4) == 0
    assert bits(bsp, IRR) == bits(bsp, ISR) == bits(bsp, TMR) == 0


def test_writable_bits_of_plain_registers() -> None:
    _, apic = make()
    for reg, value, expect in ((TPR, 0xFFFF_FFFF, 0xFF), (LDR, 0xFFFF_FFFF, 0xFF00_0000),
                               (DFR, 0, 0x0FFF_FFFF), (SVR, 0xFFFF_FFFF, 0x3FF),
                               (ICR_HI, 0xFFFF_FFFF, 0xFF00_0000), (TDCR, 0xFF, 0xB),
                               (ID, 0x0500_0000, 0x0500_0000)):
        apic.write(reg, 4, value)
        assert apic.read(reg, 4) == expect, hex(reg)
    for reg in (VER, PPR, APR, IRR, ISR, TMR, TMCCT):
        before = apic.read(reg, 4)
        apic.write(reg, 4, 0xFFFF_FFFF)
        assert apic.read(reg, 4) == before, hex(reg)


def test_lvt_writable_bits() -> None:
    _, apic = make()
    enable(apic)
    expected = {LVT_TIMER: 0x3_00FF, LVT_THERMAL: 0x1_07FF, LVT_PERF: 0x1_07FF,
                LVT_LINT0: 0x1_A7FF, LVT_LINT1: 0x1_A7FF, LVT_ERROR: 0x1_00FF}
    for reg, expect in expected.items():
        apic.write(reg, 4, 0xFFFF_FFFF)
        assert apic.read(reg, 4) == expect, hex(reg)


def test_narrow_and_misaligned_accesses() -> None:
    _, apic = make()
    apic.write(TPR, 4, 0x5A)
    assert apic.read(TPR, 1) == 0x5A and apic.read(TPR + 1, 1) == 0
    assert apic.read(TPR + 4, 4) == 0  # the unused rest of the 16-byte slot
    apic.write(TPR, 1, 0x11)
    apic.write(TPR + 4, 4, 0x22)
    assert apic.read(TPR, 4) == 0x5A
    apic.write(TPR, 8, 0xFFFF_FFFF_0000_0033)
    assert apic.read(TPR, 4) == 0x33


# -- priorities ---------------------------------------------------------------------------------

def test_fixed_interrupt_goes_irr_isr_and_eoi_clears_it() -> None:
    system, apic = make()
    enable(apic)
    apic.accept(fixed(0x41))
    assert bits(apic, IRR) == 1 << 0x41 and apic.intr() and system.pokes[0] == 1
    assert apic.acknowledge() == 0x41
    assert bits(apic, IRR) == 0 and bits(apic, ISR) == 1 << 0x41 and not apic.intr()
    assert apic.read(PPR, 4) == 0x40
    apic.write(EOI, 4, 0)
    assert bits(apic, ISR) == 0 and apic.read(PPR, 4) == 0
    assert system.eois == []  # edge-triggered: no EOI message


def test_tpr_masks_by_priority_class() -> None:
    system, apic = make()
    enable(apic)
    apic.write(TPR, 4, 0x40)
    apic.accept(fixed(0x4F))
    assert not apic.intr() and system.pokes[0] == 0 and apic.read(PPR, 4) == 0x40
    apic.write(TPR, 4, 0x3F)
    assert apic.intr() and system.pokes[0] == 1  # lowering TPR raised INTR
    assert apic.read(PPR, 4) == 0x3F
    assert apic.acknowledge() == 0x4F


def test_isr_nesting_blocks_same_and_lower_classes() -> None:
    _, apic = make()
    enable(apic)
    apic.accept(fixed(0x40))
    assert apic.acknowledge() == 0x40
    apic.accept(fixed(0x4E))
    apic.accept(fixed(0x31))
    assert not apic.intr()
    apic.accept(fixed(0x51))
    assert apic.acknowledge() == 0x51
    assert bits(apic, ISR) == 1 << 0x40 | 1 << 0x51 and apic.read(PPR, 4) == 0x50
    apic.write(EOI, 4, 0)  # EOI retires the highest in service: 0x51
    assert bits(apic, ISR) == 1 << 0x40 and not apic.intr()
    apic.write(EOI, 4, 0)
    assert apic.acknowledge() == 0x4E
    apic.write(EOI, 4, 0)
    assert apic.acknowledge() == 0x31


def test_ppr_from_tpr_and_isr_examples() -> None:
    _, apic = make()
    enable(apic)
    apic.write(TPR, 4, 0x37)
    apic.accept(fixed(0x52))
    assert apic.acknowledge() == 0x52
    assert apic.read(PPR, 4) == 0x50  # ISRV class wins: low nibble cleared
    apic.write(TPR, 4, 0x58)
    assert apic.read(PPR, 4) == 0x58  # TPR class >= ISRV class: TPR as is
    apic.write(TPR, 4, 0x60)
    assert apic.read(PPR, 4) == 0x60


def test_arbitration_priority_follows_the_sdm_formula() -> None:
    _, apic = make()
    enable(apic)
    apic.write(TPR, 4, 0x35)
    assert apic.read(APR, 4) == 0x35  # TPR above every request and service
    apic.accept(fixed(0x61))
    assert apic.read(APR, 4) == 0x60  # IRRV class above TPR class


def test_spurious_vector_when_the_request_is_masked_before_inta() -> None:
    _, apic = make()
    enable(apic, 0x1EF)
    assert apic.acknowledge() is None  # INTR never rose: no INTA cycle at all
    apic.accept(fixed(0x40))
    assert apic.intr()
    apic.write(TPR, 4, 0x50)
    assert apic.acknowledge() == 0xEF
    assert bits(apic, ISR) == 0 and bits(apic, IRR) == 1 << 0x40
    apic.write(EOI, 4, 0)  # a spurious vector needs no EOI; an EOI then is harmless
    assert bits(apic, IRR) == 1 << 0x40
    assert apic.acknowledge() is None


def test_level_interrupt_sets_tmr_and_eoi_reaches_the_ioapic() -> None:
    system, apic = make()
    enable(apic)
    apic.accept(fixed(0x61, level=True))
    apic.accept(fixed(0x62))
    assert bits(apic, TMR) == 1 << 0x61
    assert apic.acknowledge() == 0x62
    apic.write(EOI, 4, 0)
    assert system.eois == []
    assert apic.acknowledge() == 0x61
    apic.write(EOI, 4, 0)
    assert system.eois == [0x61]
    apic.write(EOI, 4, 0)  # nothing in service: no message
    assert system.eois == [0x61]


@given(st.sets(st.integers(16, 255), max_size=20), st.integers(0, 255))
def test_acknowledge_order_is_descending_above_tpr(vectors, tpr) -> None:
    _, apic = make()
    enable(apic)
    apic.write(TPR, 4, tpr)
    for vector in vectors:
        apic.accept(fixed(vector))
    taken = []
    while apic.intr():
        taken.append(apic.acknowledge())
        apic.write(EOI, 4, 0)
    assert taken == sorted((v for v in vectors if v >> 4 > tpr >> 4), reverse=True)
    assert bits(apic, IRR) == sum(1 << v for v in vectors if v >> 4 <= tpr >> 4)


@given(st.lists(st.one_of(st.tuples(st.just("raise"), st.integers(16, 255)),
                          st.tuples(st.just("tpr"), st.integers(0, 255)),
                          st.tuples(st.just("ack"), st.none()),
                          st.tuples(st.just("eoi"), st.none())), max_size=50))
def test_priority_invariants_seen_through_the_registers(ops) -> None:
    _, apic = make()
    enable(apic, 0x1FF)
    for op, arg in ops:
        if op == "raise":
            apic.accept(fixed(arg))
        elif op == "tpr":
            apic.write(TPR, 4, arg)
        elif op == "eoi":
            isr_before = bits(apic, ISR)
            apic.write(EOI, 4, 0)
            if isr_before:
                assert bits(apic, ISR) == isr_before & ~(1 << (isr_before.bit_length() - 1))
        elif apic.intr():
            irr_before, ppr_before = bits(apic, IRR), apic.read(PPR, 4)
            vector = apic.acknowledge()
            assert vector == irr_before.bit_length() - 1 and vector >> 4 > ppr_before >> 4
        tpr, isr, irr, ppr = apic.read(TPR, 4), bits(apic, ISR), bits(apic, IRR), apic.read(PPR, 4)
        isrv = max(isr.bit_length() - 1, 0)
        assert ppr == (tpr if tpr >> 4 >= isrv >> 4 else isrv & 0xF0)
        assert apic.intr() == (irr != 0 and (irr.bit_length() - 1) >> 4 > ppr >> 4)
        assert not isr & irr & 0xFFFF  # vectors 0-15 never get anywhere


# -- software enable, errors ----------------------------------------------------------------------

def test_software_disabled_apic_drops_fixed_but_takes_nmi_and_holds_irr() -> None:
    system, apic = make()
    apic.accept(fixed(0x50))
    assert bits(apic, IRR) == 0
    apic.accept(fixed(0, mode=DeliveryMode.NMI))
    assert apic.nmi_pending and system.pokes[0] == 1
    assert apic.take_nmi() and not apic.take_nmi() and not apic.nmi_pending
    enable(apic)
    apic.accept(fixed(0x50))
    apic.write(SVR, 4, 0xFF)
    assert bits(apic, IRR) == 1 << 0x50 and not apic.intr() and apic.acknowledge() is None
    enable(apic)
    assert apic.acknowledge() == 0x50


def test_software_disable_masks_every_lvt_and_keeps_them_masked() -> None:
    _, apic = make()
    enable(apic)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(LVT_LINT1, 4, 0x400)
    apic.write(SVR, 4, 0xFF)
    assert apic.read(LVT_TIMER, 4) == MASKED | 0x30 and apic.read(LVT_LINT1, 4) == MASKED | 0x400
    assert apic.read(LVT_LINT0, 4) == MASKED | 0x700
    apic.write(LVT_ERROR, 4, 0x33)
    assert apic.read(LVT_ERROR, 4) == MASKED | 0x33
    enable(apic)
    assert apic.read(LVT_TIMER, 4) & MASKED  # re-enabling unmasks nothing


def test_esr_reads_what_the_last_write_latched() -> None:
    system, apic = make()
    enable(apic)
    apic.accept(fixed(5))
    assert bits(apic, IRR) == 0
    assert apic.read(ESR, 4) == 0  # not latched yet
    apic.write(ESR, 4, 0x1234)  # the value written does not matter
    assert apic.read(ESR, 4) == 0x40  # received illegal vector
    assert esr(apic) == 0
    icr(apic, 0x0000_4000 | 3, dest=0)  # fixed IPI with vector 3
    assert esr(apic) == 0x20 and bits(apic, IRR) == 0  # send illegal vector, nothing sent


def test_error_lvt_raises_its_interrupt_once_per_new_error() -> None:
    _, apic = make()
    enable(apic)
    apic.write(LVT_ERROR, 4, 0xFE)
    apic.accept(fixed(1))
    assert apic.acknowledge() == 0xFE
    apic.write(EOI, 4, 0)
    apic.accept(fixed(2))  # same error bit still pending: no new interrupt
    assert not apic.intr()
    esr(apic)
    apic.read(0x2F0, 4)  # the CMCI LVT is not implemented: an illegal register
    assert apic.acknowledge() == 0xFE and esr(apic) == 0x80


def test_error_lvt_with_an_illegal_vector_does_not_loop() -> None:
    _, apic = make()
    enable(apic)
    apic.write(LVT_ERROR, 4, 0x07)
    apic.accept(fixed(3))
    assert esr(apic) == 0x40 and bits(apic, IRR) == 0


# -- LINT pins and the 8259 ----------------------------------------------------------------------

def init_pic(pic: Pic8259Pair) -> None:
    for chip, base, wiring in ((pic.master, 0x08, 0x04), (pic.slave, 0x70, 0x02)):
        chip.write(0, 1, 0x11)
        chip.write(1, 1, base)
        chip.write(1, 1, wiring)
        chip.write(1, 1, 0x01)


def pic_system(n: int = 1) -> tuple[System, Pic8259Pair, list[int]]:
    pic_pokes: list[int] = []
    pic = Pic8259Pair(on_intr=lambda: pic_pokes.append(1))
    init_pic(pic)
    return System(n, extint=pic), pic, pic_pokes


def test_untouched_bsp_passes_pic_interrupts_through() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    assert not apic.intr()
    pic.set_irq(1, True)
    assert apic.intr()
    assert apic.acknowledge() == 0x09
    assert not apic.intr()
    assert pic.master.read(0, 1) == 0  # IRR empty: the INTA really reached the 8259


def test_masking_lint0_cuts_the_pic_off_and_unmasking_pokes() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    enable(apic)
    apic.write(LVT_LINT0, 4, MASKED | 0x700)
    pic.set_irq(4, True)
    assert not apic.intr() and apic.acknowledge() is None
    pokes = system.pokes[0]
    apic.write(LVT_LINT0, 4, 0x700)
    assert system.pokes[0] == pokes + 1 and apic.intr()
    assert apic.acknowledge() == 0x0C
    apic.write(LVT_LINT0, 4, 0x30)  # fixed mode: not the virtual wire
    pic.master.write(0, 1, 0x20)
    pic.set_irq(3, True)
    assert not apic.intr()


def test_software_disable_by_the_os_closes_the_virtual_wire() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    enable(apic)
    apic.write(SVR, 4, 0xFF)
    pic.set_irq(1, True)
    assert not apic.intr()


def test_globally_disabled_apic_always_passes_the_pic() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    enable(apic)
    apic.write(LVT_LINT0, 4, MASKED)
    assert apic.msr_write(APIC_BASE, 0xFEE0_0000 | BSP)
    assert apic.read(SVR, 4) == 0xFFFF_FFFF  # nothing decodes the page any more
    pic.set_irq(1, True)
    assert apic.acknowledge() == 0x09


def test_apic_interrupt_is_taken_before_the_pic() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    enable(apic)
    pic.set_irq(1, True)
    apic.accept(fixed(0x80))
    assert apic.acknowledge() == 0x80
    assert apic.acknowledge() == 0x09


def test_ap_lint0_is_masked_at_reset() -> None:
    pic = Pic8259Pair(on_intr=lambda: None)
    init_pic(pic)
    apic = LocalApic(1, send=lambda m: None, eoi=lambda v: None, on_intr=lambda: None, extint=pic)
    pic.set_irq(1, True)
    assert not apic.intr()


def test_extint_message_from_the_ioapic_runs_one_pic_inta() -> None:
    system, pic, _ = pic_system()
    apic = system.cpus[0]
    enable(apic)
    apic.write(LVT_LINT0, 4, MASKED | 0x700)
    io = system.ioapic
    io.write(0, 4, 0x10)
    io.write(0x10, 4, 0x700)  # pin 0 in ExtINT mode, as the 8259's INTR is wired on a PC
    pic.set_irq(1, True)
    assert not apic.intr()
    io.set_irq(0, True)
    assert apic.intr() and apic.acknowledge() == 0x09
    pic.master.write(0, 1, 0x20)
    pic.set_irq(1, False)
    pic.set_irq(1, True)
    assert not apic.intr()  # the ExtINT message was used up


def test_lint1_nmi_and_masking() -> None:
    system, apic = make()
    enable(apic)
    apic.write(LVT_LINT1, 4, MASKED | 0x400)
    apic.set_lint(1, True)
    apic.set_lint(1, False)
    assert not apic.nmi_pending
    apic.write(LVT_LINT1, 4, 0x400)
    apic.set_lint(1, True)
    assert apic.nmi_pending and system.pokes[0] == 1
    apic.set_lint(1, True)
    assert apic.take_nmi() and not apic.nmi_pending  # held high: one edge, one NMI
    with pytest.raises(ValueError):
        apic.set_lint(2, True)


def test_level_triggered_fixed_lint_waits_for_eoi() -> None:
    system, apic = make()
    enable(apic)
    apic.write(LVT_LINT0, 4, 1 << 15 | 0x55)
    apic.set_lint(0, True)
    assert apic.read(LVT_LINT0, 4) & 1 << 14 and bits(apic, TMR) == 1 << 0x55
    assert apic.acknowledge() == 0x55
    apic.set_lint(0, False)
    apic.set_lint(0, True)
    assert not apic.intr()  # Remote IRR holds it
    apic.write(EOI, 4, 0)
    assert apic.intr() and apic.acknowledge() == 0x55  # still asserted: again
    apic.set_lint(0, False)
    apic.write(EOI, 4, 0)
    assert not apic.read(LVT_LINT0, 4) & 1 << 14 and not apic.intr()


# -- timer ----------------------------------------------------------------------------------------

def timer_system(**kw) -> tuple[System, LocalApic, FakeClock]:
    system, apic = make(**kw)
    enable(apic)
    return system, apic, system.clock


def test_one_shot_fires_once_at_the_right_time() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)  # divide by 1: one count per ns on the 1 GHz bus
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TMICT, 4, 1000)
    assert apic.next_deadline_ns() == T0 + 1000
    clock.ns = T0 + 999
    apic.tick()
    assert not apic.intr() and apic.read(TMCCT, 4) == 1
    clock.ns = T0 + 1000
    apic.tick()
    assert bits(apic, IRR) == 1 << 0x30 and apic.read(TMCCT, 4) == 0
    assert apic.next_deadline_ns() is None
    assert apic.acknowledge() == 0x30
    apic.write(EOI, 4, 0)
    clock.ns += 10 * NS
    apic.tick()
    assert not apic.intr() and apic.read(TMCCT, 4) == 0


def test_periodic_reloads_and_coalesces_late_ticks() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0x0)  # divide by 2
    apic.write(LVT_TIMER, 4, PERIODIC | 0x31)
    apic.write(TMICT, 4, 1_000_000)  # 2 ms period
    deadlines = []
    for _ in range(3):
        deadlines.append(apic.next_deadline_ns())
        clock.ns = deadlines[-1]
        apic.tick()
        assert apic.acknowledge() == 0x31
        apic.write(EOI, 4, 0)
    assert deadlines == [T0 + 2_000_000, T0 + 4_000_000, T0 + 6_000_000]
    assert apic.read(TMCCT, 4) == 1_000_000  # just reloaded
    clock.ns = T0 + 6_000_000 + 2 * 250 + 1
    assert apic.read(TMCCT, 4) == 999_750
    clock.ns = T0 + 20_500_000
    apic.tick()
    assert apic.acknowledge() == 0x31 and not apic.intr()  # seven periods, one interrupt
    apic.write(EOI, 4, 0)
    assert apic.next_deadline_ns() == T0 + 22_000_000
    assert apic.read(TMCCT, 4) == 750_000


def test_tiny_periodic_count_interrupts_every_200us() -> None:
    # KVM's floor for periodic LAPIC timers (min_timer_period_us, arch/x86/kvm/lapic.c): a count
    # of 1 at divide-by-1 would otherwise be an interrupt per nanosecond.
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)  # divide by 1
    apic.write(LVT_TIMER, 4, PERIODIC | 0x32)
    apic.write(TMICT, 4, 1)
    assert apic.next_deadline_ns() == T0 + 1  # the first expiry comes when it is due
    fired = 0
    while clock.ns < T0 + 10_000_000:
        clock.ns = apic.next_deadline_ns()
        apic.tick()
        if apic.intr():
            assert apic.acknowledge() == 0x32
            apic.write(EOI, 4, 0)
            fired += 1
    assert fired == 51  # the first, then one per 200 us for 10 ms
    assert apic.next_deadline_ns() == clock.ns + 200_000


@pytest.mark.parametrize("tdcr,divisor", sorted(DIVIDERS.items()))
def test_current_count_with_each_divider(tdcr, divisor) -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, tdcr)
    assert apic.read(TDCR, 4) == tdcr
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TMICT, 4, 100_000)
    clock.ns = T0 + 37 * divisor
    assert apic.read(TMCCT, 4) == 100_000 - 37
    clock.ns += divisor - 1
    assert apic.read(TMCCT, 4) == 100_000 - 37
    clock.ns += 1
    assert apic.read(TMCCT, 4) == 100_000 - 38
    assert apic.next_deadline_ns() == T0 + 100_000 * divisor


def test_bus_frequency_is_a_constructor_parameter() -> None:
    _, apic, clock = timer_system(bus_hz=100_000_000)  # 10 ns per count
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TMICT, 4, 10)
    assert apic.next_deadline_ns() == T0 + 100
    clock.ns = T0 + 55
    assert apic.read(TMCCT, 4) == 5


def test_divide_change_mid_count_keeps_the_count() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TMICT, 4, 1000)
    clock.ns = T0 + 400
    apic.write(TDCR, 4, 0x1)  # divide by 4 from now on
    assert apic.read(TMCCT, 4) == 600
    clock.ns = T0 + 400 + 4 * 100
    assert apic.read(TMCCT, 4) == 500
    assert apic.next_deadline_ns() == T0 + 400 + 4 * 600


def test_masked_timer_counts_but_raises_nothing() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, MASKED | PERIODIC | 0x30)
    apic.write(TMICT, 4, 1000)
    assert apic.next_deadline_ns() is None
    clock.ns = T0 + 2500
    apic.tick()
    assert not apic.intr() and apic.read(TMCCT, 4) == 500
    apic.write(LVT_TIMER, 4, PERIODIC | 0x30)
    assert not apic.intr()  # expiries while masked are gone
    assert apic.next_deadline_ns() == T0 + 3000
    clock.ns = T0 + 3000
    apic.tick()
    assert apic.intr()


def test_initial_count_zero_stops_the_timer_and_rewrite_restarts() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x30)
    apic.write(TMICT, 4, 1000)
    clock.ns = T0 + 600
    apic.write(TMICT, 4, 1000)
    assert apic.next_deadline_ns() == T0 + 1600
    apic.write(TMICT, 4, 0)
    assert apic.next_deadline_ns() is None and apic.read(TMCCT, 4) == 0
    clock.ns = T0 + 5000
    apic.tick()
    assert not apic.intr()


def test_switching_periodic_to_one_shot_finishes_the_current_period() -> None:
    _, apic, clock = timer_system()
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, PERIODIC | 0x30)
    apic.write(TMICT, 4, 1000)
    clock.ns = T0 + 2300
    apic.tick()
    assert apic.acknowledge() == 0x30
    apic.write(EOI, 4, 0)
    apic.write(LVT_TIMER, 4, 0x30)
    assert apic.next_deadline_ns() == T0 + 3000
    clock.ns = T0 + 3000
    apic.tick()
    assert apic.acknowledge() == 0x30
    assert apic.next_deadline_ns() is None


def test_tsc_deadline_fires_when_the_tsc_reaches_it_and_disarms() -> None:
    system, apic, clock = timer_system(tsc_hz=2_000_000_000)
    tsc = system.tsc
    assert tsc.now_tsc() == 0
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x32)
    assert apic.read(LVT_TIMER, 4) == TSC_DEADLINE | 0x32
    apic.write(TMICT, 4, 1000)  # ignored in TSC-deadline mode
    assert apic.read(TMICT, 4) == 0 and apic.read(TMCCT, 4) == 0
    assert apic.msr_write(TSC_DEADLINE_MSR, 4001)
    assert apic.msr_read(TSC_DEADLINE_MSR) == 4001
    assert apic.next_deadline_ns() == T0 + 2001  # rounded up: never early
    clock.ns = T0 + 2000
    apic.tick()
    assert not apic.intr()
    clock.ns = T0 + 2001
    apic.tick()
    assert apic.acknowledge() == 0x32
    assert apic.msr_read(TSC_DEADLINE_MSR) == 0 and apic.next_deadline_ns() is None


def test_tsc_deadline_in_the_past_fires_at_once_and_zero_disarms() -> None:
    system, apic, clock = timer_system(tsc_hz=1_000_000_000)
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x32)
    clock.ns = T0 + 500
    apic.msr_write(TSC_DEADLINE_MSR, 10)
    assert apic.intr()
    apic.msr_write(TSC_DEADLINE_MSR, 1000)
    apic.msr_write(TSC_DEADLINE_MSR, 0)
    assert apic.next_deadline_ns() is None


def test_tsc_deadline_msr_outside_deadline_mode_and_mode_switch() -> None:
    _, apic, clock = timer_system(tsc_hz=1_000_000_000)
    apic.write(LVT_TIMER, 4, 0x32)
    assert apic.msr_write(TSC_DEADLINE_MSR, 5000)  # accepted, ignored
    assert apic.msr_read(TSC_DEADLINE_MSR) == 0
    apic.write(TMICT, 4, 1000)
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x32)  # the switch disarms the count
    assert apic.read(TMICT, 4) == 0 and apic.next_deadline_ns() is None
    apic.msr_write(TSC_DEADLINE_MSR, 5000)
    apic.write(LVT_TIMER, 4, 0x32)
    assert apic.msr_read(TSC_DEADLINE_MSR) == 0
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x32)
    assert apic.msr_read(TSC_DEADLINE_MSR) == 0  # and back: nothing armed


def test_without_a_tsc_there_is_no_deadline_mode() -> None:
    _, apic, _ = timer_system()
    assert apic.msr_read(TSC_DEADLINE_MSR) is None
    assert not apic.msr_write(TSC_DEADLINE_MSR, 1)
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x30)
    assert apic.read(LVT_TIMER, 4) == 0x30


@given(st.integers(1, 10**10), st.integers(0, 2**63), st.integers(-(2**40), 2**40))
def test_guest_clock_conversions_are_exact(tsc_hz, tsc, offset) -> None:
    clock = GuestClock(tsc_hz, lambda: 0, tsc_offset=offset)
    ns = clock.tsc_to_ns(tsc)
    assert clock.ns_to_tsc(ns) >= tsc > clock.ns_to_tsc(ns - 1)


# -- IPIs ---------------------------------------------------------------------------------------

def test_fixed_ipi_to_another_cpu_and_delivery_status_idle() -> None:
    system, bsp = make(3)
    for cpu in system.cpus:
        enable(cpu)
    icr(bsp, 0x0000_4045, dest=2)
    assert bits(system.cpus[2], IRR) == 1 << 0x45 and system.pokes[2] == 1
    assert bits(system.cpus[1], IRR) == 0 and bits(bsp, IRR) == 0
    assert bsp.read(ICR_LO, 4) == 0x4045 and bsp.read(ICR_HI, 4) == 2 << 24
    bsp.write(ICR_LO, 4, 0x1045)  # delivery status is read-only
    assert not bsp.read(ICR_LO, 4) & 1 << 12


def test_shorthands() -> None:
    system, bsp = make(3)
    for cpu in system.cpus:
        enable(cpu)
    ap = system.cpus[1]
    icr(ap, 1 << 18 | 0x50, dest=0)  # self
    icr(ap, 3 << 18 | 0x51, dest=1)  # all excluding self: destination ignored
    icr(ap, 2 << 18 | 0x52)  # all including self
    assert [bits(c, IRR) for c in system.cpus] == [
        1 << 0x51 | 1 << 0x52, 1 << 0x50 | 1 << 0x52, 1 << 0x51 | 1 << 0x52]
    icr(ap, 1 << 18 | 4 << 8)  # an NMI to self is not a valid combination
    assert not ap.nmi_pending


def test_physical_broadcast_and_disabled_apics_are_skipped() -> None:
    system, bsp = make(3)
    for cpu in system.cpus:
        enable(cpu)
    system.cpus[2].msr_write(APIC_BASE, 0xFEE0_0000)
    icr(bsp, 0x60, dest=0xFF)
    assert [bits(c, IRR) >> 0x60 for c in system.cpus[:2]] == [1, 1]
    system.cpus[2].msr_write(APIC_BASE, 0xFEE0_0000 | EN)
    assert bits(system.cpus[2], IRR) == 0


def test_logical_flat_destination() -> None:
    system, bsp = make(4)
    for i, cpu in enumerate(system.cpus):
        enable(cpu)
        cpu.write(LDR, 4, (1 << i) << 24)
    icr(bsp, 1 << 11 | 0x70, dest=0b1010)
    assert [bits(c, IRR) >> 0x70 for c in system.cpus] == [0, 1, 0, 1]


def test_logical_cluster_destination() -> None:
    system, bsp = make(4)
    ldrs = [0x11, 0x12, 0x21, 0x22]  # clusters 1 and 2, two members each
    for cpu, ldr in zip(system.cpus, ldrs):
        enable(cpu)
        cpu.write(DFR, 4, 0x0FFF_FFFF)
        cpu.write(LDR, 4, ldr << 24)
    icr(bsp, 1 << 11 | 0x71, dest=0x23)  # cluster 2, both members
    icr(bsp, 1 << 11 | 0x72, dest=0x11)
    icr(bsp, 1 << 11 | 0x73, dest=0xF2)  # every cluster, member bit 1
    # bit 0: 0x71, bit 1: 0x72, bit 2: 0x73
    assert [bits(c, IRR) >> 0x71 for c in system.cpus] == [0b010, 0b100, 0b001, 0b101]


def test_lowest_priority_picks_the_lowest_ppr_then_the_lowest_id() -> None:
    system, bsp = make(3)
    for i, cpu in enumerate(system.cpus):
        enable(cpu)
        cpu.write(LDR, 4, 1 << 24)  # all answer logical 0x01
    bsp.write(TPR, 4, 0x20)
    system.cpus[1].write(TPR, 4, 0x10)
    system.cpus[2].write(TPR, 4, 0x10)
    icr(bsp, 1 << 11 | 1 << 8 | 0x80, dest=0x01)
    assert [bits(c, IRR) >> 0x80 for c in system.cpus] == [0, 1, 0]
    system.cpus[1].write(SVR, 4, 0xFF)  # a software-disabled APIC would drop it: not chosen
    icr(bsp, 1 << 11 | 1 << 8 | 0x81, dest=0x01)
    assert bits(system.cpus[2], IRR) >> 0x81 == 1


def test_ioapic_lowest_priority_goes_to_one_cpu() -> None:
    system, _ = make(2)
    for cpu in system.cpus:
        enable(cpu)
        cpu.write(LDR, 4, 1 << 24)
    system.cpus[0].write(TPR, 4, 0x30)
    io = system.ioapic
    io.write(0, 4, 0x11)
    io.write(0x10, 4, 0x01 << 24)
    io.write(0, 4, 0x10)
    io.write(0x10, 4, 1 << 11 | 1 << 8 | 0x90)
    io.set_irq(0, True)
    assert [bits(c, IRR) >> 0x90 for c in system.cpus] == [0, 1]


def test_init_then_startup_for_an_ap() -> None:
    system, bsp = make(2)
    ap = system.cpus[1]
    for cpu in system.cpus:
        enable(cpu)
    ap.write(TPR, 4, 0x20)
    ap.accept(fixed(0x44))
    icr(bsp, 6 << 8 | 0x9A, dest=1)  # STARTUP before INIT: ignored
    assert ap.take_sipi() is None and not ap.waiting_for_sipi
    icr(bsp, 1 << 15 | 1 << 14 | 5 << 8, dest=1)  # INIT, level assert
    assert ap.take_init() and not ap.take_init() and ap.waiting_for_sipi
    assert ap.read(SVR, 4) == 0xFF and ap.read(TPR, 4) == 0 and bits(ap, IRR) == 0
    assert ap.read(ID, 4) == 1 << 24
    icr(bsp, 1 << 15 | 5 << 8, dest=1)  # INIT level de-assert: no effect
    assert not ap.take_init()
    pokes = system.pokes[1]
    icr(bsp, 6 << 8 | 0x9A, dest=1)
    icr(bsp, 6 << 8 | 0x9B, dest=1)  # the second STARTUP of INIT-SIPI-SIPI finds it running
    assert system.pokes[1] == pokes + 1
    assert not ap.waiting_for_sipi and ap.take_sipi() == 0x9A and ap.take_sipi() is None


def test_init_to_the_bsp_resets_it_without_waiting_for_sipi() -> None:
    system, bsp = make(2)
    enable(bsp)
    bsp.write(LVT_LINT0, 4, MASKED)
    icr(system.cpus[1], 1 << 14 | 5 << 8, dest=0)
    assert bsp.take_init() and not bsp.waiting_for_sipi
    assert bsp.read(LVT_LINT0, 4) == 0x700


def test_nmi_and_smi_ipis_are_latched_and_poke() -> None:
    system, bsp = make(2)
    ap = system.cpus[1]
    icr(bsp, 4 << 8, dest=1)
    icr(bsp, 2 << 8, dest=1)
    assert ap.nmi_pending and ap.smi_pending and system.pokes[1] == 2
    assert ap.take_smi() and not ap.smi_pending


def test_ioapic_level_interrupt_round_trip_through_eoi() -> None:
    system, apic = make()
    enable(apic)
    io = system.ioapic
    io.write(0, 4, 0x10 + 2 * 11)
    io.write(0x10, 4, 1 << 15 | 0x5B)
    line = io.irq_line(11)
    line.set_level(True)
    assert apic.acknowledge() == 0x5B and bits(apic, TMR) == 1 << 0x5B
    apic.write(EOI, 4, 0)
    assert system.eois == [0x5B] and apic.acknowledge() == 0x5B  # still asserted: again
    line.set_level(False)
    apic.write(EOI, 4, 0)
    assert not apic.intr()
    io.write(0, 4, 0x10 + 2 * 11)
    assert not io.read(0x10, 4) & 1 << 14


def test_ioapic_illegal_vector_sets_receive_error() -> None:
    system, apic = make()
    enable(apic)
    io = system.ioapic
    io.write(0, 4, 0x10 + 2)
    io.write(0x10, 4, 0x0E)
    io.set_irq(1, True)
    assert bits(apic, IRR) == 0 and esr(apic) == 0x40


def test_concurrent_device_interrupts_and_vcpu_eois_do_not_deadlock() -> None:
    system, apic = make()
    enable(apic)
    io = system.ioapic
    io.write(0, 4, 0x10 + 2 * 5)
    io.write(0x10, 4, 1 << 15 | 0x65)
    stop = threading.Event()

    def device() -> None:
        level = False
        while not stop.is_set():
            level = not level
            io.set_irq(5, level)

    thread = threading.Thread(target=device, daemon=True)
    thread.start()
    handled = 0
    for _ in range(2000):
        if apic.intr():
            vector = apic.acknowledge()
            apic.write(EOI, 4, 0)
            handled += vector == 0x65
    stop.set()
    thread.join(5)
    assert not thread.is_alive() and handled > 0
    io.set_irq(5, False)
    if apic.intr():
        apic.acknowledge()
        apic.write(EOI, 4, 0)
    assert not apic.intr() and bits(apic, ISR) == 0


# -- MSRs and x2APIC ------------------------------------------------------------------------------

def to_x2apic(apic: LocalApic) -> None:
    base = apic.msr_read(APIC_BASE)
    assert apic.msr_write(APIC_BASE, base | EXTD)


def test_apic_base_transitions() -> None:
    _, apic = make()
    base = 0xFEE0_0000 | BSP
    assert not apic.msr_write(APIC_BASE, base | EXTD)  # EXTD without EN is invalid
    assert not apic.msr_write(APIC_BASE, base | EN | 1)  # reserved bit 0
    assert not apic.msr_write(APIC_BASE, base | EN | 1 << 9)
    assert apic.msr_write(APIC_BASE, base | EN | EXTD) and apic.mode == "x2apic"
    assert not apic.msr_write(APIC_BASE, base | EN)  # x2APIC -> xAPIC directly
    assert apic.msr_write(APIC_BASE, base) and apic.mode == "disabled"
    assert not apic.msr_write(APIC_BASE, base | EN | EXTD)  # disabled -> x2APIC directly
    assert apic.msr_write(APIC_BASE, 0xFED0_0000 | BSP | EN) and apic.mode == "xapic"
    assert apic.base_address == 0xFED0_0000
    assert apic.msr_read(APIC_BASE) == 0xFED0_0000 | BSP | EN


def test_global_disable_loses_the_programming() -> None:
    _, apic = make()
    enable(apic)
    apic.write(TPR, 4, 0x40)
    apic.write(ID, 4, 0x0700_0000)
    apic.msr_write(APIC_BASE, 0xFEE0_0000 | BSP)
    apic.write(TPR, 4, 0x10)  # not decoded while disabled
    apic.msr_write(APIC_BASE, 0xFEE0_0000 | BSP | EN)
    assert apic.read(SVR, 4) == 0xFF and apic.read(TPR, 4) == 0 and apic.read(ID, 4) == 0


def test_x2apic_msrs_need_x2apic_mode() -> None:
    _, apic = make()
    assert apic.msr_read(0x802) is None and not apic.msr_write(0x808, 0)
    to_x2apic(apic)
    assert apic.read(TPR, 4) == 0xFFFF_FFFF  # the xAPIC page is gone
    apic.write(TPR, 4, 0x20)
    assert apic.msr_read(0x808) == 0
    assert apic.msr_read(0x1234) is None and not apic.msr_write(0x1234, 0)
    assert LocalApic.handles_msr(0x83F) and not LocalApic.handles_msr(0x900)


def test_x2apic_register_access_rules() -> None:
    apic = LocalApic(0x23, bsp=True, send=lambda m: None, eoi=lambda v: None, on_intr=lambda: None)
    to_x2apic(apic)
    assert apic.msr_read(0x802) == 0x23
    assert apic.msr_read(0x80D) == 0x2_0008  # cluster 2, member bit 3
    assert apic.msr_read(0x803) == 0x0005_0014
    for ro in (0x802, 0x803, 0x80A, 0x80D, 0x810, 0x818, 0x820, 0x839):
        assert not apic.msr_write(ro, 0), hex(ro)
    for absent in (0x809, 0x80C, 0x80E, 0x82F, 0x831, 0x800, 0x8FF):
        assert apic.msr_read(absent) is None, hex(absent)
        assert not apic.msr_write(absent, 0), hex(absent)
    for write_only in (0x80B, 0x83F):
        assert apic.msr_read(write_only) is None
    assert not apic.msr_write(0x808, 0x100)  # reserved TPR bits
    assert not apic.msr_write(0x80F, 1 << 32)  # upper half of a 32-bit register
    assert not apic.msr_write(0x80B, 1) and not apic.msr_write(0x828, 1)  # only zero
    assert not apic.msr_write(0x83F, 0x100)
    assert not apic.msr_write(0x80F, 1 << 12)  # EOI-broadcast suppression is not offered
    assert apic.msr_write(0x80F, 0x1FF) and apic.msr_read(0x80F) == 0x1FF
    assert apic.msr_write(0x808, 0x30) and apic.msr_read(0x808) == 0x30
    assert not apic.msr_write(0x808, -1)


def test_x2apic_self_ipi_eoi_and_esr() -> None:
    _, apic = make()
    to_x2apic(apic)
    apic.msr_write(0x80F, 0x1FF)
    assert apic.msr_write(0x83F, 0x66)
    assert apic.msr_read(0x820 + 3) == 1 << (0x66 - 0x60)
    assert apic.acknowledge() == 0x66 and apic.msr_read(0x813) == 1 << 6
    assert apic.msr_write(0x80B, 0) and apic.msr_read(0x813) == 0
    assert apic.msr_write(0x83F, 0x05)
    assert apic.msr_write(0x828, 0) and apic.msr_read(0x828) == 0x20


def test_x2apic_icr_is_one_64_bit_register_with_32_bit_destinations() -> None:
    system, bsp = make(2)
    ap = system.cpus[1]
    for cpu in system.cpus:
        enable(cpu)
        to_x2apic(cpu)
    assert bsp.msr_write(0x830, 1 << 32 | 0x4077)
    assert bits_x2(ap) == 1 << 0x77
    assert bsp.msr_read(0x830) == 1 << 32 | 0x4077
    assert bsp.msr_write(0x830, 0x100 << 32 | 0x78)  # no APIC has ID 0x100
    assert bits_x2(ap) == 1 << 0x77
    assert not bsp.msr_write(0x830, 1 << 32 | 1 << 13 | 0x79)  # reserved bit
    # logical: cluster 0, member bit 1 is APIC 1
    assert bsp.msr_write(0x830, 0x0000_0002 << 32 | 1 << 11 | 0x7A)
    assert bits_x2(ap) == 1 << 0x77 | 1 << 0x7A
    assert bsp.msr_write(0x830, 0xFFFF_FFFF << 32 | 0x7B)  # x2APIC broadcast
    assert bits_x2(ap) >> 0x7B & 1 and bits_x2(bsp) >> 0x7B & 1


def bits_x2(apic: LocalApic) -> int:
    return sum(apic.msr_read(0x820 + i) << (32 * i) for i in range(8))


def test_x2apic_can_be_refused() -> None:
    _, apic = make(x2apic=False)
    assert not apic.msr_write(APIC_BASE, 0xFEE0_0000 | BSP | EN | EXTD)
    assert apic.mode == "xapic"


def test_lapic_timer_through_x2apic_msrs() -> None:
    system, apic = make()
    to_x2apic(apic)
    apic.msr_write(0x80F, 0x1FF)
    apic.msr_write(0x83E, 0xB)
    apic.msr_write(0x832, 0x30)
    apic.msr_write(0x838, 500)
    system.clock.ns = T0 + 200
    assert apic.msr_read(0x839) == 300
    system.clock.ns = T0 + 500
    apic.tick()
    assert apic.acknowledge() == 0x30


def test_programming_the_timer_tells_the_engine_outside_the_lock() -> None:
    # The engine's listener asks for the new deadline at once, as the unicorn engine does to end
    # a running slice in time: called under the LAPIC's lock, that would deadlock.
    _, apic, _ = timer_system(tsc_hz=1_000_000_000)
    seen: list[int | None] = []
    apic.deadline_listener = lambda: seen.append(apic.next_deadline_ns())
    apic.write(TDCR, 4, 0xB)
    apic.write(LVT_TIMER, 4, 0x32)
    apic.write(TMICT, 4, 1000)
    assert seen[-1] is not None and seen[-1] > T0
    apic.write(LVT_TIMER, 4, TSC_DEADLINE | 0x32)
    apic.msr_write(TSC_DEADLINE_MSR, 5000)
    assert len(seen) == 5 and seen[-1] == T0 + 5000
    apic.write(TPR, 4, 0)  # not a timer register: no call
    assert len(seen) == 5


def test_a_renumbered_or_relogged_lapic_gets_the_messages_addressed_to_it_now() -> None:
    # The bus remembers who a destination reaches; a LAPIC's ID, LDR or DFR changing forgets it.
    system = System(2)
    a, b = system.cpus
    enable(a)
    enable(b)
    system.bus.route(fixed(0x40, dest=1))
    assert bits(b, IRR) == 1 << 0x40 and bits(a, IRR) == 0
    a.write(ID, 4, 7 << 24)
    b.write(ID, 4, 1 << 24)
    b.write(ID, 4, 8 << 24)
    a.write(ID, 4, 1 << 24)                                 # the two swap numbers
    system.bus.route(fixed(0x41, dest=1))
    assert bits(a, IRR) == 1 << 0x41
    a.write(LDR, 4, 0x02 << 24)
    system.bus.route(fixed(0x42, dest=0x02, logical=True))
    assert bits(a, IRR) & 1 << 0x42
    a.write(LDR, 4, 0)
    b.write(LDR, 4, 0x02 << 24)
    system.bus.route(fixed(0x43, dest=0x02, logical=True))
    assert bits(b, IRR) & 1 << 0x43 and not bits(a, IRR) & 1 << 0x43
