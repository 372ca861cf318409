"""One unicorn CPU that all vCPUs of a machine take turns on, as in QEMU's single-threaded TCG.

Why one instance and not one per vCPU: unicorn keeps translated code per instance and drops it
only when that same instance writes to the page, so a second instance would go on running code
another vCPU has since patched (Linux rewrites its own text at run time: static keys, jump
labels, alternatives). With one instance, translated blocks (keyed by physical address and CPU
mode flags) are shared exactly as in QEMU's round-robin TCG. Each vCPU's architectural state is a
saved context, switched in when its turn comes: ``uc_context_save``/``restore`` copy QEMU's
CPUX86State up to ``end_reset_fields`` (registers, segment caches, control registers, MSRs,
FPU/SSE, hflags). The TLB and the jump cache it carries, both keyed by virtual address, are
flushed on every switch (``UC_CTL_TLB_FLUSH``).

Turns go round robin in arrival order (``Turns``): the holder runs for at least a quantum once
another vCPU waits, then queues behind it; an idle (halted) vCPU gives the CPU up. Every vCPU
keeps its own host thread, as under KVM, but only the turn holder executes guest code, so locked
instructions stay atomic and devices see one vCPU at a time.

Where hvm's rebuilt library can (uc_lib edit 18) and the host has a CPU to spare, each vCPU has an
instance of its own instead, and they run at once (QEMU's multi-threaded TCG, ``ParallelGroup``):
the library makes locked instructions atomic on the host and drops translated code in every
instance that a store reaches it from, and devices are entered under one lock (QEMU's big lock).
"""
from __future__ import annotations

import ctypes
import os
import struct
import threading
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from kvmffi import ffi

from ..bus import MmioBus
from ..errors import HostError
from ..memory import GuestMemory
from ..physmap import PhysMap, Window
from . import uc_context, uc_cpuid, uc_lib
from .uc_slicer import Slicer, StopTarget

if TYPE_CHECKING:
    from ..published import PublishedTable
    from .unicorn import UnicornEngine

CPU_MODEL = "BROADWELL"


def _uc():
    import unicorn  # imported only when the software engine is chosen
    from unicorn import x86_const
    return unicorn, x86_const


class _HookSlices:
    """Slices ended through hvm's C block hook (``_ucstop_build``), on a library without
    hvm's native slices: a block hook call per translated block."""

    def __init__(self, uc):
        self._state = _stop_hook(uc)

    def request(self) -> None:
        self._state.wanted = 1

    def target(self) -> StopTarget:
        from ._ucstop import ffi as stop_ffi

        return StopTarget(flag=int(stop_ffi.cast("uintptr_t", stop_ffi.addressof(self._state, "wanted"))))

    def watch(self, interrupt: bool, shadow: bool, nmi: bool) -> None:
        state = self._state
        state.window_skip = int(shadow or nmi)
        state.any_block = int(nmi)
        state.window = int(interrupt or nmi)

    @property
    def window_stops(self) -> int:
        return self._state.window_stops


class _NativeSlices:
    """Slices ended by hvm's rebuilt library itself (``uc_lib`` edit 5): a stop taken at the
    next block boundary, and the windows where the CPU would take an interrupt or an NMI found
    as QEMU finds them (STI and MOV SS shadows, NMI blocking until IRET included)."""

    REQUEST, DROP, WATCH = 1, 2, 3

    def __init__(self, uc, address: int):
        self._call = ffi.cast("uint64_t *(*)(void *, int, int)", address)
        self._uc = ffi.cast("void *", uc._uch.value)
        self._stops = self._call(self._uc, 0, 0)    # the library's count of window stops
        self._window = 0

    def request(self) -> None:
        self._call(self._uc, self.REQUEST, 0)

    def target(self) -> StopTarget:
        return StopTarget(fn=int(ffi.cast("uintptr_t", self._call)), uc=int(ffi.cast("uintptr_t", self._uc)),
                          request=self.REQUEST, drop=self.DROP)

    def watch(self, interrupt: bool, shadow: bool, nmi: bool) -> None:
        window = (1 if interrupt or shadow else 0) | (2 if nmi else 0)
        if window or self._window:
            self._call(self._uc, self.WATCH, window)
        self._window = window

    @property
    def window_stops(self) -> int:
        return self._stops[0]


def _export(name: str):
    """The rebuilt library's export ``name`` (uc_lib), as the binding's ctypes handle on
    libunicorn finds it, or None on a library without it (PyPI's)."""
    from unicorn.unicorn_py3.unicorn import uclib

    return getattr(uclib, name, None)


def _slices(uc):
    """How this library's slices end: natively when it is hvm's rebuilt one, else through the
    block hook."""
    native = _export(uc_lib.SLICE_EXPORT)
    if native is None or os.environ.get("HVM_UNICORN_BLOCK_HOOK"):
        return _HookSlices(uc)
    return _NativeSlices(uc, ctypes.cast(native, ctypes.c_void_p).value)


def _stop_hook(uc):
    """Install the C block hook through which every slice ends (see ``_ucstop_build``: a stop
    requested any other way can make unicorn run a storing instruction twice); returns the
    struct whose ``wanted`` field requests the stop."""
    import ctypes

    import unicorn
    from unicorn import x86_const
    from unicorn.unicorn_py3.unicorn import uclib  # the binding's own handle on libunicorn

    from ._ucstop import ffi, lib

    state = ffi.new("hvm_stop_t *")
    state.stop = ffi.cast("void *", ctypes.cast(uclib.uc_emu_stop, ctypes.c_void_p).value)
    state.reg_read = ffi.cast("void *", ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value)
    state.eflags_id = x86_const.UC_X86_REG_EFLAGS
    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(
        uc._uch, ctypes.byref(handle), unicorn.UC_HOOK_BLOCK,
        ctypes.c_void_p(int(ffi.cast("uintptr_t", lib.hvm_block_hook_address()))),
        ctypes.c_void_p(int(ffi.cast("uintptr_t", state))), ctypes.c_uint64(1), ctypes.c_uint64(0))
    if status != unicorn.UC_ERR_OK:
        raise HostError(f"unicorn refused hvm's block hook: {unicorn.UcError(status)}")
    return state


