"""Thin typed wrappers over the KVM API: Kvm (the system), Vm, Vcpu.

Every ioctl goes through ``_ioctl`` so each failure becomes a ``KvmError`` naming the ioctl and
errno. State structs are handed out as cffi objects whose layout the compiler took from
<linux/kvm.h>; callers read fields by name.
"""
from __future__ import annotations

import errno as _errno
import mmap
import os
import struct
import threading
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

from . import exits
from ._kvm import ffi, lib

__all__ = ["Kvm", "Vm", "Vcpu", "KvmError", "MissingCapability", "CpuidEntry", "ffi", "lib"]


class KvmError(OSError):
    """An ioctl on /dev/kvm, a VM or a vCPU failed; ``ioctl`` names it."""

    def __init__(self, ioctl: str, errnum: int, detail: str = ""):
        msg = f"{ioctl}: {os.strerror(errnum)}" + (f" ({detail})" if detail else "")
        super().__init__(errnum, msg)
        self.ioctl = ioctl

    def __str__(self) -> str:
        return self.strerror


class MissingCapability(KvmError):
    """The host's KVM lacks a capability hvm needs; ``capability`` names it."""

    def __init__(self, capability: str):
        super().__init__(capability, _errno.ENOTSUP, "capability not offered by this host's KVM")
        self.capability = capability


def _ioctl(fd: int, name: str, arg=ffi.NULL) -> int:
    ret = lib.hvm_ioctl(fd, getattr(lib, name), arg)
    if ret < 0:
        raise KvmError(name, ffi.errno)
    return ret


def _ioctl_int(fd: int, name: str, arg: int = 0) -> int:
    ret = lib.hvm_ioctl_int(fd, getattr(lib, name), arg)
    if ret < 0:
        raise KvmError(name, ffi.errno)
    return ret


@dataclass(frozen=True)
class CpuidEntry:
    """One CPUID leaf/subleaf as KVM describes it."""

    function: int
    index: int
    flags: int
    eax: int
    ebx: int
    ecx: int
    edx: int


