"""Machine: assembles memory, buses, vCPUs and devices from a validated MachineConfig.

The order matters to KVM: memory slots and the in-kernel irqchip exist before any vCPU is created;
the boot image is loaded before the boot vCPU's registers are set.
"""
from __future__ import annotations

import os
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Protocol

from kvmffi import KvmError, lib

from . import layout
from .boards import Board, board_for
from .boot.cpu_setup import entry_cpu_state
from .boot.entry import EntryState
from .bus import MmioBus, PortIOBus
from .config import MachineConfig
from .cpuid import cpuid_policy, linux_clearcpuid
from .errors import ConfigError, HostError
from .devices.base import Device
from .devices.uart16550 import Uart16550
from .engine.kvm import KvmEngine
from .host import HostInfo, choose_accel, host_info, open_kvm
from .irq import IrqLine
from .physmap import Window
from .console_watch import PANIC, RUN_INIT, LineWatch, last_lines
from .outcome import End, GuestCrash, Outcome
from .serial import BufferBackend, SerialBackend, StdioBackend, backend_from_spec
from .threads import Failure, start_thread
from .vcpu import EmulationFallback, Vcpu

# How much serial output is kept in memory beside a real backend (stdio, file, socket).
TRANSCRIPT_LIMIT = 1 << 20

TSC_AUX = 0xC0000103
CRASH_CONSOLE_LINES = 15
# GIL switch interval while unicorn vCPUs run at once (seconds; Python default 0.005).
PARALLEL_SWITCH_INTERVAL = 0.0005
_switch_lock = threading.Lock()
_switch_users = [0, 0.0]   # machines with unicorn vCPUs running at once, the interval before them


def _parallel_switch_interval(change: int) -> None:
    """Each unicorn vCPU thread takes the GIL for its device hooks and between slices; at the
    default 5 ms one whose turn to take it came could wait that long behind another that let it
    go and took it back (measured: Xen with its dom0 boots 0.1 s sooner at 0.5 ms). Lowered while
    any machine runs such vCPUs, put back after the last one closes."""
    with _switch_lock:
        if change > 0 and _switch_users[0] == 0:
            _switch_users[1] = sys.getswitchinterval()
            sys.setswitchinterval(min(_switch_users[1], PARALLEL_SWITCH_INTERVAL))
        _switch_users[0] += change
        if change < 0 and _switch_users[0] == 0:
            sys.setswitchinterval(_switch_users[1])


# CPUID executed by guest kernel code on an emulating KVM reports the host's XSAVE/AVX/AVX-512
# whatever KVM_SET_CPUID2 says (HOST-KVM.md), and nothing here executes AVX: Linux's "noxsave"
# clears XSAVE and with it every AVX feature (measured: without it the stock kernel dies in
# blake2s_compress_avx512 with #UD).
NOXSAVE = "noxsave"
NOXSAVE_WHY = ("this host's KVM shows guest kernels the host's AVX/AVX-512, which neither it nor hvm's "
               "fallback can execute")
CLEARCPUID_WHY = ("this host's KVM shows guest kernels CPU features its emulator refuses; hvm would "
                  "execute them one at a time (SSSE3 crypto at boot took minutes)")
KVM_USERSPACE_LIMIT = ("this host's KVM (kvm_pvm, emulation only) cannot run guest user space: SYSCALL from "
                       "CPL3 does not enter the guest kernel, so Linux cannot start init here; "
                       "--accel auto or --accel unicorn runs this guest")

# COM1-COM4: the PC's standard base ports and ISA IRQs.
SERIAL_PORTS = [(0x3F8, 4), (0x2F8, 3), (0x3E8, 4), (0x2E8, 3)]


class MsrHandler(Protocol):
    """Serves RDMSR/WRMSR of indices the VMM filters to userspace."""

    def read(self, vcpu: Vcpu, index: int) -> int | None:
        """Value for RDMSR, or None to raise #GP."""

    def write(self, vcpu: Vcpu, index: int, value: int) -> bool:
        """Accept WRMSR (True) or raise #GP (False)."""


class _Tee(SerialBackend):
    """Guest output goes to the transcript and to the user's backend."""

    def __init__(self, transcript: BufferBackend, other: SerialBackend):
        self.transcript, self.other = transcript, other

    def start(self, sink: Callable[[bytes], None], on_failure: Failure | None = None) -> None:
        self.other.start(sink, on_failure)

    def write(self, data: bytes) -> None:
        self.transcript.write(data)
        self.other.write(data)

    def flush(self) -> None:
        self.other.flush()

    def close(self) -> None:
        self.other.close()