# Exceptions the CPU delivers itself once hvm's rebuilt library offers it (uc_lib.NATIVE_EXPORT):
# all but #DF (a #DF whose own delivery fails ends the run as a shutdown, which hvm's delivery
# reports) and NMI, which only hvm injects (#UD too, where the library lacks edit 19: unicorn
# stops at an undefined opcode there). A #PF at CPL3 without the U bit (a supervisor-mode access
# of a far return's or IRET's frame, which edit 20 makes user accesses as the SDM has them) still
# comes to hvm, whose SMAP handling PyPI's library needs (unicorn.py).
NATIVE_VECTORS = 0xFFFFFFFF & ~(1 << 2 | 1 << 8)


def _native_events(uc):
    """The library's switch for events the CPU delivers itself, as a callable
    ``(vectors, software) -> counts`` (a per-vector array of those it delivered), or None."""
    switch = _export(uc_lib.NATIVE_EXPORT)
    if switch is None or os.environ.get("HVM_UNICORN_PY_EVENTS"):
        return None
    switch.restype = ctypes.POINTER(ctypes.c_uint64)
    switch.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_int]
    handle = uc._uch
    return lambda vectors, software: switch(handle, vectors, software, 1)


def _in_hook(uc, python_in, published: "PublishedTable | None"):
    """Install hvm's C IN hook (``_ucstop_build``: published registers and the PIT's channel 2
    answered in C, everything else passed to ``python_in``); returns its state, which holds the
    callback and the tables alive and counts the reads C answered (``served``)."""
    from unicorn import x86_const
    from unicorn.unicorn_py3.unicorn import uclib

    from ..published import SLOTS
    from ._ucstop import ffi as uffi, lib as ulib

    state = uffi.new("hvm_in_t *")
    keep = [state]
    if published is not None:
        table = uffi.from_buffer("hvm_published[]", published.buffer)
        timer = uffi.cast("hvm_timer2 *", uffi.from_buffer(published.timer2.buffer))
        keep += [table, published.timer2.buffer]
        state.published, state.slots, state.timer2 = table, SLOTS, timer
    state.reg_read = uffi.cast("void *", ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value)
    state.cs_id = x86_const.UC_X86_REG_CS
    callback = uffi.callback("uint32_t(void *, uint32_t, int, void *)",
                             lambda _uc, port, size, _user: python_in(None, port, size, None))
    state.python = callback
    keep.append(callback)
    _insn_hook(uc, ulib.hvm_in_hook_address(), state, x86_const.UC_X86_INS_IN, "IN")
    return state, keep


def _insn_hook(uc, address, state, insn: int, what: str) -> None:
    """Install the C function at ``address`` (a cffi pointer) as the hook of instruction
    ``insn`` for the whole address space, with ``state`` (cffi) as its user data."""
    import unicorn
    from unicorn.unicorn_py3.unicorn import uclib

    from ._ucstop import ffi as uffi

    handle = ctypes.c_size_t()
    status = uclib.uc_hook_add(
        uc._uch, ctypes.byref(handle), unicorn.UC_HOOK_INSN,
        ctypes.c_void_p(int(uffi.cast("uintptr_t", address))),
        ctypes.c_void_p(int(uffi.cast("uintptr_t", state))), ctypes.c_uint64(1), ctypes.c_uint64(0),
        ctypes.c_int(insn))
    if status != unicorn.UC_ERR_OK:
        raise HostError(f"unicorn refused hvm's {what} hook: {unicorn.UcError(status)}")


# How long the first byte of a queued run may wait for the slice's end (hvm/published.py).
QUEUE_BATCH_NS = 100_000


def _out_hook(uc, python_out, published: "PublishedTable | None"):
    """Install hvm's C OUT hook (``_ucstop_build``: writes a device lets be queued are queued in
    C, everything else passed to ``python_out`` through a cffi callback, several µs cheaper than
    the binding's ctypes one); returns its state, which holds the callback and the table alive."""
    from unicorn import x86_const
    from unicorn.unicorn_py3.unicorn import uclib

    from ..published import QUEUE_SLOTS
    from ._ucstop import ffi as uffi, lib as ulib

    state = uffi.new("hvm_out_t *")
    keep = [state]
    if published is not None:
        queued = uffi.from_buffer("hvm_queued[]", published.queued)
        keep += [queued, published.queued]
        state.queued, state.slots = queued, QUEUE_SLOTS
    state.reg_read = uffi.cast("void *", ctypes.cast(uclib.uc_reg_read, ctypes.c_void_p).value)
    state.cs_id = x86_const.UC_X86_REG_CS
    state.batch_ns = QUEUE_BATCH_NS
    callback = uffi.callback("void(void *, uint32_t, int, uint32_t, void *)",
                             lambda _uc, port, size, value, _user: python_out(None, port, size, value, None))
    state.python = callback
    keep.append(callback)
    _insn_hook(uc, ulib.hvm_out_hook_address(), state, x86_const.UC_X86_INS_OUT, "OUT")
    return state, keep


def _native_syscall(uc):
    """The library's switch for SYSCALL carried out by the CPU (uc_lib edit 7), as a callable
    ``(on) -> count`` (a pointer to the number it carried out), or None."""
    switch = _export(uc_lib.SYSCALL_EXPORT)
    if switch is None or os.environ.get("HVM_UNICORN_PY_EVENTS"):
        return None
    switch.restype = ctypes.POINTER(ctypes.c_uint64)
    switch.argtypes = [ctypes.c_void_p, ctypes.c_int]
    handle = uc._uch
    return lambda on: switch(handle, on)


def _checks_io() -> bool:
    """Whether the library raises #GP for I/O the CPL, IOPL and TSS bitmap forbid (uc_lib edit
    14); PyPI's does not, and hvm checks in its port hooks instead."""
    return _export(uc_lib.IO_CHECK_EXPORT) is not None


def _pause_exit(uc):
    """The library's PAUSE-loop exit (uc_lib edit 12) as a cffi function of (uc, limit), or None."""
    if _export(uc_lib.PAUSE_EXPORT) is None:
        return None
    fn = _libunicorn(uc, uc_lib.PAUSE_EXPORT, "uint64_t *(*)(void *, int)")
    handle = ffi.cast("void *", uc._uch.value)
    return lambda limit: fn(handle, limit)


