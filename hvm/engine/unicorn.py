"""The software engine: unicorn (QEMU's CPU emulator as a library) running on hvm's guest RAM.

For hosts whose /dev/kvm is absent, unusable or emulation-only. Guest RAM is shared zero-copy
(``mem_map_ptr`` on GuestMemory's own mappings); every non-RAM page below 4 GiB is MMIO served by
the MmioBus; IN/OUT reach the port bus from unicorn's instruction hooks, so port I/O never leaves
``run``.

Interrupts come from Python interrupt controllers and timers (``attach_platform``): they are
delivered between time slices (a controller raising INTR ``poke``s the engine to end the slice at
once), and HLT becomes an idle wait for the next interrupt. Delivery is done for real mode
(``events``); protected and long mode IDT delivery, SYSCALL/SYSENTER semantics and more than one
vCPU are the next steps (the software-engine issue). A guest that needs what is missing gets an
EngineCrash naming it; an exception its IDT could not deliver anyway ends as a triple fault, as
on real hardware.

Facts this relies on (unicorn 2.1.4, measured here): the instance's mode (16/32/64) decides which
register names are valid (EIP in 16/32-bit instances, RIP in 64-bit ones) and how CS is loaded;
HLT makes ``emu_start`` return at once with EIP past it; ``UC_QUERY_TIMEOUT`` tells a time-slice
end from that; ``emu_stop`` works from another thread; an undefined opcode is reported as
``UC_ERR_INSN_INVALID`` rather than through the interrupt hook.
"""
from __future__ import annotations

import threading
from typing import Callable

from kvmffi import exits as kx

import time
from typing import Protocol

from ..bus import MmioBus
from ..memory import HIGHMEM_BASE, GuestMemory
from .base import Engine, EngineCrash
from .events import IF, DeliveryFailed, deliver_real_mode
from .state import DTable, Regs, Segment, SRegs

UNICORN_VERSION = "2.1.4"  # the version these semantics were validated against (pinned in setup.py)

# A run is cut into slices so a stop request never waits on a guest that spins without exiting.
SLICE_US = 100_000
_UNTIL = (1 << 64) - 1
EFER = 0xC0000080
_VEC_UD, _VEC_DF, _VEC_GP = 6, 8, 13
_EXCEPTION_NAMES = {0: "#DE", 1: "#DB", 3: "#BP", 4: "#OF", 5: "#BR", 6: "#UD", 7: "#NM", 8: "#DF",
                    10: "#TS", 11: "#NP", 12: "#SS", 13: "#GP", 14: "#PF", 16: "#MF", 17: "#AC",
                    18: "#MC", 19: "#XM"}


class InterruptController(Protocol):
    """What the engine needs of a PIC (or, later, a LAPIC): the INTR line and the INTA cycle."""

    def intr(self) -> bool:
        """An interrupt is requested."""

    def acknowledge(self) -> int | None:
        """The vector to deliver (the controller moves it in service), or None."""


class Timer(Protocol):
    """A device that changes state with time (PIT, later the LAPIC timer, RTC)."""

    def tick(self) -> None:
        """Bring the device up to the current time (may raise interrupts)."""

    def next_deadline_ns(self) -> int | None:
        """Monotonic time of the next thing ``tick`` has to do, or None."""


def _uc():
    import unicorn  # imported only when the software engine is chosen
    from unicorn import x86_const
    return unicorn, x86_const


def _mmio_holes(memory: GuestMemory) -> list[tuple[int, int]]:
    """Page-aligned gaps between RAM regions below 4 GiB: the guest-physical MMIO space."""
    holes, cursor = [], 0
    for r in sorted(memory.regions, key=lambda r: r.gpa):
        if r.gpa >= HIGHMEM_BASE:
            break
        if r.gpa > cursor:
            holes.append((cursor, r.gpa - cursor))
        cursor = max(cursor, r.end)
    if cursor < HIGHMEM_BASE:
        holes.append((cursor, HIGHMEM_BASE - cursor))
    return holes


