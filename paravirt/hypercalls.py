"""The hypercalls of a 64-bit PV guest: number in RAX, arguments in RDI, RSI, RDX, R10, R8, the
result (0, a value, or a negative Xen errno) back in RAX (arch-x86/xen-x86_64.h). Each handler
takes the call's context and its five arguments and returns the result; every guest pointer is
a guest linear address read or written through the guest's page tables (``Call.read/write``,
which turn a bad one into -EFAULT). Unknown numbers and sub-ops are -ENOSYS and counted.

Semantics follow Xen's implementations (xen/common/*.c, xen/arch/x86/pv/*.c, named per handler)
and its public headers.
"""
from __future__ import annotations

import struct
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from hvm.memory import GuestMemoryError
from hvm.paging import PageFault

from . import abi as x
from .hvarea import GRANT_FRAMES, M2P_ALIAS_VIRT_START
from .vcpu_context import SIZE as VCPU_CONTEXT_SIZE
from .pvcpu import (MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, PENDING_SEL, UPCALL_PENDING, DomainCrash,
                    SegmentFault, Trap, canonical)

if TYPE_CHECKING:
    from .domain import PvDomain
    from .pvcpu import PvVcpu

GNTTABOP_SETUP_TABLE, GNTTABOP_QUERY_SIZE, GNTTABOP_SET_VERSION, GNTTABOP_GET_VERSION = 2, 6, 8, 10
GNTST_OKAY, GNTST_GENERAL_ERROR, GNTST_BAD_DOMAIN = 0, -1, -2
MAX_MULTICALL = 512            # entries per multicall hypercall hvm takes at once
MULTICALL_ENTRY = struct.Struct("<QQ6Q")   # op, result, args[6] (xen.h multicall_entry, 64-bit)
MMU_UPDATE = struct.Struct("<QQ")         # ptr, val
MMUEXT_OP = struct.Struct("<IIQQ")        # cmd, (pad), arg1, arg2
XEN_VERSION = (4, 17)
EXTRAVERSION = b".0-hvm"
CAPABILITIES = b"xen-3.0-x86_64"


class Fault(Exception):
    """A guest pointer could not be followed: the hypercall returns -EFAULT."""


class Call:
    """One hypercall in progress: the vCPU making it, with guest-memory access."""

    def __init__(self, domain: "PvDomain", vcpu: "PvVcpu", engine):
        self.domain, self.vcpu, self.engine = domain, vcpu, engine
        self.sregs = engine.get_sregs()

    def read(self, va: int, length: int) -> bytes:
        if length < 0 or length > 1 << 24:
            raise Fault
        try:
            return self.vcpu.read(self.sregs, va, length)
        except (PageFault, GuestMemoryError):
            raise Fault from None

    def write(self, va: int, data: bytes) -> None:
        try:
            self.vcpu.write(self.sregs, va, data)
        except (PageFault, GuestMemoryError):
            raise Fault from None

    def u16(self, va: int) -> int:
        return struct.unpack("<H", self.read(va, 2))[0]

    def u32(self, va: int) -> int:
        return struct.unpack("<I", self.read(va, 4))[0]

    def u64(self, va: int) -> int:
        return struct.unpack("<Q", self.read(va, 8))[0]


Handler = Callable[[Call, int, int, int, int, int], int]
HANDLERS: dict[int, Handler] = {}


def hypercall(name: str):
    def register(fn: Handler) -> Handler:
        HANDLERS[x.HYPERCALL_NUMBERS[name]] = fn
        return fn
    return register


# -- traps, stacks, callbacks, segments (xen/arch/x86/pv/traps.c, callback.c, domain.c) ---------
@hypercall("set_trap_table")
def set_trap_table(c: Call, traps: int, *_) -> int:
    if not traps:                                  # NULL: forget every trap handler
        c.vcpu.traps.clear()
        return 0
    for i in range(256):
        vector, flags, _cs, address = struct.unpack("<BBH4xQ", c.read(traps + i * x.TRAP_INFO_SIZE, x.TRAP_INFO_SIZE))
        if not address:
            return 0
        c.vcpu.traps[vector] = Trap(address, flags)
    return 0


