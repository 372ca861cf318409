"""A PV domain on a hardware engine (KVM): hvm's ring 0 (``paravirt.hvarea``) takes every exit
of the guest from its ring-3 world, and this module turns each into what the unicorn engine hands
``PvDomain`` from its hooks.

Each of hvm's ring-0 stubs records what happened (the vector, or which SYSCALL entry) and
executes ``out`` to RING0_PORT; hvm completes that port I/O (KVM delivers it only on the next
KVM_RUN: KVM API, KVM_EXIT_IO), reads the CPU's exception frame from hvm's stack, puts the
interrupted ring-3 state back into the vCPU's registers and calls ``PvDomain.syscall`` or
``PvDomain.exception`` with a ``Ring0Vcpu`` as the engine. The stub never returns: what the
domain leaves in the registers (the guest's RIP after a hypercall, its handler after a bounce)
is written to KVM once, with CS and SS back in ring 3.

How the guest reaches the stubs. On VT-x and AMD-V, SYSCALL enters the LSTAR (or CSTAR) stub in
ring 0 and exceptions arrive through hvm's IDT. On this project's nested kvm_pvm host (measured
2026-12-04 with a bare KVM probe in ring 3, ../shared/HOST-KVM.md) four things differ, and the
same code serves both:
- SYSCALL from ring 3 jumps to LSTAR without leaving ring 3 (frame CS still the caller's, RFLAGS
  already masked by SFMASK, RCX = the return address, R11 = RFLAGS, RSP unchanged). hvm's stubs
  are supervisor pages, so fetching there faults: #PF, error code 0x15 (present, user, fetch),
  CR2 = frame RIP = LSTAR. A #PF from ring 3 at the LSTAR or CSTAR stub is therefore a SYSCALL
  (a guest can only reach those addresses by SYSCALL or by jumping there itself).
- ``int n`` through a DPL-0 gate raises #UD with RIP at the instruction, where the CPU raises
  #GP(n << 3 | 2). A #UD at ``CD nn`` is taken for INT nn (a CPU never raises #UD there in long
  mode), so the guest sees what Xen shows it either way. INT3 arrives as #BP through its DPL-3
  gate on both.
- KVM keeps shadow page tables (kvm_pvm has no EPT) and never sees hvm's writes to the guest's
  page tables (mmu_update, update_va_mapping, set_gdt): after a remap the guest kept reading the
  old frame through KVM_SET_SREGS with CR3 (PWT flipped and back) or CR4 (PGE flipped and back)
  changed; deleting a memory slot made KVM drop every translation (KVM zaps all shadow pages
  then) and the new entry was seen. So every ``flush_tlb`` becomes the creation and deletion of
  a one-page slot (``MmuReset``, ~85 µs measured, and ~19 µs for each page the guest touches
  again); on EPT/NPT that drops KVM's roots, which flushes the guest's TLB too.
- Ring 3 cannot reach L4 slot 256 (0xffff800000000000-0xffff807fffffffff): every access faults
  as not present although KVM_TRANSLATE finds the mapping; slots 257-511 work. That is where
  Xen's ABI puts the M2P: ``paravirt.hvarea`` maps it a second time, in slot 257.
The round trip (guest -> stub -> hvm -> guest) measured ~160-260 µs in that probe, most of it the
privilege switch and the ioctls (each ~10 µs from Python here); benchmarks/bench_xen_pv.py has
the figures of whole hypercalls.

Upcalls and Xen timers: ``Ring0Vcpu`` takes the platform PvDomain.attach gives an engine (an
upcall controller and the vCPU's timers) and does with it what the unicorn engine does between
slices. A due upcall goes in at the end of an exit, before the guest runs again; SCHEDOP_block
waits inside its exit until one is due; and while the guest runs, its next timer deadline (one
thread, ``_Alarm``) or an event from elsewhere kicks the vCPU out of KVM_RUN, after which
(``KvmEngine.after_kick``) the upcall goes in unless the vCPU is inside a stub, whose exit is
then moments away.
"""
from __future__ import annotations

import mmap
import operator
import struct
import sys
import threading
import time
from dataclasses import fields
from typing import TYPE_CHECKING, Callable

