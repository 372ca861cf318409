"""8259A pair behaviour, driven through the port offsets exactly as a guest programs it."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, strategies as st

from hvm.devices.irq.pic8259 import Pic8259Pair
from hvm.irq import IrqLine

CMD, DATA = 0, 1
EOI, SPECIFIC_EOI, ROTATE_EOI, SET_PRIORITY = 0x20, 0x60, 0xA0, 0xC0
READ_IRR, READ_ISR, POLL = 0x0A, 0x0B, 0x0C


def make(master_base: int = 0x08, slave_base: int = 0x70, icw4: int = 0x01,
         icw1: int = 0x11) -> tuple[Pic8259Pair, list[int]]:
    """SeaBIOS's interleaved init: ICW1 to both, then ICW2, ICW3 and ICW4 to each in turn."""
    calls: list[int] = []
    pic = Pic8259Pair(lambda: calls.append(1))
    m, s = pic.master, pic.slave
    m.write(CMD, 1, icw1)
    s.write(CMD, 1, icw1)
    m.write(DATA, 1, master_base)
    s.write(DATA, 1, slave_base)
    m.write(DATA, 1, 0x04)
    s.write(DATA, 1, 0x02)
    m.write(DATA, 1, icw4)
    s.write(DATA, 1, icw4)
    return pic, calls


def isr(chip) -> int:
    chip.write(CMD, 1, READ_ISR)
    value = chip.read(CMD, 1)
    chip.write(CMD, 1, READ_IRR)
    return value


def irr(chip) -> int:
    return chip.read(CMD, 1)


def test_init_leaves_everything_unmasked_and_ocw1_sets_imr() -> None:
    pic, _ = make()
    assert pic.master.read(DATA, 1) == 0 and pic.slave.read(DATA, 1) == 0
    pic.master.write(DATA, 1, 0xFB)
    pic.slave.write(DATA, 1, 0xFF)
    assert pic.master.read(DATA, 1) == 0xFB and pic.slave.read(DATA, 1) == 0xFF
    assert pic.acknowledge() is None and not pic.intr()


def test_icw2_low_bits_are_ignored() -> None:
    pic, _ = make(master_base=0x0F, slave_base=0x77)
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.set_irq(9, True)
    pic.master.write(CMD, 1, EOI)
    assert pic.acknowledge() == 0x71


def test_edge_irq_goes_from_irr_to_isr_and_eoi_clears_it() -> None:
    pic, calls = make(0x20, 0x28)
    pic.set_irq(0, True)
    assert pic.intr() and calls == [1]
    assert irr(pic.master) == 0x01
    assert pic.acknowledge() == 0x20
    assert irr(pic.master) == 0 and isr(pic.master) == 0x01
    assert not pic.intr()
    pic.master.write(CMD, 1, EOI)
    assert isr(pic.master) == 0


def test_edge_request_latches_when_line_drops_before_inta() -> None:
    pic, calls = make()
    pic.irq_line(1).pulse()
    assert pic.intr() and calls == [1]
    assert pic.acknowledge() == 0x09


def test_edge_input_held_high_needs_a_new_rising_edge() -> None:
    pic, calls = make()
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x0C
    pic.master.write(CMD, 1, EOI)
    pic.set_irq(4, True)  # still high: no edge
    assert not pic.intr()
    pic.set_irq(4, False)
    pic.set_irq(4, True)
    assert pic.intr() and len(calls) == 2


def test_mask_hides_request_and_unmask_raises_intr() -> None:
    pic, calls = make()
    pic.master.write(DATA, 1, 0x02)
    pic.set_irq(1, True)
    assert not pic.intr() and calls == []
    assert irr(pic.master) == 0x02  # still requested, only masked
    pic.master.write(DATA, 1, 0x00)
    assert pic.intr() and calls == [1]
    assert pic.acknowledge() == 0x09


def test_lower_number_wins_and_in_service_blocks_lower_priority() -> None:
    pic, _ = make()
    pic.set_irq(5, True)
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    assert not pic.intr()  # IRQ5 waits behind IRQ3 in service
    pic.set_irq(1, True)
    assert pic.intr()  # but IRQ1 nests above it
    assert pic.acknowledge() == 0x09
    assert isr(pic.master) == 0x0A
    pic.master.write(CMD, 1, EOI)  # clears IRQ1, the highest in service
    assert isr(pic.master) == 0x08 and not pic.intr()
    pic.master.write(CMD, 1, EOI)
    assert pic.acknowledge() == 0x0D