def arch_capabilities_supported() -> bool:
    """Whether the library answers RDMSR of IA32_ARCH_CAPABILITIES (uc_lib edit 17)."""
    return _export(uc_lib.ARCH_CAP_EXPORT) is not None


def _set_arch_capabilities(uc) -> None:
    """Have the CPU enumerate IA32_ARCH_CAPABILITIES and read uc_cpuid.ARCH_CAPABILITIES from it,
    where the library can (CPUID itself is answered from hvm's table: uc_cpuid.policy_table)."""
    if arch_capabilities_supported():
        fn = _libunicorn(uc, uc_lib.ARCH_CAP_EXPORT, "void (*)(void *, uint64_t, int)")
        fn(ffi.cast("void *", uc._uch.value), uc_cpuid.ARCH_CAPABILITIES, 1)


def _irq(uc):
    """The library's delivery of external interrupts by the CPU (uc_lib edit 16) as a callable
    ``(vector) -> slot`` (where the vector + 1 waits until delivered; a vector outside 0-255 only
    asks), or None."""
    if _export(uc_lib.IRQ_EXPORT) is None or os.environ.get("HVM_UNICORN_PY_EVENTS"):
        return None
    fn = _libunicorn(uc, uc_lib.IRQ_EXPORT, "int *(*)(void *, int)")
    handle = ffi.cast("void *", uc._uch.value)
    return lambda vector: fn(handle, vector)


class Registers:
    """A fixed list of registers read or written in one call into libunicorn
    (``uc_reg_read_batch``/``uc_reg_write_batch`` through cffi): the binding's ``reg_read``
    costs ~3 µs a register, this ~0.5 µs for the list (measured with 2.1.4). Each value is a
    64-bit slot; a narrower register fills its low bytes only, so the caller masks it."""

    def __init__(self, uc, ids: list[int]):
        from unicorn.unicorn_py3.unicorn import uclib

        self._n = len(ids)
        self._ids = ffi.new("int[]", ids)
        self._vals = ffi.new("uint64_t[]", self._n)
        self._ptrs = ffi.new("void *[]", [self._vals + i for i in range(self._n)])
        self._handle = ffi.cast("void *", uc._uch.value)
        signature = "int (*)(void *, int *, void **, int)"
        self._read = ffi.cast(signature, ctypes.cast(uclib.uc_reg_read_batch, ctypes.c_void_p).value)
        self._write = ffi.cast(signature, ctypes.cast(uclib.uc_reg_write_batch, ctypes.c_void_p).value)

    def read(self) -> list[int]:
        if self._read(self._handle, self._ids, self._ptrs, self._n):
            raise HostError("unicorn refused a register read")
        return self._vals[0:self._n]

    def write(self, values: list[int]) -> None:
        self._vals[0:self._n] = values
        if self._write(self._handle, self._ids, self._ptrs, self._n):
            raise HostError("unicorn refused a register write")


def _libunicorn(uc, name: str, signature: str):
    """libunicorn's ``name`` as a cffi function pointer, for calls the binding makes through
    ctypes at several µs each (argument conversion, varargs)."""
    from unicorn.unicorn_py3.unicorn import uclib

    return ffi.cast(signature, ctypes.cast(getattr(uclib, name), ctypes.c_void_p).value)


class DirectCalls:
    """``flush_tlb`` and ``emu_start`` straight into libunicorn (~0.5 µs against ~7 µs through
    the binding). ``emu_start`` keeps the binding's contract: an exception a Python hook raised
    is re-raised when the run returns."""

    def __init__(self, uc):
        import unicorn

        self._uc = uc
        self._handle = ffi.cast("void *", uc._uch.value)
        self._ctl = _libunicorn(uc, "uc_ctl", "int (*)(void *, int, ...)")
        # uc_ctl's control word: operation << 30 | argument count << 26 | control (unicorn.h).
        self._flush = ffi.cast("int", unicorn.UC_CTL_IO_WRITE << 30 | unicorn.UC_CTL_TLB_FLUSH)
        self._start = _libunicorn(uc, "uc_emu_start", "int (*)(void *, uint64_t, uint64_t, uint64_t, size_t)")
        self._error = unicorn.UcError

    def flush_tlb(self) -> None:
        if self._ctl(self._handle, self._flush):
            raise HostError("unicorn refused a TLB flush")

    def emu_start(self, begin: int, until: int, count: int = 0) -> None:
        uc = self._uc
        uc._hook_exception = None
        status = self._start(self._handle, begin, until, 0, count)
        if status:
            raise self._error(status)
        if uc._hook_exception is not None:
            raise uc._hook_exception


# -- string I/O ---------------------------------------------------------------------------------
# Prefixes (SDM vol. 2A, 2.1.1) and the INS (6C/6D) and OUTS (6E/6F) opcodes. REPNE repeats
# INS/OUTS as REP does (QEMU treats both alike; the SDM leaves F2 with them undefined).
_REP = (0xF2, 0xF3)
_OPERAND_SIZE, _ADDRESS_SIZE = 0x66, 0x67
_SEGMENT_OVERRIDE = {0x26: uc_context.ES, 0x2E: uc_context.CS, 0x36: uc_context.SS,
                     0x3E: uc_context.DS, 0x64: uc_context.FS, 0x65: uc_context.GS}
_INS, _OUTS = (0x6C, 0x6D), (0x6E, 0x6F)
_MAX_INSN = 15                # bytes (SDM vol. 2A, 2.3.11)
CR0_PG = 1 << 31
_TF, _DF = 1 << 8, 1 << 10
_HF_IOBPT = 1 << 24           # QEMU's hflags: an I/O breakpoint is armed in DR7
_PAGE = 4096
_MASK64 = (1 << 64) - 1
_RECHECK = 64                 # accesses at a site found to be no string instruction before another look
_SITE_LIMIT = 4096


