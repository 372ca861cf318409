"""The hardware engine: one KVM vCPU. Converts KVM's state structs to the neutral ones."""
from __future__ import annotations

import functools
import signal
import threading
from typing import Callable

import kvmffi
from kvmffi import exits as kx
from kvmffi import ffi

from ..bus import string_io
from .base import EmulationFailure, Engine, EngineCrash
from .state import DTable, Fpu, Regs, Segment, SRegs, GPRS, code_bits

# A real-time signal nobody else uses: its (empty) handler only makes KVM_RUN return EINTR.
KICK_SIGNAL = signal.SIGRTMIN + 2
_kick_installed = False
_kick_lock = threading.Lock()

_REG_NAMES = GPRS + ("rip", "rflags")
_SEG_FIELDS = ("base", "limit", "selector", "type", "present", "dpl", "db", "s", "l", "g", "avl", "unusable")

_INTERNAL_SUBERRORS = {
    1: "instruction emulation failed",
    2: "exception raised while delivering an exception (simultaneous exceptions)",
    3: "exit during event delivery",
    4: "unexpected exit reason",
}


def string_runs(read: Callable[[int, int], int], write: Callable[[int, int, int], None]):
    """``(read_run, write_run)`` for ``Vcpu.run_with_io``: a REP INS/OUTS exit's elements (KVM
    API, KVM_EXIT_IO with ``count`` > 1) through the bus's string methods (``bus.string_io``) at
    once. A device may serve a run in parts (the end of its data block); KVM wants every element
    of the exit, so the parts are taken until the run is whole."""
    read_string, write_string = string_io(read, write)

    def read_run(port: int, size: int, count: int) -> bytes:
        data = read_string(port, size, count)
        while len(data) < size * count:
            data += read_string(port, size, count - len(data) // size)
        return data

    def write_run(port: int, size: int, data: bytes) -> None:
        pos = 0
        while pos < len(data):
            pos += write_string(port, size, data[pos:]) * size

    return read_run, write_run


def _install_kick() -> None:
    global _kick_installed
    with _kick_lock:
        if not _kick_installed:
            kvmffi.install_kick_handler(KICK_SIGNAL)
            _kick_installed = True


class KvmEngine(Engine):
    """A vCPU run by KVM (``irqchip``: the in-kernel LAPIC/PIC/IOAPIC are in use)."""

    name = "kvm"

    def __init__(self, vcpu: kvmffi.Vcpu, irqchip: bool = True):
        _install_kick()
        self.vcpu = vcpu
        self.irqchip = irqchip
        self._thread: int | None = None
        self._thread_lock = threading.Lock()
        self._kicks = 0  # kicks so far: ``complete_io`` must not swallow one
        # Called on the vCPU thread after a kick ended KVM_RUN (paravirt.ring0 puts a Xen PV
        # guest's upcalls in then).
        self.after_kick: Callable[[], None] | None = None
        self.run = vcpu.run  # type: ignore[method-assign]  # the hot path: straight to KVM_RUN

    def run(self) -> kx.VcpuExit:
        """KVM_RUN (replaced per instance by the vCPU's own ``run``: no wrapper on the hot path)."""
        return self.vcpu.run()

    def serve_port_io(self, read, write, published=None) -> None:
        """Serve port I/O inside ``run``: KVM_RUN loops in kvmffi, with no exit objects built;
        string I/O exits reach the bus's string methods a run at a time (``string_runs``), and
        reads of ``published``'s registers are answered in that loop's C part."""
        table = None if published is None else ffi.from_buffer("hvm_published[]", published.buffer)
        self.run = functools.partial(self.vcpu.run_with_io, read, write,  # type: ignore[method-assign]
                                     *string_runs(read, write), table)

    def io_exit_counts(self) -> tuple[int, int]:
        """(IN, OUT) exits served by ``run`` (reads answered from published registers included)."""
        return self.vcpu.io_exits[0] + self.vcpu.served_reads, self.vcpu.io_exits[1]

    def translate(self, ex: kx.VcpuExit) -> kx.VcpuExit:
        """KVM-only failures become engine-neutral EmulationFailure / EngineCrash."""
        t = type(ex)
        if t is kx.EmulationFailure:
            return EmulationFailure(ex.insn, "instruction emulation failed in KVM (KVM_EXIT_INTERNAL_ERROR, "
                                             "suberror 1)")
        if t is kx.InternalError:
            what = _INTERNAL_SUBERRORS.get(ex.suberror, f"suberror {ex.suberror}")
            data = " ".join(f"{d:#x}" for d in ex.data)
            return EngineCrash(f"KVM internal error: {what}" + (f" [data {data}]" if data else ""))
        if t is kx.FailEntry:
            return EngineCrash(f"KVM could not enter the guest: hardware entry failure reason "
                               f"{ex.reason:#x} on host CPU {ex.cpu}")
        if t is kx.Unknown:
            return EngineCrash(f"unexpected KVM exit reason {ex.reason} (hardware reason {ex.hardware_reason:#x})")
        return super().translate(ex)

    def thread_started(self) -> None:
        """Remember the vCPU thread: ``kick`` signals it."""
        with self._thread_lock:
            self._thread = threading.get_ident()

    def kick(self) -> None:
        """Set immediate_exit (covers a vCPU about to enter) and signal the vCPU thread (covers one inside)."""
        self._kicks += 1
        self.vcpu.immediate_exit = True
        with self._thread_lock:
            if self._thread is not None and self._thread != threading.get_ident():
                try:
                    signal.pthread_kill(self._thread, KICK_SIGNAL)
                except ProcessLookupError:
                    pass

    def acknowledge_kick(self) -> None:
        """Clear immediate_exit after a kick was seen."""
        self.vcpu.immediate_exit = False
        if self.after_kick is not None:
            self.after_kick()

    def complete_io(self) -> None:
        """Finish the port I/O exit ``run`` is in, before its registers change: KVM completes an
        I/O only on the next KVM_RUN (KVM API, KVM_EXIT_IO), which with immediate_exit set does
        that and returns at once. A kick that comes meanwhile stays pending."""
        vcpu, kicks = self.vcpu, self._kicks
        kicked = vcpu.immediate_exit
        vcpu.immediate_exit = True
        done = vcpu.run()
        if not kicked:
            vcpu.immediate_exit = False
            if self._kicks != kicks:  # a kick between our KVM_RUN and the line above
                vcpu.immediate_exit = True
        if type(done) is not kx.Interrupted:
            raise RuntimeError(f"KVM_RUN completing port I/O returned {done!r}, not at once")

    def thread_exited(self) -> None:
        """Forget the vCPU thread so no signal is ever sent to a reused thread id."""
        with self._thread_lock:
            self._thread = None

    # -- state conversion -----------------------------------------------------------------------
    def get_regs(self) -> Regs:
        """KVM_GET_REGS as Regs."""
        return Regs(*self.vcpu.regs_values())

    def regs_values(self) -> tuple[int, ...]:
        """Regs' fields in order, without building Regs (KVM syncs them into kvm_run)."""
        return self.vcpu.regs_values()

    def load_regs_at_entry(self, values) -> None:
        """Regs' fields in order, loaded by KVM at this vCPU's next entry; only on the vCPU's
        own thread while it handles an exit (``kvmffi.Vcpu.load_regs_at_entry``)."""
        self.vcpu.load_regs_at_entry(values)

    def sync_sregs(self) -> None:
        """From now on KVM stores segment and control registers at every exit: reading them
        (``get_sregs``, ``sregs_key``, ``code_bits``) then costs no ioctl. For vCPUs that read
        them often (the fallback's); each exit costs ~0.2 us more."""
        self.vcpu.sync_sregs()

    def set_regs(self, regs: Regs) -> None:
        """KVM_SET_REGS from Regs."""
        r = ffi.new("struct kvm_regs *")
        for n in _REG_NAMES:
            setattr(r, n, getattr(regs, n) & 0xFFFFFFFFFFFFFFFF)
        self.vcpu.set_regs(r)

    def get_sregs(self) -> SRegs:
        """KVM_GET_SREGS as SRegs."""
        s = self.vcpu.get_sregs()
        out = SRegs()
        for name in SRegs.SEGMENTS:
            seg = getattr(s, name)
            setattr(out, name, Segment(**{f: getattr(seg, f) for f in _SEG_FIELDS}))
        out.gdt = DTable(s.gdt.base, s.gdt.limit)
        out.idt = DTable(s.idt.base, s.idt.limit)
        for cr in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"):
            setattr(out, cr, getattr(s, cr))
        return out

    def code_bits(self) -> int:
        """SRegs.code_bits, read from KVM's struct directly."""
        s = self.vcpu.get_sregs()
        return code_bits(s.efer, s.cr0, s.cs.l, s.cs.db)

    def sregs_key(self) -> bytes:
        """KVM's segment and control registers as raw bytes: equal bytes, equal SRegs, without
        building them (~25 us in Python)."""
        return self.vcpu.sregs_bytes()

    def set_sregs(self, sregs: SRegs) -> None:
        """KVM_SET_SREGS from SRegs (keeps KVM's pending-interrupt bitmap)."""
        s = self.vcpu.get_sregs()
        for name in SRegs.SEGMENTS:
            src, dst = getattr(sregs, name), getattr(s, name)
            for f in _SEG_FIELDS:
                setattr(dst, f, getattr(src, f))
        s.gdt.base, s.gdt.limit = sregs.gdt.base, sregs.gdt.limit
        s.idt.base, s.idt.limit = sregs.idt.base, sregs.idt.limit
        for cr in ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base"):
            setattr(s, cr, getattr(sregs, cr))
        self.vcpu.set_sregs(s)

    def inject_interrupt(self, vector: int) -> None:
        """External interrupt: KVM_INTERRUPT without an in-kernel irqchip, vCPU events with one."""
        if not self.irqchip:
            self.vcpu.interrupt(vector)
            return
        ev = self.vcpu.get_vcpu_events()
        ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft = 1, vector, 0
        ev.flags = 0
        self.vcpu.set_vcpu_events(ev)

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """KVM_SET_VCPU_EVENTS with an injected exception."""
        ev = self.vcpu.get_vcpu_events()
        ev.exception.injected, ev.exception.nr = 1, vector
        ev.exception.has_error_code = 0 if error_code is None else 1
        ev.exception.error_code = error_code or 0
        ev.flags = 0
        self.vcpu.set_vcpu_events(ev)

    def inject_software_interrupt(self, vector: int, insn_length: int) -> None:
        """Deliver ``INT n`` as if executed; RIP is at the instruction, ``insn_length`` long.

        RIP is moved past it first: the injected event's return address is RIP (measured on this
        project's kvm_pvm host, where injecting with RIP at the instruction re-executes it; VMX
        adds the last exit's instruction length, which is 0 after a userspace injection)."""
        regs = self.vcpu.get_regs()
        regs.rip += insn_length
        self.vcpu.set_regs(regs)
        ev = self.vcpu.get_vcpu_events()
        ev.interrupt.injected, ev.interrupt.nr, ev.interrupt.soft = 1, vector, 1
        ev.flags = 0
        self.vcpu.set_vcpu_events(ev)

    def get_fpu(self) -> Fpu:
        """KVM_GET_FPU as Fpu (SSE registers, MXCSR, x87 control/status)."""
        f = self.vcpu.get_fpu()
        raw = bytes(ffi.buffer(f.xmm))
        xmm = [int.from_bytes(raw[i * 16:(i + 1) * 16], "little") for i in range(16)]
        return Fpu(xmm, f.mxcsr, f.fcw, f.fsw)

    def set_fpu(self, fpu: Fpu) -> None:
        """KVM_SET_FPU with ``fpu``'s fields; the x87 data registers are kept."""
        f = self.vcpu.get_fpu()
        ffi.buffer(f.xmm)[:] = b"".join(v.to_bytes(16, "little") for v in fpu.xmm)
        f.mxcsr, f.fcw, f.fsw = fpu.mxcsr, fpu.fcw, fpu.fsw
        self.vcpu.set_fpu(f)

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """KVM_GET_MSRS."""
        return self.vcpu.get_msrs(indices)

    def set_msrs(self, values: dict[int, int]) -> None:
        """KVM_SET_MSRS."""
        self.vcpu.set_msrs(values)

    def close(self) -> None:
        """Close the KVM vCPU."""
        self.vcpu.close()