class _Watched(SerialBackend):
    """A console's output, also shown to line watches."""

    def __init__(self, inner: SerialBackend, watches: list[LineWatch]):
        self.inner, self.watches = inner, watches
        self.last_output = time.monotonic()

    def start(self, sink: Callable[[bytes], None], on_failure: Failure | None = None) -> None:
        self.inner.start(sink, on_failure)

    def write(self, data: bytes) -> None:
        self.last_output = time.monotonic()
        self.inner.write(data)
        for watch in self.watches:
            watch.feed(data)

    def flush(self) -> None:
        self.inner.flush()

    def close(self) -> None:
        self.inner.close()


class SerialPort:
    """A serial port as the API user sees it: the UART plus a transcript of everything it sent."""

    def __init__(self, name: str, uart: Uart16550, transcript: BufferBackend, backend: SerialBackend):
        self.name, self.uart, self.transcript, self.backend = name, uart, transcript, backend
        # Where the host's input goes: the UART, unless the board has another console (a Xen
        # PV guest's console ring) take it.
        self.receive: Callable[[bytes], None] = uart.receive

    @property
    def text(self) -> str:
        """Everything the guest wrote so far, decoded as UTF-8."""
        return self.transcript.text

    @property
    def data(self) -> bytes:
        """Everything the guest wrote so far."""
        return self.transcript.data

    def wait_for(self, pattern: bytes | str, timeout: float = 10.0) -> bool:
        """Block until ``pattern`` appears in the output; False on timeout."""
        return self.transcript.wait_for(pattern, timeout)

    def send(self, data: bytes | str) -> None:
        """Type ``data`` into the guest's receive line."""
        self.receive(data.encode() if isinstance(data, str) else bytes(data))


@dataclass
class Stats:
    """What ``--stats`` prints."""

    exits_by_reason: dict[str, int]
    pio_by_device: dict[str, int]
    mmio_by_device: dict[str, int]
    unclaimed: int
    cpu_user: float
    cpu_system: float
    vcpu_user: float
    vcpu_system: float
    peak_rss: int
    wall: float
    engine_lines: list[str] = field(default_factory=list)

    def format(self) -> str:
        """Human-readable summary."""
        lines = ["hvm stats:", f"  wall time            {self.wall:.3f} s",
                 f"  VMM CPU time         user {self.cpu_user:.3f} s, system {self.cpu_system:.3f} s",
                 f"  vCPU threads         guest (system) {self.vcpu_system:.3f} s, hvm (user) "
                 f"{self.vcpu_user:.3f} s",
                 f"  peak RSS             {self.peak_rss / 2**20:.1f} MiB",
                 "  exits by reason:"]
        lines += [f"    {k:<20} {v}" for k, v in sorted(self.exits_by_reason.items(), key=lambda kv: -kv[1])]
        lines.append("  port I/O by device:")
        lines += [f"    {k:<20} {v}" for k, v in sorted(self.pio_by_device.items(), key=lambda kv: -kv[1])]
        if self.mmio_by_device:
            lines.append("  MMIO by device:")
            lines += [f"    {k:<20} {v}" for k, v in sorted(self.mmio_by_device.items(), key=lambda kv: -kv[1])]
        lines.append(f"  unclaimed accesses   {self.unclaimed}")
        lines += [f"  {line}" for line in self.engine_lines]
        return "\n".join(lines)


class _CurrentCpuDevice(Device):
    """A per-CPU device at one address (the local APIC page): each vCPU reaches its own."""

    name = "lapic"

    def __init__(self, devices: list[Device], current: Callable[[], int]):
        self.devices, self.current = devices, current

    def read(self, offset: int, size: int) -> int:
        return self.devices[self.current()].read(offset, size)

    def write(self, offset: int, size: int, value: int) -> None:
        self.devices[self.current()].write(offset, size, value)


def _pc_gsi_routes() -> list[tuple[int, int, int]]:
    """KVM's irqchip routes as on a PC: ISA IRQs to the 8259 pair, GSI n to IOAPIC pin n, except
    that IRQ 0 (the PIT) is pin 2, the interrupt source override PC firmware declares and the
    software engine's wiring follows. KVM's default table routes IRQ 0 to pin 0."""
    routes = [(irq, lib.KVM_IRQCHIP_PIC_MASTER if irq < 8 else lib.KVM_IRQCHIP_PIC_SLAVE, irq % 8)
              for irq in range(16)]
    routes += [(0, lib.KVM_IRQCHIP_IOAPIC, 2)]
    routes += [(gsi, lib.KVM_IRQCHIP_IOAPIC, gsi) for gsi in range(1, 24) if gsi != 2]
    return routes