from kvmffi import ffi

from hvm.devices.base import Device
from hvm.engine.base import EngineCrash
from hvm.engine.events import Event
from hvm.engine.state import DTable, Regs, Segment, SRegs
from hvm.memory import GuestMemoryError
from hvm.paging import PageFault

from .abi import FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS32, FLAT_RING3_SS32, FLAT_RING3_SS64
from .hvarea import ERROR_CODE_VECTORS, FRAME, HYPERVISOR_CS, PAGE, Ring0
from .pvcpu import MSR_FS_BASE, MSR_GS_BASE, DomainCrash, ring3_segment

if TYPE_CHECKING:
    from hvm.engine.kvm import KvmEngine
    from hvm.memory import GuestMemory

    from .domain import PvDomain

# SYSCALL's MSRs as Xen sets them (xen/arch/x86/x86_64/traps.c): STAR with the hypervisor's CS
# for entry and FLAT_RING3_CS32 as SYSRET's base; SFMASK clearing IF, TF and DF on entry.
MSR_STAR, MSR_LSTAR, MSR_CSTAR, MSR_SFMASK = 0xC0000081, 0xC0000082, 0xC0000083, 0xC0000084
STAR = FLAT_RING3_CS32 << 48 | HYPERVISOR_CS << 32
# Measured here (2026-12-04): KVM_SET_DEBUGREGS takes the values, but kvm_pvm runs ring 3 without
# them, as it does host breakpoints (../shared/HOST-KVM.md), so a breakpoint never fires there.
DEBUGREG_LIMIT = ("this host's KVM (kvm_pvm) does not apply debug registers to ring 3, where a PV kernel "
                  "runs: the guest's breakpoints will not fire (they do under --accel unicorn)")
SFMASK = 1 << 9 | 1 << 8 | 1 << 10
INT_IMM8 = 0xCD
_SYSCALL = object()
# kvm_regs is Regs' fields in order; kvm_sregs is eight kvm_segments (Segment's fields in order,
# one padding byte), GDTR and IDTR (base, limit, padding), seven control registers, then the
# pending-interrupt bitmap, which is left as KVM_GET_SREGS gave it (linux/kvm.h, x86).
_REGS = struct.Struct("<18Q")
_SEGMENT_FORMAT, _DTABLE_FORMAT = "QIH9Bx", "QH6x"
_SREGS = struct.Struct("<" + _SEGMENT_FORMAT * 8 + _DTABLE_FORMAT * 2 + "7Q")
assert ffi.sizeof("struct kvm_regs") == _REGS.size
assert ffi.offsetof("struct kvm_sregs", "interrupt_bitmap") == _SREGS.size
_CONTROL = ("cr0", "cr2", "cr3", "cr4", "cr8", "efer", "apic_base")
_REG_VALUES = operator.attrgetter(*(f.name for f in fields(Regs)))
_SEGMENT = struct.Struct("<" + _SEGMENT_FORMAT)
_CS_OFFSET, _SS_OFFSET = ffi.offsetof("struct kvm_sregs", "cs"), ffi.offsetof("struct kvm_sregs", "ss")
_MASK64 = (1 << 64) - 1


def _segment(selector: int, code: bool, long_mode: bool = True) -> Segment:
    seg = ring3_segment(selector, code)
    if code and not long_mode:
        seg.l, seg.db = 0, 1
    return seg


# The ring-3 segments SYSCALL leaves behind, as Xen's own SYSCALL entry records them
# (xen/arch/x86/x86_64/entry.S lstar_enter, cstar_enter): the CPU keeps no trace of them.
_SYSCALL_SEGMENTS = {False: (_segment(FLAT_RING3_CS64, True), _segment(FLAT_RING3_SS64, False)),
                     True: (_segment(FLAT_RING3_CS32, True, long_mode=False), _segment(FLAT_RING3_SS32, False))}
# Xen's flat ring-3 selectors, whose caches need no descriptor read.
_FLAT = {(FLAT_RING3_CS64, True): _segment(FLAT_RING3_CS64, True),
         (FLAT_RING3_CS32, True): _segment(FLAT_RING3_CS32, True, long_mode=False),
         (FLAT_RING3_DS32, False): _segment(FLAT_RING3_DS32, False)}