def test_specific_eoi_clears_only_the_named_level() -> None:
    pic, _ = make()
    pic.set_irq(6, True)
    assert pic.acknowledge() == 0x0E
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.master.write(CMD, 1, SPECIFIC_EOI | 6)
    assert isr(pic.master) == 0x08


def test_cascade_delivers_slave_vector_and_puts_ir2_in_service() -> None:
    pic, calls = make()
    pic.set_irq(12, True)
    assert pic.intr() and calls == [1]
    assert irr(pic.slave) == 0x10 and irr(pic.master) == 0x04
    assert pic.acknowledge() == 0x74
    assert isr(pic.slave) == 0x10 and isr(pic.master) == 0x04
    pic.set_irq(3, True)
    assert not pic.intr()  # IR2 in service outranks IR3
    pic.slave.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, EOI)
    assert isr(pic.slave) == 0 and isr(pic.master) == 0
    assert pic.acknowledge() == 0x0B


def test_slave_priority_sits_between_irq1_and_irq3() -> None:
    pic, _ = make()
    for irq in (3, 15, 8, 1):
        pic.set_irq(irq, True)
    assert pic.acknowledge() == 0x09
    pic.master.write(CMD, 1, EOI)
    assert pic.acknowledge() == 0x70
    pic.slave.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, EOI)
    # IRQ15's request reaches the master as a fresh IR2 edge once the slave is free again.
    assert pic.acknowledge() == 0x77


def test_master_mask_on_ir2_hides_the_whole_slave() -> None:
    pic, _ = make()
    pic.master.write(DATA, 1, 0x04)
    pic.set_irq(9, True)
    assert not pic.intr()
    pic.master.write(DATA, 1, 0x00)
    assert pic.acknowledge() == 0x71


def test_spurious_irq7_when_a_level_request_vanishes_before_inta() -> None:
    pic, calls = make()
    pic.elcr.write(0, 1, 0x20)
    pic.set_irq(5, True)
    assert pic.intr() and calls == [1]
    pic.set_irq(5, False)
    assert pic.acknowledge() == 0x0F
    assert isr(pic.master) == 0  # spurious vectors put nothing in service
    assert pic.acknowledge() is None


def test_spurious_irq15_still_puts_master_ir2_in_service() -> None:
    pic, _ = make()
    pic.elcr.write(1, 1, 0x04)  # IRQ10 level
    pic.set_irq(10, True)
    pic.set_irq(10, False)
    assert pic.intr()  # master IR2 latched the slave's INT edge
    assert pic.acknowledge() == 0x77
    assert isr(pic.slave) == 0 and isr(pic.master) == 0x04


def test_level_input_reasserts_after_eoi_until_the_device_lets_go() -> None:
    pic, _ = make()
    pic.elcr.write(1, 1, 0x08)  # IRQ11 level
    pic.set_irq(11, True)
    assert pic.acknowledge() == 0x73
    assert irr(pic.slave) == 0x08  # level requests are not cleared by INTA
    pic.slave.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, EOI)
    assert pic.acknowledge() == 0x73
    pic.set_irq(11, False)
    pic.slave.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, EOI)
    assert not pic.intr() and irr(pic.slave) == 0


def test_same_input_edge_vs_level_depends_on_elcr() -> None:
    pic, _ = make()
    pic.set_irq(9, True)
    pic.set_irq(9, False)
    assert pic.intr()  # edge: the pulse latched
    assert pic.acknowledge() == 0x71
    pic.slave.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, EOI)
    pic.elcr.write(1, 1, 0x02)
    pic.set_irq(9, True)
    pic.set_irq(9, False)
    assert irr(pic.slave) == 0  # level: the request went away with the line


def test_elcr_hardwired_edge_bits_read_zero() -> None:
    pic, _ = make()
    pic.elcr.write(0, 1, 0xFF)
    pic.elcr.write(1, 1, 0xFF)
    assert pic.elcr.read(0, 1) == 0xF8 and pic.elcr.read(1, 1) == 0xDE
    pic.elcr.write(0, 2, 0x0C20)
    assert pic.elcr.read(0, 2) == 0x0C20