def _say(message: str) -> None:
    sys.stderr.write(f"hvm: {message}\n")


def _peak_rss() -> int:
    # VmHWM is the kernel's own high-water mark of resident memory; psutil reports only the
    # current RSS, which misses a peak that has passed.
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import psutil

    return psutil.Process().memory_info().rss


def _open_backend(option: str, spec: str, on_quit: Callable[[], None],
                  output_only: bool = False) -> SerialBackend:
    """Open a character backend; failures become ConfigErrors naming the option and the reason."""
    try:
        if output_only and spec == "stdio":
            return StdioBackend(on_quit, stdin=None)  # one stdin reader only: the serial console's
        return backend_from_spec(spec, on_quit)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"{option} {spec}: {exc}") from None


class Machine:
    """A virtual PC: build it from a MachineConfig, optionally add devices, then ``run()``."""

    def __init__(self, config: MachineConfig, serial_backends: list[SerialBackend] | None = None,
                 on_quit: Callable[[], None] | None = None):
        self.config = config.validate()
        self.host: HostInfo = host_info(config.kvm_path)
        self.accel, self.accel_reason = choose_accel(config.accel, config.kvm_path, self.host, config.machine)
        self.emulation_fallbacks: list[EmulationFallback] = []
        self.msr_handlers: dict[int, MsrHandler] = {}
        self.debug_handler: Callable | None = None
        self.outcome: Outcome | None = None
        self._outcome_lock = threading.Lock()
        self._stopping = threading.Event()
        self._done = threading.Event()
        self._started = False
        self._closed = False
        self._t_start = 0.0
        self._t_end = 0.0
        self.vcpus: list[Vcpu] = []
        self._backends: list[SerialBackend] = []
        self.board: Board = board_for(config.machine)
        self.kvm = open_kvm(config.kvm_path) if self.accel == "kvm" else None
        self.vm = None
        try:
            if self.kvm is not None:
                limit = self.kvm.check_extension("KVM_CAP_MAX_VCPUS") or 255
                if config.cpus > limit:
                    raise ConfigError(f"-c {config.cpus}: this host's KVM allows at most {limit} vCPUs per VM")
            self._build(serial_backends, on_quit)
        except KvmError as exc:
            self.close()
            raise HostError(f"{config.kvm_path}: KVM refused to build the machine: {exc}") from exc
        except BaseException:
            self.close()
            raise

    # -- assembly -------------------------------------------------------------------------------
    def _build(self, serial_backends, on_quit) -> None:
        cfg = self.config
        self.memory = self.board.guest_memory(cfg)
        self.physmap = self.board.memory_map(self.memory, cfg)
        if self.kvm is not None:
            self.vm = self.kvm.create_vm()
            self.vm.set_tss_addr(layout.KVM_TSS)
            self.vm.set_identity_map_addr(layout.KVM_IDENTITY_MAP)
            self._slots: dict[Window, int] = {}
            self._map_slots([], self.physmap.windows())
            self.physmap.subscribe(self._map_slots)
            self.vm.create_irqchip()
            self.vm.set_gsi_routing(_pc_gsi_routes())
            self.vm.create_pit2()

        self.pio = PortIOBus()
        if self.vm is not None and self.vm.coalesced_pio:
            self.pio.coalesce = self.vm.coalesce_pio
        self.mmio = MmioBus()
        self._irqs: dict[int, IrqLine] = {}
        self.pic = self.pit = None
        self.unicorn_parallel = False   # unicorn vCPUs on instances of their own (_software_platform)
        if self.vm is None:
            self._software_platform()
        self._quit = on_quit or (lambda: self.stop())
        self.serial_ports: list[SerialPort] = []
        for i, spec in enumerate(cfg.serial):
            backend = serial_backends[i] if serial_backends and i < len(serial_backends) else \
                _open_backend("--serial", spec, self._quit) if spec != "buffer" else None
            self.add_serial_port(backend)
            if isinstance(backend, StdioBackend) and self.board.can_request_shutdown:
                backend.on_shutdown = lambda: self.stop(graceful=True)
        self.board.attach(self)

        self.fallback = None
        if self.vm is not None and cfg.fallback:
            from .engine.fallback import FallbackExecutor

            self.fallback = FallbackExecutor(self.memory, self.mmio, self.pio.read, self.pio.write,
                                             say=_say if cfg.verbose else None, physmap=self.physmap)
        self.entry: EntryState = self.board.boot(self)
        if self.vm is not None:
            supported = self.kvm.supported_cpuid()
            for index in range(cfg.cpus):
                kvcpu = self.vm.create_vcpu(index)
                kvcpu.set_cpuid(cpuid_policy(supported, self.host, index, cfg.cpus, cfg.fallback,
                                             self.board.edit_cpuid))
                self.vcpus.append(Vcpu(self, index, KvmEngine(kvcpu, irqchip=True)))
        else:
            for engine in self._unicorn_engines:
                engine.edit_cpuid(self.board.edit_cpuid)
            self.vcpus += [Vcpu(self, index, engine) for index, engine in enumerate(self._unicorn_engines)]
        if self.fallback is not None and self.host.emulation_only:
            self.add_msr_handler(TSC_AUX, self.fallback.tsc_aux)
            self.fallback.tsc_aux_served = True
        regs, sregs = entry_cpu_state(self.memory, self.entry)
        bsp = self.vcpus[0].engine
        bsp.set_sregs(sregs)
        bsp.set_regs(regs)
        self.board.vcpus_created(self)

    def _map_slots(self, removed: list[Window], added: list[Window]) -> None:
        # One KVM memory slot per window; a read-only one makes the guest's stores exit as MMIO,
        # where the board's device for that range decides what they mean.
        for window in removed:
            self.vm.set_user_memory_region(self._slots.pop(window), window.gpa, 0, 0)
        used = set(self._slots.values())
        free = (n for n in range(1 << 15) if n not in used)
        for window in added:
            slot = self._slots[window] = next(free)
            self.vm.set_user_memory_region(slot, window.gpa, window.size, window.host_addr,
                                           lib.KVM_MEM_READONLY if window.readonly else 0)

    @property
    def com_ports(self) -> list[tuple[int, int]]:
        """(I/O base, GSI) of each COM port the machine has, COM1 first."""
        return SERIAL_PORTS[:len(self.serial_ports)]

    def output_backend(self, option: str, spec: str, transcript: BufferBackend) -> SerialBackend:
        """Where an output-only device (the debug console) writes: ``transcript`` alone for
        "none"/"buffer", else ``transcript`` and the backend ``spec`` names (closed with the machine)."""
        if spec in ("none", "buffer"):
            return transcript
        tee = _Tee(transcript, _open_backend(option, spec, self._quit, output_only=True))
        self._backends.append(tee)
        return tee

    # What the board attached, for API users and crash reports (None where a board lacks it).
    @property
    def post(self):
        """The POST code port (0x80): the last codes the guest wrote."""
        legacy = getattr(self.board, "legacy", None)
        return legacy.post if legacy else None

    @property
    def debugcon_output(self) -> BufferBackend | None:
        """Everything the guest wrote to the debug console (port 0xE9)."""
        legacy = getattr(self.board, "legacy", None)
        return legacy.debugcon_output if legacy else None

    @property
    def keyboard(self):
        """The PS/2 keyboard to type on (``type``, ``press``), or None on a board without one."""
        legacy = getattr(self.board, "legacy", None)
        if legacy is None:
            return None
        from .keyboard import Keyboard

        return Keyboard(legacy.i8042)

    @property
    def mouse(self):
        """The PS/2 mouse to point with (``move``, ``click``), or None on a board without one."""
        legacy = getattr(self.board, "legacy", None)
        if legacy is None:
            return None
        from .keyboard import Mouse

        return Mouse(legacy.i8042)

    @property
    def screen(self):
        """The display as the guest drew it (``text()``, ``png()``), or None without one."""
        vga = getattr(self.board, "vga", None)
        return vga.screen if vga is not None else None

    @property
    def acpi(self):
        """The ACPI tables the board wrote, if any."""
        return getattr(self.board, "acpi", None)

    @property
    def kvm_emulates(self) -> bool:
        """Guest code runs on a KVM that only emulates guest kernel code (and runs no user space)."""
        return self.accel == "kvm" and self.host.emulation_only

    @property
    def boots_linux(self) -> bool:
        """The kernel is entered through a Linux boot protocol (bzImage, vmlinux) or PVH: the
        protocols whose command line the Linux additions go to."""
        return self.entry.description.startswith(("Linux", "PVH"))

    @property
    def cmdline_additions(self) -> list[tuple[str, str]]:
        """(argument, why) for what hvm must add to a Linux kernel's command line on this host
        (the CLI prints both: nothing is added silently)."""
        if self.kvm_emulates:
            return [(NOXSAVE, NOXSAVE_WHY),
                    ("clearcpuid=" + ",".join(linux_clearcpuid(self.host)), CLEARCPUID_WHY)]
        return []

    @property
    def host_decompress(self) -> bool:
        """Whether a bzImage's payload is decompressed by hvm (see MachineConfig.decompress)."""
        if self.config.decompress != "auto":
            return self.config.decompress == "host"
        return self.accel != "kvm" or self.host.emulation_only

    def add_serial_port(self, backend: SerialBackend | None = None) -> SerialPort:
        """Add the next COM port (COM1 first); ``backend`` None keeps output in memory only."""
        index = len(self.serial_ports)
        if index >= len(SERIAL_PORTS):
            raise ValueError("all four COM ports are in use")
        base, gsi = SERIAL_PORTS[index]
        transcript = BufferBackend(limit=None if backend is None else TRANSCRIPT_LIMIT)
        out = transcript if backend is None else _Tee(transcript, backend)
        if index == 0:
            watches = [LineWatch(PANIC, self._guest_panicked)]
            if self.kvm_emulates:
                watches.append(LineWatch(RUN_INIT, self._init_unreachable))
            out = _Watched(out, watches)
        uart = Uart16550(self.irq(gsi), out, name=f"com{index + 1}")
        self.add_port_device(base, 8, uart, f"com{index + 1}")
        if index == 0:
            self._console = out
        port = SerialPort(f"com{index + 1}", uart, transcript, out)
        self.serial_ports.append(port)
        self._backends.append(out)
        return port

    @property
    def serial(self) -> SerialPort:
        """COM1."""
        return self.serial_ports[0]

    def irq(self, gsi: int) -> IrqLine:
        """The interrupt line ``gsi`` (PIC/IOAPIC: in the kernel under KVM, in Python under unicorn),
        to hand to a device."""
        line = self._irqs.get(gsi)
        if line is None:
            if self.vm is not None:
                line = IrqLine(gsi, self.vm.irq_line)
            else:
                if not 0 <= gsi < 24:
                    raise ValueError(f"GSI {gsi}: the IOAPIC has 24 pins (0-23)")
                line = IrqLine(gsi, self._software_irq, self._software_retrigger)
            self._irqs[gsi] = line
        return line

    def _software_platform(self) -> None:
        # KVM keeps the PIC pair, PIT, IOAPIC and LAPICs in the kernel; under unicorn they are
        # Python devices at the same ports and addresses. Each vCPU takes interrupts from its
        # LAPIC, which passes the PIC's through LINT0 (virtual wire) until the guest sets it up.
        from .devices.irq.apic_bus import ApicBus
        from .devices.irq.ioapic import IoApic
        from .devices.irq.lapic import LocalApic
        from .devices.irq.pic8259 import Pic8259Pair
        from .devices.irq.pit8254 import Pit8254
        from .engine import uc_core
        from .engine.unicorn import UnicornEngine

        ncpus = self.config.cpus
        self.unicorn_parallel = self._unicorn_threads() == "multi"
        if self.unicorn_parallel:
            # An instance per vCPU, all running at once (uc_core.ParallelGroup).
            group = uc_core.ParallelGroup()
            cores = [uc_core.UnicornCore(self.memory, self.mmio, physmap=self.physmap,
                                         published=self.pio.published, group=group) for _ in range(ncpus)]
            current = lambda: uc_core.running.engine.index  # noqa: E731
        else:
            core = uc_core.UnicornCore(self.memory, self.mmio, physmap=self.physmap,
                                       published=self.pio.published)
            cores = [core] * ncpus
            current = lambda: core.current.index  # noqa: E731
        self._unicorn_engines = engines = [
            UnicornEngine(self.memory, self.mmio, core=core, index=i, ncpus=ncpus, started=i == 0)
            for i, core in enumerate(cores)]
        if cores[0] is not cores[-1]:
            for engine in engines:   # all before any runs: an AP's before its STARTUP IPI
                engine.create_cpu()
        self.pic = Pic8259Pair(on_intr=engines[0].poke)
        self.add_port_device(0x20, 2, self.pic.master, "pic-master")
        self.add_port_device(0xA0, 2, self.pic.slave, "pic-slave")
        self.add_port_device(0x4D0, 2, self.pic.elcr, "elcr")
        self.apic_bus = ApicBus()
        self.ioapic = IoApic(self.apic_bus.route)
        self.apic_bus.add_ioapic(self.ioapic)
        self.add_mmio_device(layout.IOAPIC_BASE, layout.IOAPIC_SIZE, self.ioapic, "ioapic")
        # No TSC view: unicorn cannot hand WRMSR to hvm, so TSC-deadline mode stays unavailable
        # (the CPUID unicorn reports does not offer it either).
        self.lapics = [LocalApic(i, send=self.apic_bus.route, eoi=self.apic_bus.eoi, on_intr=e.poke,
                                 extint=self.pic, x2apic=False) for i, e in enumerate(engines)]
        for lapic in self.lapics:
            self.apic_bus.add_lapic(lapic)
        self.lapic = self.lapics[0]
        self.add_mmio_device(layout.LAPIC_BASE, layout.LAPIC_SIZE,
                             _CurrentCpuDevice(self.lapics, current), "lapic")
        self.pit = Pit8254(self.irq(0))
        self.pit.publish_channel2(self.pio.published.timer2)
        self.add_port_device(0x40, 4, self.pit.ports, "pit")
        self.add_port_device(0x61, 1, self.pit.port61, "port61")
        engines[0].attach_platform(self.lapic, [self.pit, self.lapic])
        for engine, lapic in zip(engines[1:], self.lapics[1:]):
            engine.attach_platform(lapic, [lapic])

    def _unicorn_threads(self) -> str:
        """"multi" (an instance per vCPU, run at once) or "single" (the vCPUs take turns on one),
        as asked, or for "auto" multi where it can help: several vCPUs, more than one host CPU to
        run them on, hvm's rebuilt library, and no Xen PV domain (whose hypervisor, hvm's, serves
        its vCPUs one at a time)."""
        from .engine.uc_core import parallel_supported

        asked = self.config.unicorn_threads
        if asked == "multi" and not parallel_supported():
            raise ConfigError("--unicorn-threads multi needs hvm's rebuilt unicorn library "
                              "(python3 -m images unicorn)")
        if asked != "auto":
            return asked
        spare = len(os.sched_getaffinity(0)) > 1 if hasattr(os, "sched_getaffinity") else False
        return "multi" if (self.config.cpus > 1 and spare and parallel_supported()
                           and self.config.xen is None and self.config.machine != "xenpv") else "single"

    def _software_irq(self, gsi: int, level: bool) -> None:
        # An ISA line reaches both the 8259 pair and the IOAPIC; IRQ 0 is IOAPIC pin 2, the
        # interrupt source override every PC firmware (and QEMU's MADT) declares.
        if gsi < 16:
            self.pic.set_irq(gsi, level)
        self.ioapic.set_irq(2 if gsi == 0 else gsi, level)

    def _software_retrigger(self, gsi: int) -> None:
        if gsi < 16:
            self.pic.retrigger(gsi)
        self.ioapic.retrigger(2 if gsi == 0 else gsi)

    def add_port_device(self, base: int, length: int, device: Device, name: str | None = None) -> None:
        """Attach a device to I/O ports ``[base, base+length)``."""
        self.pio.register(base, length, device, name)

    def add_mmio_device(self, base: int, length: int, device: Device, name: str | None = None) -> None:
        """Attach a device to guest-physical ``[base, base+length)`` (outside RAM)."""
        if any(w.gpa < base + length and base < w.end for w in self.physmap.windows() if not w.readonly):
            raise ValueError(f"MMIO range {base:#x}+{length:#x} overlaps guest RAM")
        self.mmio.register(base, length, device, name)

    def add_msr_handler(self, index: int, handler: MsrHandler) -> None:
        """Serve RDMSR/WRMSR of ``index`` in Python: KVM's MSR filter denies it, so it exits to us."""
        if self.vm is None:
            raise ConfigError("serving MSRs from Python needs the KVM engine for now")
        if not self.msr_handlers:
            self.vm.enable_cap("KVM_CAP_X86_USER_SPACE_MSR", lib.KVM_MSR_EXIT_REASON_FILTER)
        if index not in self.msr_handlers and len(self.msr_handlers) >= lib.KVM_MSR_FILTER_MAX_RANGES:
            raise ValueError(f"at most {lib.KVM_MSR_FILTER_MAX_RANGES} MSRs can be served in Python")
        self.msr_handlers[index] = handler
        both = lib.KVM_MSR_FILTER_READ | lib.KVM_MSR_FILTER_WRITE
        # One single-MSR range per handled index; a 0 bit in the bitmap means "deny", i.e. exit.
        self.vm.set_msr_filter([(both, i, 1, b"\x00") for i in sorted(self.msr_handlers)])

    def guest_reset(self, how: str) -> None:
        """The guest reset the machine (reset register, keyboard controller, triple fault)."""
        self.finish(Outcome(End.RESET, message=f"guest reset the machine: {how}"))

    def _guest_panicked(self, reason: str) -> None:
        notes = [KVM_USERSPACE_LIMIT] if self.kvm_emulates else []
        self.finish(Outcome(End.CRASH, crash=GuestCrash(f"guest kernel panic: {reason}", notes=notes),
                            message=f"guest kernel panic: {reason}"))

    def _init_unreachable(self, init: str) -> None:
        # The kernel is about to enter user space, which this host's KVM cannot run: the first
        # SYSCALL would land in the kernel's entry code at CPL3 and init would die. Stopping here
        # says why, instead of a panic (or a soft lockup) tens of minutes of emulation later.
        self.finish(Outcome(End.HOST_LIMIT, message=f"the guest kernel booted as far as starting {init}; "
                                                    f"{KVM_USERSPACE_LIMIT}"))

    def debug_exit(self, value: int) -> None:
        """The guest wrote ``value`` to isa-debug-exit."""
        self.finish(Outcome(End.DEBUG_EXIT, value=value, message=f"isa-debug-exit {value:#x}"))

    # -- lifecycle ------------------------------------------------------------------------------
    def start(self) -> None:
        """Start the vCPU threads and the serial backends' input."""
        if self._started:
            raise RuntimeError("machine already started")
        self._started = True
        self._t_start = time.monotonic()
        for port in self.serial_ports:
            port.backend.start(port.receive, self.internal_error)
        if self.config.mem_readahead:
            self.memory.start_readahead()
        if self.unicorn_parallel:
            _parallel_switch_interval(+1)
            self._switched = True
        for vcpu in self.vcpus:
            vcpu.start()
        if self.kvm_emulates and self.boots_linux and self.serial_ports:
            start_thread(self._stall_watchdog, "hvm-stall-watchdog", self.internal_error)

    def _stall_watchdog(self) -> None:
        # A Linux guest on a KVM that emulates every kernel instruction can never legitimately sit
        # silent (it cannot reach a shell there); when its console stops moving, the kernel is
        # stuck in what the emulator makes of it (measured: tick handlers that outlast the tick),
        # which is the host's limit, not the guest's state.
        limit = self.config.stall_timeout
        while not self._done.wait(min(limit / 4, 10.0)):
            silent = time.monotonic() - self._console.last_output
            if silent >= limit:
                last = last_lines(self.serial.text, 1)
                self.finish(Outcome(End.HOST_LIMIT, message=(
                    f"the guest kernel has written nothing to its console for {silent:.0f} s (last line: "
                    f"{last[0] if last else 'none'!r}; --stall-timeout): this host's KVM runs every guest "
                    f"kernel instruction in its instruction emulator, too slowly for this boot to go on; "
                    f"and {KVM_USERSPACE_LIMIT}")))
                return

    def wait(self, timeout: float | None = None) -> Outcome:
        """Wait for the guest to end (or ``timeout`` seconds: then the outcome is TIMEOUT)."""
        if not self._done.wait(timeout):
            self.finish(Outcome(End.TIMEOUT, message=f"timed out after {timeout:g} s"))
        self._join()
        for backend in self._backends:
            backend.flush()   # the guest's last words before any report of how it ended
        crash = self.outcome.crash
        if crash is not None:
            self._complete_report(crash)
        return self.outcome

    def _complete_report(self, crash: GuestCrash) -> None:
        """What a crash seen from a device (a panic on the console) lacks, once the vCPUs stand
        still: the registers of the vCPU, and for every crash the console's last lines."""
        if crash.regs is None and self.vcpus:
            try:
                filled = self.vcpus[crash.vcpu].crash(crash.reason)
            except (OSError, RuntimeError):
                filled = None
            if filled is not None:
                crash.regs, crash.sregs, crash.insn, crash.decoded = (
                    filled.regs, filled.sregs, filled.insn, filled.decoded)
        if not crash.console and self.serial_ports:
            crash.console = last_lines(self.serial.text, CRASH_CONSOLE_LINES)
        if crash.symbol is None and crash.regs is not None and self.config.kernel:
            from .kallsyms import for_kernel

            try:
                symbols = for_kernel(self.config.kernel, limit=self.memory.size)
                crash.symbol = symbols.lookup(crash.regs.rip) if symbols else None
            except Exception as exc:  # noqa: BLE001
                # The symbol only decorates the report: nothing the kernel file holds (nor a bug
                # in the symbolizer) may turn the guest's crash report into hvm's traceback.
                if self.config.verbose:
                    _say(f"no symbol for the crash address: {type(exc).__name__}: {exc}")

    def run(self, timeout: float | None = None) -> Outcome:
        """Start, and wait until the guest powers off, exits, crashes or times out."""
        self.start()
        return self.wait(self.config.timeout if timeout is None else timeout)

    def finish(self, outcome: Outcome) -> None:
        """Record how the run ended (the first report wins) and stop every vCPU."""
        with self._outcome_lock:
            if self.outcome is None:
                self.outcome = outcome
                self._t_end = time.monotonic()
        self._stopping.set()
        for vcpu in self.vcpus:
            vcpu.engine.kick()
        self._done.set()

    def stop(self, graceful: bool = False) -> None:
        """Stop a running machine from any thread (outcome QUIT unless the guest ended first).
        ``graceful``: ask the guest to shut itself down where the board has a way to (a Xen PV
        guest's control/shutdown); the run then ends as the guest ends it."""
        if graceful and self.board.request_shutdown(self):
            return
        self.finish(Outcome(End.QUIT, message="stopped"))

    def internal_error(self, where: str, exc: BaseException) -> None:
        """hvm itself failed in ``where`` (a vCPU, a helper thread): end the run with End.ERROR,
        one line for the user and the traceback kept for ``-v``."""
        import traceback  # only on this path: it costs every run ~0.4 MiB of peak RSS

        detail = "".join(traceback.format_exception(exc))
        self.finish(Outcome(End.ERROR, message=f"internal error in {where}: {type(exc).__name__}: {exc}",
                            detail=detail))

    def _join(self) -> None:
        for vcpu in self.vcpus:
            t = vcpu.thread
            while t is not None and t.is_alive():
                # A vCPU can be between its stop check and KVM_RUN; kicks are idempotent.
                vcpu.engine.kick()
                t.join(0.05)

    def stats(self) -> Stats:
        """Exit counts, device accesses, CPU time and peak RSS so far."""
        exits: dict[str, int] = {}
        for vcpu in self.vcpus:
            served = dict(zip(("IoIn", "IoOut"), vcpu.engine.io_exit_counts()))
            for kind, n in [*((k.__name__, v) for k, v in list(vcpu.exits.items())), *served.items()]:
                if n:
                    exits[kind] = exits.get(kind, 0) + n
        # os.times() reads what psutil's cpu_times() reads on Linux, without importing psutil
        # (half a MiB, which would be the process's peak RSS when --stats reports it).
        cpu = os.times()
        end = self._t_end or time.monotonic()
        engine_lines = [line for vcpu in self.vcpus for line in vcpu.engine.counters()]
        if self.fallback is not None:
            engine_lines += self.fallback.counters()
        engine_lines += self.board.counters()
        if self.memory.readahead is not None:
            engine_lines.append(f"guest RAM populated ahead of the guest: "
                                f"{self.memory.readahead.populated // 2**20} MiB")
        return Stats(exits, dict(self.pio.accesses), dict(self.mmio.accesses),
                     self.pio.unclaimed + self.mmio.unclaimed, cpu.user, cpu.system,
                     sum(v.cpu_times[0] for v in self.vcpus), sum(v.cpu_times[1] for v in self.vcpus),
                     _peak_rss(), end - self._t_start if self._t_start else 0.0, engine_lines)

    def close(self) -> None:
        """Stop the guest and release KVM, memory and backends."""
        if self._closed:
            return
        self._closed = True
        if self._started:
            if self.outcome is None:
                self.stop()
            self._join()
        if getattr(self, "_switched", False):
            self._switched = False
            _parallel_switch_interval(-1)
        for port in getattr(self, "serial_ports", []):
            port.uart.close()
        for backend in getattr(self, "_backends", []):
            try:
                backend.close()
            except OSError:
                pass
        for vcpu in self.vcpus:
            vcpu.engine.close()
        if getattr(self, "fallback", None) is not None:
            self.fallback.close()
        if getattr(self, "vm", None) is not None:
            self.vm.close()
        if getattr(self, "memory", None) is not None:
            self.memory.close()
        if getattr(self, "kvm", None) is not None:
            self.kvm.close()

    def __enter__(self) -> "Machine":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
