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