def _copy_segment(seg: Segment) -> Segment:
    copy = Segment.__new__(Segment)
    copy.__dict__.update(seg.__dict__)
    return copy


def _copy_regs(regs: Regs) -> Regs:
    copy = Regs.__new__(Regs)
    copy.__dict__.update(regs.__dict__)
    return copy


def _copy_sregs(sregs: SRegs) -> SRegs:
    # PvDomain changes what it gets and hands it back: each side keeps its own objects. A
    # dataclass copy by hand: this runs several times per exit.
    copy = SRegs.__new__(SRegs)
    d = copy.__dict__
    d.update(sregs.__dict__)
    for name in SRegs.SEGMENTS:
        d[name] = _copy_segment(d[name])
    d["gdt"], d["idt"] = DTable(sregs.gdt.base, sregs.gdt.limit), DTable(sregs.idt.base, sregs.idt.limit)
    return copy


def _unpack_sregs(raw) -> SRegs:
    values = _SREGS.unpack_from(ffi.buffer(raw))
    s = SRegs.__new__(SRegs)
    d = s.__dict__
    for i, name in enumerate(SRegs.SEGMENTS):
        d[name] = Segment(*values[i * 12:i * 12 + 12])
    d["gdt"], d["idt"] = DTable(values[96], values[97]), DTable(values[98], values[99])
    d.update(zip(_CONTROL, values[100:]))
    return s


def _segment_values(seg: Segment) -> tuple:
    return (seg.base & _MASK64, seg.limit, seg.selector, seg.type, seg.present, seg.dpl, seg.db,
            seg.s, seg.l, seg.g, seg.avl, seg.unusable)


def _pack_sregs(raw, s: SRegs) -> None:
    values = []
    for name in SRegs.SEGMENTS:
        values += _segment_values(getattr(s, name))
    values += (s.gdt.base & _MASK64, s.gdt.limit, s.idt.base & _MASK64, s.idt.limit)
    values += (getattr(s, name) & _MASK64 for name in _CONTROL)
    _SREGS.pack_into(ffi.buffer(raw), 0, *values)


