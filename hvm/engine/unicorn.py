"""The software engine: unicorn (QEMU's CPU emulator as a library) running on hvm's guest RAM.

For hosts whose /dev/kvm is absent, unusable or emulation-only. Guest RAM is shared zero-copy
(``mem_map_ptr`` on GuestMemory's own mappings); every non-RAM page below 4 GiB is MMIO served by
the MmioBus; IN/OUT reach the port bus from unicorn's instruction hooks, so port I/O never leaves
``run``.

Unicorn reports exceptions, INT n and SYSCALL but leaves their architectural effect to the
embedder: ``events`` delivers them through the real-mode IVT or the protected/IA-32e IDT (gates,
privilege change, IST, error codes, double-fault rules) and ``_syscall`` does SYSCALL. What unicorn
keeps hidden for that (the #PF error code, its "exception in flight", the CPL) is reached through
``uc_context``. Interrupts come from Python interrupt controllers and timers
(``attach_platform``): they are delivered between time slices (a controller raising INTR
``poke``s the engine to end the slice at once), and HLT becomes an idle wait for the next
interrupt. SYSENTER is done by ``_do_sysenter`` (unicorn runs SYSEXIT itself). Several vCPUs take
turns on one unicorn instance (``uc_core``); an AP starts when its local APIC has taken INIT and
STARTUP. Task gates and vm86 are not done yet; a guest that needs them gets an EngineCrash naming
it, and one whose IDT cannot deliver an exception a triple fault.

Facts this relies on (unicorn 2.1.4, measured here): the instance's mode (16/32/64) decides which
register names are valid (EIP in 16/32-bit instances, RIP in 64-bit ones) and how CS is loaded;
HLT makes ``emu_start`` return at once with EIP past it; ``emu_stop`` works from another thread
(the slicer, ``uc_slicer``, uses it to end time slices and tells their end from a HLT); PAUSE
does not end ``emu_start`` (hvm's rebuilt library ends it for a PAUSE loop when asked: edit 12);
an undefined opcode is reported as ``UC_ERR_INSN_INVALID`` rather
than through the interrupt hook.
"""
from __future__ import annotations

import functools
import math
import threading
import time
from typing import Callable, Protocol, Sequence

from kvmffi import exits as kx

from ..bus import MmioBus, string_io
from ..memory import GuestMemory, GuestMemoryError
from ..physmap import PhysMap
from ..paging import EFER_LMA, PageFault, PagingMode, read_virtual
from .base import Engine, EngineCrash
from . import uc_context, uc_core, uc_cpuid, uc_lib
from .uc_core import CPU_MODEL, Registers, UnicornCore, arch_capabilities_supported
from .uc_slicer import Slicer
from .events import (
    ERROR_CODE_VECTORS, IF, RF, DeliveryFailed, Delivered, Event, Unsupported, deliver_protected,
    deliver_real_mode,
)
from .state import DTable, Fpu, Regs, Segment, SRegs

UNICORN_VERSION = "2.1.4"  # the version these semantics were validated against (pinned in setup.py)

# The longest slice, when no timer is due sooner. Stops, pokes, a vCPU waiting for its turn and a
# timer programmed during the slice all end it earlier, so this is only a safety net; and each
# slice end is a pause the guest can see (~0.1 ms of Python): at 100 ms one fell inside Linux's
# 50 ms quick PIT calibration in 2 of 8 boots, which then failed and fell back to slower ones.
SLICE_US = 1_000_000
# How long a vCPU keeps the CPU once another one waits for it. Short enough that a vCPU spinning
# on another's progress wastes little; long enough that switching (two context copies and a TLB
# flush, ~20 µs) stays under 1%.
QUANTUM_NS = 5_000_000
# How long a vCPU keeps the CPU, at least, once it has it (see _turn: a waiting vCPU's timer).
MIN_TURN_NS = 500_000
# PAUSEs in one slice that make a spinning vCPU give the CPU to one that waits (uc_lib edit 12).
PAUSE_LOOP = 64
CR0_PE, CR0_PG, CR4_PAE, CR4_SMAP = 1, 1 << 31, 1 << 5, 1 << 21
CR4_OSXSAVE = 1 << 18
CR4_PKE = 1 << 22
_PF_USER = 1 << 2
_FAR_RETURNS = (0xCA, 0xCB, 0xCF)  # RET far (with and without imm16), IRET
RESET_CR0 = 0x6000_0010  # CD, NW, ET (SDM vol. 3A table 9-1)
EFER, STAR, LSTAR, CSTAR, SFMASK = 0xC0000080, 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084
EFER_SCE = 1
_VEC_UD = 6
_HLT = 0xF4
_WINDOW = object()  # an interrupt waits for EFLAGS.IF
_SHADOW = object()  # an interrupt waits for the instruction after STI / MOV SS to execute
_IO_DENIED = object()  # an IN/OUT/INS/OUTS the I/O permission check refuses: #GP(0)
_GIVEN = object()  # an interrupt was acknowledged for the CPU to deliver as the run starts
_RESUME = object()  # a parked PV vCPU goes on with the state it has
_SYSCALL = object()  # the event a SYSCALL hook records
_SYSENTER = object()
SYSENTER_CS, SYSENTER_ESP, SYSENTER_EIP = 0x174, 0x175, 0x176
VM = 1 << 17


class InterruptController(Protocol):
    """What the engine needs of a PIC or LAPIC: the INTR line and the INTA cycle."""

    def intr(self) -> bool:
        """An interrupt is requested."""

    def acknowledge(self) -> int | None:
        """The vector to deliver (the controller moves it in service), or None."""


class Timer(Protocol):
    """A device that changes state with time (PIT, LAPIC timer, later the RTC)."""

    def tick(self) -> None:
        """Bring the device up to the current time (may raise interrupts)."""

    def next_deadline_ns(self) -> int | None:
        """Monotonic time of the next thing ``tick`` has to do, or None."""

    # Optional: a device that can be reprogrammed while the guest runs (a PIT or LAPIC timer
    # written from inside a slice) has a ``deadline_listener`` attribute; the engine sets it to a
    # callable the device calls, outside its own locks, when its next deadline may have moved.


_EXCEPTION_NAMES = ["#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP",
                    "#SS", "#GP", "#PF", "15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP"]


_STATE_NAMES = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15", "rip", "rflags")


def _cache(selector: int, descriptor: tuple[int, int]) -> tuple[int, int, int, int]:
    """The segment cache a descriptor (its two dwords) loads: selector, base, limit, flags."""
    lo, hi = descriptor
    limit = (lo & 0xFFFF) | (hi & 0xF0000)
    if hi & uc_context.DESC_G:
        limit = limit << 12 | 0xFFF
    return selector, (lo >> 16) | (hi & 0xFF) << 16 | (hi & 0xFF000000), limit, hi & 0x00F0FF00


def _segment_cache(seg: Segment) -> tuple[int, int, int, int]:
    """The cache of a Segment as KVM describes it."""
    flags = seg.type << uc_context.DESC_TYPE_SHIFT | seg.dpl << uc_context.DESC_DPL_SHIFT
    flags |= seg.s << 12 | seg.present << 15 | seg.avl << 20 | seg.l << 21 | seg.db << 22 | seg.g << 23
    return seg.selector, seg.base, seg.limit, flags