class Kvm:
    """The /dev/kvm system handle."""

    def __init__(self, path: str = "/dev/kvm"):
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
        try:
            self.api_version = _ioctl_int(self.fd, "KVM_GET_API_VERSION")
            if self.api_version != lib.KVM_API_VERSION:
                raise KvmError("KVM_GET_API_VERSION", _errno.EPROTO,
                               f"API version {self.api_version}, hvm needs {lib.KVM_API_VERSION}")
            self.vcpu_mmap_size = _ioctl_int(self.fd, "KVM_GET_VCPU_MMAP_SIZE")
        except BaseException:
            os.close(self.fd)
            raise

    def check_extension(self, cap: str) -> int:
        """Return KVM_CHECK_EXTENSION for a capability named like ``KVM_CAP_IRQCHIP``."""
        return _ioctl_int(self.fd, "KVM_CHECK_EXTENSION", getattr(lib, cap))

    def require(self, cap: str) -> int:
        """Return the capability's value, or raise MissingCapability naming it."""
        value = self.check_extension(cap)
        if value <= 0:
            raise MissingCapability(cap)
        return value

    def supported_cpuid(self) -> list[CpuidEntry]:
        """KVM_GET_SUPPORTED_CPUID: the leaves KVM can present to a guest."""
        nent = 256
        while True:
            buf = ffi.new("struct kvm_cpuid2 *", {"nent": nent, "entries": nent})
            try:
                _ioctl(self.fd, "KVM_GET_SUPPORTED_CPUID", buf)
            except KvmError as exc:
                if exc.errno == _errno.E2BIG and nent < 4096:
                    nent *= 2
                    continue
                raise
            return [CpuidEntry(e.function, e.index, e.flags, e.eax, e.ebx, e.ecx, e.edx)
                    for e in buf.entries[0:buf.nent]]

    def _msr_list(self, name: str) -> list[int]:
        probe = ffi.new("struct kvm_msr_list *", {"nmsrs": 0, "indices": 0})
        try:
            _ioctl(self.fd, name, probe)
        except KvmError as exc:
            if exc.errno != _errno.E2BIG:
                raise
        n = probe.nmsrs
        buf = ffi.new("struct kvm_msr_list *", {"nmsrs": n, "indices": n})
        _ioctl(self.fd, name, buf)
        return list(buf.indices[0:buf.nmsrs])

    def msr_index_list(self) -> list[int]:
        """MSRs KVM saves and restores for a guest."""
        return self._msr_list("KVM_GET_MSR_INDEX_LIST")

    def msr_feature_index_list(self) -> list[int]:
        """Feature MSRs KVM reports on /dev/kvm."""
        return self._msr_list("KVM_GET_MSR_FEATURE_INDEX_LIST")

    def create_vm(self) -> "Vm":
        """KVM_CREATE_VM."""
        return Vm(self, _ioctl_int(self.fd, "KVM_CREATE_VM", 0))

    def close(self) -> None:
        """Release the /dev/kvm handle."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class Vm:
    """A KVM virtual machine: memory slots, irqchip, interrupt routing, vCPUs."""

    def __init__(self, kvm: Kvm, fd: int):
        self.kvm = kvm
        self.fd = fd
        self._filter_bitmaps: list = []  # keep MSR filter bitmaps alive while KVM may read them
        # KVM_CAP_COALESCED_MMIO is the ring's page in each vCPU's mapping (0: no ring).
        self.coalesced_ring_page = max(kvm.check_extension("KVM_CAP_COALESCED_MMIO"), 0)
        self.coalesced_pio = self.coalesced_ring_page > 0 and kvm.check_extension("KVM_CAP_COALESCED_PIO") > 0
        self.coalesced_lock = threading.Lock()  # one consumer of the shared ring at a time
        sync = kvm.check_extension("KVM_CAP_SYNC_REGS")
        self.sync_regs = sync if sync > 0 else 0  # KVM_SYNC_X86_* KVM can store at exits

    def check_extension(self, cap: str) -> int:
        """KVM_CHECK_EXTENSION on the VM (some capabilities are per VM)."""
        return _ioctl_int(self.fd, "KVM_CHECK_EXTENSION", getattr(lib, cap))

    def set_user_memory_region(self, slot: int, guest_phys_addr: int, size: int, host_addr: int,
                               flags: int = 0) -> None:
        """Map ``size`` bytes of host memory at ``guest_phys_addr`` (size 0 deletes the slot)."""
        region = ffi.new("struct kvm_userspace_memory_region *", {
            "slot": slot, "flags": flags, "guest_phys_addr": guest_phys_addr,
            "memory_size": size, "userspace_addr": host_addr})
        _ioctl(self.fd, "KVM_SET_USER_MEMORY_REGION", region)

    def set_tss_addr(self, addr: int) -> None:
        """KVM_SET_TSS_ADDR: three pages KVM needs for real mode on Intel (unsigned long argument)."""
        _ioctl_int(self.fd, "KVM_SET_TSS_ADDR", addr)

    def set_identity_map_addr(self, addr: int) -> None:
        """KVM_SET_IDENTITY_MAP_ADDR: one page for the EPT identity map on Intel."""
        value = ffi.new("uint64_t *", addr)
        _ioctl(self.fd, "KVM_SET_IDENTITY_MAP_ADDR", value)

    def create_irqchip(self) -> None:
        """In-kernel PIC pair, IOAPIC and per-vCPU local APICs."""
        self.kvm.require("KVM_CAP_IRQCHIP")
        _ioctl_int(self.fd, "KVM_CREATE_IRQCHIP")

    def create_pit2(self, speaker_dummy: bool = True) -> None:
        """In-kernel 8254 PIT (ports 0x40-0x43; 0x61 too with ``speaker_dummy``)."""
        self.kvm.require("KVM_CAP_PIT2")
        cfg = ffi.new("struct kvm_pit_config *", {"flags": lib.KVM_PIT_SPEAKER_DUMMY if speaker_dummy else 0})
        _ioctl(self.fd, "KVM_CREATE_PIT2", cfg)

    def coalesce_pio(self, port: int, length: int, on: bool = True) -> None:
        """KVM_(UN)REGISTER_COALESCED_MMIO for ports ``[port, port+length)``: KVM queues the
        guest's writes there in the ring instead of exiting (reads still exit). Needs
        ``coalesced_pio``."""
        zone = ffi.new("struct kvm_coalesced_mmio_zone *", {"addr": port, "size": length})
        lib.hvm_zone_pio(zone, 1)
        _ioctl(self.fd, "KVM_REGISTER_COALESCED_MMIO" if on else "KVM_UNREGISTER_COALESCED_MMIO", zone)

    def irq_line(self, gsi: int, level: bool) -> None:
        """KVM_IRQ_LINE: drive one input of the in-kernel irqchip."""
        arg = ffi.new("struct kvm_irq_level *", {"irq": gsi, "level": 1 if level else 0})
        _ioctl(self.fd, "KVM_IRQ_LINE", arg)

    def set_gsi_routing(self, routes: Sequence[tuple[int, int, int]]) -> None:
        """KVM_SET_GSI_ROUTING with irqchip routes (gsi, irqchip, pin); replaces the whole table."""
        entry = ffi.sizeof("struct kvm_irq_routing_entry")
        buf = ffi.new("char[]", ffi.sizeof("struct kvm_irq_routing") + entry * len(routes))
        table = ffi.cast("struct kvm_irq_routing *", buf)
        table.nr = len(routes)
        for i, (gsi, chip, pin) in enumerate(routes):
            e = table.entries[i]
            e.gsi, e.type = gsi, lib.KVM_IRQ_ROUTING_IRQCHIP
            target = ffi.cast("struct kvm_irq_routing_irqchip *",
                              ffi.cast("char *", ffi.addressof(e)) + lib.HVM_ROUTE_UNION_OFFSET)
            target.irqchip, target.pin = chip, pin
        _ioctl(self.fd, "KVM_SET_GSI_ROUTING", table)

    def signal_msi(self, address: int, data: int) -> int:
        """KVM_SIGNAL_MSI: inject one message-signalled interrupt; returns >0 if delivered."""
        msi = ffi.new("struct kvm_msi *", {"address_lo": address & 0xFFFFFFFF,
                                           "address_hi": address >> 32, "data": data})
        return _ioctl(self.fd, "KVM_SIGNAL_MSI", msi)

    def ioeventfd(self, fd: int, addr: int, length: int, *, pio: bool = False,
                  datamatch: int | None = None, deassign: bool = False) -> None:
        """Let KVM signal ``fd`` on a guest write to ``addr`` without exiting to userspace."""
        flags = (lib.KVM_IOEVENTFD_FLAG_PIO if pio else 0) | \
            (lib.KVM_IOEVENTFD_FLAG_DATAMATCH if datamatch is not None else 0) | \
            (lib.KVM_IOEVENTFD_FLAG_DEASSIGN if deassign else 0)
        arg = ffi.new("struct kvm_ioeventfd *", {"datamatch": datamatch or 0, "addr": addr,
                                                 "len": length, "fd": fd, "flags": flags})
        _ioctl(self.fd, "KVM_IOEVENTFD", arg)

    def irqfd(self, fd: int, gsi: int, *, deassign: bool = False) -> None:
        """Let a write to eventfd ``fd`` raise ``gsi`` inside the kernel."""
        arg = ffi.new("struct kvm_irqfd *", {"fd": fd, "gsi": gsi,
                                             "flags": lib.KVM_IRQFD_FLAG_DEASSIGN if deassign else 0})
        _ioctl(self.fd, "KVM_IRQFD", arg)

    def enable_cap(self, cap: str, *args: int) -> None:
        """KVM_ENABLE_CAP on the VM with up to four arguments."""
        self.kvm.require(cap)
        arg = ffi.new("struct kvm_enable_cap *", {"cap": getattr(lib, cap), "args": list(args) + [0] * (4 - len(args))})
        _ioctl(self.fd, "KVM_ENABLE_CAP", arg)

    def set_msr_filter(self, ranges: Sequence[tuple[int, int, int, bytes]], default_allow: bool = True) -> None:
        """Install an MSR filter: ``(flags, base, nmsrs, bitmap)`` ranges; a 0 bit denies (exits)."""
        self.kvm.require("KVM_CAP_X86_MSR_FILTER")
        filt = ffi.new("struct kvm_msr_filter *")
        filt.flags = lib.KVM_MSR_FILTER_DEFAULT_ALLOW if default_allow else lib.KVM_MSR_FILTER_DEFAULT_DENY
        keep = []
        for i, (flags, base, nmsrs, bitmap) in enumerate(ranges):
            buf = ffi.new("uint8_t[]", bytes(bitmap))
            keep.append(buf)
            r = filt.ranges[i]
            r.flags, r.base, r.nmsrs, r.bitmap = flags, base, nmsrs, buf
        _ioctl(self.fd, "KVM_X86_SET_MSR_FILTER", filt)
        self._filter_bitmaps = keep

    def get_dirty_log(self, slot: int, npages: int) -> bytes:
        """KVM_GET_DIRTY_LOG: one bit per page of the slot, cleared by the read."""
        bitmap = ffi.new("uint8_t[]", ((npages + 63) // 64) * 8)
        arg = ffi.new("struct kvm_dirty_log *", {"slot": slot, "dirty_bitmap": bitmap})
        _ioctl(self.fd, "KVM_GET_DIRTY_LOG", arg)
        return bytes(ffi.buffer(bitmap))

    def create_vcpu(self, vcpu_id: int) -> "Vcpu":
        """KVM_CREATE_VCPU and map its kvm_run page."""
        return Vcpu(self, vcpu_id, _ioctl_int(self.fd, "KVM_CREATE_VCPU", vcpu_id))

    def close(self) -> None:
        """Destroy the VM (its vCPUs must be closed first)."""
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


_U = lib.HVM_RUN_EXIT_UNION_OFFSET
_new = tuple.__new__


def _field(ctype: str, name: str) -> tuple[int, int]:
    f = dict(ffi.typeof(ctype).fields)[name]
    return f.offset, ffi.sizeof(f.type)


def struct_view(fields: Sequence[tuple[int, int]]) -> struct.Struct:
    """A precompiled ``struct.Struct`` reading unsigned fields given as (offset, size) pairs.

    The pairs come from cffi (see ``_field``), i.e. from the compiled header, so the hot path can
    unpack several fields in one call without hand-copying a layout.
    """
    fmt, pos = "<", 0
    codes = {1: "B", 2: "H", 4: "I", 8: "Q"}
    for off, size in fields:
        if off < pos:
            raise ValueError("fields must be given in layout order, without overlap")
        fmt += "x" * (off - pos) + codes[size]
        pos = off + size
    return struct.Struct(fmt)


# exit_reason, then the KVM_EXIT_IO member of the union: read in one call on every exit.
_EXIT_HEAD = struct_view([_field("struct kvm_run", "exit_reason")] +
                         [(_U + off, size) for off, size in
                          (_field("hvm_run_io", n) for n in ("direction", "size", "port", "count", "data_offset"))])
_EXIT_IO = lib.KVM_EXIT_IO
_KVM_RUN = lib.KVM_RUN
_IoIn, _IoOut, _Interrupted = exits.IoIn, exits.IoOut, exits.Interrupted
_UNPACK = {n: struct.Struct(f"<{c}").unpack_from for n, c in ((1, "B"), (2, "H"), (4, "I"))}
_SYNC_REGS, _SYNC_SREGS = lib.KVM_SYNC_X86_REGS, lib.KVM_SYNC_X86_SREGS
_REGS_SIZE, _SREGS_SIZE = ffi.sizeof("struct kvm_regs"), ffi.sizeof("struct kvm_sregs")
_SYNC_AT = lib.HVM_RUN_SYNC_OFFSET
_SYNC_SREGS_AT = _SYNC_AT + dict(ffi.typeof("struct kvm_sync_regs").fields)["sregs"].offset
_REGS_VIEW = struct.Struct("<18Q")  # struct kvm_regs: 18 u64 (checked below against the header)
assert _REGS_VIEW.size == _REGS_SIZE
_PACK = {n: struct.Struct(f"<{c}").pack_into for n, c in ((1, "B"), (2, "H"), (4, "I"))}


class Vcpu:
    """One virtual CPU: run it, read and write its state."""

    def __init__(self, vm: Vm, vcpu_id: int, fd: int):
        self.vm = vm
        self.id = vcpu_id
        self.fd = fd
        self._mmap = mmap.mmap(fd, vm.kvm.vcpu_mmap_size, mmap.MAP_SHARED,
                               mmap.PROT_READ | mmap.PROT_WRITE)
        self._page = memoryview(self._mmap)
        base = ffi.from_buffer(self._mmap)
        self.run_struct = ffi.cast("struct kvm_run *", base)
        u = base + _U
        self._mmio = ffi.cast("hvm_run_mmio *", u)
        self._mmio_data = self._page[_U + 8:_U + 16]
        self._fail = ffi.cast("hvm_run_fail_entry *", u)
        self._internal = ffi.cast("hvm_run_internal *", u)
        self._emul = ffi.cast("hvm_run_emulation_failure *", u)
        self._sysev = ffi.cast("hvm_run_system_event *", u)
        self._msr = ffi.cast("hvm_run_msr *", u)
        self._debug = ffi.cast("hvm_run_debug *", u)
        self._ioctl = lib.hvm_ioctl_int
        self._head = _EXIT_HEAD.unpack_from
        self.io_exits = [0, 0]  # IN, OUT exits served by run_with_io (updated when it returns)
        ring_at = vm.coalesced_ring_page * mmap.PAGESIZE
        self._ring = base + ring_at if 0 < ring_at < len(self._mmap) else ffi.NULL
        self._popped = ffi.new("hvm_coalesced *")
        self._served = ffi.new("uint64_t *")  # published-register reads answered in C
        self._no_table = ffi.new("hvm_published[]", lib.HVM_PUBLISHED_SLOTS)
        # KVM_CAP_SYNC_REGS: KVM stores the registers in kvm_run at every exit, so reading them
        # costs no ioctl (~6 us each on a nested host). The copy there is kept current: filled
        # here, by KVM at each exit, and by set_regs/set_sregs, which also write it.
        sync = self._sync = ffi.cast("struct kvm_sync_regs *", base + lib.HVM_RUN_SYNC_OFFSET)
        self._sync_regs = ffi.addressof(sync.regs)
        self._sync_sregs = ffi.addressof(sync.sregs)
        self._synced = 0  # KVM_SYNC_X86_* bits in use
        if vm.sync_regs & lib.KVM_SYNC_X86_REGS:
            _ioctl(fd, "KVM_GET_REGS", self._sync_regs)
            self._synced = self.run_struct.kvm_valid_regs = lib.KVM_SYNC_X86_REGS
        self._dispatch = {
            lib.KVM_EXIT_MMIO: self._exit_mmio,
            lib.KVM_EXIT_HLT: lambda: exits.Hlt(),
            lib.KVM_EXIT_SHUTDOWN: lambda: exits.Shutdown(),
            lib.KVM_EXIT_FAIL_ENTRY: lambda: exits.FailEntry(self._fail.hardware_entry_failure_reason, self._fail.cpu),
            lib.KVM_EXIT_INTERNAL_ERROR: self._exit_internal,
            lib.KVM_EXIT_SYSTEM_EVENT: lambda: exits.SystemEvent(
                self._sysev.type, tuple(self._sysev.data[0:min(self._sysev.ndata, 16)])),
            lib.KVM_EXIT_DEBUG: lambda: exits.Debug(self._debug.exception, self._debug.pc,
                                                    self._debug.dr6, self._debug.dr7),
            lib.KVM_EXIT_X86_RDMSR: lambda: exits.RdMsr(self._msr.index, self._msr.reason, self._msr),
            lib.KVM_EXIT_X86_WRMSR: lambda: exits.WrMsr(self._msr.index, self._msr.reason, self._msr.data, self._msr),
            lib.KVM_EXIT_INTR: lambda: exits.Interrupted(),
            lib.KVM_EXIT_IRQ_WINDOW_OPEN: lambda: exits.IrqWindowOpen(),
        }

    # -- running -------------------------------------------------------------------------------
    def run(self) -> exits.VcpuExit:
        """KVM_RUN until the guest needs the VMM; returns the typed exit."""
        if self._ioctl(self.fd, _KVM_RUN, 0) < 0:
            return self._run_failed()
        page = self._page
        reason, direction, size, port, count, offset = self._head(page)
        if reason == _EXIT_IO:
            return _new(_IoOut if direction else _IoIn, (port, size, count, page, offset))
        return self._exit(reason)

    def run_with_io(self, io_read: Callable[[int, int], int],
                    io_write: Callable[[int, int, int], None],
                    read_run: Callable[[int, int, int], bytes] | None = None,
                    write_run: Callable[[int, int, bytes], None] | None = None,
                    published=None) -> exits.VcpuExit:
        """KVM_RUN repeatedly, serving port I/O exits with ``io_read(port, size)`` and
        ``io_write(port, size, value)``; returns the first exit of any other kind. A string I/O
        exit (``count`` > 1: REP INS/OUTS) goes to ``read_run(port, size, count)`` (its
        ``size * count`` bytes) or ``write_run(port, size, data)`` at once when they are given,
        else element by element.

        ``published``, a cffi ``hvm_published[]`` (hvm/published.py), holds registers whose
        one-byte reads KVM_RUN's C loop answers itself; writes KVM coalesced (``Vm.coalesce_pio``)
        reach ``io_write`` before the exit that follows them.

        Port I/O is the most frequent exit, and on a nested host every Python step after an exit
        costs several times its usual price: this loop builds no exit object for it.
        """
        fd, head, page = self.fd, self._head, self._page
        run_served, run, ring = lib.hvm_run_served, self.run_struct, self._ring
        table, served = self._no_table if published is None else published, self._served
        unpackers = _UNPACK
        ins = outs = 0  # counted in locals (cheapest) and published when the loop returns
        try:
            while True:
                done = run_served(fd, run, ring, table, served)
                if done:
                    if done < 0:
                        return self._run_failed()
                    self._apply_coalesced(io_write)
                reason, direction, size, port, count, offset = head(page)
                if reason != _EXIT_IO:
                    return self._exit(reason)
                if direction and count == 1:
                    outs += 1
                    io_write(port, size, page[offset] if size == 1 else unpackers[size](page, offset)[0])
                elif direction:
                    outs += 1
                    if write_run is not None:
                        write_run(port, size, bytes(page[offset:offset + size * count]))
                        continue
                    unpack = unpackers[size]
                    for pos in range(offset, offset + size * count, size):
                        io_write(port, size, unpack(page, pos)[0])
                else:
                    ins += 1
                    if read_run is not None and count > 1:
                        page[offset:offset + size * count] = read_run(port, size, count)
                        continue
                    pack = _PACK[size]
                    for pos in range(offset, offset + size * count, size):
                        pack(page, pos, io_read(port, size))
        finally:
            self.io_exits[0] += ins
            self.io_exits[1] += outs

    def _apply_coalesced(self, io_write: Callable[[int, int, int], None]) -> None:
        # Every zone hvm registers is port I/O (Vm.coalesce_pio), so each entry is an OUT.
        pop, entry, ring = lib.hvm_ring_pop, self._popped, self._ring
        with self.vm.coalesced_lock:
            while pop(ring, entry):
                n = entry.len
                io_write(entry.addr, n, int.from_bytes(ffi.buffer(entry.data, n), "little"))

    @property
    def served_reads(self) -> int:
        """IN exits ``run_with_io`` answered from a published-register table, in C."""
        return self._served[0]

    def _run_failed(self) -> exits.VcpuExit:
        err = ffi.errno
        if err == _errno.EINTR or err == _errno.EAGAIN:
            return _Interrupted()
        raise KvmError("KVM_RUN", err)

    def _exit(self, reason: int) -> exits.VcpuExit:
        handler = self._dispatch.get(reason)
        if handler is None:
            return exits.Unknown(reason, self._fail.hardware_entry_failure_reason)
        return handler()

    def _exit_mmio(self) -> exits.VcpuExit:
        m = self._mmio
        n = m.len
        if m.is_write:
            return exits.MmioWrite(m.phys_addr, n, self._mmio_data[:n])
        return exits.MmioRead(m.phys_addr, n, self._mmio_data[:n])

    def _exit_internal(self) -> exits.VcpuExit:
        it = self._internal
        data = tuple(it.data[0:min(it.ndata, 16)])
        if it.suberror == lib.KVM_INTERNAL_ERROR_EMULATION:
            em = self._emul
            insn = b""
            if it.ndata >= 2 and em.flags & lib.KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES:
                insn = bytes(em.insn_bytes[0:min(em.insn_size, 15)])
            return exits.EmulationFailure(it.suberror, data, insn)
        return exits.InternalError(it.suberror, data)

    @property
    def immediate_exit(self) -> bool:
        """When set, the next KVM_RUN returns at once (closes the race with a stop signal)."""
        return bool(self.run_struct.immediate_exit)

    @immediate_exit.setter
    def immediate_exit(self, value: bool) -> None:
        self.run_struct.immediate_exit = 1 if value else 0

    @property
    def if_flag(self) -> bool:
        """The guest's RFLAGS.IF as of the last exit."""
        return bool(self.run_struct.if_flag)

    @property
    def request_interrupt_window(self) -> bool:
        """Ask KVM to exit once the guest can accept an injected interrupt."""
        return bool(self.run_struct.request_interrupt_window)

    @request_interrupt_window.setter
    def request_interrupt_window(self, value: bool) -> None:
        self.run_struct.request_interrupt_window = 1 if value else 0

    @property
    def ready_for_interrupt_injection(self) -> bool:
        """Whether KVM_INTERRUPT would be taken now."""
        return bool(self.run_struct.ready_for_interrupt_injection)

    # -- state ---------------------------------------------------------------------------------
    def _get(self, ctype: str, name: str):
        obj = ffi.new(ctype)
        _ioctl(self.fd, name, obj)
        return obj

    def get_regs(self):
        """KVM_GET_REGS → ``struct kvm_regs`` (a copy of KVM's synced registers where it syncs them)."""
        if self._synced & _SYNC_REGS:
            regs = ffi.new("struct kvm_regs *")
            ffi.memmove(regs, self._sync_regs, _REGS_SIZE)
            return regs
        return self._get("struct kvm_regs *", "KVM_GET_REGS")

    def set_regs(self, regs) -> None:
        """KVM_SET_REGS."""
        _ioctl(self.fd, "KVM_SET_REGS", regs)
        if self._synced & _SYNC_REGS:
            ffi.memmove(self._sync_regs, regs, _REGS_SIZE)

    def regs_values(self) -> tuple[int, ...]:
        """rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8-r15, rip, rflags (struct kvm_regs' order)."""
        if self._synced & _SYNC_REGS:
            return _REGS_VIEW.unpack_from(self._page, _SYNC_AT)
        return _REGS_VIEW.unpack(bytes(ffi.buffer(self.get_regs())))

    def load_regs_at_entry(self, values: Sequence[int]) -> None:
        """Registers in ``regs_values``' order, for KVM to load when this vCPU's thread next enters
        KVM_RUN (no ioctl where KVM syncs registers): only between an exit of a running vCPU
        and its next KVM_RUN, on its own thread. An early return from KVM_RUN (a vCPU still
        waiting for INIT/SIPI) would store KVM's registers over values not loaded yet."""
        if not self._synced & _SYNC_REGS:
            regs = ffi.new("struct kvm_regs *")
            ffi.buffer(regs)[:] = _REGS_VIEW.pack(*values)
            _ioctl(self.fd, "KVM_SET_REGS", regs)
            return
        _REGS_VIEW.pack_into(self._page, _SYNC_AT, *values)
        self.run_struct.kvm_dirty_regs |= _SYNC_REGS

    def sync_sregs(self) -> bool:
        """Have KVM store the segment and control registers at every exit too (~0.2 us more per
        exit here), so ``get_sregs`` and ``sregs_bytes`` cost no ioctl; False where it cannot."""
        if not self.vm.sync_regs & _SYNC_SREGS:
            return False
        if not self._synced & _SYNC_SREGS:
            _ioctl(self.fd, "KVM_GET_SREGS", self._sync_sregs)
            self._synced |= _SYNC_SREGS
            self.run_struct.kvm_valid_regs = self._synced
        return True

    def get_sregs(self):
        """KVM_GET_SREGS → ``struct kvm_sregs``."""
        if self._synced & _SYNC_SREGS:
            sregs = ffi.new("struct kvm_sregs *")
            ffi.memmove(sregs, self._sync_sregs, _SREGS_SIZE)
            return sregs
        return self._get("struct kvm_sregs *", "KVM_GET_SREGS")

    def sregs_bytes(self) -> bytes:
        """``struct kvm_sregs`` as bytes (equal bytes, equal state)."""
        if self._synced & _SYNC_SREGS:
            return bytes(self._page[_SYNC_SREGS_AT:_SYNC_SREGS_AT + _SREGS_SIZE])
        return bytes(ffi.buffer(self.get_sregs()))

    def set_sregs(self, sregs) -> None:
        """KVM_SET_SREGS."""
        _ioctl(self.fd, "KVM_SET_SREGS", sregs)
        if self._synced & _SYNC_SREGS:
            ffi.memmove(self._sync_sregs, sregs, _SREGS_SIZE)

    def get_fpu(self):
        """KVM_GET_FPU → ``struct kvm_fpu``."""
        return self._get("struct kvm_fpu *", "KVM_GET_FPU")

    def set_fpu(self, fpu) -> None:
        """KVM_SET_FPU."""
        _ioctl(self.fd, "KVM_SET_FPU", fpu)

    def get_xcrs(self):
        """KVM_GET_XCRS → ``struct kvm_xcrs``."""
        return self._get("struct kvm_xcrs *", "KVM_GET_XCRS")

    def set_xcrs(self, xcrs) -> None:
        """KVM_SET_XCRS."""
        _ioctl(self.fd, "KVM_SET_XCRS", xcrs)

    def get_msrs(self, indices: Iterable[int]) -> dict[int, int]:
        """KVM_GET_MSRS for the given indices; MSRs KVM does not know are left out."""
        idx = list(indices)
        buf = ffi.new("struct kvm_msrs *", {"nmsrs": len(idx), "entries": len(idx)})
        for i, index in enumerate(idx):
            buf.entries[i].index = index
        n = _ioctl(self.fd, "KVM_GET_MSRS", buf)
        return {buf.entries[i].index: buf.entries[i].data for i in range(n)}

    def set_msrs(self, values: dict[int, int]) -> None:
        """KVM_SET_MSRS; raises if KVM refuses any of them."""
        items = list(values.items())
        buf = ffi.new("struct kvm_msrs *", {"nmsrs": len(items), "entries": len(items)})
        for i, (index, data) in enumerate(items):
            buf.entries[i].index, buf.entries[i].data = index, data
        n = _ioctl(self.fd, "KVM_SET_MSRS", buf)
        if n != len(items):
            raise KvmError("KVM_SET_MSRS", _errno.EINVAL, f"MSR {items[n][0]:#x} refused")

    def set_cpuid(self, entries: Sequence[CpuidEntry]) -> None:
        """KVM_SET_CPUID2: what the guest's CPUID instruction answers."""
        buf = ffi.new("struct kvm_cpuid2 *", {"nent": len(entries), "entries": len(entries)})
        for i, e in enumerate(entries):
            d = buf.entries[i]
            d.function, d.index, d.flags = e.function, e.index, e.flags
            d.eax, d.ebx, d.ecx, d.edx = e.eax, e.ebx, e.ecx, e.edx
        _ioctl(self.fd, "KVM_SET_CPUID2", buf)

    def get_lapic(self):
        """KVM_GET_LAPIC → ``struct kvm_lapic_state`` (the APIC register page)."""
        return self._get("struct kvm_lapic_state *", "KVM_GET_LAPIC")

    def set_lapic(self, lapic) -> None:
        """KVM_SET_LAPIC."""
        _ioctl(self.fd, "KVM_SET_LAPIC", lapic)

    def get_mp_state(self) -> int:
        """KVM_GET_MP_STATE (KVM_MP_STATE_*)."""
        return self._get("struct kvm_mp_state *", "KVM_GET_MP_STATE").mp_state

    def set_mp_state(self, state: int) -> None:
        """KVM_SET_MP_STATE."""
        _ioctl(self.fd, "KVM_SET_MP_STATE", ffi.new("struct kvm_mp_state *", {"mp_state": state}))

    def get_vcpu_events(self):
        """KVM_GET_VCPU_EVENTS → ``struct kvm_vcpu_events`` (pending exception, interrupt, NMI)."""
        return self._get("struct kvm_vcpu_events *", "KVM_GET_VCPU_EVENTS")

    def set_vcpu_events(self, events) -> None:
        """KVM_SET_VCPU_EVENTS."""
        _ioctl(self.fd, "KVM_SET_VCPU_EVENTS", events)

    def get_debugregs(self):
        """KVM_GET_DEBUGREGS → ``struct kvm_debugregs``."""
        return self._get("struct kvm_debugregs *", "KVM_GET_DEBUGREGS")

    def set_debugregs(self, dbg) -> None:
        """KVM_SET_DEBUGREGS."""
        _ioctl(self.fd, "KVM_SET_DEBUGREGS", dbg)

    def set_guest_debug(self, control: int, debugreg: Sequence[int] = ()) -> None:
        """KVM_SET_GUEST_DEBUG: single-step and hardware breakpoints (KVM_GUESTDBG_* flags)."""
        arg = ffi.new("struct kvm_guest_debug *")
        arg.control = control
        for i, v in enumerate(debugreg[:8]):
            arg.arch.debugreg[i] = v
        _ioctl(self.fd, "KVM_SET_GUEST_DEBUG", arg)

    def translate(self, linear: int) -> tuple[int, bool, bool] | None:
        """KVM_TRANSLATE: guest-physical address, writable, user; None if unmapped."""
        arg = ffi.new("struct kvm_translation *", {"linear_address": linear})
        _ioctl(self.fd, "KVM_TRANSLATE", arg)
        if not arg.valid:
            return None
        return arg.physical_address, bool(arg.writeable), bool(arg.usermode)

    def interrupt(self, vector: int) -> None:
        """KVM_INTERRUPT: inject an external interrupt (userspace irqchip only)."""
        _ioctl(self.fd, "KVM_INTERRUPT", ffi.new("struct kvm_interrupt *", {"irq": vector}))

    def close(self) -> None:
        """Unmap kvm_run and close the vCPU."""
        if self.fd >= 0:
            self._page.release()
            try:
                self._mmap.close()
            except BufferError:
                pass  # a caller still holds an exit view; the mapping goes with the process
            os.close(self.fd)
            self.fd = -1


def install_kick_handler(signo: int) -> None:
    """Make ``signo`` interrupt a blocked KVM_RUN (EINTR) without doing anything else."""
    if lib.hvm_install_kick_handler(signo) != 0:
        raise OSError(ffi.errno, f"sigaction({signo}): {os.strerror(ffi.errno)}")
