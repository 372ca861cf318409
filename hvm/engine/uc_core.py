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
"""
from __future__ import annotations

import threading
from collections import deque
from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator

from kvmffi import ffi

from ..bus import MmioBus
from ..errors import HostError
from ..memory import GuestMemory
from ..physmap import PhysMap, Window
from ..threads import Failure
from . import uc_context
from .uc_slicer import Slicer

if TYPE_CHECKING:
    from .unicorn import UnicornEngine

CPU_MODEL = "BROADWELL"


def _uc():
    import unicorn  # imported only when the software engine is chosen
    from unicorn import x86_const
    return unicorn, x86_const


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

    def __init__(self, memory: GuestMemory, mmio: MmioBus, on_failure: Failure | None = None,
                 physmap: PhysMap | None = None):
        self.memory, self.mmio = memory, mmio
        self.physmap = physmap if physmap is not None else PhysMap(memory)
        self._undo: list[tuple[int, bytes]] = []  # stores unicorn made into read-only windows
        self.on_failure = on_failure  # for the slicer thread: its death would leave slices unended
        self.uc = None
        self.current: UnicornEngine | None = None
        self.engines: list[UnicornEngine] = []
        self.turns = Turns(self.cut)
        self.slicer: Slicer | None = None
        self.switches = 0
        self.hook_failure: BaseException | None = None
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
        for base, size in self.physmap.holes():
            uc.mmio_map(base, size, self._mmio_read, base, self._mmio_write, base)
        self.physmap.subscribe(self._remap)
        uc.hook_add(unicorn.UC_HOOK_MEM_WRITE_PROT, self._write_protected)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._in, None, 1, 0, x86.UC_X86_INS_IN)
        uc.hook_add(unicorn.UC_HOOK_INSN, self._out, None, 1, 0, x86.UC_X86_INS_OUT)
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
        self._stop = _stop_hook(uc)
        try:
            self.fields = uc_context.ContextFields(uc, uc_context.layout())
        except uc_context.LayoutError as exc:
            raise HostError(f"unicorn {unicorn.__version__} cannot be used by hvm: {exc}") from None
        self.uc = uc
        self._tlb_flush = (unicorn.UC_CTL_TLB_FLUSH, unicorn.UC_CTL_IO_WRITE)
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

    def _remap(self, removed: list[Window], added: list[Window]) -> None:
        # On the thread that changed the map (a vCPU's port hook, inside emu_start: unicorn
        # allows it, and drops translated code of the range, measured with 2.1.4).
        uc = self.uc
        if uc is None:
            return
        unicorn, _ = _uc()
        same = {(w.gpa, w.size, w.host_addr): w for w in added}
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
        self._mmio_write(uc, addr, size, value, 0)
        if self.current is not None:
            self.current.poke()
        return True

    def after_slice(self) -> None:
        """Undo the stores unicorn made into read-only memory during the last slice."""
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
        if current is not None:
            if current.context is None:
                current.context = uc.context_save()
            else:
                uc.context_update(current.context)
        uc.context_restore(engine.context if engine.context is not None else self._reset)
        uc.ctl(*self._tlb_flush)
        self.current = engine
        self.switches += 1

    def load_reset_state(self) -> None:
        """Give the current vCPU a fresh CPU's state (the caller then sets what it needs)."""
        self.uc.context_restore(self._reset)
        self.uc.ctl(*self._tlb_flush)

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
        self._stop.wanted = 1

    def drop_stop(self) -> None:
        """Forget a stop requested for a slice that has ended (before the next one begins)."""
        self._stop.wanted = 0

    def watch_window(self, on: bool, skip: int = 0, any_block: bool = False) -> None:
        """Stop at the next block entered with EFLAGS.IF set (an interrupt is waiting for it),
        or at the next block at all with ``any_block``, after letting ``skip`` entries pass."""
        self._stop.window_skip = skip
        self._stop.any_block = int(any_block)
        self._stop.window = int(on)

    @property
    def window_stops(self) -> int:
        """How many slices ended because IF became set."""
        return self._stop.window_stops

    def close(self) -> None:
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
        try:
            if engine.io_denied(port, size):
                return engine.io_unchanged_result(size)
            return engine.io_read(port, size)
        except BaseException as exc:
            self._failed(exc)
            return 0

    def _out(self, uc, port: int, size: int, value: int, _user) -> None:
        engine = self.current
        engine.io_counts[1] += 1
        try:
            if engine.io_denied(port, size):
                return
            engine.io_write(port, size, value)
        except BaseException as exc:
            self._failed(exc)

    def _mmio_read(self, uc, offset: int, size: int, base: int) -> int:
        try:
            return self.mmio.read(base + offset, size)
        except BaseException as exc:
            self._failed(exc)
            return 0

    def _mmio_write(self, uc, offset: int, size: int, value: int, base: int) -> None:
        try:
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