def test_ltim_makes_every_input_level_sensitive() -> None:
    pic, _ = make(icw1=0x19)
    pic.set_irq(3, True)
    pic.set_irq(3, False)
    assert not pic.intr() and irr(pic.master) == 0


def test_poll_mode_acknowledges_through_a_command_port_read() -> None:
    pic, calls = make()
    pic.master.write(DATA, 1, 0xFF)  # poll honours the mask too
    pic.set_irq(6, True)
    pic.master.write(CMD, 1, POLL)
    assert pic.master.read(CMD, 1) == 0
    pic.master.write(DATA, 1, 0x00)
    pic.master.write(CMD, 1, POLL)
    assert pic.master.read(CMD, 1) == 0x86
    assert isr(pic.master) == 0x40 and irr(pic.master) == 0
    assert pic.master.read(CMD, 1) == 0  # poll is one-shot: back to reading IRR
    pic.master.write(CMD, 1, EOI)
    pic.master.write(CMD, 1, POLL)
    assert pic.master.read(CMD, 1) == 0


def test_auto_eoi_leaves_nothing_in_service() -> None:
    pic, _ = make(icw4=0x03)
    pic.set_irq(7, True)
    pic.set_irq(4, True)
    assert pic.acknowledge() == 0x0C
    assert isr(pic.master) == 0
    assert pic.intr()  # IRQ7 is not blocked: no EOI needed
    assert pic.acknowledge() == 0x0F
    assert isr(pic.master) == 0


def test_rotate_on_eoi_makes_the_serviced_level_lowest() -> None:
    pic, _ = make()
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.master.write(CMD, 1, ROTATE_EOI)
    pic.set_irq(3, False)
    pic.set_irq(3, True)
    pic.set_irq(5, True)
    pic.set_irq(1, True)
    order = []
    for _ in range(3):
        order.append(pic.acknowledge())
        pic.master.write(CMD, 1, EOI)
    assert order == [0x0D, 0x09, 0x0B]  # priority now runs 4,5,6,7,0,1,2,3


def test_set_priority_and_rotate_in_auto_eoi() -> None:
    pic, _ = make(icw4=0x03)
    pic.master.write(CMD, 1, SET_PRIORITY | 4)  # IR4 lowest: order 5,6,7,0,1,2,3,4
    pic.set_irq(4, True)
    pic.set_irq(6, True)
    assert pic.acknowledge() == 0x0E
    pic.master.write(CMD, 1, 0x80)  # rotate in auto-EOI: each INTA makes its level lowest
    pic.irq_line(0).pulse()
    assert pic.acknowledge() == 0x08
    pic.irq_line(0).pulse()
    assert pic.acknowledge() == 0x0C  # order is now 1..7,0: IR4 beats IR0
    pic.irq_line(3).pulse()
    assert pic.acknowledge() == 0x08  # and now 5,6,7,0..4: IR0 beats IR3
    pic.master.write(CMD, 1, 0x00)  # clear rotate in auto-EOI
    pic.irq_line(0).pulse()
    assert pic.acknowledge() == 0x0B  # order stays 1..7,0 and no longer moves
    pic.irq_line(3).pulse()
    assert pic.acknowledge() == 0x0B


def test_special_mask_mode_lets_lower_levels_in() -> None:
    pic, _ = make()
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.set_irq(5, True)
    assert not pic.intr()
    pic.master.write(DATA, 1, 0x08)
    pic.master.write(CMD, 1, 0x68)  # set special mask mode
    assert pic.intr()
    assert pic.acknowledge() == 0x0D
    pic.master.write(CMD, 1, 0x48)  # leave it
    assert isr(pic.master) == 0x28


def test_icw1_resets_state_but_not_the_vector_base() -> None:
    pic, _ = make()
    pic.master.write(DATA, 1, 0x55)
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x0B
    pic.master.write(CMD, 1, READ_ISR)
    pic.master.write(CMD, 1, 0x11)
    assert pic.master.read(DATA, 1) == 0
    assert pic.master.read(CMD, 1) == 0  # IRR selected again, edge latch gone
    pic.master.write(DATA, 1, 0x20)  # ICW2
    pic.master.write(DATA, 1, 0x04)
    pic.master.write(DATA, 1, 0x01)
    pic.set_irq(3, False)
    pic.set_irq(3, True)
    assert pic.acknowledge() == 0x23


