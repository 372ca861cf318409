"""One vCPU thread: run the engine, dispatch each exit through a dict from exit type to handler."""
from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from .disasm import Instruction, decode
from .engine import base as ex
from .engine.base import Engine
from .engine.state import Regs, SRegs
from .outcome import End, GuestCrash, Outcome
from .paging import PageFault, PagingMode, read_virtual
from .memory import GuestMemoryError

if TYPE_CHECKING:
    from .machine import Machine


@dataclass
class EmulationEvent:
    """An instruction the engine could not execute, offered to the fallback hooks."""

    vcpu: "Vcpu"
    insn: bytes
    decoded: Instruction | None
    detail: str


_TICK = os.sysconf("SC_CLK_TCK")


def _thread_cpu_times(tid: int | str = "thread-self") -> tuple[float, float] | None:
    """(user, system) CPU seconds of a thread of this process; None once it is gone. On a KVM
    vCPU thread system time is mostly time spent running the guest, user time is hvm's Python."""
    path = "/proc/thread-self/stat" if tid == "thread-self" else f"/proc/self/task/{tid}/stat"
    try:
        with open(path) as f:
            fields = f.read().rpartition(")")[2].split()
        return int(fields[11]) / _TICK, int(fields[12]) / _TICK
    except (OSError, IndexError, ValueError):
        return None


# A fallback returns True when it executed (or otherwise dealt with) the instruction and the
# vCPU may continue; it may change registers through ``event.vcpu.engine``.
EmulationFallback = Callable[[EmulationEvent], bool]