@hypercall("stack_switch")
def stack_switch(c: Call, ss: int, sp: int, *_) -> int:
    c.vcpu.kernel_ss, c.vcpu.kernel_sp = ss & 0xFFFF, sp
    return 0


@hypercall("set_callbacks")
def set_callbacks(c: Call, event: int, failsafe: int, syscall: int, *_) -> int:
    cb = c.vcpu.callbacks
    cb[x.CALLBACKTYPE_EVENT] = (event, 0)
    cb[x.CALLBACKTYPE_FAILSAFE] = (failsafe, 0)
    cb[x.CALLBACKTYPE_SYSCALL] = (syscall, x.CALLBACKF_MASK_EVENTS)
    return 0


CALLBACK_TYPES = {x.CALLBACKTYPE_EVENT, x.CALLBACKTYPE_FAILSAFE, x.CALLBACKTYPE_SYSCALL,
                  x.CALLBACKTYPE_SYSCALL32, x.CALLBACKTYPE_SYSENTER, x.CALLBACKTYPE_NMI}


@hypercall("callback_op")
def callback_op(c: Call, cmd: int, arg: int, *_) -> int:
    # callback_register {u16 type, u16 flags, (pad), u64 address}; unregister {u16 type}.
    if cmd == x.CALLBACKOP_REGISTER:
        kind, flags, address = struct.unpack("<HH4xQ", c.read(arg, 16))
        if kind not in CALLBACK_TYPES:
            return -x.EINVAL
        c.vcpu.callbacks[kind] = (address, flags)
        return 0
    if cmd == x.CALLBACKOP_UNREGISTER:
        kind = struct.unpack("<H", c.read(arg, 2))[0]
        if kind not in CALLBACK_TYPES:
            return -x.EINVAL
        c.vcpu.callbacks.pop(kind, None)
        return 0
    return -x.ENOSYS


@hypercall("set_segment_base")
def set_segment_base(c: Call, which: int, base: int, *_) -> int:
    if not canonical(base):
        return -x.EINVAL
    if which == x.SEGBASE_FS:
        c.engine.set_msrs({MSR_FS_BASE: base})
    elif which == x.SEGBASE_GS_KERNEL:
        c.engine.set_msrs({MSR_GS_BASE if c.vcpu.kernel_mode else MSR_KERNEL_GS_BASE: base})
    elif which == x.SEGBASE_GS_USER:
        c.engine.set_msrs({MSR_KERNEL_GS_BASE if c.vcpu.kernel_mode else MSR_GS_BASE: base})
    elif which == x.SEGBASE_GS_USER_SEL:
        _load_user_gs(c, base & 0xFFFF)
    else:
        return -x.EINVAL
    return 0


def _load_user_gs(c: Call, selector: int) -> None:
    """do_set_segment_base(SEGBASE_GS_USER_SEL): GS takes ``selector`` (RPL forced to 3) from the
    GDT or LDT and the user's GS base becomes its descriptor's base, the kernel's base staying
    active. A selector that does not load leaves GS NUL: Xen never fails this call (Linux
    BUG()s if it does)."""
    selector = selector | 3 if selector > 3 else 0
    sregs = c.sregs
    try:
        loaded = c.vcpu.data_segment(sregs, selector) if selector else None
    except SegmentFault:
        loaded = None
    user = MSR_KERNEL_GS_BASE if c.vcpu.kernel_mode else MSR_GS_BASE
    active = c.engine.get_msrs([MSR_GS_BASE])[MSR_GS_BASE]
    if loaded is None:
        sregs.gs = replace(sregs.gs, selector=0)
    else:
        sregs.gs = replace(loaded, base=active)
    c.engine.set_sregs(sregs)
    c.engine.set_msrs({MSR_GS_BASE: active, user: loaded.base if loaded else 0})


