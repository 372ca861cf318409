"""The Xen PV board (``-M xenpv``, ``--xen pv``): no PC devices at all, a PV kernel built into its
domain by ``paravirt.builder`` and run deprivileged, in ring 3, with hvm as its hypervisor
(``paravirt.domain``): hypercalls, direct paging validated by ``paravirt.mm``, the console
through ``console_io`` and the console ring on COM1's backend.

Under unicorn the engine hands the domain every SYSCALL and exception from its hooks; under KVM
hvm's ring 0 takes them (``paravirt.hvarea`` lays it out, ``paravirt.ring0`` serves its exits)
and the vCPU starts in hvm's start stub, which sets it up before the guest's first instruction.
``--accel auto`` makes hvm's general choice (``hvm.host.choose_accel``): KVM with hardware
virtualization, unicorn on a KVM that emulates ring 0, although a PV kernel (no ring-0 code)
measured faster on KVM there too (benchmarks/README.md, "Xen PV").

Memory: the domain's frames from 0 (``-m``), then hvm's own frames (``paravirt.hvarea``).
"""
from __future__ import annotations

import struct
import threading
from typing import TYPE_CHECKING

from ..boot.cpu_setup import entry_cpu_state
from ..boot.entry import EntryState, Mode
from ..engine.state import DTable, Segment, SRegs
from ..errors import ConfigError, ImageError
from ..memory import GuestMemory
from . import Board

if TYPE_CHECKING:
    from ..config import MachineConfig
    from ..machine import Machine

PAGE = 4096
CONSOLE_EVTCHN, STORE_EVTCHN = 1, 2       # the guest's ports to hvm's backends (0 means "none")
CONSOLE_BACKEND, STORE_BACKEND = 1, 2     # their other ends, hvm's ports (as dom0's would be)
# Control registers of a 64-bit PV vCPU: paging, protection, WP; PAE, OSFXSR/OSXMMEXCPT; long mode.
CR0_PE, CR0_MP, CR0_ET, CR0_NE, CR0_WP, CR0_PG = 1, 2, 0x10, 0x20, 1 << 16, 1 << 31
CR4_PAE, CR4_OSFXSR, CR4_OSXMMEXCPT = 1 << 5, 1 << 9, 1 << 10
EFER_SCE, EFER_LME, EFER_LMA, EFER_NX = 1, 1 << 8, 1 << 10, 1 << 11


class ConsoleRing:
    """The PV console page (io/console.h struct xencons_interface: in[1024], out[2048], then
    in_cons, in_prod, out_cons, out_prod): what the guest writes between out_cons and out_prod
    goes to COM1's backend when it notifies the port; the host's input goes into in[] on the
    vCPU's thread, as far as the guest has made room, and raises the port. The indices are the
    guest's: only their low bits pick a byte and at most a ring's worth moves at once."""

    IN, OUT, IN_SIZE, OUT_SIZE, INDICES = 0, 1024, 1024, 2048, 3072
    INPUT_LIMIT = 1 << 16         # host input waiting for room; more is dropped

    def __init__(self, memory: GuestMemory, mfn: int, port: int, out):
        self.memory, self.address, self.port, self.out = memory, mfn * PAGE, port, out
        self._input = bytearray()
        self._lock = threading.Lock()

    def kick(self) -> None:
        """The guest notified: take its output, and hand it input it now has room for."""
        mem, at = self.memory, self.address
        _in_cons, _in_prod, out_cons, out_prod = struct.unpack("<4I", mem.read(at + self.INDICES, 16))
        count = min((out_prod - out_cons) & 0xFFFFFFFF, self.OUT_SIZE)
        ring = mem.read(at + self.OUT, self.OUT_SIZE)
        data = bytes(ring[(out_cons + i) % self.OUT_SIZE] for i in range(count))
        mem.write(at + self.INDICES + 8, struct.pack("<I", (out_cons + count) & 0xFFFFFFFF))
        if data:
            self.out(data)
        self.feed()

    def queue(self, data: bytes) -> None:
        """Host input (any thread)."""
        with self._lock:
            self._input += data[:max(0, self.INPUT_LIMIT - len(self._input))]

    def take(self, limit: int) -> bytes:
        """Queued input for CONSOLEIO_read, which reads the hypervisor's console directly."""
        with self._lock:
            data, self._input = bytes(self._input[:limit]), self._input[limit:]
        return data

    def feed(self) -> bool:
        """Move queued input into in[] (vCPU thread); True if any moved."""
        mem, at = self.memory, self.address
        in_cons, in_prod = struct.unpack("<2I", mem.read(at + self.INDICES, 8))
        with self._lock:
            room = self.IN_SIZE - min((in_prod - in_cons) & 0xFFFFFFFF, self.IN_SIZE)
            data, self._input = self._input[:room], self._input[room:]
        for i, byte in enumerate(data):
            mem.write(at + self.IN + (in_prod + i) % self.IN_SIZE, bytes([byte]))
        if data:
            mem.write(at + self.INDICES + 4, struct.pack("<I", (in_prod + len(data)) & 0xFFFFFFFF))
        return bool(data)


