"""Real-mode event delivery on a GuestMemory, without any engine."""
from __future__ import annotations

import pytest

from hvm.engine.events import IF, TF, DeliveryFailed, deliver_real_mode
from hvm.engine.state import DTable, Regs, Segment, SRegs
from hvm.memory import GuestMemory, MiB


@pytest.fixture
def mem():
    m = GuestMemory(1 * MiB)
    yield m
    m.close()


def _real(cs=0x1000, ss=0x2000, sp=0x100):
    sregs = SRegs(idt=DTable(0, 0x3FF))
    sregs.cs, sregs.ss = Segment(selector=cs, base=cs << 4), Segment(selector=ss, base=ss << 4)
    return Regs(rip=0x1234, rsp=sp, rflags=0x2 | IF | TF), sregs


def test_pushes_flags_cs_ip_and_jumps_through_the_ivt(mem):
    mem.write_u32(0x24 * 4, 0xF000_7C40)      # vector 0x24 -> F000:7C40
    regs, sregs = _real()
    deliver_real_mode(mem, regs, sregs, 0x24)
    assert (sregs.cs.selector, sregs.cs.base, regs.rip) == (0xF000, 0xF0000, 0x7C40)
    assert regs.rsp == 0xFA and not regs.rflags & (IF | TF)
    stack = 0x20000 + 0xFA
    assert [mem.read_u16(stack + i) for i in (0, 2, 4)] == [0x1234, 0x1000, 0x2 | IF | TF]


def test_stack_wraps_inside_its_segment(mem):
    regs, sregs = _real(sp=0x2)
    deliver_real_mode(mem, regs, sregs, 0)
    assert regs.rsp == 0xFFFC
    assert mem.read_u16(0x20000 + 0xFFFC) == 0x1234  # IP, lowest
    assert mem.read_u16(0x20000 + 0xFFFE) == 0x1000  # CS went just below the wrap
    assert mem.read_u16(0x20000 + 0x0000) == 0x2 | IF | TF


def test_vector_beyond_the_ivt_limit_fails(mem):
    regs, sregs = _real()
    sregs.idt = DTable(0, 0x23)  # room for vectors 0-8 only
    with pytest.raises(DeliveryFailed):
        deliver_real_mode(mem, regs, sregs, 9)


# -- protected and IA-32e mode -------------------------------------------------------------------

from hvm.engine.events import Event, Unsupported, deliver_protected, escalate  # noqa: E402

GDT, IDT, TSS, STACK0, IST1, USTACK = 0x1000, 0x2000, 0x3000, 0x9000, 0xA000, 0x8000
KCODE64, KDATA, UCODE64 = 0x00AF9B000000FFFF, 0x00CF93000000FFFF, 0x00AFFB000000FFFF


def _long(mem, *, cpl=0, gates=()):
    """Flat long mode without paging tables (paging off is enough for the walker: CR0.PG=0)."""
    for i, d in enumerate([0, KCODE64, KDATA, 0x00CFF3000000FFFF, UCODE64]):
        mem.write_u64(GDT + 8 * i, d)
    mem.write_u64(TSS + 4, STACK0)
    mem.write_u64(TSS + 0x24, IST1)
    for vector, handler, type_dpl, ist in gates:
        lo = (handler & 0xFFFF) | (0x08 << 16)
        hi = (handler & 0xFFFF0000) | (type_dpl << 8) | ist
        mem.write_u32(IDT + 16 * vector, lo)
        mem.write_u32(IDT + 16 * vector + 4, hi)
        mem.write_u64(IDT + 16 * vector + 8, handler >> 32)
    sregs = SRegs(gdt=DTable(GDT, 39), idt=DTable(IDT, 256 * 16 - 1), cr0=0x11, efer=0x500)
    sregs.cs = Segment(selector=0x23 if cpl else 0x08, l=1, dpl=cpl)
    sregs.ss = Segment(selector=0x1B if cpl else 0x10, dpl=cpl)
    regs = Regs(rip=0x4000, rsp=USTACK - 8, rflags=0x2 | IF)
    return regs, sregs


def _frame(mem, rsp, n):
    return [mem.read_u64(rsp + 8 * i) for i in range(n)]


def test_long_mode_same_privilege_interrupt_gate(mem):
    regs, sregs = _long(mem, gates=[(14, 0x5000, 0x8E, 0)])
    done = deliver_protected(mem, regs, sregs, Event(14, 0x2, cr2=0x1234), cpl=0, tr_base=TSS)
    assert (done.cs, done.ss, done.cpl, regs.rip) == (0x08, 0x10, 0, 0x5000)
    assert regs.rsp == (USTACK - 8 & ~0xF) - 48 and not regs.rflags & IF
    # error code, RIP, CS, RFLAGS, RSP, SS: 64-bit mode always pushes SS:RSP
    assert _frame(mem, regs.rsp, 6) == [0x2, 0x4000, 0x08, 0x2 | IF, USTACK - 8, 0x10]
    assert sregs.cr2 == 0x1234