def test_on_intr_only_on_rising_int_and_outside_the_lock() -> None:
    taken: list[int | None] = []
    pic: Pic8259Pair

    def on_intr() -> None:
        assert pic.intr()  # would deadlock if still holding the lock
        taken.append(pic.acknowledge())

    pic = Pic8259Pair(on_intr)
    for port, value in ((CMD, 0x11), (DATA, 0x20), (DATA, 0x04), (DATA, 0x01)):
        pic.master.write(port, 1, value)
    pic.set_irq(1, True)
    pic.set_irq(4, True)  # INT dropped at the INTA; IRQ4 is blocked by IRQ1 in service
    assert taken == [0x21]
    pic.master.write(CMD, 1, EOI)
    assert taken == [0x21, 0x24]


def test_irq_lines_are_cached_and_drive_set_irq() -> None:
    pic, _ = make()
    line = pic.irq_line(14)
    assert isinstance(line, IrqLine) and pic.irq_line(14) is line and line.gsi == 14
    line.set_level(True)
    assert pic.acknowledge() == 0x76


@pytest.mark.parametrize("irq", [-1, 16])
def test_out_of_range_irq_is_rejected(irq: int) -> None:
    pic, _ = make()
    with pytest.raises(ValueError):
        pic.set_irq(irq, True)
    with pytest.raises(ValueError):
        pic.irq_line(irq)


PRIORITY_ORDER = [0, 1, 8, 9, 10, 11, 12, 13, 14, 15, 3, 4, 5, 6, 7]


@given(st.sets(st.sampled_from(PRIORITY_ORDER), min_size=1))
def test_pending_irqs_come_out_in_fixed_priority_order(raised: set[int]) -> None:
    pic, _ = make()
    for irq in sorted(raised, reverse=True):
        pic.irq_line(irq).pulse()
    seen = []
    while pic.intr():
        vector = pic.acknowledge()
        irq = vector - 0x08 if vector < 0x70 else vector - 0x70 + 8
        seen.append(irq)
        if irq >= 8:
            pic.slave.write(CMD, 1, EOI)
        pic.master.write(CMD, 1, EOI)
    assert seen == [irq for irq in PRIORITY_ORDER if irq in raised]
    assert pic.acknowledge() is None


@given(st.integers(0, 255), st.sets(st.sampled_from(PRIORITY_ORDER)))
def test_intr_matches_unmasked_requests(imr: int, raised: set[int]) -> None:
    pic, _ = make()
    pic.master.write(DATA, 1, imr)
    for irq in raised:
        pic.set_irq(irq, True)
    master_req = {irq if irq < 8 else 2 for irq in raised}  # the slave reaches the master on IR2
    assert pic.intr() == any(not imr & (1 << irq) for irq in master_req)


def test_concurrent_raisers_lose_nothing() -> None:
    pic, _ = make()
    irqs = [1, 3, 4, 5, 6, 7, 9, 10, 11, 12]
    threads = [threading.Thread(target=pic.irq_line(i).pulse) for i in irqs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert irr(pic.slave) == 0x1E
    count = 0
    while (vector := pic.acknowledge()) is not None:
        count += 1
        if vector >= 0x70:
            pic.slave.write(CMD, 1, EOI)
        pic.master.write(CMD, 1, EOI)
    assert count == len(irqs)


def test_a_retriggered_input_latches_a_new_edge_and_a_masked_one_signals_nothing() -> None:
    pic, calls = make()
    line = IrqLine(3, pic.set_irq, pic.retrigger)
    line.set_level(True)
    assert pic.acknowledge() == 0x0B
    pic.master.write(CMD, 1, EOI)
    line.retrigger()                                        # a fresh edge while held high
    assert pic.intr() and pic.acknowledge() == 0x0B
    pic.master.write(CMD, 1, EOI)
    pic.master.write(DATA, 1, 0x08)                         # IR3 masked
    line.retrigger()
    assert not pic.intr() and irr(pic.master) == 0x08       # latched, not signalled
    pic.master.write(DATA, 1, 0x00)
    assert pic.intr() and pic.acknowledge() == 0x0B