class MmuReset:
    """Makes KVM forget every translation of the guest: creating and deleting a one-page memory
    slot of its own, above everything else in guest-physical space (KVM zaps all its shadow or
    EPT/NPT pages when a slot goes; see the module docstring for why hvm needs that)."""

    def __init__(self, vm, above: int):
        self._vm = vm
        self._page = mmap.mmap(-1, PAGE)
        self._host = int(ffi.cast("uintptr_t", ffi.from_buffer(self._page)))
        self.slot = vm.check_extension("KVM_CAP_NR_MEMSLOTS") - 1   # the machine takes slots from 0
        self.gpa = -(-max(above, 1 << 32) // (2 << 20)) * (2 << 20)
        self.count = 0
        self._lock = threading.Lock()   # vCPUs flush at once: the slot's add and delete must pair

    def __call__(self) -> None:
        with self._lock:
            self._vm.set_user_memory_region(self.slot, self.gpa, PAGE, self._host)
            self._vm.set_user_memory_region(self.slot, self.gpa, 0, 0)
            self.count += 1


class Ring0Vcpu:
    """One vCPU's exits, and the engine ``PvDomain`` works with meanwhile: the registers the
    guest's ring 3 left, kept here and written to KVM when the exit is over."""

    def __init__(self, index: int, ring0: Ring0, domain: "PvDomain", memory: "GuestMemory",
                 reset_mmu: Callable[[], None], on_crash: Callable[[int, str], None],
                 stopping: Callable[[], bool], alarm: "_Alarm"):
        self.index, self.ring0, self.domain, self.memory = index, ring0, domain, memory
        self.engine: KvmEngine | None = None          # bound at the vCPU's first exit
        self.pv = domain                              # what PvDomain.attach sets on an engine
        self._vcpu = domain.vcpus[index]
        self._cpuid: dict = {}
        self._entry: tuple[Regs, SRegs] | None = None
        self._entry_msrs: dict[int, int] = {}
        self._go = threading.Event()             # VCPUOP_up for a vCPU waiting in an exit
        self._parked = False
        self._reset_mmu, self._on_crash, self._stopping, self._alarm = reset_mmu, on_crash, stopping, alarm
        self._start, self._lstar_resume, self._cstar_resume = ring0.resumes()
        self._thread: int | None = None
        self._controller = None      # upcalls and Xen timers (attach_platform), as unicorn has them
        self._timers: list = []
        self._wake = threading.Event()
        self._in_exit = False
        self._armed: int | None = None    # the deadline the alarm has for this vCPU
        self._regs: Regs | None = None
        self._sregs: SRegs | None = None     # never changed in place: handed out as copies
        self._sregs_changed = False
        self._last_sregs: tuple[bytes, SRegs | None] = (b"", None)   # KVM's bytes -> SRegs, last exit
        self._raw = None             # KVM's register structs of this exit, written back
        self.note: Callable[[str], None] | None = None   # Ring0Port.note on an emulation-only host
        self._reset = False
        self.syscalls = 0
        self.exceptions: dict[int, int] = {}
        self.upcalls = 0

    def bind(self, engine: "KvmEngine", cpuid: dict, entry: tuple[Regs, SRegs] | None) -> None:
        """The vCPU exists: its KVM engine, its CPUID table, where it enters the guest."""
        self.engine, self._cpuid = engine, cpuid
        if entry is not None:
            self._entry = entry
        self._thread = threading.get_ident()
        # Kicks (a stop, a timer, an event for this vCPU) end KVM_RUN; upcalls go in then.
        engine.after_kick = self._after_kick

    # -- an exit ------------------------------------------------------------------------------
    def exit(self) -> None:
        """The vCPU's stub wrote RING0_PORT: serve what it recorded."""
        self._in_exit = True
        try:
            self._exit()
            if not self._hold_while_parked():
                return
        finally:
            self._in_exit = False
        self._upcall_now()

    def _hold_while_parked(self) -> bool:
        """After VCPUOP_down took effect: wait here until VCPUOP_up, then enter the guest with
        what ``start_pv`` gave or go on as before (``resume``). False if the machine stopped."""
        if not self._parked:
            return True
        self._parked = False
        self._entry = None
        in_exit, self._in_exit = self._in_exit, True
        try:
            if not self._wait_for_start():
                return False
            if self._entry is not None:
                self._enter(*self._entry)
        finally:
            self._in_exit = in_exit
        return True

    def _exit(self) -> None:
        engine = self.engine
        engine.complete_io()
        kvm = engine.vcpu
        raw_regs, raw_sregs = kvm.get_regs(), kvm.get_sregs()
        self._raw = raw_regs, raw_sregs
        regs = Regs(*_REGS.unpack_from(ffi.buffer(raw_regs)))
        rip, ring0 = regs.rip, self.ring0
        if rip == self._start:
            self._first_entry()
            return
        if rip in (self._lstar_resume, self._cstar_resume):
            # SYSCALL entered ring 0 (VT-x, AMD-V); the stub kept RDX beside hvm's stack.
            regs.rdx = self.memory.read_u64(ring0.rdx_slot_maddr)
            event, cs, ss = self._syscall(regs, compat=rip == self._cstar_resume)
        elif ring0.base <= rip <= ring0.vector_stubs_end:
            rdx, vector, error, frame_rip, cs_selector, rflags, rsp, ss_selector = FRAME.unpack(
                self.memory.read(ring0.frame_maddr, FRAME.size))
            if cs_selector & 3 != 3:
                self._crash(regs, f"vector {vector:#x} in hvm's ring 0 at {frame_rip:#x}: hvm bug")
                return
            regs.rdx, regs.rsp = rdx, rsp
            if vector == 14 and frame_rip in (ring0.lstar, ring0.cstar):
                # SYSCALL that stayed in ring 3 and faulted on the stub (kvm_pvm, module docstring).
                event, cs, ss = self._syscall(regs, compat=frame_rip == ring0.cstar)
            else:
                regs.rip, regs.rflags = frame_rip, rflags
                cs, ss = self._ring3(cs_selector, True), self._ring3(ss_selector, False)
                event = vector, error
        else:
            self._crash(regs, f"an exit to hvm's ring-0 port from {rip:#x}, outside its stubs: hvm bug")
            return
        self._regs = regs
        self._take_sregs(cs, ss)
        if event is _SYSCALL:
            self.syscalls += 1
            result = self.domain.syscall(self)
        else:
            event = self._event(*event, regs, self._sregs)
            self.exceptions[event.vector] = self.exceptions.get(event.vector, 0) + 1
            result = self.domain.exception(self, event)
        self._finish(result)

    def _finish(self, result) -> None:
        self.sync()
        if type(result) is EngineCrash:
            self._on_crash(self.index, result.reason)

    def _take_sregs(self, cs: Segment | None = None, ss: Segment | None = None) -> None:
        # The segment registers of this exit with ring 3's CS and SS: KVM's bytes, patched. The
        # same bytes as the last exit left (a loop of hypercalls) need no conversion.
        buf = ffi.buffer(self._raw[1])
        if cs is not None:
            _SEGMENT.pack_into(buf, _CS_OFFSET, *_segment_values(cs))
            _SEGMENT.pack_into(buf, _SS_OFFSET, *_segment_values(ss))
        if buf[:_SREGS.size] != self._last_sregs[0]:
            self._last_sregs = buf[:_SREGS.size], _unpack_sregs(self._raw[1])
        self._sregs, self._sregs_changed = self._last_sregs[1], False

    def _first_entry(self) -> None:
        # The vCPU started in hvm's start stub: SYSCALL set up as Xen has it, then the guest's
        # own entry state (paravirt.builder for vCPU 0, VCPUOP_initialise for the others, which
        # wait here for VCPUOP_up) in ring 3.
        ring0 = self.ring0
        self.engine.set_msrs({MSR_STAR: STAR, MSR_LSTAR: ring0.lstar, MSR_CSTAR: ring0.cstar, MSR_SFMASK: SFMASK})
        # A started vCPU's entry comes with _go set (start_pv): taken here, so that a later
        # park does not find it still set and go on at once.
        if (self._entry is None or self._go.is_set()) and not self._wait_for_start():
            return
        self._enter(*self._entry)

    def _enter(self, regs: Regs, sregs: SRegs) -> None:
        self._regs = _copy_regs(regs)
        self.set_sregs(sregs)
        if self._entry_msrs:
            self.engine.set_msrs(self._entry_msrs)
        self.sync()

    def start_pv(self, regs: Regs, sregs: SRegs, msrs: dict[int, int]) -> None:
        """VCPUOP_up (any thread): the vCPU, waiting in an exit, enters the guest with this."""
        self._entry, self._entry_msrs = (regs, sregs), msrs
        self._go.set()

    def park(self) -> None:
        """VCPUOP_down took effect (on the vCPU's thread, in an exit or an upcall): the vCPU
        stays there until ``start_pv`` or ``resume``."""
        self._parked = True

    def resume(self) -> None:
        """VCPUOP_up of a parked vCPU (any thread): it goes on with the state it had."""
        self._entry, self._entry_msrs = None, {}
        self._go.set()

    def _wait_for_start(self) -> bool:
        while not self._stopping():
            if self._go.wait(0.1):
                self._go.clear()
                return True
        return False

    @staticmethod
    def _syscall(regs: Regs, compat: bool):
        # SYSCALL left the return address in RCX and RFLAGS in R11 (AMD APM vol. 3, SYSCALL); RSP
        # is the guest's. PvDomain wants RIP past the instruction, as unicorn leaves it.
        regs.rip, regs.rflags = regs.rcx, regs.r11
        return (_SYSCALL, *_SYSCALL_SEGMENTS[compat])

    def _event(self, vector: int, error: int, regs: Regs, sregs: SRegs) -> Event:
        if vector >= 32:
            return Event(vector, external=True)       # a DPL-0 gate: INT n from ring 3 cannot get here
        if vector in ERROR_CODE_VECTORS:
            return Event(vector, error)
        if vector in (3, 4):
            # Through the DPL-3 gates: INT3 / INTO (one byte) or INT $3 / INT $4, RIP past it.
            length = 2 if self._code(sregs, regs.rip - 2, 2) == bytes([INT_IMM8, vector]) else 1
            return Event(vector, software=True, insn_length=length)
        if vector == 6:
            code = self._code(sregs, regs.rip, 2)
            if code is not None and code[0] == INT_IMM8:
                regs.rip += 2                         # INT n that raised #UD (module docstring)
                return Event(code[1], software=True, insn_length=2)
        return Event(vector)

    def _code(self, sregs: SRegs, va: int, length: int) -> bytes | None:
        try:
            return self._vcpu.read(sregs, va, length)
        except (PageFault, GuestMemoryError):
            return None

    def _ring3(self, selector: int, code: bool) -> Segment:
        flat = _FLAT.get((selector, code))
        if flat is not None:
            return flat
        try:
            # A descriptor of the guest's own GDT or LDT: read as the CPU loaded it.
            return self._vcpu.segment(_unpack_sregs(self._raw[1]), selector, code)
        except DomainCrash:
            # Cannot be: the CPU loaded it in ring 3. Keep the flat one rather than fail the exit.
            return _FLAT[(FLAT_RING3_CS64, True) if code else (FLAT_RING3_DS32, False)]

    def _crash(self, regs: Regs, reason: str) -> None:
        # Nothing to restore: the report shows where in hvm's ring 0 the vCPU is.
        self._regs = None
        self._on_crash(self.index, reason)

    def sync(self) -> None:
        """Write the registers held here to KVM (at the end of an exit, and before a crash report
        reads them)."""
        if self._raw is None or self._regs is None:
            return
        raw_regs, raw_sregs = self._raw
        _REGS.pack_into(ffi.buffer(raw_regs), 0, *(v & _MASK64 for v in _REG_VALUES(self._regs)))
        if self._sregs_changed:
            _pack_sregs(raw_sregs, self._sregs)
            self._last_sregs = ffi.buffer(raw_sregs)[:_SREGS.size], self._sregs
            self._sregs_changed = False
        kvm = self.engine.vcpu
        kvm.set_regs(raw_regs)
        kvm.set_sregs(raw_sregs)
        if self._reset:
            self._reset = False
            self._reset_mmu()

    # -- the engine PvDomain sees -------------------------------------------------------------
    def get_regs(self) -> Regs:
        return _copy_regs(self._regs)

    def set_regs(self, regs: Regs) -> None:
        self._regs = _copy_regs(regs)

    def get_sregs(self) -> SRegs:
        return _copy_sregs(self._sregs)

    def set_sregs(self, sregs: SRegs) -> None:
        self._sregs, self._sregs_changed = _copy_sregs(sregs), True

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        # FS and GS bases are the segment caches held here (written back with them).
        bases = {MSR_FS_BASE: self._sregs.fs.base, MSR_GS_BASE: self._sregs.gs.base}
        values = self.engine.get_msrs([i for i in indices if i not in bases])
        values.update((i, bases[i]) for i in indices if i in bases)
        return values

    def set_msrs(self, values: dict[int, int]) -> None:
        rest = dict(values)
        if MSR_FS_BASE in rest or MSR_GS_BASE in rest:
            sregs = self.get_sregs()
            sregs.fs.base = rest.pop(MSR_FS_BASE, sregs.fs.base)
            sregs.gs.base = rest.pop(MSR_GS_BASE, sregs.gs.base)
            self.set_sregs(sregs)
        if rest:
            self.engine.set_msrs(rest)

    def flush_tlb(self) -> None:
        self._reset = True

    def set_debugregs(self, breakpoints: list[int], dr6: int, dr7: int) -> None:
        if dr7 & 0xFF and self.note is not None:
            self.note(DEBUGREG_LIMIT)
        kvm = self.engine.vcpu
        regs = kvm.get_debugregs()
        for n, address in enumerate(breakpoints):
            regs.db[n] = address
        regs.dr6, regs.dr7 = dr6, dr7
        kvm.set_debugregs(regs)

    def get_debugregs(self) -> tuple[list[int], int, int]:
        regs = self.engine.vcpu.get_debugregs()
        return list(regs.db), regs.dr6, regs.dr7

    def cpuid(self, leaf: int, subleaf: int) -> tuple[int, int, int, int]:
        """The vCPU's CPUID table (what hvm gave KVM_SET_CPUID2): the forced-emulation CPUID."""
        found = self._cpuid.get((leaf, subleaf)) or self._cpuid.get((leaf, None))
        return found if found is not None else (0, 0, 0, 0)

    # -- upcalls and Xen timers: what the unicorn engine does between slices ------------------
    def attach_platform(self, controller, timers: list) -> None:
        """``controller`` says when an upcall is due (``intr``/``acknowledge``); ``timers`` are
        the vCPU's Xen timers (``tick``/``next_deadline_ns``). PvDomain.attach gives them."""
        self._controller, self._timers = controller, list(timers)

    def poke(self) -> None:
        """An upcall may be due (any thread): a vCPU inside an exit takes it before it returns
        to the guest; one running the guest is kicked out of KVM_RUN for it."""
        self._wake.set()
        if not self._in_exit and self.engine is not None and threading.get_ident() != self._thread:
            self.engine.kick()

    def fired(self) -> None:
        """The alarm went off (its thread): the next check arms it again."""
        self._armed = None
        self.poke()

    def halt(self) -> None:
        """SCHEDOP_block: the vCPU stays in its exit until an upcall is due (or the machine
        stops); the exit then delivers it."""
        while self._controller is not None and not self._stopping():
            self._wake.clear()
            for timer in self._timers:
                timer.tick()
            if self._controller.intr():
                return
            due = self._next_deadline()
            wait = 0.1 if due is None else min(0.1, max(0.0, (due - time.monotonic_ns()) / 1e9))
            self._wake.wait(wait)

    def _next_deadline(self) -> int | None:
        due = [d for d in (t.next_deadline_ns() for t in self._timers) if d is not None]
        return min(due) if due else None

    def _upcall_due(self) -> bool:
        for timer in self._timers:
            timer.tick()
        deadline = self._next_deadline()
        if deadline != self._armed:
            self._armed = deadline
            self._alarm.set(self, deadline)
        return self._controller.intr()

    def _upcall_now(self) -> None:
        # After an exit, before the guest runs again: an upcall that is due goes in now.
        if self._controller is None or self._regs is None or self._stopping() or not self._upcall_due():
            return
        self._deliver_upcall()

    def _after_kick(self) -> None:
        # KVM_RUN ended on a kick, I/O completed: an upcall that is due goes in, unless the vCPU
        # is inside hvm's ring 0 (its stub's exit takes it).
        if self._controller is None or self._stopping() or not self._upcall_due():
            return
        kvm = self.engine.vcpu
        raw_regs, raw_sregs = kvm.get_regs(), kvm.get_sregs()
        if raw_sregs.cs.dpl != 3:
            return
        events = kvm.get_vcpu_events()
        if events.exception.injected or events.exception.pending or events.interrupt.injected \
                or events.nmi.injected:
            # KVM_RUN ended with an exception on its way in (a #GP of CLI, say): moving RIP to the
            # upcall now would have it delivered there instead. Its exit comes first; the upcall
            # goes in at the end of that exit.
            return
        self._raw = raw_regs, raw_sregs
        self._regs = Regs(*_REGS.unpack_from(ffi.buffer(raw_regs)))
        self._take_sregs()
        self._deliver_upcall()

    def _deliver_upcall(self) -> None:
        vector = self._controller.acknowledge()
        if vector is None:
            return
        self.upcalls += 1
        self._finish(self.domain.exception(self, Event(vector, external=True)))
        self._hold_while_parked()


class _Alarm:
    """Kicks a vCPU out of KVM_RUN when its next Xen timer is due: the guest runs natively
    meanwhile and nothing else would stop it. One thread for the machine, started by the first
    timer."""

    def __init__(self, stopping: Callable[[], bool]):
        self._due: dict[Ring0Vcpu, int] = {}
        self._cond = threading.Condition()
        self._stopping = stopping
        self._thread: threading.Thread | None = None

    def set(self, view: Ring0Vcpu, deadline: int | None) -> None:
        """``view``'s next timer is due at ``deadline`` (CLOCK_MONOTONIC ns), or never."""
        with self._cond:
            if self._due.get(view) == deadline:
                return
            if deadline is None:
                self._due.pop(view, None)
                return
            self._due[view] = deadline
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="hvm-xen-pv-timers", daemon=True)
                self._thread.start()
            self._cond.notify()

    def _run(self) -> None:
        with self._cond:
            while not self._stopping():
                now = time.monotonic_ns()
                for view in [v for v, due in self._due.items() if due <= now]:
                    del self._due[view]
                    view.fired()
                soonest = min(self._due.values(), default=None)
                self._cond.wait(0.1 if soonest is None else min(0.1, max(0.0, (soonest - now) / 1e9)))


