"""A running PV domain: its vCPUs' hypervisor state, its page-table validator, its console, and
what an engine calls when the guest leaves its ring-3 world: ``syscall`` (a hypercall from the
guest kernel, a system call from guest user space) and exceptions (bounced to the guest kernel's
trap table, or emulated where Xen emulates). Engine-neutral: the unicorn engine calls it from its
hooks, a KVM engine from its ring-0 stubs' exits.
"""
from __future__ import annotations

import collections
import struct
import threading
from dataclasses import replace
from typing import TYPE_CHECKING, Callable

from kvmffi import exits as kx

from hvm.engine.base import EngineCrash
from hvm.engine.state import Regs
from hvm.memory import GuestMemoryError
from hvm.outcome import End, Outcome
from hvm.paging import PageFault, translate

from . import abi as x
from . import emulate, hypercalls
from .events import PORTS, EventChannels, UpcallController
from .hvarea import LDT_PAGES, HypervisorArea
from .ioemul import PvIoPorts
from .ptwr import PageTableWrites
from .pvclock import PvClock, PvTimer
from .pvcpu import (AC, IF as RFLAGS_IF, IOPL as IOPL_BITS, MSR_FS_BASE, MSR_GS_BASE, MSR_KERNEL_GS_BASE, NT,
                    RF, TF, VM, DomainCrash, PvVcpu, SegmentFault, Trap, canonical, ring3_segment)
from .vcpu_context import (VGCF_FAILSAFE_DISABLES_EVENTS, VGCF_IN_KERNEL, VGCF_SYSCALL_DISABLES_EVENTS,
                           VcpuGuestContext)

if TYPE_CHECKING:
    from hvm.memory import GuestMemory

# The forced-emulation prefix (arch-x86/xen.h XEN_EMULATE_PREFIX: ud2a; .ascii "xen") and the
# CPUID it announces.
EMULATE_PREFIX = b"\x0f\x0bxen"
CPUID = b"\x0f\xa2"
VECTOR_NAMES = ["#DE", "#DB", "NMI", "#BP", "#OF", "#BR", "#UD", "#NM", "#DF", "CSO", "#TS", "#NP",
                "#SS", "#GP", "#PF", "15", "#MF", "#AC", "#MC", "#XM", "#VE", "#CP"]
VIRQ_TIMER = 0
# Xen's flat ring-3 selectors (always in the GDT's reserved pages): no descriptor to check.
_FLAT = {x.FLAT_RING3_CS64 & ~3, x.FLAT_RING3_SS64 & ~3, x.FLAT_RING3_CS32 & ~3, x.FLAT_RING3_DS32 & ~3}

SHUTDOWN_REASONS = {x.SHUTDOWN_POWEROFF: "poweroff", x.SHUTDOWN_REBOOT: "reboot", x.SHUTDOWN_SUSPEND: "suspend",
                    x.SHUTDOWN_CRASH: "crash", x.SHUTDOWN_WATCHDOG: "watchdog",
                    x.SHUTDOWN_SOFT_RESET: "soft_reset"}