class XenPvBoard(Board):
    """A 64-bit Xen PV guest and nothing else."""

    name = "xenpv"

    def __init__(self) -> None:
        self.area = None
        self.mm = None
        self.domain = None
        self.boot_info = None
        self.ring0 = None           # paravirt.ring0.Ring0Port under KVM
        self.xenstore = None

    def guest_memory(self, config: "MachineConfig") -> GuestMemory:
        from paravirt.hvarea import MAX_PV_VCPUS, HypervisorArea

        if config.memory % PAGE:
            raise ConfigError("-m must be a multiple of 4 KiB for a PV domain")
        if not 1 <= config.cpus <= MAX_PV_VCPUS:
            raise ConfigError(f"-c {config.cpus}: a PV domain here has 1 to {MAX_PV_VCPUS} vCPUs")
        self.area = HypervisorArea(config.memory // PAGE, config.cpus)
        size = self.area.end * PAGE
        return GuestMemory(size, [(0, size)])

    def attach(self, machine: "Machine") -> None:
        from paravirt.domain import PvDomain
        from paravirt.mm import DirectPaging

        self.area.build(machine.memory)
        # Events start masked on every vCPU, as Xen's toolstack leaves vcpu_info.
        from paravirt.pvcpu import UPCALL_MASK, VCPU_INFO_SIZE
        for index in range(machine.config.cpus):
            machine.memory.write(self.area.shared_info_maddr + index * VCPU_INFO_SIZE + UPCALL_MASK, b"\x01")
        self.mm = DirectPaging(machine.memory, self.area.nr_pages, self.area.l4_entries,
                               shared_frames=self.area.shared_frames, on_m2p=self.area.set_m2p)
        console = machine.serial.backend
        self.domain = PvDomain(
            machine.memory, self.area, self.mm, machine.config.cpus, console_out=console.write,
            finish=machine.finish, crash_report=lambda index, reason: self._crash_report(machine, index, reason),
            cpuid=lambda engine, leaf, sub: engine.cpuid(leaf, sub))
        if machine.kvm is None:
            self.domain.attach(machine._unicorn_engines)
        else:
            from paravirt.hvarea import RING0_PORT
            from paravirt.ring0 import Ring0Port

            self.ring0 = Ring0Port(machine, self.domain, self.area)
            machine.add_port_device(RING0_PORT, 1, self.ring0, "xen-pv-ring0")
            self.domain.attach(self.ring0.vcpus)

    def _crash_report(self, machine: "Machine", index: int, reason: str):
        if self.ring0 is not None:
            self.ring0.sync(index)     # the registers the domain holds, not hvm's ring 0
        return machine.vcpus[index].crash(reason)

    def boot(self, machine: "Machine") -> EntryState:
        from paravirt import builder

        cfg = machine.config
        if cfg.kernel is None:
            raise ConfigError("--xen pv needs --kernel (a PV kernel: an ELF with Xen notes)")
        try:
            with open(cfg.kernel, "rb") as f:
                kernel = f.read()
        except OSError as exc:
            raise ImageError(cfg.kernel, f"cannot be read: {exc.strerror}") from None
        initrd = None
        if cfg.initrd:
            try:
                with open(cfg.initrd, "rb") as f:
                    initrd = f.read()
            except OSError as exc:
                raise ImageError(cfg.initrd, f"cannot be read: {exc.strerror}") from None
        boot = builder.build(machine.memory, cfg.kernel, kernel, initrd, cfg.append or "", self.area.nr_pages,
                             self.area.shared_info_maddr, CONSOLE_EVTCHN, STORE_EVTCHN)
        self.boot_info = boot
        # As Xen's builder does: the boot L4 is pinned and is the vCPU's kernel page table.
        rc = self.mm.pin(4, boot.l4_mfn) or self.mm.new_baseptr(boot.l4_mfn)
        if rc:
            raise ImageError(cfg.kernel, f"the boot page tables do not validate ({rc}): hvm bug")
        self.domain.vcpus[0].kernel_l4 = boot.l4_mfn
        self.domain.vcpus[0].initialised = True
        self.domain.vcpu_sregs = lambda index, l4: _pv_sregs(self.area, index, l4)
        # hvm writes the console and xenstore rings by address: writable references keep the
        # guest from ever making those frames page tables (as Xen's backends hold them).
        for mfn in (boot.console_mfn, boot.store_mfn):
            if self.mm.get_writable(mfn):
                raise ImageError(cfg.kernel, f"frame {mfn:#x} of the console or xenstore ring is unusable: hvm bug")
        ring = ConsoleRing(machine.memory, boot.console_mfn, CONSOLE_EVTCHN, machine.serial.backend.write)
        self.domain.console_ring = ring
        # The builder handed the guest ports already bound to hvm's console and xenstore.
        channels = self.domain.channels
        channels.backends[CONSOLE_BACKEND] = ring.kick
        channels.bind_backend(CONSOLE_EVTCHN, CONSOLE_BACKEND)
        channels.bind_backend(STORE_EVTCHN, STORE_BACKEND)
        # xenstore: hvm's server on the ring and port the builder gave the guest.
        from paravirt.xenstore import XenStore, XenStoreRing

        self.xenstore = XenStore(self.domain.domid, memory_kib=self.area.nr_pages * PAGE // 1024,
                                 vcpus=cfg.cpus, name="hvm-guest")
        store_ring = XenStoreRing(self.xenstore, machine.memory, boot.store_mfn * PAGE,
                                  notify=lambda: channels.request(STORE_EVTCHN))
        channels.backends[STORE_BACKEND] = store_ring.kick

        def console_input(data: bytes) -> None:
            ring.queue(data)
            channels.request(CONSOLE_EVTCHN, action=ring.feed)
        machine.serial.receive = console_input
        # RFLAGS as Xen starts a PV vCPU: IF set (bit 1 is always 1), or no upcall could come in.
        entry = EntryState(Mode.GIVEN, boot.rip,
                           regs={"rsp": boot.rsp, "rsi": boot.rsi, "rflags": boot.rflags | 0x2},
                           description="Xen PV kernel", cpu=_pv_sregs(self.area, 0, boot.l4_mfn))
        if self.ring0 is None:
            return entry
        # Under KVM the vCPU starts in hvm's ring 0, whose first exit sets SYSCALL's MSRs (no
        # board hook runs once the vCPU exists) and enters the guest as above.
        self.ring0.set_entry(0, *entry_cpu_state(machine.memory, entry))
        return self._ring0_start(0, boot.l4_mfn)

    def _ring0_start(self, index: int, l4_mfn: int) -> EntryState:
        from paravirt.hvarea import HYPERVISOR_CS, HYPERVISOR_DS

        ring0 = self.area.ring0(index)
        sregs = _pv_sregs(self.area, index, l4_mfn)
        sregs.cs, sregs.ss = _ring0_segment(HYPERVISOR_CS, True), _ring0_segment(HYPERVISOR_DS, False)
        return EntryState(Mode.GIVEN, ring0.start, regs={"rsp": ring0.stack_top},
                          description="Xen PV kernel", cpu=sregs)

    can_request_shutdown = True

    def request_shutdown(self, machine: "Machine") -> bool:
        # What `xl shutdown` does: the guest's xenbus watch on control/shutdown fires and Linux
        # powers off (drivers/xen/manage.c).
        if self.xenstore is None:
            return False
        self.xenstore.write("control/shutdown", "poweroff")
        return True

    def vcpus_created(self, machine: "Machine") -> None:
        # Under KVM every vCPU runs from its own ring 0's start stub, whose first exit waits
        # for VCPUOP_initialise and VCPUOP_up; under unicorn the others are not started yet.
        if self.ring0 is None:
            return
        from kvmffi import lib

        for vcpu in machine.vcpus[1:]:
            regs, sregs = entry_cpu_state(machine.memory, self._ring0_start(vcpu.index, self.boot_info.l4_mfn))
            vcpu.engine.set_sregs(sregs)
            vcpu.engine.set_regs(regs)
            vcpu.engine.vcpu.set_mp_state(lib.KVM_MP_STATE_RUNNABLE)

    def edit_cpuid(self, table: dict) -> None:
        from paravirt.cpuid import pv_policy

        clock = self.domain.clock
        pv_policy(table, clock.tsc.hz, clock.mul, clock.shift)

    def counters(self) -> list[str]:
        lines = self.domain.stats_lines() if self.domain else []
        lines += self.ring0.counters() if self.ring0 is not None else []
        return [f"xen pv: {line}" for line in lines]


def _ring0_segment(selector: int, code: bool) -> Segment:
    """hvm's flat ring-0 code (64-bit) or data segment."""
    return Segment(base=0, limit=0xFFFFFFFF, selector=selector, type=0xB if code else 0x3, present=1, dpl=0,
                   db=0 if code else 1, s=1, l=1 if code else 0, g=1)


def _pv_sregs(area, vcpu: int, l4_mfn: int) -> SRegs:
    """A 64-bit PV vCPU at the start of day: ring 3 with Xen's flat selectors, paging on the boot
    L4, the GDT whose last pages hold Xen's descriptors (arch-x86/xen-x86_64.h), and hvm's ring 0
    (its IDT and TSS: ``paravirt.hvarea``)."""
    from paravirt.abi import FLAT_KERNEL_CS, FLAT_KERNEL_SS
    from paravirt.hvarea import TSS_SIZE
    from paravirt.pvcpu import ring3_segment

    sregs = SRegs()
    sregs.cs = ring3_segment(FLAT_KERNEL_CS, True)
    sregs.ss = ring3_segment(FLAT_KERNEL_SS, False)
    for name in ("ds", "es", "fs", "gs"):
        setattr(sregs, name, Segment(base=0, limit=0, selector=0, type=0, present=0, dpl=3, s=1, unusable=1))
    ring0 = area.ring0(vcpu)
    sregs.gdt = DTable(area.gdt_base(vcpu), 16 * PAGE - 1)
    sregs.idt = DTable(ring0.idt, 256 * 16 - 1)
    sregs.tr = Segment(base=ring0.tss, limit=TSS_SIZE - 1, selector=ring0.tss_selector, type=0xB, present=1, s=0)
    sregs.ldt = area.ldt_segment(vcpu, 0)
    sregs.cr0 = CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_PG
    sregs.cr3 = l4_mfn * PAGE
    sregs.cr4 = CR4_PAE | CR4_OSFXSR | CR4_OSXMMEXCPT
    sregs.efer = EFER_SCE | EFER_LME | EFER_LMA | EFER_NX
    return sregs


__all__ = ["XenPvBoard", "ConsoleRing"]