class Ring0Port(Device):
    """RING0_PORT on the machine's port bus: a write is a stub's exit, served on the vCPU
    thread that made it. ``vcpus`` are what PvDomain.attach takes as the vCPUs' engines."""

    name = "xen-pv-ring0"

    def __init__(self, machine, domain: "PvDomain", area):
        self.machine, self.domain, self.area = machine, domain, area
        self._entries: dict[int, tuple[Regs, SRegs]] = {}
        self._by_thread: dict[int, Ring0Vcpu] = {}
        self._lock = threading.Lock()
        self.reset_mmu = MmuReset(machine.vm, machine.memory.size)
        stopping = machine._stopping.is_set
        alarm = _Alarm(stopping)
        self.vcpus = [Ring0Vcpu(i, area.ring0(i), domain, machine.memory, self.reset_mmu, self._crash, stopping,
                                alarm) for i in range(machine.config.cpus)]
        self.views = dict(enumerate(self.vcpus))
        # What this host's KVM does not do for the guest, said once each on stderr.
        self.notes: list[str] = []
        for view in self.vcpus:
            view.note = self.note if machine.kvm_emulates else None

    def note(self, text: str) -> None:
        if text not in self.notes:
            self.notes.append(text)
            sys.stderr.write(f"hvm: warning: {text}\n")

    def set_entry(self, index: int, regs: Regs, sregs: SRegs) -> None:
        """Where vCPU ``index`` enters the guest after hvm's start stub."""
        self._entries[index] = (regs, sregs)

    def write(self, offset: int, size: int, value: int) -> None:
        view = self._by_thread.get(threading.get_ident())
        if view is None:
            view = self._bind()
        view.exit()

    def _bind(self) -> Ring0Vcpu:
        from hvm.cpuid import KVM_CPUID_FLAG_SIGNIFCANT_INDEX, cpuid_policy

        me = threading.current_thread()
        machine = self.machine
        for vcpu in machine.vcpus:
            if vcpu.thread is me:
                break
        else:
            raise RuntimeError("hvm's ring-0 port written from outside a vCPU thread")
        cfg = machine.config
        table: dict = {}
        for e in cpuid_policy(machine.kvm.supported_cpuid(), machine.host, vcpu.index, cfg.cpus, cfg.fallback,
                             machine.board.edit_cpuid):
            significant = e.flags & KVM_CPUID_FLAG_SIGNIFCANT_INDEX
            table[(e.function, e.index if significant else None)] = (e.eax, e.ebx, e.ecx, e.edx)
        view = self.vcpus[vcpu.index]
        view.bind(vcpu.engine, table, self._entries.get(vcpu.index))
        with self._lock:
            self._by_thread[threading.get_ident()] = view
        return view

    def _crash(self, index: int, reason: str) -> None:
        from hvm.outcome import End, Outcome

        self.sync(index)
        self.machine.finish(Outcome(End.CRASH, crash=self.machine.vcpus[index].crash(reason)))

    def sync(self, index: int) -> None:
        """Put vCPU ``index``'s registers, as the domain sees them, into KVM (for a crash report)."""
        self.vcpus[index].sync()

    def counters(self) -> list[str]:
        lines = []
        for index, view in sorted(self.views.items()):
            exc = ", ".join(f"{v:#x} {n}" for v, n in sorted(view.exceptions.items()))
            lines.append(f"ring 0, vCPU {index}: {view.syscalls} SYSCALLs, {view.upcalls} upcalls, "
                         f"exceptions by vector: {exc or 'none'}")
        lines.append(f"ring 0: {self.reset_mmu.count} KVM MMU resets (flush_tlb)")
        return lines