class UnicornEngine(Engine):
    """One vCPU executed by unicorn. The CPU instance is created when the entry state is set,
    in the mode that state asks for."""

    name = "unicorn"

    def __init__(self, memory: GuestMemory, mmio: MmioBus):
        self.memory = memory
        self.mmio = mmio
        self.uc = None
        self.bits = 0
        self._kicked = threading.Event()
        self._pending: kx.VcpuExit | None = None
        self._io_read: Callable[[int, int], int] = lambda port, size: (1 << (8 * size)) - 1
        self._io_write: Callable[[int, int, int], None] = lambda port, size, value: None
        self._io_counts = [0, 0]
        self.slices = 0
        self.interrupts_delivered: dict[int, int] = {}
        self._controller: InterruptController | None = None
        self._timers: list[Timer] = []
        self._poked = False
        self._wake = threading.Event()
        self._halted = False

    # -- setup ----------------------------------------------------------------------------------
    def _create(self, bits: int) -> None:
        unicorn, x86 = _uc()
        mode = {16: unicorn.UC_MODE_16, 32: unicorn.UC_MODE_32, 64: unicorn.UC_MODE_64}[bits]
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, mode)
        for r in self.memory.regions:
            uc.mem_map_ptr(r.gpa, r.size, unicorn.UC_PROT_ALL, r.host_addr)
        for base, size in _mmio_holes(self.memory):
            uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._out, None, 1, 0, x86.UC_X86_INS_OUT)
        uc.hook_add(unicorn.UC_HOOK_INTR, self._interrupt)
        self.uc, self.bits = uc, bits
        wide = bits == 64
        names = ["AX", "BX", "CX", "DX", "SI", "DI", "SP", "BP"]
        self._gpr_ids = [getattr(x86, f"UC_X86_REG_{'R' if wide else 'E'}{n}") for n in names]
        if wide:
            self._gpr_ids += [getattr(x86, f"UC_X86_REG_R{i}") for i in range(8, 16)]
        self._ip_id = x86.UC_X86_REG_RIP if wide else x86.UC_X86_REG_EIP
        self._flags_id = x86.UC_X86_REG_RFLAGS if wide else x86.UC_X86_REG_EFLAGS
        self._x86 = x86
        self._unicorn = unicorn

    def attach_platform(self, controller: InterruptController, timers: list[Timer]) -> None:
        """Take interrupts from ``controller`` and keep ``timers`` ticking while the guest runs."""
        self._controller, self._timers = controller, list(timers)

    def poke(self) -> None:
        """An interrupt may be pending (any thread): end the current slice or idle wait now."""
        self._poked = True
        self._wake.set()
        if self.uc is not None:
            self.uc.emu_stop()

    def serve_port_io(self, read, write) -> None:
        """IN/OUT hooks call the port bus directly: port I/O never ends ``run``."""
        self._io_read, self._io_write = read, write

    def io_exit_counts(self) -> tuple[int, int]:
        """(IN, OUT) instructions served through the hooks."""
        return self._io_counts[0], self._io_counts[1]

    # -- hooks (called on the vCPU thread, inside emu_start) -----------------------------------
    def _in(self, uc, port: int, size: int, _user) -> int:
        self._io_counts[0] += 1
        return self._io_read(port, size)

    def _out(self, uc, port: int, size: int, value: int, _user) -> None:
        self._io_counts[1] += 1
        self._io_write(port, size, value)

    def _mmio_read(self, uc, offset: int, size: int, base: int) -> int:
        return self.mmio.read(base + offset, size)

    def _mmio_write(self, uc, offset: int, size: int, value: int, base: int) -> None:
        self.mmio.write(base + offset, size, value)

    def _interrupt(self, uc, vector: int, _user) -> None:
        self._pending = self._undeliverable(vector)
        uc.emu_stop()

    def _undeliverable(self, vector: int) -> kx.VcpuExit:
        # Without a usable IDT entry the CPU escalates to #GP, then #DF, then shuts down.
        idt = self.get_sregs().idt
        real = not self._read_cr0() & 1
        entry = 4 if real else (16 if self.bits == 64 else 8)
        if not any(idt.limit >= v * entry + entry - 1 for v in (vector, _VEC_GP, _VEC_DF)):
            return kx.Shutdown()
        name = _EXCEPTION_NAMES.get(vector, f"vector {vector:#x}")
        return EngineCrash(f"the guest raised {name}; delivering exceptions and interrupts through its "
                           "IDT is not implemented in the unicorn engine yet")

    # -- running --------------------------------------------------------------------------------
    def run(self) -> kx.VcpuExit:
        """Emulate until a stop request, a HLT nothing can wake, or something the engine cannot
        continue past. Interrupts are delivered between slices; HLT waits for one."""
        uc = self.uc
        if uc is None:
            return EngineCrash("unicorn engine: no CPU state was set")
        unicorn = self._unicorn
        while True:
            if self._kicked.is_set():
                return kx.Interrupted()
            for timer in self._timers:
                timer.tick()
            problem = self._deliver_pending()
            if problem is not None:
                return problem
            if self._halted:
                if self._controller is None or not uc.reg_read(self._flags_id) & IF:
                    self._halted = False
                    return kx.Hlt()  # nothing can wake it: the run loop treats it as KVM's HLT exit
                self._wake.wait(self._idle_timeout())
                self._wake.clear()
                continue
            self._pending = None
            self._poked = False
            try:
                uc.emu_start(uc.reg_read(self._ip_id), _UNTIL, timeout=self._slice_us())
            except unicorn.UcError as exc:
                return self._fault(exc)
            self.slices += 1
            if self._pending is not None:
                return self._pending
            if self._kicked.is_set() or self._poked or uc.query(unicorn.UC_QUERY_TIMEOUT):
                continue
            self._halted = True  # emu_start returned on its own: the guest executed HLT

    def _deliver_pending(self) -> kx.VcpuExit | None:
        ctl = self._controller
        if ctl is None or not ctl.intr() or not self.uc.reg_read(self._flags_id) & IF:
            return None
        vector = ctl.acknowledge()
        if vector is None:
            return None
        if self._read_cr0() & 1:
            return EngineCrash(f"interrupt vector {vector:#x} arrived in protected mode; delivering "
                               "through the IDT is not implemented in the unicorn engine yet")
        regs, sregs = self.get_regs(), self.get_sregs()
        try:
            deliver_real_mode(self.memory, regs, sregs, vector)
        except DeliveryFailed:
            return kx.Shutdown()
        self.set_regs(regs)
        self.uc.reg_write(self._x86.UC_X86_REG_CS, sregs.cs.selector)
        self.interrupts_delivered[vector] = self.interrupts_delivered.get(vector, 0) + 1
        self._halted = False
        return None

    def _next_deadline(self) -> int | None:
        deadlines = [d for d in (t.next_deadline_ns() for t in self._timers) if d is not None]
        return min(deadlines) if deadlines else None

    def _slice_us(self) -> int:
        deadline = self._next_deadline()
        if deadline is None:
            return SLICE_US
        return max(1, min(SLICE_US, (deadline - time.monotonic_ns()) // 1000))

    def _idle_timeout(self) -> float:
        deadline = self._next_deadline()
        if deadline is None:
            return SLICE_US / 1e6
        return max(0.0, min(SLICE_US / 1e6, (deadline - time.monotonic_ns()) / 1e9))

    def _fault(self, exc) -> kx.VcpuExit:
        unicorn = self._unicorn
        if exc.errno == unicorn.UC_ERR_INSN_INVALID:
            return self._undeliverable(_VEC_UD)
        if exc.errno in (unicorn.UC_ERR_READ_UNMAPPED, unicorn.UC_ERR_WRITE_UNMAPPED,
                         unicorn.UC_ERR_FETCH_UNMAPPED):
            return EngineCrash(f"unicorn: {exc} (guest-physical address outside RAM and MMIO)")
        return EngineCrash(f"unicorn: {exc}")

    def kick(self) -> None:
        """Stop the emulation loop from any thread; ``run`` then returns Interrupted."""
        self._kicked.set()
        self._wake.set()
        if self.uc is not None:
            self.uc.emu_stop()

    def acknowledge_kick(self) -> None:
        """Let the next ``run`` proceed."""
        self._kicked.clear()

    # -- state ----------------------------------------------------------------------------------
    def _read_cr0(self) -> int:
        return self.uc.reg_read(self._x86.UC_X86_REG_CR0)

    def get_regs(self) -> Regs:
        """General-purpose registers (r8-r15 read as 0 outside a 64-bit instance)."""
        uc = self.uc
        values = [uc.reg_read(i) for i in self._gpr_ids]
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"] + [f"r{i}" for i in range(8, 16)]
        regs = Regs(**dict(zip(names, values)))
        regs.rip, regs.rflags = uc.reg_read(self._ip_id), uc.reg_read(self._flags_id)
        return regs

    def set_regs(self, regs: Regs) -> None:
        """Write general-purpose registers, RIP and RFLAGS."""
        if self.uc is None:
            self._create(64)
        mask = (1 << self.bits) - 1 if self.bits < 64 else (1 << 64) - 1
        names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp"] + [f"r{i}" for i in range(8, 16)]
        for reg_id, name in zip(self._gpr_ids, names):
            self.uc.reg_write(reg_id, getattr(regs, name) & mask)
        self.uc.reg_write(self._ip_id, regs.rip & mask)
        self.uc.reg_write(self._flags_id, regs.rflags & mask)

    def get_sregs(self) -> SRegs:
        """Control registers, descriptor tables and selectors; segment bases are reconstructed
        for real mode and assumed flat otherwise (unicorn does not expose the hidden cache)."""
        uc, x86 = self.uc, self._x86
        s = SRegs()
        s.cr0, s.cr2, s.cr3, s.cr4 = (uc.reg_read(getattr(x86, f"UC_X86_REG_CR{i}")) for i in (0, 2, 3, 4))
        s.efer = uc.reg_read(x86.UC_X86_REG_MSR, EFER)
        _, base, limit, _ = uc.reg_read(x86.UC_X86_REG_GDTR)
        s.gdt = DTable(base, limit)
        _, base, limit, _ = uc.reg_read(x86.UC_X86_REG_IDTR)
        s.idt = DTable(base, limit)
        real = not s.cr0 & 1
        for name in ("cs", "ds", "es", "fs", "gs", "ss"):
            sel = uc.reg_read(getattr(x86, f"UC_X86_REG_{name.upper()}"))
            seg = Segment(selector=sel, base=(sel << 4) if real else 0)
            if name == "cs":
                seg.db = 1 if (self.bits == 32 and not real) else 0
                seg.l = 1 if (self.bits == 64 and s.efer & 0x400) else 0
            setattr(s, name, seg)
        return s

    def set_sregs(self, sregs: SRegs) -> None:
        """Create the CPU in the mode ``sregs`` describes, then load control registers,
        descriptor tables and selectors (protected-mode selectors load from the guest's GDT)."""
        if self.uc is None:
            self._create(sregs.code_bits)
        uc, x86 = self.uc, self._x86
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, sregs.gdt.base, sregs.gdt.limit, 0))
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, sregs.idt.base, sregs.idt.limit, 0))
        # This order lets the CPU accept each step (PAE before long mode, long mode before paging).
        uc.reg_write(x86.UC_X86_REG_CR4, sregs.cr4)
        uc.reg_write(x86.UC_X86_REG_MSR, (EFER, sregs.efer))
        uc.reg_write(x86.UC_X86_REG_CR3, sregs.cr3)
        uc.reg_write(x86.UC_X86_REG_CR0, sregs.cr0)
        for name in ("cs", "ss", "ds", "es", "fs", "gs"):
            uc.reg_write(getattr(x86, f"UC_X86_REG_{name.upper()}"), getattr(sregs, name).selector)

    def inject_interrupt(self, vector: int) -> None:
        """Not available yet: needs IDT delivery (the software-engine issue)."""
        raise NotImplementedError("the unicorn engine cannot deliver interrupts yet")

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """Not available yet: needs IDT delivery (the software-engine issue)."""
        raise NotImplementedError("the unicorn engine cannot deliver exceptions yet")

    def close(self) -> None:
        """Drop the CPU instance (guest RAM belongs to GuestMemory)."""
        self.uc = None
