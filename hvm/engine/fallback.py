"""Fallback execution for the KVM engine: the instructions KVM's emulator refuses run in unicorn.

On hosts where KVM runs guest CPL0 code in its instruction emulator (nested kvm_pvm here), that
emulator stops with an emulation failure on int3/INT n, popcnt, crc32, BMI, SSE arithmetic,
rdtscp, clac/stac, cmpxchg16b and more (../shared/HOST-KVM.md). The vCPU's state then moves into
a unicorn CPU sharing guest RAM and the buses, that one instruction executes there, and the
state moves back. What the instruction raises (a #PF on its memory operand, #UD, #GP) is injected
into KVM, which delivers it through the guest's IDT as the CPU would have.

Two kinds need no unicorn: software interrupts (INT3, INTO, INT1, INT n) are injected as events,
since delivering them is exactly what KVM still does; and RDTSCP is answered from KVM's own TSC
and TSC_AUX so the guest sees one clock (unicorn would read the host TSC, KVM's guest TSC is
offset from it).

Moved across: general-purpose registers, RIP, RFLAGS and, for instructions that name them, the
SSE registers, MXCSR and the x87 control/status words; control, segment and descriptor-table
registers are loaded into unicorn when they changed but never taken back (no refused instruction
changes them). Unicorn fills segment caches from the selectors (the guest's GDT, or selector x 16
in real mode), so a guest whose caches differ from its tables (unreal mode) is not reproduced. Memory writes go straight to guest
RAM, so KVM's dirty log does not see them (to be handled with live migration). Locked
instructions are atomic only against one vCPU: with several, the CPUID policy hides CX16.
"""
from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING, Callable

from ..bus import MmioBus
from ..memory import GuestMemory
from .base import EngineCrash
from .state import Regs

if TYPE_CHECKING:
    from ..vcpu import EmulationEvent
    from ..physmap import PhysMap
    from .unicorn import UnicornEngine

_VEC_DB, _VEC_BP, _VEC_OF, _VEC_PF = 1, 3, 4, 14
_OF = 1 << 11
_IA32_TSC, _TSC_AUX = 0x10, 0xC0000103
UNDECODED = "(not decoded)"  # --stats' name for instructions capstone could not decode


# x87 mnemonics all start with "f" (fwait, fxsave, fxrstor among them); these do not.
_FPU_MNEMONICS = ("f", "ldmxcsr", "stmxcsr", "wait", "emms")


def _touches_fpu(decoded) -> bool:
    """The instruction reads or writes SSE/MMX registers, MXCSR or the x87 status."""
    return "mm" in decoded.op_str or decoded.mnemonic.startswith(_FPU_MNEMONICS)


class TscAux:
    """IA32_TSC_AUX served from Python (an MsrHandler): KVM refuses it to a guest whose CPUID
    KVM would not give RDTSCP, yet the fallback's RDTSCP must return what the guest wrote."""

    def __init__(self) -> None:
        self.values: dict[int, int] = {}

    def read(self, vcpu, index: int) -> int:
        return self.values.get(vcpu.index, 0)

    def write(self, vcpu, index: int, value: int) -> bool:
        if value >> 32:
            return False  # reserved bits: #GP, as the CPU does
        self.values[vcpu.index] = value
        return True