class StringIo:
    """REP INS/OUTS served a run of elements per hook call, instead of one.

    QEMU 5's TCG (target/i386/translate.c, ``gen_ins``/``gen_outs`` inside ``gen_repz``) runs a
    REP INS/OUTS one element per pass: it computes the memory address A0 from ES:(E)DI (INS) or
    seg:(E)SI (OUTS); calls the port helper, where unicorn runs the IN/OUT hook (INS has stored a
    dummy 0 at A0 before, OUTS has loaded element 0 from A0); INS stores the value at A0; then it
    steps (E)DI/(E)SI and decrements (E)CX, reading them from the CPU state after the helper (a
    helper may change any register), and passes again while (E)CX is not 0. A hook that moves
    elements 1..n-1 itself and steps the registers by n-1 elements leaves TCG to store element 0
    and make the last step: the instruction then stands exactly as after n passes
    (``tests/machine/test_string_io.py`` checks it against the SDM's INS/OUTS/REP).

    Runs are taken only where every address is certain: paging off (linear = physical; A20 is
    not modelled), not virtual-8086 mode, no single-step or I/O breakpoint pending, elements
    inside A0's 4 KiB page without wrapping the address size, all in one RAM window (writable
    for INS). Otherwise the hook serves the one element TCG asked for, as always. Unicorn drops
    translated code when its own stores hit it but not after writes into its memory from
    outside, so that of the bytes INS writes is dropped here (its API takes linear addresses:
    exact with paging off)."""

    def __init__(self, core: "UnicornCore"):
        _, x86 = _uc()
        uc = core.uc
        self.core, self.uc = core, uc
        self._where = Registers(uc, [x86.UC_X86_REG_CS, x86.UC_X86_REG_RIP, x86.UC_X86_REG_CR0])
        self._counters = Registers(uc, [x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDI, x86.UC_X86_REG_RSI,
                                         x86.UC_X86_REG_RFLAGS])
        self._step_in = Registers(uc, [x86.UC_X86_REG_RCX, x86.UC_X86_REG_RDI])
        self._step_out = Registers(uc, [x86.UC_X86_REG_RCX, x86.UC_X86_REG_RSI])
        self._state = uc.context_save()   # scratch copy of the CPU: hflags and segment caches
        self._layout = core.fields.layout
        self._sites: dict[tuple[int, int], int] = {}
        self.runs = self.elements = 0     # runs served at once, and the elements they moved

    def where(self) -> tuple[int, int, int]:
        """(CS selector, RIP, CR0) of the instruction in the hook."""
        cs, rip, cr0 = self._where.read()
        return cs & 0xFFFF, rip, cr0

    def ins(self, read_string, port: int, size: int, cs: int, rip: int) -> int | None:
        """Serve a run of the REP INS at CS:RIP: elements 1.. into memory, registers stepped;
        returns element 0 for TCG to store, or None if this is no such run."""
        plan = self._plan(cs, rip, _INS, size)
        if plan is None:
            return None
        a0, step, n, amask, rcx, offset_reg = plan
        lo, hi = (a0 + size, a0 + n * size) if step > 0 else (a0 - (n - 1) * size, a0)
        memory = self.core.memory
        window = self.core.physmap.window_at(lo)
        if window is None or window.readonly or window.owner is not memory or hi > window.end:
            return None
        data = read_string(port, size, n)
        taken = len(data) // size
        if taken > 1:
            rest = data[size:]
            if step < 0:   # element j goes to A0 - j*size: the lowest address holds the last one
                rest = b"".join(rest[i:i + size] for i in range(len(rest) - size, -1, -size))
            start = a0 + size if step > 0 else a0 - (taken - 1) * size
            memory.write(start, rest)
            self.core.outside_write(start, len(rest), window.host_addr + start - window.gpa)
            self._step_in.write(self._stepped(rcx, offset_reg, taken, step, amask))
            self.runs += 1
            self.elements += taken
        return int.from_bytes(data[:size], "little")

    def outs(self, write_string, port: int, size: int, value: int, cs: int, rip: int) -> bool:
        """Serve a run of the REP OUTS at CS:RIP, element 0 being ``value``; False if this is no
        such run (nothing was written)."""
        plan = self._plan(cs, rip, _OUTS, size)
        if plan is None:
            return False
        a0, step, n, amask, rcx, offset_reg = plan
        lo, hi = (a0 + size, a0 + n * size) if step > 0 else (a0 - (n - 1) * size, a0)
        memory = self.core.memory
        window = self.core.physmap.window_at(lo)
        if window is None or window.owner is not memory or hi > window.end:
            return False
        rest = memory.read(lo, hi - lo)
        if step < 0:
            rest = b"".join(rest[i:i + size] for i in range(len(rest) - size, -1, -size))
        taken = write_string(port, size, (value & ((1 << (8 * size)) - 1)).to_bytes(size, "little") + rest)
        if taken > 1:
            self._step_out.write(self._stepped(rcx, offset_reg, taken, step, amask))
            self.runs += 1
            self.elements += taken
        return True

    @staticmethod
    def _stepped(rcx: int, offset_reg: int, taken: int, step: int, amask: int) -> list[int]:
        # Elements 1..taken-1 done: (E)CX and (E)DI/(E)SI move by that many, at the address
        # size; the bits above it stay (16-bit addressing writes CX and DI only).
        keep = _MASK64 ^ amask
        return [rcx & keep | (rcx - (taken - 1)) & amask,
                offset_reg & keep | (offset_reg + (taken - 1) * step) & amask]

    def _plan(self, cs: int, rip: int, opcodes: tuple[int, int], size: int):
        """(A0, step, elements, address mask, RCX, RDI or RSI) of a run the hook may serve."""
        key = (cs, rip)
        wait = self._sites.get(key)
        if wait:
            self._sites[key] = wait - 1
            return None
        uc = self.uc
        uc.context_update(self._state)
        raw = ctypes.string_at(self._state.context.value + self._layout.hflags,
                               self._layout.segs - self._layout.hflags + 24 * 6)
        hflags = struct.unpack_from("<I", raw)[0]
        segs = [struct.unpack_from("<I4xQII", raw, self._layout.segs - self._layout.hflags + 24 * i)
                for i in range(6)]
        if hflags & (uc_context.HF_CS64 | uc_context.HF_VM | _HF_IOBPT):
            return None   # long mode pages; vm86 and I/O breakpoints want each element seen
        decoded = self._decode(segs[uc_context.CS][1], rip, opcodes)
        if decoded is None:
            if len(self._sites) >= _SITE_LIMIT:
                self._sites.clear()
            self._sites[key] = _RECHECK
            return None
        toggle, override = decoded
        rcx, rdi, rsi, rflags = self._counters.read()
        if rflags & _TF:
            return None
        # Address size (SDM vol. 1, 3.6): CS.D, flipped by 67h. Legacy modes only (see above).
        wide = bool(hflags & uc_context.HF_CS32) != toggle
        amask = 0xFFFFFFFF if wide else 0xFFFF
        count = rcx & amask
        offset_reg = rdi if opcodes is _INS else rsi
        offset = offset_reg & amask
        # The segment as QEMU's gen_lea_v_seg picks it: ES for INS (no override), DS or the
        # override for OUTS; with no override the base is added only when hflags' ADDSEG says
        # some base is not 0 (with it clear, all of DS, ES and SS have base 0 anyway).
        segment = override if opcodes is _OUTS else None
        if segment is None and hflags & uc_context.HF_ADDSEG:
            segment = uc_context.ES if opcodes is _INS else uc_context.DS
        base = segs[segment][1] if segment is not None else 0
        a0 = (base + offset) & 0xFFFFFFFF
        if rflags & _DF:
            step = -size
            n = min(count, offset // size + 1, (a0 & (_PAGE - 1)) // size + 1)
        else:
            step = size
            n = min(count, (amask + 1 - offset) // size, (_PAGE - (a0 & (_PAGE - 1))) // size)
        if n < 2:
            return None
        return a0, step, n, amask, rcx, offset_reg

    def _decode(self, cs_base: int, rip: int, opcodes: tuple[int, int]) -> tuple[bool, int | None] | None:
        """(67h seen, segment override) if the instruction at CS:RIP is a REP form of one of
        ``opcodes``; None if it is not (or its bytes are not in RAM or ROM)."""
        linear = (cs_base + rip) & 0xFFFFFFFF
        window = self.core.physmap.window_at(linear)
        if window is None:
            return None
        length = min(_MAX_INSN, window.end - linear)
        code = bytes(ffi.buffer(ffi.cast("char *", window.host_addr + linear - window.gpa), length))
        rep, toggle, override = False, False, None
        for byte in code:
            if byte in _REP:
                rep = True
            elif byte == _ADDRESS_SIZE:
                toggle = True
            elif byte in _SEGMENT_OVERRIDE:
                override = _SEGMENT_OVERRIDE[byte]   # the last one counts, as in QEMU
            elif byte != _OPERAND_SIZE:              # the size comes with the hook
                return (toggle, override) if rep and byte in opcodes else None
        return None


class Turns:
    """A re-entrant lock handed over in arrival order (a plain Lock lets its releaser take it
    straight back, which would starve the other vCPUs)."""

    def __init__(self, on_wait: Callable[[], None] = lambda: None):
        self._cond = threading.Condition(threading.Lock())
        self._queue: deque[int] = deque()
        self.holder: int | None = None
        self._depth = 0
        self.on_wait = on_wait  # called when a thread starts waiting: the holder may yield early

    def acquire(self) -> None:
        me = threading.get_ident()
        if self.holder == me:  # only this thread can have made it equal
            self._depth += 1
            return
        with self._cond:
            if self.holder is None and not self._queue:
                self.holder, self._depth = me, 1
                return
            self._queue.append(me)
        self.on_wait()
        with self._cond:
            while self.holder is not None or self._queue[0] != me:
                self._cond.wait()
            self._queue.popleft()
            self.holder, self._depth = me, 1

    def release(self) -> None:
        self._depth -= 1
        if not self._depth:
            with self._cond:
                self.holder = None
                self._cond.notify_all()

    @property
    def wanted(self) -> bool:
        """Another thread waits for its turn."""
        return bool(self._queue)


# The vCPU engine a thread runs (parallel groups: the local APIC page answers for it).
running = threading.local()


def parallel_supported() -> bool:
    """Whether the library can run instances at once over the same RAM (uc_lib edit 18)."""
    return _export(uc_lib.PARALLEL_EXPORT) is not None


class ParallelGroup:
    """The instances of one machine's vCPUs, each run by its vCPU's thread at the same time as
    the others (uc_lib edit 18), and the lock every entry into the machine's devices takes."""

    def __init__(self):
        self.handle = ffi.NULL   # the library's group, made by the first join; freed by it
        self.bql = threading.RLock()

    def join(self, uc) -> "Callable[[int, int], None]":
        """Add ``uc``; returns its ``(host address, length)`` call that has the others drop code
        translated from guest RAM written outside the CPUs."""
        fn = _libunicorn(uc, uc_lib.PARALLEL_EXPORT, "void *(*)(void *, void *)")
        handle = ffi.cast("void *", uc._uch.value)
        group = fn(handle, self.handle)
        if group == ffi.NULL:
            raise HostError("unicorn could not add a vCPU's instance to the machine's parallel group")
        self.handle = group
        written = _libunicorn(uc, uc_lib.OUTSIDE_WRITE_EXPORT, "void (*)(void *, uint64_t, uint32_t)")
        return lambda host, length: written(handle, host, length)


class _Unlocked:
    """The device lock of a core whose vCPUs take turns: the turn already excludes the others."""

    def __enter__(self) -> None:
        pass

    def __exit__(self, *exc) -> None:
        pass


def _dead_read(addr: int, size: int) -> int:
    return (1 << (8 * size)) - 1


def _dead_write(addr: int, size: int, value: int) -> None:
    pass


class _DeadMmio:
    read, write = staticmethod(_dead_read), staticmethod(_dead_write)


_DEAD_MMIO = _DeadMmio()


class UnicornCore:
    """The unicorn instance, its hooks (which act for the vCPU whose turn it is), the slicer
    thread that ends time slices, and the switching of vCPU contexts."""

    def __init__(self, memory: GuestMemory, mmio: MmioBus, physmap: PhysMap | None = None,
                 published: "PublishedTable | None" = None, group: ParallelGroup | None = None):
        self.memory, self.mmio = memory, mmio
        # One vCPU's instance in a group that runs at once: devices under the group's lock, and
        # memory map changes made by another vCPU's thread applied by this one's (``_remap``).
        self.group = group
        self.bql = group.bql if group is not None else _Unlocked()
        self.owner: int | None = None       # the thread running this core's vCPU, once it runs
        self._remaps: list[tuple[list[Window], list[Window]]] = []
        self._outside_write: Callable[[int, int], None] | None = None
        self.published = published  # registers the C IN hook answers (hvm/published.py)
        self._in_hook = None
        self._out_hook = None
        self.physmap = physmap if physmap is not None else PhysMap(memory)
        self._undo: list[tuple[int, bytes]] = []  # stores unicorn made into read-only windows
        self._guards: dict[tuple[int, int], int] = {}  # read-only window -> its write hook
        self._native = None
        self.native_counts = None  # what the CPU delivered itself, by vector (a ctypes array)
        self.uc = None
        self.current: UnicornEngine | None = None
        self.engines: list[UnicornEngine] = []
        self.turns = Turns(self.cut)
        self.slicer: Slicer | None = None
        self.switches = 0
        self.hook_failure: BaseException | None = None
        self.strings: StringIo | None = None
        self._stop = None
        self._reset = None  # a fresh CPU's context: where a started AP's state is built

    def add(self, engine: "UnicornEngine") -> None:
        self.engines.append(engine)
        if self.uc is not None:
            engine.bind(self)

    def create(self, engine: "UnicornEngine") -> None:
        """Create the instance; ``engine`` owns its state. It is a 64-bit instance whatever
        mode the guest starts in: the mode an instance is created in only sets the width at
        which the API reads and writes registers, and a narrower one truncates RIP, GDTR and
        IDTR once the guest enters long mode (a multiboot kernel, firmware). set_sregs puts it
        in real or protected mode."""
        unicorn, x86 = _uc()
        uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
        # An explicit model, so the instruction set (and what CPUID reports) does not change with
        # unicorn's default: Broadwell is the newest one whose features QEMU 5's TCG executes
        # (SSE4.2, POPCNT, AES, PCLMULQDQ, MOVBE, BMI1/2, ADX, SMAP; AVX is filtered out).
        uc.ctl_set_cpu_model(getattr(x86, f"UC_CPU_X86_{CPU_MODEL}"))
        for window in self.physmap.windows():
            self._map(uc, window)
            self._guard(uc, window)
        for base, size in self.physmap.holes():
            uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        self.physmap.subscribe(self._remap)
        self._in_hook = _in_hook(uc, self._in, self.published)
        self._out_hook = _out_hook(uc, self._out, self.published)
        # No `until` address: emu_start walks the guest's page tables for it, and when it is not
        # mapped (any sentinel is not) the failed walk overwrites CR2, which a #PF handler reads
        # (measured with 2.1.4). An empty exit list means "run until stopped" without that walk.
        uc.ctl_exits_enabled(True)
        uc.ctl_set_exits([])
        uc.hook_add(unicorn.UC_HOOK_INTR, self._interrupt)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._syscall, None, 1, 0, x86.UC_X86_INS_SYSCALL)
        # Unicorn turns SYSENTER into a no-op that calls this hook; SYSEXIT it runs itself.
        uc.hook_add(unicorn.UC_HOOK_INSN, self._sysenter, None, 1, 0, x86.UC_X86_INS_SYSENTER)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._cpuid, None, 1, 0, x86.UC_X86_INS_CPUID)
        self._stop = _slices(uc)
        self._native = _native_events(uc)
        self._syscall_switch = _native_syscall(uc)
        self._native_syscalls = None  # the library's count, once the switch was used
        self._pause_exit = _pause_exit(uc)
        self._pause_limit = 0
        self._irq = _irq(uc)
        self._irq_slot = self._irq(-1) if self._irq is not None else None
        self._irq_on = False
        self._checks_io = _checks_io()
        self._pause_stops = self._pause_exit(0) if self._pause_exit is not None else None
        try:
            self.fields = uc_context.ContextFields(uc, uc_context.layout())
        except uc_context.LayoutError as exc:
            raise HostError(f"unicorn {unicorn.__version__} cannot be used by hvm: {exc}") from None
        self.uc = uc
        self.direct = DirectCalls(uc)
        self.strings = StringIo(self)
        self._dr7 = x86.UC_X86_REG_DR7
        _set_arch_capabilities(uc)   # before the reset context is taken: every vCPU's CPU has it
        if self.group is not None:
            self._outside_write = self.group.join(uc)
        self._reset = uc.context_save()
        self.current = engine
        for e in self.engines:
            e.bind(self)

    # -- the memory map --------------------------------------------------------------------------
    @staticmethod
    def _map(uc, window: Window) -> None:
        unicorn, _ = _uc()
        perms = unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC if window.readonly else unicorn.UC_PROT_ALL
        uc.mem_map_ptr(window.gpa, window.size, perms, window.host_addr)

    def native_events(self, on: bool) -> None:
        """Let the CPU deliver exceptions, software interrupts and (``give_irq``) external ones
        itself (QEMU's do_interrupt, ~1 us) or hand them all to hvm (``UC_HOOK_INTR``, delivered
        in Python: ~250 us); a no-op where the library has no such switch (PyPI's, or
        HVM_UNICORN_PY_EVENTS set)."""
        if self._native is not None:
            self.native_counts = self._native(NATIVE_VECTORS if on else 0, int(on))
        self._irq_on = on and self._irq is not None
        self.native_syscall(on)

    @property
    def gives_irqs(self) -> bool:
        """Whether ``give_irq`` may be used: not with PyPI's library, for a PV guest (see
        ``native_events``) or with HVM_UNICORN_PY_EVENTS; hvm delivers them itself then."""
        return self._irq_on

    def give_irq(self, vector: int) -> None:
        """Have the CPU deliver external interrupt ``vector`` at the start of the next run, as
        QEMU's cpu_exec does (~1 us against ~250 us in Python); hvm has checked that it may be
        taken (EFLAGS.IF, no interrupt shadow) and acknowledged it."""
        self._irq(vector)

    def irq_left(self) -> int | None:
        """The vector given to the CPU that the last run did not deliver, taken back; None
        when there is none (the run always starts by delivering it)."""
        slot = self._irq_slot
        if slot is None or not slot[0]:
            return None
        vector, slot[0] = slot[0] - 1, 0
        return vector

    def native_syscall(self, on: bool) -> None:
        """Let the CPU carry out SYSCALL itself (no slice end, no Python) or hand it to hvm's
        hook; a no-op where the library cannot."""
        if self._syscall_switch is not None:
            self._native_syscalls = self._syscall_switch(int(on))

    @property
    def in_served(self) -> int:
        """IN instructions the C hook answered without Python."""
        return 0 if self._in_hook is None else self._in_hook[0].served

    def outside_write(self, gpa: int, length: int, host_addr: int) -> None:
        """Guest RAM at ``gpa`` (``host_addr`` on the host) was written outside the CPU (not by a
        guest store): translated code from it is dropped, in every instance of a parallel group."""
        self.uc.ctl_remove_cache(gpa, gpa + length)   # linear: exact with paging off (StringIo)
        if self._outside_write is not None:
            self._outside_write(host_addr, length)

    @property
    def out_queued(self) -> int:
        """OUT instructions the C hook queued for their device (hvm/published.py)."""
        return 0 if self._out_hook is None else self._out_hook[0].served

    def slicer_started(self) -> None:
        """The slicer exists: a run of queued writes may now bring the slice's end forward."""
        if self._out_hook is not None and self.slicer is not None:
            self._out_hook[0].slicer = self.slicer.handle

    def pause_exits(self, limit: int) -> None:
        """From the next run on, its ``limit``th PAUSE ends it (0: PAUSE never does); a no-op
        on a library without uc_lib edit 12."""
        if self._pause_exit is not None and (limit or self._pause_limit):
            self._pause_exit(limit)
            self._pause_limit = limit

    @property
    def pause_stops(self) -> int:
        """Runs a PAUSE loop ended so far."""
        return 0 if self._pause_stops is None else self._pause_stops[0]

    @property
    def native_syscalls(self) -> int:
        """SYSCALLs the CPU carried out itself so far."""
        return 0 if self._native_syscalls is None else self._native_syscalls[0]

    def _guard(self, uc, window: Window) -> None:
        """Hook stores into ``window`` if it is read-only, and there only: unicorn keeps every
        page a write-protection hook covers on its slow store path for good (``notdirty_write``
        in its cputlb.c declines to mark a page dirty where any memory hook is installed), so a
        hook over the whole address space kept even NX pages there (~60 ns a store, not ~5)."""
        unicorn, _ = _uc()
        if window.readonly and (window.gpa, window.size) not in self._guards:
            self._guards[(window.gpa, window.size)] = uc.hook_add(
                unicorn.UC_HOOK_MEM_WRITE_PROT, self._write_protected, None, window.gpa, window.end - 1)

    def _unguard(self, uc, window: Window) -> None:
        handle = self._guards.pop((window.gpa, window.size), None)
        if handle is not None:
            uc.hook_del(handle)

    def _remap(self, removed: list[Window], added: list[Window]) -> None:
        # On the thread that changed the map (a vCPU's port hook, inside emu_start: unicorn
        # allows it, and drops translated code of the range, measured with 2.1.4). Another
        # vCPU's instance in a parallel group is changed by its own thread before its next slice.
        uc = self.uc
        if uc is None:
            return
        if self.owner is not None and self.owner != threading.get_ident():
            with self.bql:
                self._remaps.append((removed, added))
            self.cut()
            return
        self._apply_remap(uc, removed, added)

    def take_remaps(self) -> None:
        """Apply the memory map changes another vCPU's thread made (on this core's thread)."""
        with self.bql:
            remaps, self._remaps = self._remaps, []
        for removed, added in remaps:
            self._apply_remap(self.uc, removed, added)

    def _apply_remap(self, uc, removed: list[Window], added: list[Window]) -> None:
        unicorn, _ = _uc()
        same = {(w.gpa, w.size, w.host_addr): w for w in added}
        for window in removed:
            self._unguard(uc, window)
        for window in added:
            self._guard(uc, window)
        for window in removed:
            twin = same.pop((window.gpa, window.size, window.host_addr), None)
            if twin is not None:   # the same memory, other permissions: code running there survives
                uc.mem_protect(window.gpa, window.size, unicorn.UC_PROT_READ | unicorn.UC_PROT_EXEC
                               if twin.readonly else unicorn.UC_PROT_ALL)
                continue
            uc.mem_unmap(window.gpa, window.size)
        for window in added:
            if (window.gpa, window.size, window.host_addr) in same:
                self._map(uc, window)

    def _write_protected(self, uc, _access, addr: int, size: int, value: int, _user) -> bool:
        # A store into a read-only window: the MMIO bus says what it means (the board's
        # device there), but unicorn stores into the window's memory anyway once this returns
        # (measured with 2.1.4). The bytes there now are put back at the slice's end, which
        # comes at the next block.
        window = self.physmap.window_at(addr)
        if window is not None:
            end = min(addr + size, window.end)
            self._undo.append((window.host_addr + addr - window.gpa,
                               bytes(ffi.buffer(ffi.cast("char *", window.host_addr + addr - window.gpa),
                                                end - addr))))
        self._mmio_write(uc, addr, size, value, 0)   # takes the device lock
        if self.current is not None:
            self.current.poke()
        return True

    def after_slice(self) -> None:
        """Hand devices the writes queued during the last slice; undo the stores unicorn made
        into read-only memory."""
        published = self.published
        if published is not None and published.queues and published.waiting():
            with self.bql:
                published.drain()
        while self._undo:
            host_addr, old = self._undo.pop()
            ffi.memmove(ffi.cast("char *", host_addr), old, len(old))

    # -- turns ----------------------------------------------------------------------------------
    def switch_to(self, engine: "UnicornEngine") -> None:
        """Make ``engine``'s state the CPU's (the caller holds the turn)."""
        current = self.current
        if current is engine or self.uc is None:
            self.current = engine
            return
        uc = self.uc
        armed = uc.reg_read(self._dr7) & 0xFF      # breakpoints the outgoing vCPU has enabled
        if current is not None:
            if current.context is None:
                current.context = uc.context_save()
            else:
                uc.context_update(current.context)
        uc.context_restore(engine.context if engine.context is not None else self._reset)
        self.direct.flush_tlb()
        # Breakpoints belong to the CPU, not to a saved context: rebuilt from the incoming
        # vCPU's DR7 when either vCPU has any (uc_lib edit 4; a no-op on PyPI's library).
        dr7 = uc.reg_read(self._dr7)
        if armed or dr7 & 0xFF:
            uc.reg_write(self._dr7, dr7)
        self.current = engine
        self.switches += 1

    def flush_tlb(self) -> None:
        """Forget the current vCPU's cached translations (its page tables may have changed)."""
        self.direct.flush_tlb()

    def load_reset_state(self) -> None:
        """Give the current vCPU a fresh CPU's state (the caller then sets what it needs)."""
        self.uc.context_restore(self._reset)
        self.direct.flush_tlb()

    @contextmanager
    def holding(self, engine: "UnicornEngine") -> Iterator[None]:
        """Hold the turn with ``engine``'s state on the CPU; the state that was there comes
        back afterwards (a device on one vCPU's turn may look at another vCPU)."""
        self.turns.acquire()
        previous = self.current
        try:
            self.switch_to(engine)
            yield
        finally:
            if previous is not None and previous is not engine:
                self.switch_to(previous)
            self.turns.release()

    def cut(self) -> None:
        """End the current time slice early (any thread)."""
        if self.slicer is not None:
            self.slicer.cut()

    def request_stop(self) -> None:
        """Make emulation stop at the next translation block entry (any thread, any time)."""
        self._stop.request()

    def stop_target(self) -> StopTarget:
        """How the slicer's thread requests and drops a stop on this CPU."""
        return self._stop.target()

    def watch_window(self, interrupt: bool = False, shadow: bool = False, nmi: bool = False) -> None:
        """Stop where the CPU could take an interrupt (EFLAGS.IF set; ``shadow``: not before
        the instruction in an STI or MOV SS shadow has run) or, with ``nmi``, an NMI (once the
        IRET ending the last NMI's handler has run)."""
        self._stop.watch(interrupt, shadow, nmi)

    @property
    def window_stops(self) -> int:
        """How many slices ended because IF became set."""
        return self._stop.window_stops

    def close(self) -> None:
        if self._out_hook is not None:
            from ._ucstop import ffi as uffi

            self._out_hook[0].slicer = uffi.NULL
        if self.slicer is not None:
            self.slicer.close()
            self.slicer = None
        self.uc = None
        self._stop = None

    # -- hooks: called inside emu_start, for the vCPU whose turn it is --------------------------
    # A device that raises must end the run as hvm's failure. Unicorn's binding would keep the
    # exception until emu_start returns on its own (after a guest power-off it is never seen) and
    # stop emulation in a way that restarts the instruction: the device hooks keep the exception
    # themselves and end the slice at the next block, and the engine raises it from there.
    # Until then the rest of the block still runs: its port and MMIO accesses reach no device
    # (a power-off just after the failure must not become the run's outcome instead of it).
    def _failed(self, exc: BaseException) -> None:
        if self.hook_failure is None:
            self.hook_failure = exc
            self._live_bus = [(e, e.io_read, e.io_write) for e in self.engines], self.mmio
            for e in self.engines:
                e.io_read, e.io_write = _dead_read, _dead_write
            self.mmio = _DEAD_MMIO
        self.request_stop()

    def take_hook_failure(self) -> BaseException | None:
        """The first exception a device raised during the last emu_start, once; the devices
        are reachable again afterwards."""
        exc, self.hook_failure = self.hook_failure, None
        if exc is not None:
            ports, self.mmio = self._live_bus
            for e, read, write in ports:
                e.io_read, e.io_write = read, write
        return exc

    def _in(self, uc, port: int, size: int, _user) -> int:
        engine = self.current
        engine.io_counts[0] += 1
        with self.bql:
            return self._in_locked(engine, port, size)

    def _in_locked(self, engine: "UnicornEngine", port: int, size: int) -> int:
        try:
            strings = self.strings
            cs, rip, cr0 = strings.where()
            if not self._checks_io and engine.io_denied(port, size, cs, cr0):
                return engine.io_unchanged_result(size)
            if not cr0 & CR0_PG and self.hook_failure is None:
                first = strings.ins(engine.io_read_string, port, size, cs, rip)
                if first is not None:
                    return first
            return engine.io_read(port, size)
        except BaseException as exc:
            self._failed(exc)
            return 0

    def _out(self, uc, port: int, size: int, value: int, _user) -> None:
        engine = self.current
        engine.io_counts[1] += 1
        with self.bql:
            self._out_locked(engine, port, size, value)

    def _out_locked(self, engine: "UnicornEngine", port: int, size: int, value: int) -> None:
        try:
            strings = self.strings
            cs, rip, cr0 = strings.where()
            if not self._checks_io and engine.io_denied(port, size, cs, cr0):
                return
            if not cr0 & CR0_PG and self.hook_failure is None \
                    and strings.outs(engine.io_write_string, port, size, value, cs, rip):
                return
            engine.io_write(port, size, value)
        except BaseException as exc:
            self._failed(exc)

    def _mmio_read(self, uc, offset: int, size: int, base: int) -> int:
        try:
            with self.bql:
                return self.mmio.read(base + offset, size)
        except BaseException as exc:
            self._failed(exc)
            return 0

    def _mmio_write(self, uc, offset: int, size: int, value: int, base: int) -> None:
        try:
            with self.bql:
                self.mmio.write(base + offset, size, value)
        except BaseException as exc:
            self._failed(exc)

    def _interrupt(self, uc, vector: int, _user) -> None:
        self.current.on_interrupt(vector)

    def _syscall(self, uc, _user) -> None:
        self.current.on_syscall()

    def _sysenter(self, uc, _user) -> None:
        self.current.on_sysenter()

    def _cpuid(self, uc, _user) -> int:
        return self.current.on_cpuid()
