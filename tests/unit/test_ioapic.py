"""IOAPIC behaviour through IOREGSEL/IOWIN exactly as a guest programs it, and its input pins."""
from __future__ import annotations

import threading

import pytest
from hypothesis import given, strategies as st

from hvm.devices.irq.apic_bus import ApicMessage, DeliveryMode, DestMode, Trigger
from hvm.devices.irq.ioapic import IoApic

IOREGSEL, IOWIN, EOI = 0x00, 0x10, 0x40
MASKED, LEVEL, ACTIVE_LOW, REMOTE_IRR, LOGICAL = 1 << 16, 1 << 15, 1 << 13, 1 << 14, 1 << 11


def make(version: int = 0x20) -> tuple[IoApic, list[ApicMessage]]:
    sent: list[ApicMessage] = []
    return IoApic(sent.append, version=version), sent


def reg_read(io: IoApic, index: int) -> int:
    io.write(IOREGSEL, 4, index)
    return io.read(IOWIN, 4)


def reg_write(io: IoApic, index: int, value: int) -> None:
    io.write(IOREGSEL, 4, index)
    io.write(IOWIN, 4, value)


def program(io: IoApic, pin: int, low: int, dest: int = 0) -> None:
    """Linux's order: destination first, then the low half (which may unmask)."""
    reg_write(io, 0x11 + 2 * pin, dest << 24)
    reg_write(io, 0x10 + 2 * pin, low)


def rte(io: IoApic, pin: int) -> int:
    return reg_read(io, 0x10 + 2 * pin) | reg_read(io, 0x11 + 2 * pin) << 32


def test_reset_state_masks_every_pin_and_reports_24_entries() -> None:
    io, sent = make()
    assert all(rte(io, pin) == MASKED for pin in range(24))
    assert reg_read(io, 0x01) == 0x0017_0020
    assert reg_read(io, 0x00) == 0
    for pin in range(24):
        io.set_irq(pin, True)
    assert sent == []


def test_version_0x11_is_reported_and_other_versions_are_refused() -> None:
    io, _ = make(version=0x11)
    assert reg_read(io, 0x01) == 0x0017_0011
    with pytest.raises(ValueError):
        IoApic(lambda msg: None, version=0x13)


def test_ioregsel_reads_back_and_id_has_four_bits() -> None:
    io, _ = make()
    io.write(IOREGSEL, 4, 0x1234_5611)
    assert io.read(IOREGSEL, 4) == 0x11
    reg_write(io, 0x00, 0xFFFF_FFFF)
    assert reg_read(io, 0x00) == 0x0F00_0000
    assert reg_read(io, 0x02) == 0x0F00_0000  # arbitration ID follows the ID
    reg_write(io, 0x01, 0)  # version is read-only
    assert reg_read(io, 0x01) == 0x0017_0020
    assert reg_read(io, 0x40) == 0 and reg_read(io, 0x10 + 48) == 0  # past the last entry


def test_redirection_entry_keeps_only_writable_bits() -> None:
    io, _ = make()
    reg_write(io, 0x10 + 2 * 5, 0xFFFF_FFFF)
    reg_write(io, 0x11 + 2 * 5, 0xFFFF_FFFF)
    # Delivery status (12) and Remote IRR (14) are read-only, bits 17-55 reserved.
    assert rte(io, 5) == 0xFF00_0000_0001_AFFF
    assert rte(io, 4) == MASKED and rte(io, 6) == MASKED


def test_narrow_accesses_slice_and_merge() -> None:
    io, _ = make()
    program(io, 3, MASKED | 0x41, dest=0x12)
    io.write(IOREGSEL, 1, 0x10 + 6)
    assert io.read(IOWIN, 1) == 0x41
    assert io.read(IOWIN + 2, 1) == 0x01  # the mask bit's byte
    io.write(IOWIN, 1, 0x77)  # replaces the vector, keeps the rest
    assert rte(io, 3) == 0x12 << 56 | MASKED | 0x77


def test_edge_pin_sends_one_message_per_rising_edge() -> None:
    io, sent = make()
    program(io, 1, 0x31, dest=2)
    io.set_irq(1, True)
    assert sent == [ApicMessage(dest=2, dest_mode=DestMode.PHYSICAL,
                                delivery_mode=DeliveryMode.FIXED, vector=0x31, trigger=Trigger.EDGE)]
    io.set_irq(1, True)
    io.set_irq(1, False)
    assert len(sent) == 1
    io.irq_line(1).pulse()
    assert len(sent) == 2
    assert rte(io, 1) & (REMOTE_IRR | 1 << 12) == 0  # edge entries never wait and read idle


def test_edge_lost_while_masked_and_not_replayed_on_unmask() -> None:
    io, sent = make()
    program(io, 1, MASKED | 0x31)
    io.set_irq(1, True)
    program(io, 1, 0x31)
    assert sent == []
    io.set_irq(1, False)
    io.set_irq(1, True)
    assert [m.vector for m in sent] == [0x31]