@hypercall("set_gdt")
def set_gdt(c: Call, frame_list: int, entries: int, *_) -> int:
    # xen/arch/x86/pv/descriptor-tables.c do_set_gdt: the guest's part of the GDT ends where
    # Xen's reserved entries begin.
    if entries > x.FIRST_RESERVED_GDT_ENTRY:
        return -x.EINVAL
    count = (entries + 511) // 512
    frames = list(struct.unpack(f"<{count}Q", c.read(frame_list, 8 * count))) if count else []
    return c.domain.set_gdt(c, frames, entries)


@hypercall("update_descriptor")
def update_descriptor(c: Call, maddr: int, desc: int, *_) -> int:
    return c.domain.mm.update_descriptor(maddr, desc)


@hypercall("fpu_taskswitch")
def fpu_taskswitch(c: Call, set_ts: int, *_) -> int:
    sregs = c.sregs
    sregs.cr0 = sregs.cr0 | 8 if set_ts else sregs.cr0 & ~8
    c.engine.set_sregs(sregs)
    return 0


@hypercall("set_debugreg")
def set_debugreg(c: Call, reg: int, value: int, *_) -> int:
    return c.vcpu.debugregs.set(reg, value, c.vcpu.cr4, c.engine)


@hypercall("get_debugreg")
def get_debugreg(c: Call, reg: int, *_) -> int:
    return c.vcpu.debugregs.get(reg, c.vcpu.cr4)


@hypercall("iret")
def iret(c: Call, *_) -> int:
    try:
        c.vcpu.iret(c.engine)
    except SegmentFault as fault:
        c.domain.bounce_trap(c.vcpu, c.engine, 13, fault.selector & 0xFFFC, regs=fault.regs, sregs=fault.sregs)
    return RETURNED


RETURNED = object()   # the handler set every register itself (iret): RAX is not the result


# -- information (xen/common/kernel.c) -------------------------------------------------------------
@hypercall("xen_version")
def xen_version(c: Call, cmd: int, arg: int, *_) -> int:
    if cmd == x.XENVER_VERSION:
        return XEN_VERSION[0] << 16 | XEN_VERSION[1]
    fixed = {x.XENVER_EXTRAVERSION: EXTRAVERSION.ljust(16, b"\0"),
             x.XENVER_CAPABILITIES: CAPABILITIES.ljust(1024, b"\0"),
             x.XENVER_CHANGESET: b"hvm".ljust(64, b"\0"),
             x.XENVER_COMPILE_INFO: b"hvm".ljust(64, b"\0") * 2 + b"hvm".ljust(16, b"\0"),
             x.XENVER_PLATFORM_PARAMETERS: struct.pack("<Q", x.HYPERVISOR_VIRT_START),
             x.XENVER_GUEST_HANDLE: bytes(16),
             x.XENVER_COMMANDLINE: bytes(1024)}
    if cmd in fixed:
        c.write(arg, fixed[cmd])
        return 0
    if cmd == x.XENVER_GET_FEATURES:
        index = c.u32(arg)
        if index != 0:
            return -x.EINVAL
        c.write(arg + 4, struct.pack("<I", c.domain.features))
        return 0
    if cmd == x.XENVER_PAGESIZE:
        return 4096
    return -x.ENOSYS


@hypercall("vm_assist")
def vm_assist(c: Call, cmd: int, kind: int, *_) -> int:
    # Xen 64-bit PV accepts these (xen/arch/x86/include/asm/config.h VM_ASSIST_VALID).
    valid = {x.VMASST_TYPE_4GB_SEGMENTS, x.VMASST_TYPE_4GB_SEGMENTS_NOTIFY, x.VMASST_TYPE_WRITABLE_PAGETABLES,
             x.VMASST_TYPE_PAE_EXTENDED_CR3, x.VMASST_TYPE_ARCHITECTURAL_IOPL,
             x.VMASST_TYPE_RUNSTATE_UPDATE_FLAG, x.VMASST_TYPE_M2P_STRICT}
    if kind not in valid:
        return -x.EINVAL
    if cmd == x.VMASST_CMD_ENABLE:
        c.domain.vm_assist |= 1 << kind
    elif cmd == x.VMASST_CMD_DISABLE:
        c.domain.vm_assist &= ~(1 << kind)
    else:
        return -x.ENOSYS
    return 0