class Vcpu:
    """A vCPU of a Machine: its engine, its thread and its exit statistics."""

    def __init__(self, machine: "Machine", index: int, engine: Engine):
        self.machine = machine
        self.index = index
        self.engine = engine
        self.exits: dict[type, int] = {}
        self.thread: threading.Thread | None = None
        self._final_cpu_times: tuple[float, float] = (0.0, 0.0)
        self._tid: int | None = None
        pio, mmio = machine.pio, machine.mmio
        self._pio_read, self._pio_write = pio.read, pio.write
        engine.serve_port_io(pio.read, pio.write, pio.published)
        self._mmio_read, self._mmio_write = mmio.read, mmio.write
        self._handlers: dict[type, Callable] = {
            ex.IoOut: self._io_out,
            ex.IoIn: self._io_in,
            ex.MmioWrite: self._mmio_w,
            ex.MmioRead: self._mmio_r,
            ex.Interrupted: self._interrupted,
            ex.Hlt: self._hlt,
            ex.Shutdown: self._shutdown,
            ex.EmulationFailure: self._emulation_failure,
            ex.EngineCrash: self._engine_crash,
            ex.SystemEvent: self._system_event,
            ex.Debug: self._debug,
            ex.RdMsr: self._rdmsr,
            ex.WrMsr: self._wrmsr,
        }

    # -- thread ---------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the vCPU thread."""
        self.thread = threading.Thread(target=self._loop, name=f"vcpu{self.index}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        engine = self.engine
        run = engine.run
        handlers = self._handlers
        counts = self.exits
        self._tid = threading.get_native_id()
        try:
            engine.thread_started()
            # No stop check per exit: a stop always kicks the engine, which then returns
            # Interrupted, whose handler ends the loop. This keeps the hot path short.
            if self.machine._stopping.is_set():
                return
            while True:
                exit_ = run()
                kind = type(exit_)
                handler = handlers.get(kind)
                if handler is None:
                    exit_ = engine.translate(exit_)
                    kind = type(exit_)
                    handler = handlers[kind]
                counts[kind] = counts.get(kind, 0) + 1
                if handler(exit_):
                    break
        except BaseException as exc:  # a bug in hvm or a device: end the run, never hang the guest silently
            self.machine.internal_error(f"vCPU {self.index}", exc)
        finally:
            self._final_cpu_times = _thread_cpu_times() or self._final_cpu_times
            self._tid = None
            engine.thread_exited()

    @property
    def cpu_times(self) -> tuple[float, float]:
        """(user, system) CPU seconds of this vCPU's thread, live while it runs."""
        tid = self._tid
        live = _thread_cpu_times(tid) if tid is not None else None
        return live or self._final_cpu_times

    # -- exits ----------------------------------------------------------------------------------
    # Port I/O reaches these handlers only from engines that do not serve it themselves
    # (Engine.serve_port_io); the KVM engine's fast path never builds these exits.
    def _io_out(self, e: ex.IoOut) -> bool:
        size, data, write = e.size, e.data, self._pio_write
        for pos in range(0, len(data), size):
            write(e.port, size, int.from_bytes(data[pos:pos + size], "little"))
        return False

    def _io_in(self, e: ex.IoIn) -> bool:
        size, data, read = e.size, e.data, self._pio_read
        for pos in range(0, len(data), size):
            data[pos:pos + size] = read(e.port, size).to_bytes(size, "little")
        return False

    def _mmio_w(self, e: ex.MmioWrite) -> bool:
        self._mmio_write(e.address, e.size, int.from_bytes(e.data, "little"))
        return False

    def _mmio_r(self, e: ex.MmioRead) -> bool:
        e.data[:] = self._mmio_read(e.address, e.size).to_bytes(e.size, "little")
        return False

    def _interrupted(self, e: ex.Interrupted) -> bool:
        self.engine.acknowledge_kick()
        return self.machine._stopping.is_set()

    def _hlt(self, e: ex.Hlt) -> bool:
        # Only without an in-kernel LAPIC: nothing can wake the vCPU but a stop.
        self.machine._stopping.wait()
        return True

    def _shutdown(self, e: ex.Shutdown) -> bool:
        self.machine.finish(Outcome(End.CRASH, crash=self.crash("triple fault (the CPU shut down)")))
        return True

    def _engine_crash(self, e: ex.EngineCrash) -> bool:
        self.machine.finish(Outcome(End.CRASH, crash=self.crash(e.reason)))
        return True

    def _emulation_failure(self, e: ex.EmulationFailure) -> bool:
        bits = self._code_bits()
        insn = e.insn or self._bytes_at_rip()
        decoded = decode(insn, bits, self._rip()) if insn else None
        event = EmulationEvent(self, insn, decoded, e.detail)
        for fallback in self.machine.emulation_fallbacks:
            if fallback(event):
                return False
        executor = self.machine.fallback
        if executor is not None and executor(event):
            return False
        what = f"{decoded}" if decoded else "an instruction"
        reason = f"{e.detail or 'emulation failure'}: cannot execute {what}"
        if executor is not None and executor.crash is not None:
            reason += f" (the unicorn fallback failed too: {executor.crash.reason})"
            executor.crash = None
        crash = self.crash(reason, insn=insn, decoded=decoded)
        self.machine.finish(Outcome(End.CRASH, crash=crash))
        return True

    def _system_event(self, e: ex.SystemEvent) -> bool:
        from kvmffi import lib  # event type numbers are KVM's; SystemEvent only comes from it
        if e.type == lib.KVM_SYSTEM_EVENT_SHUTDOWN:
            self.machine.finish(Outcome(End.POWEROFF))
        elif e.type == lib.KVM_SYSTEM_EVENT_RESET:
            self.machine.finish(Outcome(End.RESET, message="guest requested a reset"))
        else:
            self.machine.finish(Outcome(End.CRASH, crash=self.crash(f"guest reported a crash (event {e.type})")))
        return True

    def _debug(self, e: ex.Debug) -> bool:
        handler = self.machine.debug_handler
        if handler is None:
            return False
        return bool(handler(self, e))

    def _rdmsr(self, e: ex.RdMsr) -> bool:
        handler = self.machine.msr_handlers.get(e.index)
        if handler is None:
            e.reply(error=True)
        else:
            value = handler.read(self, e.index)
            e.reply(0 if value is None else value, error=value is None)
        return False

    def _wrmsr(self, e: ex.WrMsr) -> bool:
        handler = self.machine.msr_handlers.get(e.index)
        e.reply(error=handler is None or not handler.write(self, e.index, e.value))
        return False

    # -- state helpers --------------------------------------------------------------------------
    def _rip(self) -> int:
        return self.engine.get_regs().rip

    def _code_bits(self) -> int:
        fast = getattr(self.engine, "code_bits", None)   # without building SRegs (KVM: ~25 us)
        return fast() if fast is not None else self.engine.get_sregs().code_bits

    def paging_mode(self) -> PagingMode:
        """The vCPU's current paging configuration."""
        s = self.engine.get_sregs()
        return PagingMode(s.cr0, s.cr3, s.cr4, s.efer)

    def read_virtual(self, vaddr: int, length: int) -> bytes:
        """Read guest memory at a virtual address through this vCPU's page tables."""
        return read_virtual(self.machine.memory, self.paging_mode(), vaddr, length)

    def _bytes_at_rip(self, length: int = 15) -> bytes:
        s = self.engine.get_sregs()
        linear = self.engine.get_regs().rip + (0 if s.code_bits == 64 else s.cs.base)
        mode = PagingMode(s.cr0, s.cr3, s.cr4, s.efer)
        for n in (length, 8, 4, 1):  # the instruction may sit just before an unmapped page
            try:
                return read_virtual(self.machine.memory, mode, linear, n)
            except (PageFault, GuestMemoryError):
                continue
        return b""

    def crash(self, reason: str, insn: bytes | None = None, decoded: Instruction | None = None) -> GuestCrash:
        """A GuestCrash with this vCPU's registers and the instruction at RIP."""
        try:
            regs: Regs | None = self.engine.get_regs()
            sregs: SRegs | None = self.engine.get_sregs()
        except OSError:
            regs = sregs = None
        if insn is None:
            insn = self._bytes_at_rip() if regs is not None else b""
        if decoded is None and insn and sregs is not None and regs is not None:
            decoded = decode(insn, sregs.code_bits, regs.rip)
        notes = []
        post = self.machine.post
        if post is not None and post.writes:
            notes.append(f"last POST codes: {' '.join(f'{c:02x}' for c in post.history)}")
        return GuestCrash(reason, self.index, regs, sregs, insn[:decoded.size] if decoded else insn, decoded, notes)