def test_level_pin_waits_for_eoi_and_redelivers_while_still_asserted() -> None:
    io, sent = make()
    program(io, 10, LEVEL | 0x5A, dest=1)
    io.set_irq(10, True)
    assert [(m.vector, m.trigger) for m in sent] == [(0x5A, Trigger.LEVEL)]
    assert rte(io, 10) & REMOTE_IRR
    io.set_irq(10, False)
    io.set_irq(10, True)
    assert len(sent) == 1  # Remote IRR holds further messages back
    io.eoi(0x5B)
    assert len(sent) == 1 and rte(io, 10) & REMOTE_IRR
    io.eoi(0x5A)
    assert len(sent) == 2 and rte(io, 10) & REMOTE_IRR  # still asserted: sent again
    io.set_irq(10, False)
    io.eoi(0x5A)
    assert len(sent) == 2 and not rte(io, 10) & REMOTE_IRR


def test_eoi_register_exists_only_in_version_0x20() -> None:
    for version, redelivered in ((0x20, True), (0x11, False)):
        io, sent = make(version)
        program(io, 7, LEVEL | 0x47)
        io.set_irq(7, True)
        io.write(EOI, 4, 0x47)
        assert len(sent) == (2 if redelivered else 1)
        assert bool(rte(io, 7) & REMOTE_IRR)


def test_eoi_clears_every_entry_sharing_the_vector() -> None:
    io, sent = make()
    program(io, 16, LEVEL | 0x60)
    program(io, 17, LEVEL | 0x60)
    io.set_irq(16, True)
    io.set_irq(17, True)
    io.set_irq(16, False)
    io.set_irq(17, False)
    assert len(sent) == 2
    io.eoi(0x60)
    assert not rte(io, 16) & REMOTE_IRR and not rte(io, 17) & REMOTE_IRR


def test_masked_level_pin_delivers_when_unmasked_if_still_asserted() -> None:
    io, sent = make()
    program(io, 9, MASKED | LEVEL | 0x39)
    io.set_irq(9, True)
    assert sent == [] and not rte(io, 9) & REMOTE_IRR
    program(io, 9, LEVEL | 0x39)
    assert [m.vector for m in sent] == [0x39]
    program(io, 11, MASKED | LEVEL | 0x3B)
    io.set_irq(11, True)
    io.set_irq(11, False)
    program(io, 11, LEVEL | 0x3B)
    assert len(sent) == 1  # a level that went away while masked leaves nothing behind


def test_remote_irr_survives_masking_and_eoi_still_clears_it() -> None:
    io, sent = make()
    program(io, 9, LEVEL | 0x39)
    io.set_irq(9, True)
    program(io, 9, MASKED | LEVEL | 0x39)
    assert rte(io, 9) & REMOTE_IRR
    io.eoi(0x39)
    assert not rte(io, 9) & REMOTE_IRR and len(sent) == 1  # masked: no redelivery
    program(io, 9, LEVEL | 0x39)
    assert len(sent) == 2


def test_switching_to_edge_abandons_remote_irr() -> None:
    io, sent = make()
    program(io, 4, LEVEL | 0x34)
    io.set_irq(4, True)
    program(io, 4, 0x34)
    assert not rte(io, 4) & REMOTE_IRR
    program(io, 4, LEVEL | 0x34)  # back to level while asserted: it is requested again
    assert len(sent) == 2 and rte(io, 4) & REMOTE_IRR


def test_active_low_level_pin_is_asserted_by_a_low_level() -> None:
    io, sent = make()
    io.set_irq(20, True)  # the line idles high
    program(io, 20, ACTIVE_LOW | LEVEL | 0x70)
    assert sent == []
    io.set_irq(20, False)
    assert [m.vector for m in sent] == [0x70]
    io.set_irq(20, True)
    io.eoi(0x70)
    assert len(sent) == 1 and not rte(io, 20) & REMOTE_IRR


def test_active_low_edge_pin_fires_on_the_falling_edge() -> None:
    io, sent = make()
    io.set_irq(21, True)
    program(io, 21, ACTIVE_LOW | 0x71)
    io.set_irq(21, True)
    assert sent == []
    io.set_irq(21, False)
    io.set_irq(21, True)
    assert [m.vector for m in sent] == [0x71]


def test_undriven_pin_is_idle_whatever_its_polarity() -> None:
    io, sent = make()
    program(io, 22, ACTIVE_LOW | LEVEL | 0x72)
    assert sent == []


def test_message_fields_follow_the_entry() -> None:
    io, sent = make()
    program(io, 2, LOGICAL | DeliveryMode.LOWEST << 8 | 0x80, dest=0x0F)
    program(io, 3, DeliveryMode.NMI << 8, dest=0xFF)
    program(io, 5, DeliveryMode.EXTINT << 8)
    program(io, 6, DeliveryMode.SMI << 8)
    program(io, 8, DeliveryMode.INIT << 8)
    for pin in (2, 3, 5, 6, 8):
        io.set_irq(pin, True)
    assert [(m.dest, m.dest_mode, m.delivery_mode, m.vector) for m in sent] == [
        (0x0F, DestMode.LOGICAL, DeliveryMode.LOWEST, 0x80),
        (0xFF, DestMode.PHYSICAL, DeliveryMode.NMI, 0),
        (0, DestMode.PHYSICAL, DeliveryMode.EXTINT, 0),
        (0, DestMode.PHYSICAL, DeliveryMode.SMI, 0),
        (0, DestMode.PHYSICAL, DeliveryMode.INIT, 0),
    ]