# -- console (xen/drivers/char/console.c) --------------------------------------------------------
@hypercall("console_io")
def console_io(c: Call, cmd: int, count: int, buffer: int, *_) -> int:
    if cmd == x.CONSOLEIO_WRITE:
        if count > 1 << 20:
            return -x.EINVAL
        c.domain.console_write(c.read(buffer, count))
        return 0
    if cmd == x.CONSOLEIO_READ:
        data = c.domain.console_read(min(count, 4096))
        c.write(buffer, data)
        return len(data)
    return -x.ENOSYS


# -- scheduling (xen/common/sched/core.c) --------------------------------------------------------
@hypercall("sched_op")
def sched_op(c: Call, cmd: int, arg: int, *_) -> int:
    if cmd == x.SCHEDOP_YIELD:
        return 0
    if cmd == x.SCHEDOP_BLOCK:
        c.domain.block(c.vcpu, c.engine)
        return 0
    if cmd == x.SCHEDOP_SHUTDOWN:
        reason = c.u32(arg) & 0xFF                  # Xen takes the reason as a u8
        c.domain.shutdown(c.vcpu, reason, c.engine)
        return 0
    if cmd == x.SCHEDOP_SHUTDOWN_CODE:
        c.domain.shutdown_code = c.u32(arg)
        return 0
    if cmd == x.SCHEDOP_POLL:
        # sched_poll {ports handle, u32 nr_ports, (pad), u64 timeout} (public/sched.h)
        ports, nr_ports, timeout = SCHED_POLL.unpack(c.read(arg, SCHED_POLL.size))
        if nr_ports > 128:
            return -x.EINVAL                          # Xen's "fairly arbitrary limit"
        wanted = struct.unpack(f"<{nr_ports}I", c.read(ports, 4 * nr_ports))
        return c.domain.poll(c.vcpu, c.engine, wanted, timeout)
    return -x.ENOSYS


SCHED_POLL = struct.Struct("<QI4xQ")


# -- memory (xen/common/memory.c, xen/arch/x86/mm.c) ---------------------------------------------
MEMOP_MASK = 0x3F
XENMEM_CURRENT_RESERVATION, XENMEM_MAXIMUM_RESERVATION, XENMEM_MAXIMUM_RAM_PAGE = 3, 4, 2
XENMEM_MACHPHYS_MFN_LIST, XENMEM_MEMORY_MAP, XENMEM_MACHPHYS_MAPPING, XENMEM_MAXIMUM_GPFN = 5, 9, 12, 14
XENMEM_INCREASE_RESERVATION, XENMEM_DECREASE_RESERVATION, XENMEM_POPULATE_PHYSMAP, XENMEM_EXCHANGE = 0, 1, 6, 11
E820_RAM = 1