class FallbackExecutor:
    """An emulation-failure hook (``Machine.emulation_fallbacks``) for KVM vCPUs."""

    def __init__(self, memory: GuestMemory, mmio: MmioBus, pio_read: Callable[[int, int], int],
                 pio_write: Callable[[int, int, int], None], say: Callable[[str], None] | None = None,
                 physmap: "PhysMap | None" = None):
        self.memory, self.mmio, self.physmap = memory, mmio, physmap
        self._pio = (pio_read, pio_write)
        self._say = say
        self._stepper: UnicornEngine | None = None
        self._loaded: bytes | None = None  # KVM's segment/control registers last loaded into it
        self.by_mnemonic: dict[str, int] = {}
        self.seconds = 0.0
        self.crash: EngineCrash | None = None  # why the last instruction could not be executed
        self.tsc_aux = TscAux()
        # vCPU threads share the unicorn CPUs: one instruction at a time.
        self._lock = threading.Lock()
        self.tsc_aux_served = False  # set by the machine when it registers ``tsc_aux``

    def _unicorn(self) -> "UnicornEngine":
        # One unicorn CPU, created when first needed, takes whatever mode the KVM vCPU is in.
        if self._stepper is None:
            from .unicorn import UnicornEngine  # unicorn is loaded only when first needed

            self._stepper = UnicornEngine(self.memory, self.mmio, physmap=self.physmap, exclusive=True)
            self._stepper.serve_port_io(*self._pio)
        return self._stepper

    def __call__(self, event: "EmulationEvent") -> bool:
        if event.decoded is None and not event.insn:
            return False
        with self._lock:
            return self._execute(event)

    def _execute(self, event: "EmulationEvent") -> bool:
        decoded = event.decoded
        t0 = time.perf_counter()
        engine = event.vcpu.engine
        if decoded is None:
            # Bytes capstone does not know (RDPRU, say): unicorn decides, and what it does not
            # know either is #UD, as on a CPU without the instruction.
            name = UNDECODED
            if name not in self.by_mnemonic and self._say is not None:
                self._say(f"vCPU {event.vcpu.index}: KVM refused bytes {event.insn.hex()} that capstone "
                          f"cannot decode; executing them in unicorn (reported once)")
            handled = self._step(engine, False, event.insn)
            if handled:
                self.by_mnemonic[name] = self.by_mnemonic.get(name, 0) + 1
            self.seconds += time.perf_counter() - t0
            return handled
        name = decoded.mnemonic
        if name not in self.by_mnemonic and self._say is not None:
            self._say(f"vCPU {event.vcpu.index}: KVM refused `{decoded}` at {decoded.address:#x}; "
                      f"executing it in unicorn (reported once per mnemonic)")
        if name in ("int3", "into", "int1", "int"):
            handled = self._software_interrupt(engine, engine.get_regs(), decoded)
        elif name == "rdtscp":
            handled = self._rdtscp(event.vcpu, engine.get_regs(), decoded.size)
        else:
            handled = self._step(engine, _touches_fpu(decoded), decoded.raw)
        if handled:
            self.by_mnemonic[name] = self.by_mnemonic.get(name, 0) + 1
        self.seconds += time.perf_counter() - t0
        return handled

    @staticmethod
    def _software_interrupt(engine, regs: Regs, decoded) -> bool:
        if decoded.mnemonic == "int":
            engine.inject_software_interrupt(decoded.raw[-1], decoded.size)
            return True
        # INT3, INTO and INT1 are traps: the saved RIP is the next instruction's.
        regs.rip += decoded.size
        engine.set_regs(regs)
        if decoded.mnemonic == "int3":
            engine.inject_exception(_VEC_BP)
        elif decoded.mnemonic == "int1":
            engine.inject_exception(_VEC_DB)
        elif regs.rflags & _OF:
            engine.inject_exception(_VEC_OF)
        return True

    def _rdtscp(self, vcpu, regs: Regs, size: int) -> bool:
        msrs = vcpu.engine.get_msrs([_IA32_TSC] if self.tsc_aux_served else [_IA32_TSC, _TSC_AUX])
        if _IA32_TSC not in msrs:
            return False
        aux = self.tsc_aux.read(vcpu, _TSC_AUX) if self.tsc_aux_served else msrs.get(_TSC_AUX, 0)
        tsc = msrs[_IA32_TSC]
        regs.rax, regs.rdx, regs.rcx = tsc & 0xFFFFFFFF, tsc >> 32, aux & 0xFFFFFFFF
        regs.rip += size
        vcpu.engine.set_regs(regs)
        return True

    def _step(self, engine, with_fpu: bool, code: bytes) -> bool:
        # Every ioctl costs ~6 us on a nested host and every call through unicorn's binding
        # several: the registers come from the kvm_run page (KVM syncs them at exits, the
        # segment and control registers too once the fallback is in use) and go back there
        # for KVM to load at the next entry; unicorn is entered once. The SSE registers move
        # only for instructions that name them, the system registers only when they changed
        # (loading them flushes the TLB; otherwise it is flushed, as page tables may have).
        engine.sync_sregs()
        key = engine.sregs_key()
        stepper = self._unicorn()
        flush = key == self._loaded
        if not flush:
            stepper.set_sregs(engine.get_sregs())
            self._loaded = key
        fpu = engine.get_fpu() if with_fpu else None
        if fpu is not None:
            stepper.set_fpu(fpu)
        raised, values = stepper.step_values(engine.regs_values(), code, flush)
        if isinstance(raised, EngineCrash):
            self.crash = raised
            return False
        engine.load_regs_at_entry(values)
        if fpu is not None:
            new_fpu = stepper.get_fpu()
            if new_fpu != fpu:
                engine.set_fpu(new_fpu)
        if raised is not None:  # an events.Event: what the instruction raised
            if raised.vector == _VEC_PF:
                sregs = engine.get_sregs()
                sregs.cr2 = stepper.get_sregs().cr2
                engine.set_sregs(sregs)
                self._loaded = None
            engine.inject_exception(raised.vector, raised.error_code)
        return True

    def counters(self) -> list[str]:
        """What --stats shows: the instructions executed here, by mnemonic."""
        if not self.by_mnemonic:
            return []
        total = sum(self.by_mnemonic.values())
        lines = [f"fallback instructions (KVM refused, hvm executed): {total} in {self.seconds:.3f} s"]
        lines += [f"  {m:<18} {n}" for m, n in sorted(self.by_mnemonic.items(), key=lambda kv: -kv[1])]
        return lines

    def close(self) -> None:
        """Drop the unicorn CPU."""
        if self._stepper is not None:
            self._stepper.close()
            self._stepper = None