def test_reserved_delivery_modes_send_nothing() -> None:
    io, sent = make()
    program(io, 12, 3 << 8 | 0x40)
    program(io, 13, 6 << 8 | 0x40)
    io.set_irq(12, True)
    io.set_irq(13, True)
    assert sent == []


def test_level_nmi_does_not_wait_for_an_eoi_that_never_comes() -> None:
    io, sent = make()
    program(io, 14, LEVEL | DeliveryMode.NMI << 8)
    io.set_irq(14, True)
    assert len(sent) == 1 and not rte(io, 14) & REMOTE_IRR


def test_irq_lines_are_shared_per_pin_and_range_checked() -> None:
    io, sent = make()
    assert io.irq_line(4) is io.irq_line(4) and io.irq_line(4).gsi == 4
    with pytest.raises(ValueError):
        io.irq_line(24)
    with pytest.raises(ValueError):
        io.set_irq(-1, True)


def test_reset_masks_again_but_keeps_pin_levels() -> None:
    io, sent = make()
    program(io, 1, LEVEL | 0x31)
    io.set_irq(1, True)
    io.reset()
    assert rte(io, 1) == MASKED
    program(io, 1, LEVEL | 0x31)
    assert len(sent) == 2  # the line is still asserted


def test_delivery_may_call_back_into_eoi_without_deadlock() -> None:
    """A LAPIC that EOIs from inside delivery (a self-contained round trip) must not hang."""
    sent: list[int] = []

    def deliver(msg: ApicMessage) -> None:
        sent.append(msg.vector)
        if len(sent) == 1:
            io.eoi(msg.vector)

    io = IoApic(deliver)
    program(io, 0, LEVEL | 0x30)
    worker = threading.Thread(target=io.set_irq, args=(0, True), daemon=True)
    worker.start()
    worker.join(5)
    assert not worker.is_alive()
    assert sent == [0x30, 0x30]


@given(st.lists(st.one_of(st.tuples(st.just("line"), st.booleans()),
                          st.tuples(st.just("eoi"), st.sampled_from([0x44, 0x45])),
                          st.tuples(st.just("mask"), st.booleans())), max_size=40))
def test_level_pin_never_has_two_messages_outstanding(ops) -> None:
    """Between two messages for a level pin there is always an EOI of its vector, and an
    asserted unmasked pin always has one outstanding."""
    io, sent = make()
    program(io, 3, LEVEL | 0x44)
    outstanding = False
    for op, arg in ops:
        before = len(sent)
        if op == "line":
            io.set_irq(3, arg)
        elif op == "eoi":
            io.eoi(arg)
            if arg == 0x44:
                outstanding = False
        else:
            program(io, 3, (MASKED if arg else 0) | LEVEL | 0x44)
        new = len(sent) - before
        assert new <= 1 and not (new and outstanding)
        outstanding |= bool(new)
        assert bool(rte(io, 3) & REMOTE_IRR) == outstanding
        if op == "line" and arg and not rte(io, 3) & MASKED:
            assert outstanding


@given(st.lists(st.booleans(), max_size=40), st.booleans())
def test_edge_pin_messages_equal_rising_edges(levels, active_low) -> None:
    io, sent = make()
    io.set_irq(1, active_low)  # start idle
    program(io, 1, (ACTIVE_LOW if active_low else 0) | 0x31)
    previous, edges = active_low, 0
    for level in levels:
        io.set_irq(1, level)
        asserted_now, asserted_before = level != active_low, previous != active_low
        edges += asserted_now and not asserted_before
        previous = level
    assert len(sent) == edges


def test_a_retriggered_edge_pin_sends_again_and_a_level_pin_waits_for_its_eoi() -> None:
    # IrqLine.retrigger: the line drops and rises within one device access (a UART's THR write).
    io, sent = make()
    program(io, 4, 0x41)                                    # edge, unmasked
    program(io, 5, 0x42 | LEVEL)
    io.set_irq(4, True)
    io.set_irq(5, True)
    assert [m.vector for m in sent] == [0x41, 0x42]
    io.retrigger(4)
    io.retrigger(5)                                         # Remote IRR set: nothing new
    assert [m.vector for m in sent] == [0x41, 0x42, 0x41]
    io.write(EOI, 4, 0x42)                                  # still asserted: sent again
    assert [m.vector for m in sent] == [0x41, 0x42, 0x41, 0x42]
    program(io, 4, 0x51)                                    # a new entry: its own message
    io.retrigger(4)
    assert sent[-1].vector == 0x51