@hypercall("memory_op")
def memory_op(c: Call, cmd: int, arg: int, *_) -> int:
    op, d = cmd & MEMOP_MASK, c.domain
    if op in (XENMEM_CURRENT_RESERVATION, XENMEM_MAXIMUM_RESERVATION, XENMEM_MAXIMUM_GPFN):
        domid = struct.unpack("<H", c.read(arg, 2))[0]
        if domid != x.DOMID_SELF and domid != d.domid:
            return -x.ESRCH
        return d.nr_pages - 1 if op == XENMEM_MAXIMUM_GPFN else d.nr_pages
    if op == XENMEM_MAXIMUM_RAM_PAGE:
        return d.area.end - 1
    if op == XENMEM_MEMORY_MAP:
        # xen_memory_map {u32 nr_entries, (pad), buffer}: a PV guest's map is its RAM.
        nr, buffer = struct.unpack("<I4xQ", c.read(arg, 16))
        entries = [struct.pack("<QQI", 0, d.nr_pages * 4096, E820_RAM)]
        count = min(nr, len(entries))
        c.write(buffer, b"".join(entries[:count]))
        c.write(arg, struct.pack("<I", count))
        return 0
    if op == XENMEM_MACHPHYS_MAPPING:
        # xen_machphys_mapping {v_start, v_end, max_mfn}
        entries = d.area.m2p_frames * 4096 // 8
        # The copy in slot 257: on kvm_pvm hosts slot 256 cannot be reached from ring 3 (see
        # paravirt.ring0); a guest that asks takes the M2P from where it is told.
        c.write(arg, struct.pack("<QQQ", M2P_ALIAS_VIRT_START, M2P_ALIAS_VIRT_START + entries * 8, entries - 1))
        return 0
    if op in (XENMEM_INCREASE_RESERVATION, XENMEM_POPULATE_PHYSMAP, XENMEM_EXCHANGE):
        return -x.ENOMEM if op != XENMEM_EXCHANGE else -x.EINVAL   # no memory beyond the domain's
    if op == XENMEM_DECREASE_RESERVATION:
        return 0                                     # no extents released: the balloon keeps them
    return -x.ENOSYS


# -- multicall (xen/common/multicall.c) ----------------------------------------------------------
@hypercall("multicall")
def multicall(c: Call, entries: int, count: int, *_) -> int:
    if count > MAX_MULTICALL:
        return -x.EINVAL
    for i in range(count):
        at = entries + i * MULTICALL_ENTRY.size
        op, _result, *args = MULTICALL_ENTRY.unpack(c.read(at, MULTICALL_ENTRY.size))
        if op in (x.HYPERCALL_NUMBERS["multicall"], x.HYPERCALL_NUMBERS["iret"]):
            result = -x.EINVAL                         # no nesting, no iret from a batch
        else:
            result = c.domain.dispatch(c, op, *args[:5])
        c.write(at + 8, struct.pack("<q", result))
    return 0


# -- vCPUs (xen/common/domain.c do_vcpu_op, xen/arch/x86/domain.c) -------------------------------
VCPUOP_INITIALISE, VCPUOP_UP, VCPUOP_DOWN, VCPUOP_IS_UP, VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA = 0, 1, 2, 3, 5
VCPUOP_SET_PERIODIC_TIMER, VCPUOP_STOP_PERIODIC_TIMER = 6, 7
VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER, VCPUOP_REGISTER_VCPU_INFO = 8, 9, 10
VCPUOP_GET_PHYSID = 12
RUNSTATE_INFO = struct.Struct("<iIQ4Q")      # state, (pad), state_entry_time, time[4]