def test_long_mode_cpl3_to_cpl0_switches_to_rsp0_and_nulls_ss(mem):
    regs, sregs = _long(mem, cpl=3, gates=[(0x80, 0x5000, 0xEF, 0)])   # trap gate, DPL3
    done = deliver_protected(mem, regs, sregs, Event(0x80, software=True, insn_length=2), cpl=3,
                             tr_base=TSS)
    assert (done.cs, done.ss, done.cpl) == (0x08, 0, 0)
    assert regs.rsp == STACK0 - 40 and regs.rflags & IF       # a trap gate leaves IF alone
    assert _frame(mem, regs.rsp, 5) == [0x4000, 0x23, 0x2 | IF, USTACK - 8, 0x1B]


def test_ist_stack_is_used_even_without_privilege_change(mem):
    regs, sregs = _long(mem, gates=[(8, 0x5000, 0x8E, 1)])
    deliver_protected(mem, regs, sregs, Event(8, 0), cpl=0, tr_base=TSS)
    assert regs.rsp == IST1 - 48


def test_software_interrupt_through_a_dpl0_gate_from_cpl3_is_a_gp(mem):
    regs, sregs = _long(mem, cpl=3, gates=[(0x82, 0x5000, 0x8E, 0), (13, 0x6000, 0x8E, 0)])
    done = deliver_protected(mem, regs, sregs, Event(0x82, software=True, insn_length=2), cpl=3,
                             tr_base=TSS)
    assert regs.rip == 0x6000 and done.cpl == 0
    # #GP(0x82 * 8 + 2), and the saved RIP points back at the INT instruction
    assert _frame(mem, regs.rsp, 2) == [0x412, 0x4000 - 2]


def test_every_fault_met_delivering_int_n_points_at_the_instruction(mem):
    # INT 0x82 from CPL3 through a DPL0 gate: #GP; #GP's gate is not present: #NP, which makes
    # it a #DF. The #DF frame's RIP is the INT instruction too (kvm-unit-tests' eventinj: a
    # handler that mends the cause must see the INT run again).
    regs, sregs = _long(mem, cpl=3, gates=[(0x82, 0x5000, 0x8E, 0), (13, 0x6000, 0x0E, 0), (8, 0x7000, 0x8E, 0)])
    deliver_protected(mem, regs, sregs, Event(0x82, software=True, insn_length=2), cpl=3, tr_base=TSS)
    assert regs.rip == 0x7000
    assert _frame(mem, regs.rsp, 2) == [0, 0x4000 - 2]    # error code 0, RIP at the INT


def test_not_present_gate_is_np_and_a_missing_np_handler_escalates(mem):
    regs, sregs = _long(mem, gates=[(11, 0x5000, 0x8E, 0), (0x30, 0x6000, 0x0E, 0)])  # 0x30: P=0
    deliver_protected(mem, regs, sregs, Event(0x30, external=True), cpl=0, tr_base=TSS)
    assert regs.rip == 0x5000 and mem.read_u64(regs.rsp) == 0x30 * 8 + 2 + 1   # IDT | EXT

    mem.write(IDT, bytes(256 * 16))
    regs, sregs = _long(mem, gates=[(8, 0x7000, 0x8E, 0)])        # only #DF present
    deliver_protected(mem, regs, sregs, Event(13, 0), cpl=0, tr_base=TSS)
    assert regs.rip == 0x7000 and mem.read_u64(regs.rsp) == 0    # #GP while delivering #GP: #DF(0)


def test_nothing_deliverable_is_a_triple_fault(mem):
    regs, sregs = _long(mem)
    with pytest.raises(DeliveryFailed, match="triple fault"):
        deliver_protected(mem, regs, sregs, Event(14, 0), cpl=0, tr_base=TSS)


def test_task_gates_are_refused_clearly(mem):
    regs, sregs = _long(mem)
    sregs.efer, sregs.idt = 0, DTable(IDT, 255 * 8)
    mem.write_u64(IDT + 8 * 8, 0x0000850000280000)          # 32-bit IDT: #DF as a task gate
    with pytest.raises(Unsupported, match="task gate"):
        deliver_protected(mem, regs, sregs, Event(8, 0), cpl=0, tr_base=TSS)


@pytest.mark.parametrize("first,second,result", [
    (14, 14, 8), (14, 13, 8), (13, 11, 8), (0, 10, 8),     # contributory/page-fault pairs: #DF
    (13, 14, 14), (3, 13, 13), (1, 14, 14), (6, 0, 0),     # benign first, or #PF after contributory
    (8, 13, None), (8, 14, None),                           # anything during #DF: shutdown
])
def test_double_fault_table(first, second, result):
    assert escalate(first, second) == result
