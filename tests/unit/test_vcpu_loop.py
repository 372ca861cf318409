"""The vCPU run loop against a scripted engine: dispatch, string I/O, translation, crash report."""
from __future__ import annotations

import threading

from hvm.bus import MmioBus, PortIOBus
from hvm.devices.base import Device
from hvm.devices.post import PostCode
from hvm.engine.base import Engine, EngineCrash
from hvm.engine.state import Regs, SRegs
from hvm.memory import GuestMemory, MiB
from hvm.outcome import End
from hvm.vcpu import Vcpu
from kvmffi import exits


class Scripted(Engine):
    """Returns a fixed list of exits, one per run(); keeps no I/O for itself."""

    name = "scripted"

    def __init__(self, script):
        self.script = list(script)

    def run(self):
        return self.script.pop(0)

    def translate(self, exit_):
        return EngineCrash(f"translated {type(exit_).__name__}") if isinstance(exit_, str) else exit_

    def get_regs(self):
        return Regs(rip=0x1000)

    def set_regs(self, regs):
        pass

    def get_sregs(self):
        return SRegs()

    def set_sregs(self, sregs):
        pass

    def inject_interrupt(self, vector):
        pass

    def inject_exception(self, vector, error_code=None):
        pass

    def kick(self):
        pass


class Rec(Device):
    def __init__(self):
        self.log = []
        self.next = 0x1234

    def read(self, offset, size):
        self.log.append(("r", offset, size))
        return self.next

    def write(self, offset, size, value):
        self.log.append(("w", offset, size, value))


class FakeMachine:
    def __init__(self):
        self.pio, self.mmio = PortIOBus(), MmioBus()
        self._stopping = threading.Event()
        self.outcomes = []
        self.emulation_fallbacks, self.msr_handlers, self.debug_handler = [], {}, None
        self.fallback = None
        self.memory = GuestMemory(1 * MiB)
        self.post = PostCode()

    def finish(self, outcome):
        self.outcomes.append(outcome)
        self._stopping.set()


class Unknown(exits.VcpuExit):
    __slots__ = ()


def test_loop_dispatches_string_io_and_reports_a_triple_fault():
    m = FakeMachine()
    dev = Rec()
    m.pio.register(0x510, 2, dev)
    inbuf = bytearray(8)
    m.memory.write(0x1000, bytes.fromhex("0f0b"))   # ud2 at RIP, for the crash report
    script = [exits.IoOut(0x510, 1, 3, bytearray(b"abc")),
              exits.IoIn(0x511, 2, 2, inbuf, 4),
              exits.Shutdown()]
    v = Vcpu(m, 0, Scripted(script))
    v._loop()
    assert dev.log == [("w", 0, 1, 0x61), ("w", 0, 1, 0x62), ("w", 0, 1, 0x63), ("r", 1, 2), ("r", 1, 2)]
    assert inbuf == bytes(4) + b"\x34\x12\x34\x12"
    assert [o.end for o in m.outcomes] == [End.CRASH]
    crash = m.outcomes[0].crash
    assert "triple fault" in crash.reason and str(crash.decoded) == "ud2"
    assert v.exits == {exits.IoOut: 1, exits.IoIn: 1, exits.Shutdown: 1}


def test_engine_specific_exits_go_through_translate():
    m = FakeMachine()

    class Odd(Scripted):
        def translate(self, exit_):
            return EngineCrash("the engine could not continue")

    v = Vcpu(m, 0, Odd([Unknown()]))
    v._loop()
    assert m.outcomes[0].end == End.CRASH
    assert m.outcomes[0].crash.reason == "the engine could not continue"


def test_interrupted_ends_the_loop_only_when_stopping():
    m = FakeMachine()
    engine = Scripted([exits.Interrupted(), exits.Interrupted(), exits.Shutdown()])
    v = Vcpu(m, 0, engine)
    plain = v._interrupted

    def interrupted(e):
        if v.exits[exits.Interrupted] == 2:   # a stop arrives before the second kick is seen
            m._stopping.set()
        return plain(e)

    v._handlers[exits.Interrupted] = interrupted
    v._loop()
    assert v.exits == {exits.Interrupted: 2}  # the first kick did not end the loop, the second did
    assert m.outcomes == [] and [type(e) for e in engine.script] == [exits.Shutdown]