@hypercall("vcpu_op")
def vcpu_op(c: Call, cmd: int, vcpuid: int, arg: int, *_) -> int:
    d = c.domain
    if vcpuid >= len(d.vcpus):
        return -x.ENOENT
    target = d.vcpus[vcpuid]
    if cmd == VCPUOP_INITIALISE:
        return d.initialise(c, target, c.read(arg, VCPU_CONTEXT_SIZE))
    if cmd == VCPUOP_UP:
        return d.up(target)
    if cmd == VCPUOP_IS_UP:
        return 0 if target.down else 1
    if cmd == VCPUOP_DOWN:
        return d.down(target, c.vcpu, c.engine)
    if cmd == VCPUOP_REGISTER_VCPU_INFO:
        # vcpu_register_vcpu_info {u64 mfn, u32 offset, u32 rsvd}: a 64-byte area inside one page
        # of the guest's, 8-aligned (xen/common/domain.c map_guest_area: -ENXIO otherwise).
        mfn, offset, _rsvd = struct.unpack("<QII", c.read(arg, 16))
        if offset % 8 or offset + 64 > 4096:
            return -x.ENXIO
        if target.vcpu_info_registered:
            return -x.EBUSY
        if mfn >= d.nr_pages or d.mm.get_writable(mfn):
            return -x.EINVAL
        new = mfn * 4096 + offset
        old = d.memory.read(target.vcpu_info_maddr, 64)
        d.memory.write(new, old)
        # Xen's map_guest_area: everything is marked pending (upcall_pending and all of
        # pending_sel) so that no event raised meanwhile is lost; the guest takes one upcall.
        d.memory.write(new + UPCALL_PENDING, b"\x01")
        d.memory.write(new + PENDING_SEL, struct.pack("<Q", (1 << 64) - 1))
        target.vcpu_info_maddr, target.vcpu_info_registered = new, True
        d.kick(vcpuid)
        return 0
    if cmd == VCPUOP_REGISTER_RUNSTATE_MEMORY_AREA:
        area = c.u64(arg)
        # Written now (a running vCPU, no time accounted yet) and whenever hvm updates it.
        c.write(area, RUNSTATE_INFO.pack(0, 0, 0, 0, 0, 0, 0)) if area else None
        target.runstate_area = area
        return 0
    timer = d.timers[vcpuid]
    if cmd == VCPUOP_SET_PERIODIC_TIMER:
        period = c.u64(arg)
        if period < 1_000_000:
            return -x.EINVAL                # Xen's minimum period: 1 ms
        timer.set_periodic(period)
        return 0
    if cmd == VCPUOP_STOP_PERIODIC_TIMER:
        timer.set_periodic(None)
        return 0
    if cmd in (VCPUOP_SET_SINGLESHOT_TIMER, VCPUOP_STOP_SINGLESHOT_TIMER):
        if target is not c.vcpu:
            return -x.EINVAL                # only for the calling vCPU
        # vcpu_set_singleshot_timer {u64 timeout_abs_ns, u32 flags}: a past deadline fires at
        # once; VCPU_SSHOTTMR_future is ignored, as Xen does now.
        timer.set_singleshot(c.u64(arg) if cmd == VCPUOP_SET_SINGLESHOT_TIMER else None)
        return 0
    return -x.ENOSYS


# -- grant tables, events, physdev, nmi, sysctl: what a guest without backends may ask ------------
@hypercall("grant_table_op")
def grant_table_op(c: Call, cmd: int, arg: int, count: int, *_) -> int:
    """The domain's own grant table, version 1 (public/grant_table.h): its frames are hvm's, set
    up on request and mapped by the guest like shared_info. hvm's backends take no grants (the
    console and xenstore rings are shared by frame number), so nothing reads the entries yet."""
    if cmd == GNTTABOP_QUERY_SIZE:
        # gnttab_query_size {u16 dom, (pad), u32 nr_frames, u32 max_nr_frames, i16 status}
        dom = c.u16(arg)
        if dom not in (x.DOMID_SELF, c.domain.domid):
            c.write(arg + 12, struct.pack("<h", GNTST_BAD_DOMAIN))
            return 0
        c.write(arg + 4, struct.pack("<IIh", c.domain.grant_frames, GRANT_FRAMES, GNTST_OKAY))
        return 0
    if cmd == GNTTABOP_SETUP_TABLE:
        # gnttab_setup_table {u16 dom, (pad), u32 nr_frames, i16 status, (pad), u64 frame_list}
        dom, nr_frames = struct.unpack("<H2xI", c.read(arg, 8))
        frame_list = c.u64(arg + 16)
        if dom not in (x.DOMID_SELF, c.domain.domid):
            status = GNTST_BAD_DOMAIN
        elif nr_frames > GRANT_FRAMES:
            status = GNTST_GENERAL_ERROR
        else:
            first = c.domain.area.grant_frames
            c.write(frame_list, struct.pack(f"<{nr_frames}Q", *range(first, first + nr_frames)))
            c.domain.grant_frames = max(c.domain.grant_frames, nr_frames)
            status = GNTST_OKAY
        c.write(arg + 8, struct.pack("<h", status))
        return 0
    if cmd == GNTTABOP_SET_VERSION:
        version = c.u32(arg)
        return 0 if version == 1 else -x.EINVAL
    if cmd == GNTTABOP_GET_VERSION:
        c.write(arg + 4, struct.pack("<I", 1))
        return 0
    return -x.ENOSYS