def _segment(cache: tuple[int, int, int, int]) -> Segment:
    selector, base, limit, flags = cache
    return Segment(base=base, limit=limit, selector=selector, type=flags >> 8 & 0xF,
                   present=flags >> 15 & 1, dpl=flags >> 13 & 3, db=flags >> 22 & 1, s=flags >> 12 & 1,
                   l=flags >> 21 & 1, g=flags >> 23 & 1, avl=flags >> 20 & 1)


def _vector_name(vector: int) -> str:
    name = _EXCEPTION_NAMES[vector] if vector < len(_EXCEPTION_NAMES) else ""
    return f"{vector:#04x} {name}".rstrip()


def _on_cpu(method):
    """``method`` works on the unicorn CPU: hold the turn with this vCPU's state loaded (the
    engine's own thread already does while it runs)."""
    @functools.wraps(method)
    def wrapper(self, *args):
        core = self._core
        if self._exclusive or core.current is self and core.turns.holder == threading.get_ident():
            return method(self, *args)
        with core.holding(self):
            return method(self, *args)
    return wrapper


class UnicornEngine(Engine):
    """One vCPU executed by unicorn. The vCPUs of a machine share one ``UnicornCore`` (its
    unicorn instance is created when the first state is set) or, in a parallel group, each has
    one of its own (uc_core.ParallelGroup); without ``core`` the engine has a CPU of its own. An engine created with ``started=False``
    is an application processor waiting for INIT and STARTUP IPIs from its local APIC."""

    name = "unicorn"

    def __init__(self, memory: GuestMemory, mmio: MmioBus, *,
                 core: UnicornCore | None = None, index: int = 0, ncpus: int = 1,
                 started: bool = True, physmap: PhysMap | None = None, exclusive: bool = False):
        # ``exclusive``: a CPU of its own whose user serialises every call (the KVM fallback's
        # stepper): no turn to take around each one (~5 us a call on a nested host).
        self._exclusive = exclusive and core is None
        self.memory = memory
        self.mmio = mmio
        self.index = index
        self._ncpus = ncpus
        self.uc = None
        self.context = None  # this vCPU's saved state while another vCPU has the CPU
        self._kicked = threading.Event()
        self.io_read: Callable[[int, int], int] = lambda port, size: (1 << (8 * size)) - 1
        self.io_write: Callable[[int, int, int], None] = lambda port, size, value: None
        self.io_read_string, self.io_write_string = string_io(self.io_read, self.io_write)
        self.io_counts = [0, 0]
        self.slices = 0
        self.pause_yields = 0  # turns given up in a PAUSE loop to a waiting vCPU
        self.emu_seconds = 0.0  # inside emu_start: guest code and the device hooks it calls
        self.interrupts_delivered: dict[int, int] = {}
        self.exceptions_delivered: dict[int, int] = {}
        self.syscalls = 0
        self.sysenters = 0
        self._given = 0  # the vector _deliver_pending gave the CPU for the next run (_GIVEN)
        self._smap_suspended = False  # CR4.SMAP cleared at CPL3 (see _suspend_smap)
        self._event: Event | object | None = None
        self._controller: InterruptController | None = None
        self._signals = False  # the controller is a local APIC: NMI, INIT and STARTUP too
        self._nmi_waiting = False  # an NMI latched while an earlier one's handler runs
        self._timers: list[Timer] = []
        self._poked = False
        self._wake = threading.Event()
        self._halted = False
        self._started = started
        self._pv_start: tuple | None = None
        self._stepped: dict[int, bytes] = {}   # step(): RIP -> the code translated there
        # What RDMSR of IA32_ARCH_CAPABILITIES reads here, None where the CPU lacks the MSR
        # (a PV domain, whose RDMSR hvm emulates, answers the same).
        self.arch_capabilities = uc_cpuid.ARCH_CAPABILITIES if arch_capabilities_supported() else None
        self._cpuid_table = uc_cpuid.policy_table(CPU_MODEL, vcpu_id=index, ncpus=ncpus,
                                                  arch_capabilities=self.arch_capabilities is not None)
        # A Xen PV domain (paravirt.domain) takes over SYSCALL and every exception when set: its
        # kernel runs in ring 3 and the hypervisor's ring is hvm's.
        self.pv = None
        self._core = core if core is not None else UnicornCore(memory, mmio, physmap=physmap)
        self._core.add(self)

    # -- setup ----------------------------------------------------------------------------------
    def bind(self, core: UnicornCore) -> None:
        """Take the instance's handles once ``core`` has created it."""
        import unicorn
        from unicorn import x86_const as x86

        self.uc, self._fields = core.uc, core.fields
        names = ["AX", "BX", "CX", "DX", "SI", "DI", "SP", "BP"]
        self._gpr_ids = [getattr(x86, f"UC_X86_REG_R{n}") for n in names]
        self._gpr_ids += [getattr(x86, f"UC_X86_REG_R{i}") for i in range(8, 16)]
        self._ip_id = x86.UC_X86_REG_RIP
        self._flags_id = x86.UC_X86_REG_RFLAGS
        # Unicorn carries on past a hook's stop request until the next memory access or block
        # end, so the instructions after a refused IN/OUT may run: every register and the flags
        # are put back. (A store among them has happened; the guest redoes it when it runs that
        # code again after its #GP handler.)
        self._io_regs = [*self._gpr_ids, self._flags_id]
        self._io_fault: tuple[int, list[int]] | None = None
        self._state_ids = [*self._gpr_ids, self._ip_id, self._flags_id]
        # Through cffi in one call: the binding's reg_read_batch costs ~40 us for these 18.
        self._state = Registers(core.uc, self._state_ids)
        self._x86 = x86
        self._unicorn = unicorn

    def create_cpu(self) -> None:
        """Create the unicorn instance now, in its reset state, rather than when the first state
        is set (a vCPU with an instance of its own whose first state a STARTUP IPI gives)."""
        if self._core.uc is None:
            self._core.create(self)

    def attach_platform(self, controller: InterruptController, timers: list[Timer]) -> None:
        """Take interrupts from ``controller`` and keep ``timers`` ticking while the guest runs.
        A controller with ``take_nmi``/``take_init``/``take_sipi`` (a local APIC) also brings
        NMIs and starts or stops the vCPU."""
        self._controller, self._timers = controller, list(timers)
        for timer in self._timers:
            if hasattr(timer, "deadline_listener"):
                timer.deadline_listener = self._timer_programmed
        self._signals = all(hasattr(controller, name) for name in ("take_nmi", "take_init", "take_sipi"))

    def halt(self) -> None:
        """Wait, as after HLT, until the interrupt controller has something (a PV guest's
        SCHEDOP_block: its upcalls come through the controller)."""
        self._halted = True

    def start_pv(self, regs: Regs, sregs: SRegs, msrs: dict[int, int]) -> None:
        """Start this (not started or parked) vCPU with this state (any thread): a Xen PV
        VCPUOP_up. The vCPU's own thread loads it before its next slice."""
        self._pv_start = (regs, sregs, msrs)
        self.poke()

    def park(self) -> None:
        """Stop running until ``start_pv`` or ``resume`` (a PV vCPU's VCPUOP_down; on the vCPU's
        own thread)."""
        self._started = False

    def resume(self) -> None:
        """Go on from where ``park`` stopped, with the state kept (VCPUOP_up; any thread)."""
        self._pv_start = _RESUME
        self.poke()

    def poke(self) -> None:
        """An interrupt may be pending (any thread): end the current slice or idle wait now.
        When another vCPU has the CPU its slice ends too, so this one gets its turn soon."""
        self._poked = True
        self._wake.set()
        self._core.cut()

    def serve_port_io(self, read, write, published=None) -> None:
        """IN/OUT hooks call the port bus directly: port I/O never ends ``run``. A REP INS/OUTS
        reaches the bus's string methods a run at a time (``uc_core.StringIo``)."""
        self.io_read, self.io_write = read, write
        self.io_read_string, self.io_write_string = string_io(read, write)

    def io_exit_counts(self) -> tuple[int, int]:
        """(IN, OUT) instructions served through the hooks (those the C hooks answered or queued
        for any vCPU of the core are counted with its first vCPU's)."""
        core = self._core
        first = core.engines[0] is self
        return (self.io_counts[0] + (core.in_served if first else 0),
                self.io_counts[1] + (core.out_queued if first else 0))

    # -- hooks (UnicornCore calls them on the vCPU thread, inside emu_start) --------------------
    # Hooks only record what happened and stop the emulation; the state changes are made between
    # emu_start calls. Writing RIP from inside a hook makes unicorn restart translation, and a
    # stop arriving then can leave RIP at a block start after that block's stores already ran
    # (measured with 2.1.4: a #PF handler's pushes executed twice). These hooks run where no
    # store of the current instruction is pending, so they may call emu_stop themselves; every
    # other stop goes through the core's slices (``UnicornCore.request_stop``: taken at a block
    # boundary, by hvm's rebuilt library itself or by the block hook on PyPI's).
    def on_interrupt(self, vector: int) -> None:
        if self._event is _IO_DENIED:
            # An instruction after a refused IN/OUT, run before the stop took effect: the
            # refused one's #GP comes first, and RIP goes back to it.
            self._fields.settle()
            self.uc.emu_stop()
            return
        # RIP is at the faulting instruction, or past it for INT n / INT3 / INTO.
        error_code, software = self._fields.exception()
        if software or vector not in ERROR_CODE_VECTORS:
            error_code = None
        self._event = Event(vector, error_code, software=software)
        self.uc.emu_stop()

    def io_denied(self, port: int, size: int, cs: int | None = None, cr0: int | None = None) -> bool:
        """Whether the I/O instruction running now must raise #GP: protected mode with CPL >
        IOPL (or virtual-8086 mode) and a TSS I/O bitmap that does not grant every byte of
        ``[port, port + size)`` (SDM vol. 1, 19.5). PyPI's unicorn leaves QEMU's check out ("allow
        all I/O instructions"), so without this a guest's user space (a Xen PV kernel in ring 3)
        reached devices its kernel (Xen) keeps for itself; hvm's rebuilt library checks in the
        CPU (uc_lib edit 14) and the port hooks skip this. If so, the instruction is undone on
        the way out (``_io_refused``). ``cs`` and ``cr0``: their values, when the caller has read
        them already."""
        uc, x86 = self.uc, self._x86
        if cs is None:
            cs = uc.reg_read(x86.UC_X86_REG_CS)
        if not cs & 3:
            # CPL 0 (or real mode): the common case. (Virtual-8086 code, whose CS can end in
            # 0, is not run by this engine: event delivery refuses it.)
            return False
        if not (self._read_cr0() if cr0 is None else cr0) & 1:
            return False
        flags = uc.reg_read(self._flags_id)
        if cs & 3 <= (flags >> 12) & 3 and not flags & VM:
            return False
        if self._io_bitmap_grants(port, size):
            return False
        if self._event is not _IO_DENIED:   # the first refusal is the one that faults
            self._io_fault = (uc.reg_read(self._ip_id), [uc.reg_read(r) for r in self._io_regs])
            self._event = _IO_DENIED
            # Until the stop lands, an exception raised further on must come to on_interrupt
            # (which settles it) rather than be delivered: the #GP goes first.
            self._core.native_events(False)
            uc.emu_stop()
        return True

    def _io_bitmap_grants(self, port: int, size: int) -> bool:
        # QEMU's check_io: the two bytes holding the port's bits must lie inside the TSS limit.
        _selector, base, limit, _flags = self.uc.reg_read(self._x86.UC_X86_REG_TR)
        s = self.get_sregs()
        mode = PagingMode(s.cr0, s.cr3, s.cr4, s.efer)
        try:
            if limit < 0x67:
                return False
            iomap = int.from_bytes(read_virtual(self.memory, mode, base + 0x66, 2), "little")
            offset = iomap + (port >> 3)
            if offset + 1 > limit:
                return False
            bits = int.from_bytes(read_virtual(self.memory, mode, base + offset, 2), "little")
        except (PageFault, GuestMemoryError):
            return False
        return not (bits >> (port & 7)) & ((1 << size) - 1)

    def io_unchanged_result(self, size: int) -> int:
        """What a refused IN hands unicorn: the accumulator as it is (restored anyway)."""
        return self.uc.reg_read(self._gpr_ids[0]) & ((1 << (8 * size)) - 1)

    def _io_refused(self) -> kx.VcpuExit | None:
        # Put back RIP (the hook saw the instruction's own address) and the registers as they
        # were before it, then #GP(0).
        rip, values = self._io_fault
        uc = self.uc
        uc.reg_write(self._ip_id, rip)
        for reg, value in zip(self._io_regs, values):
            uc.reg_write(reg, value)
        self._core.native_events(self.pv is None)
        return self._deliver(Event(13, 0))

    def on_syscall(self) -> None:
        self._event = _SYSCALL  # unicorn moves RIP past the instruction once this returns
        self.uc.emu_stop()

    def on_cpuid(self) -> int:
        uc, x86 = self.uc, self._x86
        leaf = uc.reg_read(x86.UC_X86_REG_EAX) & 0xFFFFFFFF
        answer = uc_cpuid.lookup(self._cpuid_table, leaf, uc.reg_read(x86.UC_X86_REG_ECX))
        if leaf == 1:
            # OSXSAVE is CR4.OSXSAVE as the guest set it, not the table's (SDM vol. 2A, CPUID)
            eax, ebx, ecx, edx = answer
            ecx &= ~uc_cpuid.OSXSAVE
            if uc.reg_read(x86.UC_X86_REG_CR4) & CR4_OSXSAVE:
                ecx |= uc_cpuid.OSXSAVE
            answer = (eax, ebx, ecx, edx)
        elif leaf == 7 and answer[2] & uc_cpuid.PKU:
            # OSPKE likewise mirrors CR4.PKE
            eax, ebx, ecx, edx = answer
            ecx &= ~uc_cpuid.OSPKE
            if uc.reg_read(x86.UC_X86_REG_CR4) & CR4_PKE:
                ecx |= uc_cpuid.OSPKE
            answer = (eax, ebx, ecx, edx)
        # CPUID zeroes the upper halves in 64-bit mode: the first four state ids are RAX..RDX.
        uc.reg_write_batch(list(zip(self._gpr_ids[:4], answer)))
        return 1  # skip unicorn's own answer

    def on_sysenter(self) -> None:
        self._event = _SYSENTER
        self.uc.emu_stop()

    def _take_event(self) -> kx.VcpuExit | None:
        event, self._event = self._event, None
        if event is _SYSCALL:
            return self._do_syscall()
        if event is _SYSENTER:
            return self._do_sysenter()
        if event is _IO_DENIED:
            return self._io_refused()
        if event.software:
            event.insn_length = self._int_length(event.vector)
        return self._deliver(event)

    def _code_at(self, offset: int, length: int) -> bytes | None:
        """``length`` bytes at CS:RIP + ``offset`` through the guest's page tables, None if
        they cannot be read."""
        s = self.get_sregs()
        try:
            return read_virtual(self.memory, PagingMode(s.cr0, s.cr3, s.cr4, s.efer),
                                s.cs.base + self.uc.reg_read(self._ip_id) + offset, length)
        except (PageFault, GuestMemoryError):
            return None

    def _int_length(self, vector: int) -> int:
        # RIP is already past the instruction: `int imm8` (CD ib) is 2 bytes, INT3/INTO/INT1 one.
        before = self._code_at(-2, 2)
        return 2 if before is not None and before[0] == 0xCD and before[1] == vector else 1

    def _do_syscall(self) -> kx.VcpuExit | None:
        # The architectural effect of SYSCALL (AMD APM vol. 3, Intel SDM vol. 2B), which unicorn
        # leaves to its embedder. RIP is already past the 2-byte instruction.
        if self.pv is not None:
            self.syscalls += 1
            return self.pv.syscall(self)
        uc, x86 = self.uc, self._x86
        efer = uc.reg_read(x86.UC_X86_REG_MSR, EFER)
        # The Intel CPU hvm models has SYSCALL in IA-32e mode only (SDM vol. 2B: #UD otherwise).
        if not efer & EFER_LMA or not efer & EFER_SCE:
            uc.reg_write(self._ip_id, uc.reg_read(self._ip_id) - 2)  # #UD points at the instruction
            return self._deliver(Event(_VEC_UD))
        rip, rflags = uc.reg_read(x86.UC_X86_REG_RIP), uc.reg_read(x86.UC_X86_REG_RFLAGS)
        star = uc.reg_read(x86.UC_X86_REG_MSR, STAR)
        # From 64-bit code to LSTAR; from compatibility mode (CS.L = 0) to CSTAR.
        compat = not self._fields.segments()[1][3] & uc_context.DESC_L
        target = uc.reg_read(x86.UC_X86_REG_MSR, CSTAR if compat else LSTAR)
        uc.reg_write(x86.UC_X86_REG_RCX, rip)
        uc.reg_write(x86.UC_X86_REG_R11, rflags & ~RF)
        self._load_flat_ring0((star >> 32) & 0xFFFC, long_mode=True)
        uc.reg_write(x86.UC_X86_REG_RFLAGS, rflags & ~uc.reg_read(x86.UC_X86_REG_MSR, SFMASK) & ~RF)
        uc.reg_write(x86.UC_X86_REG_RIP, target)
        self.syscalls += 1
        return None

    def _do_sysenter(self) -> kx.VcpuExit | None:
        # SYSENTER (Intel SDM vol. 2B): CPL0 with CS from IA32_SYSENTER_CS, SS = CS + 8, RSP/RIP
        # from the other two MSRs (truncated outside IA-32e mode), VM/IF/RF cleared. RIP is
        # already past the 2-byte instruction. The CPU loads fixed flat descriptors, not the GDT's.
        uc, x86 = self.uc, self._x86
        cs = uc.reg_read(x86.UC_X86_REG_MSR, SYSENTER_CS) & 0xFFFC
        if not self._read_cr0() & 1 or not cs:
            uc.reg_write(self._ip_id, uc.reg_read(self._ip_id) - 2)
            return self._deliver(Event(13, 0))
        long_mode = uc.reg_read(x86.UC_X86_REG_MSR, EFER) & EFER_LMA
        mask = (1 << 64) - 1 if long_mode else 0xFFFFFFFF
        esp = uc.reg_read(x86.UC_X86_REG_MSR, SYSENTER_ESP) & mask
        eip = uc.reg_read(x86.UC_X86_REG_MSR, SYSENTER_EIP) & mask
        flags = uc.reg_read(self._flags_id) & ~(VM | IF | RF)
        self._load_flat_ring0(cs, long_mode=bool(long_mode))
        uc.reg_write(self._flags_id, flags)
        uc.reg_write(self._gpr_ids[6], esp)
        uc.reg_write(self._ip_id, eip)
        self.sysenters += 1
        return None

    def _at_far_return(self) -> bool:
        code = self._code_at(0, 4) or b""
        opcode = code.lstrip(bytes([0x66, *range(0x40, 0x50)]))[:1]  # operand-size and REX prefixes
        return bool(opcode) and opcode[0] in _FAR_RETURNS

    def _suspend_smap(self) -> None:
        """Clear CR4.SMAP until this vCPU next enters CPL0-2, then let the guest run the IRET or
        far RET at RIP again.

        At CPL3 these read their frame from the stack with user privilege (SDM vol. 3A 4.6),
        which SMAP never restricts; unicorn's QEMU 5 reads it with its supervisor MMU index, whose
        SMAP check faults on the user page. A Xen PV guest kernel runs in ring 3 and IRETs to
        itself (Linux's sync_core) tens of thousands of times while it boots. At CPL3 SMAP only
        guards implicit supervisor accesses (descriptor tables in user pages), so it is dropped
        there, and restored on every way back to the kernel, all of which pass through hvm
        (exception and interrupt delivery, SYSCALL, SYSENTER); get_sregs reports the guest's CR4.
        A far CALL through a call gate, which unicorn carries out alone, would enter the kernel
        without it: no OS hvm runs uses one."""
        self._fields.settle()  # the fault is dropped, not delivered: QEMU must not promote the next
        cr4 = self._x86.UC_X86_REG_CR4
        self.uc.reg_write(cr4, self.uc.reg_read(cr4) & ~CR4_SMAP)
        self._smap_suspended = True
        self._core.native_syscall(False)  # the way back to the kernel must pass through hvm

    def _resume_smap(self) -> None:
        if self._smap_suspended:
            cr4 = self._x86.UC_X86_REG_CR4
            self.uc.reg_write(cr4, self.uc.reg_read(cr4) | CR4_SMAP)
            self._smap_suspended = False
            self._core.native_syscall(self.pv is None)

    def _load_flat_ring0(self, cs: int, long_mode: bool) -> None:
        """CPL 0 with the flat code segment ``cs`` (64-bit in IA-32e mode) and stack ``cs + 8``,
        as SYSCALL and SYSENTER load them."""
        self._resume_smap()
        code = uc_context.FLAT_CODE | (uc_context.DESC_L if long_mode else uc_context.DESC_B)
        self._fields.load_segments({uc_context.CS: (cs, 0, 0xFFFFFFFF, code),
                                    uc_context.SS: (cs + 8, 0, 0xFFFFFFFF, uc_context.FLAT_STACK)}, 0)

    def _deliver(self, event: Event) -> kx.VcpuExit | None:
        """Deliver an exception or interrupt now; an exit if the guest cannot go on."""
        if self.pv is not None:
            counts = self.interrupts_delivered if event.external else self.exceptions_delivered
            counts[event.vector] = counts.get(event.vector, 0) + 1
            # Handled by the hypervisor (bounced or emulated): QEMU must not promote the next
            # fault to a double fault as if this one were still being delivered.
            self._fields.settle()
            return self.pv.exception(self, event)
        regs, sregs = self.get_regs(), self.get_sregs()
        vector = event.vector
        if vector == 14 and sregs.cs.dpl == 3 and event.error_code is not None \
                and not event.error_code & _PF_USER and self._at_far_return():
            # The CPU's own CR4, not the guest's view: SMAP may be back since it was last
            # suspended (a kernel entered through a natively delivered exception rewrote CR4:
            # Xen without XPTI does), and this is unicorn's supervisor read of the frame again.
            if self.uc.reg_read(self._x86.UC_X86_REG_CR4) & CR4_SMAP:
                self._suspend_smap()
                return None
            event.error_code |= _PF_USER  # a real fault on the frame: the read is a user access
        self._resume_smap()
        if not sregs.cr0 & 1:
            try:
                deliver_real_mode(self.memory, regs, sregs, event.vector)
            except DeliveryFailed:
                return kx.Shutdown()
            self._fields.settle()
            self.set_regs(regs)
            self._fields.load_real_segments({1: sregs.cs.selector})
        else:
            cpl = sregs.cs.dpl  # get_sregs already read the CPL from the saved context
            _, tr_base, _, _ = self.uc.reg_read(self._x86.UC_X86_REG_TR)
            _, ldt_base, ldt_limit, _ = self.uc.reg_read(self._x86.UC_X86_REG_LDTR)
            cr2 = sregs.cr2
            try:
                done = deliver_protected(self.memory, regs, sregs, event, cpl, tr_base, (ldt_base, ldt_limit))
            except DeliveryFailed:
                return kx.Shutdown()
            except Unsupported as exc:
                return EngineCrash(f"the guest needs {exc}, which the unicorn engine does not model")
            if sregs.cr2 != cr2:
                self.uc.reg_write(self._x86.UC_X86_REG_CR2, sregs.cr2)
            self._enter(done, regs)
            vector = done.vector
        counts = self.interrupts_delivered if event.external else self.exceptions_delivered
        counts[vector] = counts.get(vector, 0) + 1
        return None

    def _enter(self, done: Delivered, regs: Regs) -> None:
        # The handler's CS (and SS, when the stack changed) with the caches their descriptors
        # give, as the CPU loads them; then the delivery is over for unicorn's bookkeeping.
        segments = {uc_context.CS: _cache(done.cs, done.cs_desc)}
        if done.ss_desc is not None:
            segments[uc_context.SS] = _cache(done.ss, done.ss_desc)
        self._fields.load_segments(segments, done.cpl, delivered=True)
        self.set_regs(regs)

    def counters(self) -> list[str]:
        """What --stats shows of this engine."""
        core = self._core
        name = f"unicorn vCPU {self.index}" if self._ncpus > 1 else "unicorn"
        lines = [f"{name}: {self.slices} time slices, {self.emu_seconds:.3f} s inside emu_start "
                 f"(guest code and the device hooks it calls), {self.syscalls} SYSCALLs, "
                 f"{self.sysenters} SYSENTERs"]
        first = core.engines[0] is self   # what the core counts for all its vCPUs, shown once
        if self.index == 0:
            lines.append(f"unicorn: {uc_lib.describe()}")
            if core.group is not None:
                lines.append(f"unicorn: {self._ncpus} instances running at once, one per vCPU")
        if first:
            if core.native_syscalls:
                lines.append(f"unicorn: {core.native_syscalls} SYSCALLs carried out by the CPU itself")
            lines.append(f"unicorn: {core.window_stops} slices ended by the guest setting IF for a "
                         f"waiting interrupt")
            if len(core.engines) > 1:
                lines.append(f"unicorn: {core.switches} switches between vCPUs, "
                             f"{sum(e.pause_yields for e in core.engines)} of them from PAUSE loops")
            if core.strings is not None and core.strings.runs:
                lines.append(f"unicorn: {core.strings.runs} REP INS/OUTS runs served at once "
                             f"({core.strings.elements} elements)")
        native = core.native_counts
        if first and native is not None and any(native[v] for v in range(256)):
            lines.append("exceptions and INT n delivered by unicorn's CPU itself, by vector:")
            lines += [f"  {_vector_name(v):<18} {native[v]}" for v in range(256) if native[v]]
        for title, counts in (("exceptions delivered", self.exceptions_delivered),
                              ("interrupts delivered", self.interrupts_delivered)):
            if counts:
                lines.append(f"{title} by vector:")
                lines += [f"  {_vector_name(v):<18} {n}" for v, n in sorted(counts.items())]
        return lines

    # -- running --------------------------------------------------------------------------------
    def run(self) -> kx.VcpuExit:
        """Emulate until a stop request, a HLT nothing can wake, or something the engine cannot
        continue past. Interrupts are delivered between slices; HLT (and an AP waiting for its
        STARTUP IPI) waits without holding the CPU."""
        core = self._core
        if core.uc is None:
            return EngineCrash("unicorn engine: no CPU state was set")
        # The CPU delivers exceptions itself, except to a PV guest: hvm is its hypervisor and
        # bounces them (the KVM fallback's stepper never gets here: its events go back to KVM).
        core.native_events(self.pv is None)
        turns = core.turns
        if core.group is not None:
            core.owner = threading.get_ident()
            uc_core.running.engine = self
        while True:
            if self._kicked.is_set():
                return kx.Interrupted()
            if self._halted or not self._started:
                self._wake.wait(self._idle_timeout())
                self._wake.clear()
            turns.acquire()
            try:
                core.switch_to(self)
                if core.slicer is None:
                    core.slicer = Slicer(core.stop_target())
                    core.slicer_started()
                problem = self._turn()
            finally:
                turns.release()
            if problem is not None:
                return problem

    def _turn(self) -> kx.VcpuExit | None:
        """Run slices until the vCPU idles, has used its quantum while another vCPU waits, or
        needs the VMM (the exit, returned)."""
        uc, unicorn, core = self.uc, self._unicorn, self._core
        slicer, turns = core.slicer, core.turns
        began = time.monotonic_ns()
        while True:
            if self._kicked.is_set():
                return kx.Interrupted()
            self._poked = False
            with core.bql:
                for timer in self._timers:
                    timer.tick()
                problem = self._take_signals() if self._signals else None
            if problem is not None:
                return problem
            if not self._started:
                if self._pv_start is None:
                    return None
                start, self._pv_start = self._pv_start, None
                if start is not _RESUME:
                    regs, sregs, msrs = start
                    core.load_reset_state()
                    self.set_sregs(sregs)
                    self.set_regs(regs)
                    self.set_msrs(msrs)
                self._started, self._halted = True, False
            if self._smap_suspended and self._fields.cpl() < 3:
                # Back in the kernel through a way the CPU took alone (a natively delivered
                # exception): SMAP applies there again.
                self._resume_smap()
            yield_at = None
            if turns.wanted:
                # Another vCPU waits for the CPU: it gets it once this one has had its quantum,
                # or sooner when one of its timers is due (but not before this one has had
                # MIN_TURN_NS: with several vCPUs someone's timer is nearly always due, and turns
                # given up at once would leave none of them running). Held back a whole quantum,
                # a waiting vCPU's ticks coalesced (a periodic timer's missed periods do), and
                # Linux's jiffies fell behind its TSC: its clocksource watchdog called the TSC
                # unstable. Decided before an interrupt is taken: one given to the CPU must
                # reach the run that follows.
                yield_at = min(began + QUANTUM_NS, max(began + MIN_TURN_NS, self._others_deadline()))
                if time.monotonic_ns() >= yield_at:
                    return None
            with core.bql:
                waiting = self._deliver_pending()
            if isinstance(waiting, kx.VcpuExit):
                return waiting
            if not self._started:
                continue        # the PV domain parked it (a VCPUOP_down from another vCPU)
            if self._halted:
                if self._controller is None:
                    self._halted = False
                    return kx.Hlt()  # nothing can wake it: the run loop treats it as KVM's HLT exit
                return None
            self._event = None
            if waiting is _SHADOW and self._hlt_in_shadow():
                continue
            # While another vCPU waits, a PAUSE loop (a spin on that vCPU's progress) gives it
            # the CPU rather than spinning to the end of the quantum (uc_lib edit 12).
            core.pause_exits(PAUSE_LOOP if yield_at is not None else 0)
            pauses = core.pause_stops
            if core._remaps:
                core.take_remaps()
            t0 = time.perf_counter()
            slicer.begin(self._slice_deadline(yield_at))
            if self._poked or self._kicked.is_set():
                slicer.cut()  # it came after the checks above, when there was no slice to end
            # Stop where an interrupt waiting for IF could be taken (after the instruction in an
            # STI shadow), or where an NMI held until IRET could be.
            core.watch_window(interrupt=waiting is _WINDOW, shadow=waiting is _SHADOW, nmi=self._nmi_waiting)
            if waiting is _GIVEN:
                core.give_irq(self._given)  # after watch_window, which withdraws what was raised
            windows = core.window_stops
            try:
                core.direct.emu_start(uc.reg_read(self._ip_id), 0)  # cffi: no ctypes conversions
            except unicorn.UcError as exc:
                slicer.end()
                self.emu_seconds += time.perf_counter() - t0
                if waiting is _GIVEN and (problem := self._irq_left()) is not None:
                    return problem
                self._raise_hook_failure()
                # A refused IN/OUT came first (unicorn ran on to an invalid opcode after it).
                problem = self._take_event() if self._event is _IO_DENIED else self._fault(exc)
                if problem is not None:
                    return problem
                continue
            cut = slicer.end()
            core.watch_window(False)
            self.emu_seconds += time.perf_counter() - t0
            if waiting is _GIVEN and (problem := self._irq_left()) is not None:
                return problem
            self._raise_hook_failure()
            self.slices += 1
            if core.window_stops != windows:
                continue   # IF was set with an interrupt waiting: _deliver_pending takes it
            if self._event is not None:
                problem = self._take_event()
                if problem is not None:
                    return problem
                continue
            if core.pause_stops != pauses:
                self.pause_yields += 1
                return None  # spinning: the waiting vCPU's turn
            if self._kicked.is_set() or self._poked or cut:
                continue
            self._halted = True  # emu_start returned on its own: the guest executed HLT

    def _raise_hook_failure(self) -> None:
        self._core.after_slice()
        exc = self._core.take_hook_failure()
        if exc is not None:
            raise exc

    def _take_signals(self) -> kx.VcpuExit | None:
        """INIT, STARTUP and NMI from the local APIC."""
        apic = self._controller
        if apic.take_init():
            if apic.bsp:
                return EngineCrash("INIT of the boot processor (a CPU reset) is not modelled by the "
                                   "unicorn engine")
            self._started = self._halted = False
        if not self._started:
            vector = apic.take_sipi()
            if vector is None:
                return None
            self._start_at(vector)
        if apic.take_nmi():
            self._halted = False
            self._nmi_waiting = True   # NMIs do not queue: a second one while this waits is lost
        if self._nmi_waiting and not self._fields.nmi_blocked():
            self._nmi_waiting = False
            self._fields.block_nmi()
            return self._deliver(Event(2, external=True))
        return None

    def _start_at(self, vector: int) -> None:
        """The state a STARTUP IPI gives an AP after INIT (SDM vol. 3A 9.1.1 and 9.4.4): real mode
        at CS = vector x 256, IP 0, everything else as after reset."""
        uc, x86, core = self.uc, self._x86, self._core
        core.load_reset_state()
        self._smap_suspended = False
        self._leave_long_mode()
        uc.reg_write(x86.UC_X86_REG_MSR, (EFER, 0))
        uc.reg_write(x86.UC_X86_REG_CR4, 0)
        uc.reg_write(x86.UC_X86_REG_CR3, 0)
        uc.reg_write(x86.UC_X86_REG_CR0, RESET_CR0)
        for reg in (x86.UC_X86_REG_GDTR, x86.UC_X86_REG_IDTR):
            uc.reg_write(reg, (0, 0, 0xFFFF, 0))
        self._fields.load_real_segments({0: 0, 1: vector << 8, 2: 0, 3: 0, 4: 0, 5: 0})
        signature = uc_cpuid.lookup(self._cpuid_table, 1, 0)[0]  # EDX after INIT (SDM 9.1.4)
        self.set_regs(Regs(rdx=signature, rip=0, rflags=2))
        self._started, self._halted = True, False

    def _deliver_pending(self) -> kx.VcpuExit | object | None:
        """Deliver the interrupt the controller has for this vCPU: an exit if the guest cannot go
        on, _WINDOW if one waits for EFLAGS.IF."""
        ctl = self._controller
        if ctl is None or not ctl.intr():
            return None
        if not self.uc.reg_read(self._flags_id) & IF:
            return _WINDOW
        if self._fields.interrupt_shadow():
            return _SHADOW
        vector = ctl.acknowledge()
        if vector is None:
            return None
        self._halted = False
        if self.pv is None and self._core.gives_irqs:
            # The CPU delivers it as the next run starts (uc_lib edit 16), given after the
            # window watch is set up for that run.
            self._resume_smap()
            self._given = vector
            self.interrupts_delivered[vector] = self.interrupts_delivered.get(vector, 0) + 1
            return _GIVEN
        return self._deliver(Event(vector, external=True))

    def _irq_left(self) -> kx.VcpuExit | None:
        """An interrupt given to the CPU that its run did not deliver (the run ended before it
        began) is delivered here instead; an exit if the guest cannot go on."""
        vector = self._core.irq_left()
        if vector is None:
            return None
        self.interrupts_delivered[vector] -= 1
        return self._deliver(Event(vector, external=True))

    def _hlt_in_shadow(self) -> bool:
        """`sti; hlt` (the idle loop) with an interrupt waiting: the interrupt is taken as waking
        that HLT, RIP past it, as hardware does; delivered before it, the HLT would then sleep
        with its wake-up already spent. True if that is where the vCPU stands."""
        if self._code_at(0, 1) != bytes([_HLT]):
            return False
        self.uc.reg_write(self._ip_id, self.uc.reg_read(self._ip_id) + 1)
        self._fields.end_interrupt_shadow()
        return True

    def _next_deadline(self) -> int | None:
        deadlines = [d for d in (t.next_deadline_ns() for t in self._timers) if d is not None]
        return min(deadlines) if deadlines else None

    def _others_deadline(self) -> float:
        """The earliest timer deadline of the other vCPUs sharing this CPU (inf if none)."""
        due = [d for d in (e._next_deadline() for e in self._core.engines if e is not self) if d is not None]
        return min(due, default=math.inf)

    def _timer_programmed(self) -> None:
        """A timer of this vCPU was programmed (any thread). A slice ends at the deadline its
        timers had when it began, and an idle wait sleeps until then: without this, a timer armed
        in the middle of a slice would first interrupt at that slice's end, up to SLICE_US later
        (Linux's check_timer then finds no PIT ticks on the IOAPIC and calls it an MP-BIOS bug)."""
        deadline = self._next_deadline()
        if deadline is None:
            return
        core = self._core
        if core.current is self and core.slicer is not None:
            core.slicer.sooner(deadline)
        self._wake.set()   # a vCPU in HLT recomputes how long to sleep

    def _slice_deadline(self, yield_at: int | None) -> int:
        ends = [time.monotonic_ns() + SLICE_US * 1000, self._next_deadline(), yield_at]
        return min(end for end in ends if end is not None)

    def _idle_timeout(self) -> float:
        deadline = self._next_deadline()
        if deadline is None:
            return SLICE_US / 1e6
        return max(0.0, min(SLICE_US / 1e6, (deadline - time.monotonic_ns()) / 1e9))

    def _fault(self, exc) -> kx.VcpuExit | None:
        unicorn = self._unicorn
        if exc.errno == unicorn.UC_ERR_INSN_INVALID:
            return self._deliver(Event(_VEC_UD))  # RIP is at the undefined opcode
        if exc.errno in (unicorn.UC_ERR_READ_UNMAPPED, unicorn.UC_ERR_WRITE_UNMAPPED,
                         unicorn.UC_ERR_FETCH_UNMAPPED):
            return EngineCrash(f"unicorn: {exc} (guest-physical address outside RAM and MMIO)")
        return EngineCrash(f"unicorn: {exc}")

    def kick(self) -> None:
        """Stop the emulation loop from any thread; ``run`` then returns Interrupted."""
        self._kicked.set()
        self._wake.set()
        if self._core.current is self:
            self._core.cut()

    def acknowledge_kick(self) -> None:
        """Let the next ``run`` proceed."""
        self._kicked.clear()

    # -- state ----------------------------------------------------------------------------------
    def _read_cr0(self) -> int:
        return self.uc.reg_read(self._x86.UC_X86_REG_CR0)

    @_on_cpu
    def get_regs(self) -> Regs:
        """General-purpose registers, RIP and RFLAGS at full width."""
        return Regs(*self._state.read())

    @_on_cpu
    def set_regs(self, regs: Regs) -> None:
        """Write general-purpose registers, RIP and RFLAGS."""
        if self.uc is None:
            self._core.create(self)
        self._state.write([getattr(regs, name) for name in _STATE_NAMES])

    @_on_cpu
    def get_sregs(self) -> SRegs:
        """Control registers, descriptor tables and segment registers with their caches."""
        uc, x86 = self.uc, self._x86
        s = SRegs()
        s.cr0, s.cr2, s.cr3, s.cr4 = (uc.reg_read(getattr(x86, f"UC_X86_REG_CR{i}")) for i in (0, 2, 3, 4))
        if self._smap_suspended:
            s.cr4 |= CR4_SMAP
        s.efer = uc.reg_read(x86.UC_X86_REG_MSR, EFER)
        _, base, limit, _ = uc.reg_read(x86.UC_X86_REG_GDTR)
        s.gdt = DTable(base, limit)
        _, base, limit, _ = uc.reg_read(x86.UC_X86_REG_IDTR)
        s.idt = DTable(base, limit)
        caches = self._fields.segments()
        s.es, s.cs, s.ss, s.ds, s.fs, s.gs = (_segment(c) for c in caches)
        # KVM's convention, which exception delivery relies on: CS and SS carry the CPL.
        s.cs.dpl = s.ss.dpl = self._fields.cpl()
        for name in ("tr", "ldt"):
            sel, base, limit, flags = uc.reg_read(getattr(x86, f"UC_X86_REG_{'TR' if name == 'tr' else 'LDTR'}"))
            setattr(s, name, Segment(selector=sel, base=base, limit=limit, type=flags >> 8 & 0xF, s=0,
                                     present=flags >> 15 & 1))
        return s

    @_on_cpu
    def set_sregs(self, sregs: SRegs) -> None:
        """Put the CPU in the mode ``sregs`` describes (real, protected or long, whatever it was
        in): control registers, descriptor tables, and segment registers with their caches."""
        if self.uc is None:
            self._core.create(self)
        uc, x86 = self.uc, self._x86
        # Leaving long mode truncates RIP (QEMU's cr0 update does): keep it, so that setting the
        # control registers alone (a PV guest's new CR3) leaves the instruction pointer be.
        rip = uc.reg_read(self._ip_id)
        # From a known start: out of long mode and paging off, so turning paging on below with
        # EFER.LME enters long mode the architectural way (WRMSR cannot set LMA).
        self._leave_long_mode()
        self._smap_suspended = False
        uc.reg_write(x86.UC_X86_REG_CR0, sregs.cr0 & ~CR0_PG)
        uc.reg_write(x86.UC_X86_REG_GDTR, (0, sregs.gdt.base, sregs.gdt.limit, 0))
        uc.reg_write(x86.UC_X86_REG_IDTR, (0, sregs.idt.base, sregs.idt.limit, 0))
        uc.reg_write(x86.UC_X86_REG_CR4, sregs.cr4)
        uc.reg_write(x86.UC_X86_REG_MSR, (EFER, sregs.efer))
        uc.reg_write(x86.UC_X86_REG_CR3, sregs.cr3)
        uc.reg_write(x86.UC_X86_REG_CR0, sregs.cr0)
        for name, reg in (("tr", x86.UC_X86_REG_TR), ("ldt", x86.UC_X86_REG_LDTR)):
            seg = getattr(sregs, name)
            uc.reg_write(reg, (seg.selector, seg.base, seg.limit, _segment_cache(seg)[3]))
        order = ("es", "cs", "ss", "ds", "fs", "gs")
        self._fields.load_segments({i: _segment_cache(getattr(sregs, n)) for i, n in enumerate(order)},
                                   cpl=sregs.cs.dpl if sregs.cr0 & 1 else 0)
        uc.reg_write(self._ip_id, rip if sregs.efer & EFER_LMA else rip & 0xFFFFFFFF)

    def _leave_long_mode(self) -> None:
        """Clear EFER.LMA. WRMSR cannot (a fresh instance starts with it set); turning paging on
        and off again leaves long mode the architectural way. The caller loads CR3 and the rest
        afterwards; nothing is accessed in between."""
        uc, x86 = self.uc, self._x86
        if uc.reg_read(x86.UC_X86_REG_MSR, EFER) & EFER_LMA:
            uc.reg_write(x86.UC_X86_REG_CR4, CR4_PAE)
            uc.reg_write(x86.UC_X86_REG_CR0, CR0_PE | CR0_PG)
            uc.reg_write(x86.UC_X86_REG_CR0, CR0_PE)

    @_on_cpu
    def get_fpu(self) -> Fpu:
        """SSE registers, MXCSR and the x87 control/status words."""
        uc, x86 = self.uc, self._x86
        xmm = [uc.reg_read(getattr(x86, f"UC_X86_REG_XMM{i}")) for i in range(16)]
        return Fpu(xmm, uc.reg_read(x86.UC_X86_REG_MXCSR), uc.reg_read(x86.UC_X86_REG_FPCW),
                   uc.reg_read(x86.UC_X86_REG_FPSW))

    @_on_cpu
    def set_fpu(self, fpu: Fpu) -> None:
        """Write SSE registers, MXCSR and the x87 control/status words."""
        uc, x86 = self.uc, self._x86
        for i in range(16):
            uc.reg_write(getattr(x86, f"UC_X86_REG_XMM{i}"), fpu.xmm[i])
        uc.reg_write(x86.UC_X86_REG_MXCSR, fpu.mxcsr)
        uc.reg_write(x86.UC_X86_REG_FPCW, fpu.fcw)
        uc.reg_write(x86.UC_X86_REG_FPSW, fpu.fsw)

    @_on_cpu
    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        return {i: self.uc.reg_read(self._x86.UC_X86_REG_MSR, i) for i in indices}

    @_on_cpu
    def set_msrs(self, values: dict[int, int]) -> None:
        for index, value in values.items():
            self.uc.reg_write(self._x86.UC_X86_REG_MSR, (index, value))

    @_on_cpu
    def set_debugregs(self, breakpoints: list[int], dr6: int, dr7: int) -> None:
        """DR0-DR3, DR6, DR7 (the rebuilt library arms instruction breakpoints on the write)."""
        uc, x86 = self.uc, self._x86
        for n, address in enumerate(breakpoints):
            uc.reg_write(getattr(x86, f"UC_X86_REG_DR{n}"), address)
        uc.reg_write(x86.UC_X86_REG_DR6, dr6)
        uc.reg_write(x86.UC_X86_REG_DR7, dr7)

    @_on_cpu
    def get_debugregs(self) -> tuple[list[int], int, int]:
        uc, x86 = self.uc, self._x86
        return ([uc.reg_read(getattr(x86, f"UC_X86_REG_DR{n}")) for n in range(4)],
                uc.reg_read(x86.UC_X86_REG_DR6), uc.reg_read(x86.UC_X86_REG_DR7))

    def edit_cpuid(self, edit) -> None:
        """Let ``edit`` change this vCPU's CPUID table in place (a board's own policy)."""
        edit(self._cpuid_table)

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """What CPUID answers this vCPU (hvm's policy)."""
        return tuple(uc_cpuid.lookup(self._cpuid_table, leaf, subleaf))

    @_on_cpu
    def flush_tlb(self) -> None:
        """Forget cached translations."""
        self._core.flush_tlb()

    @_on_cpu
    def step(self, code: bytes | None = None) -> Event | kx.VcpuExit | None:
        """Execute the one instruction at RIP on the state last set; the exception or interrupt
        it raised is returned, not delivered (RIP at the instruction, or past it for INT n).
        Used by the KVM engine's fallback, whose guest memory may have changed since the last
        step: translated code is dropped first, unless ``code`` (the instruction's bytes, as the
        caller read them) is what was stepped at this RIP before (translating anew costs ~40 us,
        the rest of a step a few)."""
        return self._step(self.uc.reg_read(self._ip_id), code)

    @_on_cpu
    def step_values(self, values: Sequence[int], code: bytes, flush_tlb: bool
                    ) -> tuple[Event | kx.VcpuExit | None, list[int]]:
        """``step`` from general-purpose registers, RIP and RFLAGS given as ``values`` (in
        ``get_regs``' order), the TLB flushed first if asked; returns what it raised and those
        registers after it. One call for the fallback's whole round trip (each separate call
        costs the CPU's turn lock again)."""
        self._state.write(values)
        if flush_tlb:
            self._core.direct.flush_tlb()
        raised = self._step(values[16], code)
        return raised, self._state.read()

    def _step(self, rip: int, code: bytes | None) -> Event | kx.VcpuExit | None:
        uc, unicorn = self.uc, self._unicorn
        if code is None or self._stepped.get(rip) != code:
            uc.ctl_flush_tb()
            self._stepped = {} if code is None else {rip: code}
        elif len(self._stepped) < 4096:
            self._stepped[rip] = code
        self._event = None
        try:
            self._core.direct.emu_start(rip, 0, count=1)
        except unicorn.UcError as exc:
            if exc.errno == unicorn.UC_ERR_INSN_INVALID:
                return Event(_VEC_UD)
            return EngineCrash(f"unicorn: {exc}")
        event, self._event = self._event, None
        if event is _SYSCALL or event is _SYSENTER:  # KVM runs these itself: never a fallback's
            return EngineCrash("unicorn: SYSCALL/SYSENTER cannot be single-stepped for another engine")
        if event is not None:
            self._fields.settle()
        return event

    def inject_interrupt(self, vector: int) -> None:
        """Not available yet: needs IDT delivery (the software-engine issue)."""
        raise NotImplementedError("the unicorn engine cannot deliver interrupts yet")

    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """Not available yet: needs IDT delivery (the software-engine issue)."""
        raise NotImplementedError("the unicorn engine cannot deliver exceptions yet")

    def close(self) -> None:
        """Drop the CPU instance (guest RAM belongs to GuestMemory) and the slicer thread once
        no vCPU uses them."""
        core = self._core
        if self in core.engines:
            core.engines.remove(self)
            if not core.engines:
                core.close()
        self.uc = None