class PvDomain:
    """One 64-bit PV guest."""

    domid = 1
    # The XENFEAT bits hvm honours for a PV guest: page directories anywhere (always so in
    # 64-bit), MMU_PT_UPDATE_PRESERVE_AD, and GNTTAB_MAP_AVAIL_BITS (grant mappings keep the
    # PTE's available bits: true vacuously, hvm maps no grants; Linux refuses to run as a PV
    # guest without both of the last two, drivers/xen/features.c).
    features = (1 << x.XENFEAT_PAE_PGDIR_ABOVE_4GB | 1 << x.XENFEAT_MMU_PT_UPDATE_PRESERVE_AD
                | 1 << x.XENFEAT_GNTTAB_MAP_AVAIL_BITS)

    def __init__(self, memory: "GuestMemory", area: HypervisorArea, mm, vcpus: int, *,
                 console_out: Callable[[bytes], None], finish: Callable[[Outcome], None],
                 crash_report: Callable[[int, str], object], cpuid: Callable[[object, int, int], tuple]):
        self.memory, self.area, self.mm = memory, area, mm
        self.nr_pages = area.nr_pages
        self.vcpus = [PvVcpu(i, memory, area.shared_info_maddr) for i in range(vcpus)]
        self._console_out, self._finish, self._crash_report, self._cpuid = console_out, finish, crash_report, cpuid
        self.console_ring = None           # set by the board when the guest has a console page
        self.vm_assist = 0
        self.grant_frames = 1               # grant-table frames set up (Xen starts a domain with one)
        self.shutdown_code: int | None = None
        self._ended = False
        self.clock = PvClock()
        self.io = PvIoPorts()
        self.ptwr = PageTableWrites()
        # One vCPU at a time in the domain's books (page types and counts, event channels,
        # grant and vCPU state): KVM vCPUs take their exits on threads of their own.
        self.lock = threading.Lock()
        # The ring-3 start-of-day segment state of vCPU n on L4 frame l4 (the board's layout).
        self.vcpu_sregs: Callable[[int, int], object] = lambda index, l4: None
        self.channels = EventChannels(memory, area.shared_info_maddr, lambda i: self.vcpus[i].vcpu_info_maddr,
                                      self.kick, vcpus, on_pending=self._polled)
        self.timers = [PvTimer(self.clock, lambda i=i: self._timer_fired(i)) for i in range(vcpus)]
        self.engines: list = []
        self.clock.write_wallclock(memory, area.shared_info_maddr)
        for vcpu in self.vcpus:
            self.clock.update(memory, vcpu.vcpu_info_maddr)
        self.hypercall_counts: collections.Counter[str] = collections.Counter()
        self.unknown_hypercalls: collections.Counter[str] = collections.Counter()
        self.bounced: collections.Counter[str] = collections.Counter()

    def attach(self, engines: list) -> None:
        """Give each vCPU's engine the domain: SYSCALL and exceptions come here, upcalls are its
        interrupts and the Xen timers its timers."""
        self.engines = engines
        for index, engine in enumerate(engines):
            engine.pv = self
            vcpu = self.vcpus[index]
            engine.attach_platform(UpcallController(self.channels, index, lambda v=vcpu: v.upcall_mask,
                                                    lambda v=vcpu: self._needs_vcpu(v)),
                                   [self.timers[index]])

    def _needs_vcpu(self, vcpu: PvVcpu) -> bool:
        """The domain has business with the vCPU whatever its event mask: a VCPUOP_down of it
        from another vCPU, or the end of its SCHEDOP_poll."""
        if vcpu.down:
            return not vcpu.parked and vcpu.initialised
        return vcpu.poll is not None and self._poll_over(vcpu)

    def kick(self, index: int) -> None:
        if index < len(self.engines):
            self.engines[index].poke()

    def _timer_fired(self, index: int) -> None:
        self.clock.update(self.memory, self.vcpus[index].vcpu_info_maddr)
        self.channels.raise_virq(VIRQ_TIMER, index)

    # -- what engines call --------------------------------------------------------------------
    def syscall(self, engine) -> kx.VcpuExit | None:
        """``syscall`` ran in ring 3 (RIP is past it)."""
        vcpu = self.vcpus[engine.index]
        with self.lock:
            try:
                if vcpu.kernel_mode:
                    return self._hypercall(vcpu, engine)
                return self._user_syscall(vcpu, engine)
            except DomainCrash as exc:
                return self._crash(engine, str(exc))

    def exception(self, engine, event) -> kx.VcpuExit | None:
        """An exception or ``int n`` in ring 3: Xen's handling of it for a PV guest."""
        vcpu = self.vcpus[engine.index]
        with self.lock:
            try:
                return self._exception(vcpu, engine, event)
            except DomainCrash as exc:
                return self._crash(engine, str(exc))

    # -- hypercalls ---------------------------------------------------------------------------
    def _hypercall(self, vcpu: PvVcpu, engine) -> kx.VcpuExit | None:
        regs = engine.get_regs()
        nr = regs.rax
        result = hypercalls.run(self, vcpu, engine, nr, (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8))
        if self._ended:
            return kx.Interrupted()
        if result is not hypercalls.RETURNED:
            regs = engine.get_regs()
            regs.rax = result & (1 << 64) - 1
            engine.set_regs(regs)
        return None

    def dispatch(self, call, nr: int, *args: int):
        """Hypercall ``nr`` for ``call`` (also each multicall entry): its result."""
        name = x.HYPERCALLS.get(nr, f"#{nr}")
        result = hypercalls.dispatch(call, nr, *args)
        if result is None:
            self.unknown_hypercalls[name] += 1
            return -x.ENOSYS
        self.hypercall_counts[name] += 1
        return result

    def mmuext(self, call, cmd: int, arg1: int, arg2: int) -> int:
        """One mmuext_op entry (xen/arch/x86/mm.c do_mmuext_op)."""
        mm, vcpu = self.mm, call.vcpu
        if x.MMUEXT_PIN_L1_TABLE <= cmd <= x.MMUEXT_PIN_L4_TABLE:
            return mm.pin(cmd - x.MMUEXT_PIN_L1_TABLE + 1, arg1)
        if cmd == x.MMUEXT_UNPIN_TABLE:
            return mm.unpin(arg1)
        if cmd in (x.MMUEXT_NEW_BASEPTR, x.MMUEXT_NEW_USER_BASEPTR):
            user = cmd == x.MMUEXT_NEW_USER_BASEPTR
            if not vcpu.kernel_mode:
                return -x.EINVAL
            rc = mm.new_baseptr(arg1, user=user, vcpu=vcpu.index)
            if rc == 0:
                if user:
                    vcpu.user_l4 = arg1
                else:
                    vcpu.kernel_l4 = arg1
                    sregs = call.engine.get_sregs()
                    sregs.cr3 = arg1 * 4096
                    call.engine.set_sregs(sregs)
                    call.sregs = sregs
            return rc
        if cmd in (x.MMUEXT_TLB_FLUSH_LOCAL, x.MMUEXT_INVLPG_LOCAL, x.MMUEXT_TLB_FLUSH_MULTI,
                   x.MMUEXT_INVLPG_MULTI, x.MMUEXT_TLB_FLUSH_ALL, x.MMUEXT_INVLPG_ALL):
            self.flush_tlb(call.engine)
            return 0
        if cmd in (x.MMUEXT_FLUSH_CACHE, x.MMUEXT_FLUSH_CACHE_GLOBAL):
            return 0
        if cmd == x.MMUEXT_SET_LDT:
            if arg2 > 8192 or arg1 % 4096 or arg1 >= x.HYPERVISOR_VIRT_START and arg1 < x.HYPERVISOR_VIRT_END:
                return -x.EINVAL
            if vcpu.ldt != (arg1, arg2):
                sregs = call.engine.get_sregs()
                self._load_ldt(vcpu, arg1, arg2, sregs)
                self.flush_tlb(call.engine)
                call.engine.set_sregs(sregs)
                call.sregs = sregs
            return 0
        if cmd in (x.MMUEXT_CLEAR_PAGE, x.MMUEXT_COPY_PAGE):
            return mm.clear_page(arg1) if cmd == x.MMUEXT_CLEAR_PAGE else mm.copy_page(arg1, arg2)
        # Superpage marking is gone from Xen (-EOPNOTSUPP); an unknown command is -ENOSYS.
        return -x.EOPNOTSUPP if cmd in (x.MMUEXT_MARK_SUPER, x.MMUEXT_UNMARK_SUPER) else -x.ENOSYS

    def flush_tlb(self, engine) -> None:
        engine.flush_tlb()

    def set_gdt(self, call, frames: list[int], entries: int) -> int:
        """Make ``frames`` the guest's GDT pages (each validated as a descriptor page), in the
        vCPU's GDT area ahead of Xen's reserved page; the old ones are released."""
        return self._set_gdt(call.vcpu, frames, entries, call.sregs.cr3, call.engine)

    def _set_gdt(self, vcpu: PvVcpu, frames: list[int], entries: int, cr3: int, engine) -> int:
        mm = self.mm
        taken = []
        for mfn in frames:
            if mm.get_seg_desc(mfn):
                for done in taken:
                    mm.put_seg_desc(done)
                return -x.EINVAL
            taken.append(mfn)
        for old in vcpu.gdt_frames:
            mm.put_seg_desc(old)
        vcpu.gdt_frames, vcpu.gdt_entries = frames, entries
        base = self.area.gdt_base(vcpu.index)
        for page in range(x.FIRST_RESERVED_GDT_PAGE):
            frame = frames[page] if page < len(frames) else self.area.zero_page
            # Supervisor-only and writable: the CPU's own descriptor accesses (the accessed bit),
            # which the guest's ring 3 cannot make.
            self.memory.write(self._leaf(cr3, base + page * 4096),
                              struct.pack("<Q", frame << 12 | x.PTE_P | x.PTE_RW | x.PTE_NX))
        self.flush_tlb(engine)
        return 0

    # -- secondary vCPUs ----------------------------------------------------------------------
    def initialise(self, call, target: PvVcpu, raw: bytes) -> int:
        """VCPUOP_initialise: ``target`` takes the 64-bit vcpu_guest_context ``raw`` as Xen's
        arch_set_info_guest takes it (trap table, GDT and LDT, kernel stack, callbacks, page
        tables, registers); it runs once VCPUOP_up says so."""
        if target.initialised:
            return -x.EEXIST
        ctx = VcpuGuestContext.parse(raw)
        regs = ctx.user_regs
        addresses = [regs.rip, ctx.event_callback_eip, ctx.failsafe_callback_eip, ctx.syscall_callback_eip,
                     ctx.ldt_base, ctx.fs_base, ctx.gs_base_kernel, ctx.gs_base_user]
        addresses += [t.address for t in ctx.trap_ctxt]
        if not all(canonical(a) for a in addresses) or ctx.ldt_ents > 8192 or ctx.ldt_base & 0xFFF \
                or ctx.gdt_ents > x.FIRST_RESERVED_GDT_ENTRY:
            return -x.EINVAL
        kernel_l4, user_l4 = ctx.ctrlreg[3] >> 12, ctx.ctrlreg[1] >> 12
        index = target.index
        if self.mm.new_baseptr(kernel_l4, vcpu=index):
            return -x.EINVAL
        if user_l4 and self.mm.new_baseptr(user_l4, user=True, vcpu=index):
            return -x.EINVAL
        frames = list(ctx.gdt_frames)[:(ctx.gdt_ents + 511) // 512]
        if self._set_gdt(target, frames, ctx.gdt_ents, call.sregs.cr3, call.engine):
            return -x.EINVAL
        target.kernel_l4, target.user_l4 = kernel_l4, user_l4
        target.traps = {t.vector: Trap(t.address, t.flags) for t in ctx.trap_ctxt if t.address}
        target.kernel_ss, target.kernel_sp = ctx.kernel_ss & 0xFFFF, ctx.kernel_sp
        events_off = x.CALLBACKF_MASK_EVENTS
        target.callbacks = {
            x.CALLBACKTYPE_EVENT: (ctx.event_callback_eip, 0),
            x.CALLBACKTYPE_FAILSAFE: (ctx.failsafe_callback_eip,
                                      events_off if ctx.flags & VGCF_FAILSAFE_DISABLES_EVENTS else 0),
        }
        if ctx.syscall_callback_eip:
            target.callbacks[x.CALLBACKTYPE_SYSCALL] = (
                ctx.syscall_callback_eip, events_off if ctx.flags & VGCF_SYSCALL_DISABLES_EVENTS else 0)
        target.kernel_mode = bool(ctx.flags & VGCF_IN_KERNEL)
        # The virtual IOPL comes from the context's RFLAGS, which then runs with IF set and
        # IOPL 0 (arch_set_info_guest); selectors get RPL 3, as the kernel runs in ring 3.
        target.iopl = regs.rflags >> 12 & 3
        sregs = self.vcpu_sregs(index, kernel_l4 if target.kernel_mode else user_l4 or kernel_l4)
        self._load_ldt(target, ctx.ldt_base, ctx.ldt_ents, sregs)
        try:
            sregs.cs, sregs.ss = (target.segment(sregs, sel | 3, code) if sel & ~3 not in _FLAT
                                  else ring3_segment(sel | 3, code) for sel, code in ((regs.cs, True), (regs.ss, False)))
        except DomainCrash:
            return -x.EINVAL                    # no usable code or stack segment in its GDT
        # DS, ES, FS and GS are loaded when the vCPU first runs (Xen's load_segments): one that
        # does not load is left NUL and the vCPU starts in its failsafe callback instead.
        selectors = (regs.ds & 0xFFFF, regs.es & 0xFFFF, regs.fs & 0xFFFF, regs.gs & 0xFFFF)
        target.failsafe_selectors = None
        for name, selector in zip(("ds", "es", "fs", "gs"), selectors):
            try:
                setattr(sregs, name, target.data_segment(sregs, selector))
            except SegmentFault:
                setattr(sregs, name, target.data_segment(sregs, 0))
                target.failsafe_selectors = selectors
        names = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp", "r8", "r9", "r10", "r11", "r12", "r13",
                 "r14", "r15", "rip")
        start = Regs(**{n: getattr(regs, n) for n in names}, rflags=(regs.rflags & ~IOPL_BITS) | RFLAGS_IF | 2)
        active, inactive = (ctx.gs_base_kernel, ctx.gs_base_user) if target.kernel_mode else \
            (ctx.gs_base_user, ctx.gs_base_kernel)
        # The active bases go in the segment registers (a KVM vCPU takes FS/GS bases from its
        # segment state, which would overwrite MSRs written earlier); the inactive one by MSR.
        sregs.fs = replace(sregs.fs, base=ctx.fs_base)
        sregs.gs = replace(sregs.gs, base=active)
        msrs = {MSR_KERNEL_GS_BASE: inactive}
        target.start_state = (start, sregs, msrs)
        target.initialised = True
        return 0

    def up(self, target: PvVcpu) -> int:
        """VCPUOP_up: an initialised vCPU starts running, or goes on where VCPUOP_down stopped
        it (a vCPU that is up already is left alone)."""
        if not target.initialised:
            return -x.EINVAL
        target.down = False
        state, target.start_state = target.start_state, None
        engine = self.engines[target.index]
        if state is not None:
            if target.failsafe_selectors is not None:
                state = self._failsafe(target, *state)
            engine.start_pv(*state)
        elif target.parked:
            target.parked = False
            engine.resume()
        return 0

    def _failsafe(self, vcpu: PvVcpu, regs: Regs, sregs, msrs: dict[int, int]) -> tuple:
        """The start state ``regs`` turned into an entry to the failsafe callback, with the
        frame Xen's load_segments writes (lowest first: RCX, R11, DS, ES, FS, GS, RIP, CS with
        the event mask in bits 32-39, RFLAGS, RSP, SS) on the guest kernel's stack."""
        ds, es, fs, gs = vcpu.failsafe_selectors
        vcpu.failsafe_selectors = None
        interrupted_cs = sregs.cs.selector
        if vcpu.kernel_mode:
            rsp = regs.rsp
            interrupted_cs &= ~3
        else:
            vcpu.kernel_mode = True           # toggle_guest_mode, on the state not yet loaded
            sregs.cr3 = vcpu.kernel_l4 * 4096
            msrs[MSR_KERNEL_GS_BASE], sregs.gs = sregs.gs.base, replace(sregs.gs, base=msrs[MSR_KERNEL_GS_BASE])
            rsp = vcpu.kernel_sp
        mask = vcpu.upcall_mask
        flags = regs.rflags & ~(RFLAGS_IF | IOPL_BITS) | (0 if mask else RFLAGS_IF) | vcpu.iopl << 12
        frame = [regs.rcx, regs.r11, ds, es, fs, gs, regs.rip, interrupted_cs | mask << 32, flags, regs.rsp,
                 sregs.ss.selector]
        rsp = (rsp & ~0xF) - 8 * len(frame)
        try:
            vcpu.write(sregs, rsp, struct.pack(f"<{len(frame)}Q", *frame))
        except (PageFault, GuestMemoryError):
            raise DomainCrash(f"vCPU {vcpu.index}: cannot write its failsafe callback frame at {rsp:#x}") from None
        address, flags_cb = vcpu.callbacks.get(x.CALLBACKTYPE_FAILSAFE, (0, 0))
        if flags_cb & x.CALLBACKF_MASK_EVENTS:
            vcpu.upcall_mask = 1
        regs.rip, regs.rsp = address, rsp
        regs.rflags &= ~(AC | VM | RF | NT | IOPL_BITS | TF)
        sregs.cs, sregs.ss = ring3_segment(x.FLAT_KERNEL_CS, True), ring3_segment(x.FLAT_KERNEL_SS, False)
        self.bounced["failsafe callback"] += 1
        return regs, sregs, msrs

    def down(self, target: PvVcpu, caller: PvVcpu, engine) -> int:
        """VCPUOP_down (xen/common/domain.c do_vcpu_op): ``target`` stops until VCPUOP_up;
        taking the last vCPU that is up down shuts the domain down with poweroff."""
        if not any(not v.down for v in self.vcpus if v is not target):
            self.shutdown(caller, x.SHUTDOWN_POWEROFF, engine)
            return 0
        if target.down:
            return 0
        target.down = True
        if target is caller:
            self._park(caller, engine)
        else:
            self.kick(target.index)        # its engine parks it next (``_needs_vcpu``)
        return 0

    def _park(self, vcpu: PvVcpu, engine) -> None:
        """VCPUOP_down takes effect: the vCPU's engine holds it, its state kept, until
        ``up`` (on its own thread: inside its hypercall, or as it takes its next upcall)."""
        vcpu.parked = True
        engine.park()

    # -- SCHEDOP_poll ---------------------------------------------------------------------------
    def poll(self, vcpu: PvVcpu, engine, ports: tuple[int, ...], timeout: int) -> int:
        """SCHEDOP_poll (xen/common/sched/core.c do_poll): sleep until one of ``ports`` is
        pending (masked or not), an event is flagged for the vCPU, or system time passes
        ``timeout`` (0: no timeout); 0 at once if one of them holds already."""
        if any(port >= PORTS for port in ports):
            return -x.EINVAL                  # evtchn_port_poll: not a valid port
        vcpu.poll = frozenset(ports)
        if timeout:
            self.timers[vcpu.index].poll_deadline = timeout
        if self._poll_over(vcpu):
            self._end_poll(vcpu)
            return 0
        engine.halt()
        return 0

    def _poll_over(self, vcpu: PvVcpu) -> bool:
        deadline = self.timers[vcpu.index].poll_deadline
        if deadline is not None and self.clock.system_time() >= deadline:
            return True
        if self.channels.upcall_pending(vcpu.index):
            return True
        return any(self.channels.is_pending(port) for port in vcpu.poll)

    def _end_poll(self, vcpu: PvVcpu) -> None:
        vcpu.poll = None
        self.timers[vcpu.index].poll_deadline = None

    def _polled(self, port: int) -> None:
        """A port became pending: vCPUs polling it wake (Xen's evtchn_check_pollers)."""
        for vcpu in self.vcpus:
            if vcpu.poll is not None and port in vcpu.poll:
                self.kick(vcpu.index)

    def _load_ldt(self, vcpu: PvVcpu, base: int, entries: int, sregs) -> None:
        """Make the ``entries`` descriptors at guest linear ``base`` the vCPU's LDT. As Xen does
        (pv_map_ldt_shadow_page, arch/x86/pv/descriptor-tables.c), each of its pages is taken
        as a descriptor page (validated; never writable to the guest while so) and mapped in
        the vCPU's LDT window in hvm's area, which LDTR points at. Xen maps a page when the CPU
        first reads it; hvm maps what is mapped at the call, and a page that is not, or does
        not validate, reads as zeros there (its selectors fault with #GP, as Xen's would)."""
        mm = self.mm
        for old in vcpu.ldt_frames:
            mm.put_seg_desc(old)
        vcpu.ldt, vcpu.ldt_frames = (base, entries), []
        window = self.area.ldt_base(vcpu.index)
        for page in range(LDT_PAGES):
            frame = self.area.zero_page
            if page * 4096 < entries * 8:
                try:
                    maddr = translate(self.memory, vcpu.mode(sregs), base + page * 4096)
                except PageFault:
                    maddr = None
                if maddr is not None and not mm.get_seg_desc(maddr >> 12):
                    frame = maddr >> 12
                    vcpu.ldt_frames.append(frame)
            # Supervisor-only, as the GDT's: writable for the CPU's own accessed-bit updates
            # (the guest's ring 3 cannot reach it, and the frame is typed, so never writable
            # to the guest); the zero page read-only (no valid descriptor there to update).
            flags = x.PTE_P | x.PTE_NX | x.PTE_A
            if frame != self.area.zero_page:
                flags |= x.PTE_RW | x.PTE_D
            self.memory.write(self._leaf(sregs.cr3, window + page * 4096), struct.pack("<Q", frame << 12 | flags))
        sregs.ldt = self.area.ldt_segment(vcpu.index, entries)

    def _leaf(self, cr3: int, va: int) -> int:
        """The machine address of the L1 entry mapping ``va`` in hvm's own tables (present)."""
        table = cr3 & x.PTE_ADDR
        for shift in (39, 30, 21):
            entry = struct.unpack("<Q", self.memory.read(table + ((va >> shift) & 511) * 8, 8))[0]
            table = entry & x.PTE_ADDR
        return table + ((va >> 12) & 511) * 8

    # -- console, events ----------------------------------------------------------------------
    def console_write(self, data: bytes) -> None:
        self._console_out(data)

    def console_read(self, limit: int) -> bytes:
        """CONSOLEIO_read: the host's input not yet handed to the console ring."""
        return self.console_ring.take(limit) if self.console_ring is not None else b""

    def block(self, vcpu: PvVcpu, engine=None) -> None:
        """SCHEDOP_block (and HLT): events are enabled, and the vCPU sleeps until one is pending
        (xen/common/sched/core.c vcpu_block_enable_events)."""
        vcpu.upcall_mask = 0
        self.channels.drain()
        if engine is not None and not self.channels.upcall_pending(vcpu.index):
            # A KVM vCPU sleeps in here: the other vCPUs' exits must go on meanwhile.
            self.lock.release()
            try:
                engine.halt()
            finally:
                self.lock.acquire()

    # -- shutdown -----------------------------------------------------------------------------
    def shutdown(self, vcpu: PvVcpu, reason: int, engine) -> None:
        name = SHUTDOWN_REASONS.get(reason, f"reason {reason}")
        self._ended = True
        if reason == x.SHUTDOWN_POWEROFF:
            self._finish(Outcome(End.POWEROFF, message="guest shut down (SCHEDOP_shutdown poweroff)"))
        elif reason == x.SHUTDOWN_REBOOT:
            self._finish(Outcome(End.RESET, message="guest asked for a reboot (SCHEDOP_shutdown reboot)"))
        else:
            crash = self._crash_report(engine.index, f"guest shut down with SCHEDOP_shutdown {name}")
            self._finish(Outcome(End.CRASH, crash=crash))

    def _crash(self, engine, reason: str) -> kx.VcpuExit:
        self._ended = True
        return EngineCrash(f"Xen PV domain crash: {reason}")

    # -- exceptions ---------------------------------------------------------------------------
    def _exception(self, vcpu: PvVcpu, engine, event) -> kx.VcpuExit | None:
        if event.external:
            return self._upcall(vcpu, engine)
        vector = event.vector
        regs = engine.get_regs()
        if vector == 6 and not event.software and self._forced_cpuid(vcpu, engine, regs):
            return None
        if vector == 13 and event.error_code == 0 and vcpu.kernel_mode and self._privileged(vcpu, engine, regs):
            return None
        software = event.software
        if vector == 13 and event.error_code is not None and event.error_code & 3 == 2 and not software:
            # On hardware whose IDT gates are DPL 0 (hvm's under KVM, as Xen's), INT n from ring 3
            # arrives as #GP with the gate in the error code (SDM vol. 3A 6.12.1.1): Xen's
            # do_general_protection turns it back into INT n, RIP past the 2-byte instruction.
            vector, software = event.error_code >> 3, True
            regs.rip += 2
            engine.set_regs(regs)
        if software:
            # INT n: allowed from guest kernel mode, from user mode only through a DPL-3 trap.
            trap = vcpu.traps.get(vector)
            if not vcpu.kernel_mode and (trap is None or trap.flags & x.TI_DPL_MASK < 3):
                regs.rip -= event.insn_length or 2
                engine.set_regs(regs)
                return self.bounce_trap(vcpu, engine, 13, vector << 3 | 2)
            return self.bounce_trap(vcpu, engine, vector, None)
        if vector == 1:
            vcpu.debugregs.took_debug_trap(engine)
        if vector == 14:
            cr2 = engine.get_sregs().cr2
            if self.ptwr.handles(self, vcpu, event.error_code) and self.ptwr.emulate(self, vcpu, engine, regs, cr2):
                self.bounced["page-table store emulated"] += 1
                return None
            vcpu.set_cr2(cr2)
        return self.bounce_trap(vcpu, engine, vector, event.error_code)

    def _upcall(self, vcpu: PvVcpu, engine) -> None:
        """The vCPU's controller asked for it (``_needs_vcpu``): a poll ends, a VCPUOP_down of it
        takes effect, or it enters the guest's event callback with events masked (Xen's
        test_guest_events)."""
        if vcpu.poll is not None:
            self._end_poll(vcpu)
        if vcpu.down and not vcpu.parked:
            self._park(vcpu, engine)
            return None
        if not self.channels.upcall_pending(vcpu.index) or vcpu.upcall_mask:
            return None                     # woken from SCHEDOP_poll only
        address, _flags = vcpu.callbacks.get(x.CALLBACKTYPE_EVENT, (0, 0))
        if not address:
            raise DomainCrash("an event upcall with no event callback registered")
        self.clock.update(self.memory, vcpu.vcpu_info_maddr)
        self.bounced["event upcall"] += 1
        vcpu.bounce(engine, address, mask_events=True)

    def bounce_trap(self, vcpu: PvVcpu, engine, vector: int, error_code: int | None, *, regs=None,
                    sregs=None) -> None:
        """The guest's handler for ``vector`` from its trap table, entered from where the vCPU
        stands (or from ``regs``/``sregs``)."""
        trap = vcpu.traps.get(vector)
        name = VECTOR_NAMES[vector] if vector < len(VECTOR_NAMES) else f"vector {vector:#x}"
        if trap is None or not trap.address:
            raise DomainCrash(f"{name} with no handler in the guest's trap table")
        self.bounced[name] += 1
        vcpu.bounce(engine, trap.address, error_code=error_code, mask_events=bool(trap.flags & x.TI_MASK_EVENTS),
                    regs=regs, sregs=sregs)
        return None

    def _privileged(self, vcpu: PvVcpu, engine, regs) -> bool:
        try:
            code = vcpu.read(engine.get_sregs(), regs.rip, 15)
        except Exception:
            return False
        return emulate.emulate(self, vcpu, engine, regs, code)

    def _forced_cpuid(self, vcpu: PvVcpu, engine, regs) -> bool:
        """``ud2a; .ascii "xen"; cpuid``: answer with hvm's CPUID policy and step over it."""
        sregs = engine.get_sregs()
        try:
            code = vcpu.read(sregs, regs.rip, len(EMULATE_PREFIX) + len(CPUID))
        except Exception:
            return False
        if code != EMULATE_PREFIX + CPUID:
            return False
        regs.rax, regs.rbx, regs.rcx, regs.rdx = self._cpuid(engine, regs.rax & 0xFFFFFFFF, regs.rcx & 0xFFFFFFFF)
        regs.rip += len(code)
        engine.set_regs(regs)
        self.bounced["forced-emulation cpuid"] += 1
        return True

    def _user_syscall(self, vcpu: PvVcpu, engine) -> kx.VcpuExit | None:
        """``syscall`` from guest user space: to the guest kernel's syscall callback, with RCX and
        R11 as the instruction leaves them (xen/arch/x86/x86_64/entry.S switch_to_kernel)."""
        regs = engine.get_regs()
        regs.rcx, regs.r11 = regs.rip, regs.rflags
        address, flags = vcpu.callbacks.get(x.CALLBACKTYPE_SYSCALL, (0, 0))
        if not address:
            regs.rip -= 2
            engine.set_regs(regs)
            return self.bounce_trap(vcpu, engine, 6, None)
        engine.set_regs(regs)
        self.bounced["syscall"] += 1
        vcpu.bounce(engine, address, mask_events=bool(flags & x.CALLBACKF_MASK_EVENTS), regs=regs)
        regs = engine.get_regs()
        regs.rflags &= ~(1 << 10)          # DF cleared, as the PV ABI fixes it for syscall
        engine.set_regs(regs)
        return None

    def stats_lines(self) -> list[str]:
        """What ``--stats`` shows of the domain."""
        lines = []
        if self.hypercall_counts:
            lines.append("hypercalls: " + ", ".join(f"{k} {v}" for k, v in self.hypercall_counts.most_common()))
        if self.unknown_hypercalls:
            lines.append("refused with -ENOSYS: " + ", ".join(f"{k} {v}" for k, v in self.unknown_hypercalls.most_common()))
        if self.bounced:
            lines.append("bounced to the guest: " + ", ".join(f"{k} {v}" for k, v in self.bounced.most_common()))
        types = self.mm.type_counts() if hasattr(self.mm, "type_counts") else {}
        if types:
            lines.append("frame types: " + ", ".join(f"{k} {v}" for k, v in types.items()))
        return lines