@hypercall("set_timer_op")
def set_timer_op(c: Call, timeout: int, *_) -> int:
    # xen/common/sched/core.c do_set_timer_op: absolute system time; 0 cancels; a deadline in
    # the past or absurdly far ahead (2^50 ns) means "soon" (100 ms) - Linux relies on that.
    timer = c.domain.timers[c.vcpu.index]
    if timeout == 0:
        timer.set_singleshot(None)
        return 0
    now = c.domain.clock.system_time()
    if timeout >= 1 << 63 or timeout - now > 1 << 50:
        timeout = now + 100_000_000
    timer.set_singleshot(timeout)
    return 0


# event_channel.h: the structures' layouts, 64-bit.
EVTCHNOP_BIND_INTERDOMAIN, EVTCHNOP_BIND_VIRQ, EVTCHNOP_CLOSE, EVTCHNOP_SEND = 0, 1, 3, 4
EVTCHNOP_STATUS, EVTCHNOP_ALLOC_UNBOUND, EVTCHNOP_BIND_IPI, EVTCHNOP_BIND_VCPU = 5, 6, 7, 8
EVTCHNOP_UNMASK, EVTCHNOP_RESET = 9, 10


@hypercall("event_channel_op")
def event_channel_op(c: Call, cmd: int, arg: int, *_) -> int:
    ch = c.domain.channels
    if cmd == EVTCHNOP_SEND:
        return ch.send(c.u32(arg))
    if cmd == EVTCHNOP_UNMASK:
        return ch.unmask(c.u32(arg))
    if cmd == EVTCHNOP_CLOSE:
        return ch.close(c.u32(arg))
    if cmd == EVTCHNOP_BIND_VIRQ:
        virq, vcpu = struct.unpack("<II", c.read(arg, 8))
        return _port_out(c, arg + 8, ch.bind_virq(virq, vcpu))
    if cmd == EVTCHNOP_BIND_IPI:
        return _port_out(c, arg + 4, ch.bind_ipi(c.u32(arg)))
    if cmd == EVTCHNOP_ALLOC_UNBOUND:
        dom, remote = struct.unpack("<HH", c.read(arg, 4))
        if dom not in (x.DOMID_SELF, c.domain.domid):
            return -x.ESRCH
        return _port_out(c, arg + 4, ch.alloc_unbound(remote))
    if cmd == EVTCHNOP_BIND_INTERDOMAIN:
        remote_dom, remote_port = struct.unpack("<H2xI", c.read(arg, 8))
        return _port_out(c, arg + 8, ch.bind_interdomain(remote_dom, remote_port))
    if cmd == EVTCHNOP_BIND_VCPU:
        port, vcpu = struct.unpack("<II", c.read(arg, 8))
        return ch.bind_vcpu(port, vcpu)
    if cmd == EVTCHNOP_STATUS:
        dom, port = struct.unpack("<H2xI", c.read(arg, 8))
        if dom not in (x.DOMID_SELF, c.domain.domid):
            return -x.ESRCH
        status, target = ch.status(port)
        union = b""
        if target is not None and target.kind == "interdomain":
            union = struct.pack("<H2xI", target.remote_dom, target.remote_port)
        elif target is not None and target.kind == "unbound":
            union = struct.pack("<H", target.remote_dom)
        elif target is not None and target.kind == "virq":
            union = struct.pack("<I", target.virq)
        c.write(arg + 8, struct.pack("<II", status, target.vcpu if target else 0) + union.ljust(8, b"\0"))
        return 0
    return -x.ENOSYS                        # FIFO ABI and reset: Linux then uses 2-level


def _port_out(c: Call, at: int, port: int) -> int:
    if port < 0:
        return port
    c.write(at, struct.pack("<I", port))
    return 0


@hypercall("physdev_op")
def physdev_op(c: Call, cmd: int, arg: int, *_) -> int:
    PHYSDEVOP_SET_IOPL = 6
    if cmd == PHYSDEVOP_SET_IOPL:
        iopl = c.u32(arg)
        if iopl > 3:
            return -x.EINVAL
        c.vcpu.iopl = iopl
        return 0
    return -x.ENOSYS


@hypercall("nmi_op")
def nmi_op(c: Call, cmd: int, arg: int, *_) -> int:
    # nmi.h: XENNMI_register_callback {u64 handler_address, u64 pad}, XENNMI_unregister_callback.
    # The same callback as CALLBACKTYPE_nmi (xen/arch/x86/pv/callback.c); hvm raises no NMIs yet.
    XENNMI_REGISTER_CALLBACK, XENNMI_UNREGISTER_CALLBACK = 0, 1
    if cmd == XENNMI_REGISTER_CALLBACK:
        c.vcpu.callbacks[x.CALLBACKTYPE_NMI] = (c.u64(arg), 0)
        return 0
    if cmd == XENNMI_UNREGISTER_CALLBACK:
        c.vcpu.callbacks.pop(x.CALLBACKTYPE_NMI, None)
        return 0
    return -x.ENOSYS


@hypercall("sysctl")
def sysctl(c: Call, *_) -> int:
    return -x.EPERM                                    # a domU is not the control domain


# -- direct paging (xen/arch/x86/mm.c do_mmu_update, do_mmuext_op, do_update_va_mapping) --------
@hypercall("mmu_update")
def mmu_update(c: Call, requests: int, count: int, done_ptr: int, foreigndom: int, *_) -> int:
    if foreigndom not in (x.DOMID_SELF, c.domain.domid):
        return -x.ESRCH
    count &= 0x7FFFFFFF
    if count > 1 << 16:
        return -x.EINVAL
    pairs = [MMU_UPDATE.unpack_from(raw, 0) for raw in
             (c.read(requests + i * 16, 16) for i in range(count))]
    rc, done = c.domain.mm.mmu_update(pairs)
    c.domain.flush_tlb(c.engine)
    if done_ptr:
        c.write(done_ptr, struct.pack("<I", done))
    return rc


@hypercall("update_va_mapping")
def update_va_mapping(c: Call, va: int, pte: int, flags: int, *_) -> int:
    rc = c.domain.mm.update_va_mapping(va, pte, c.vcpu.index)
    if rc == 0 and flags & x.UVMF_FLUSHTYPE_MASK:
        c.domain.flush_tlb(c.engine)
    elif rc == 0:
        c.domain.flush_tlb(c.engine)   # unicorn's TLB knows no partial invalidation from outside
    return rc


@hypercall("mmuext_op")
def mmuext_op(c: Call, ops: int, count: int, done_ptr: int, foreigndom: int, *_) -> int:
    if foreigndom not in (x.DOMID_SELF, c.domain.domid):
        return -x.ESRCH
    count &= 0x7FFFFFFF
    done = 0
    rc = 0
    for i in range(count):
        cmd, _pad, arg1, arg2 = MMUEXT_OP.unpack(c.read(ops + i * MMUEXT_OP.size, MMUEXT_OP.size))
        rc = c.domain.mmuext(c, cmd, arg1, arg2)
        if rc:
            break
        done += 1
    if done_ptr:
        c.write(done_ptr, struct.pack("<I", done))
    return rc


def run(domain: "PvDomain", vcpu: "PvVcpu", engine, nr: int, args: tuple[int, ...]):
    """Make hypercall ``nr``: its result, or RETURNED when the handler set the registers."""
    call = Call(domain, vcpu, engine)
    return domain.dispatch(call, nr, *args)


def dispatch(call: Call, nr: int, *args: int):
    handler = HANDLERS.get(nr)
    if handler is None:
        return None
    try:
        return handler(call, *args)
    except Fault:
        return -x.EFAULT


__all__ = ["HANDLERS", "RETURNED", "Call", "DomainCrash", "dispatch", "run"]
