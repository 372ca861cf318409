"""The devices the fuzzer drives, each built on fresh buses over a clock the fuzzer moves.

An entry is a function decorated with ``@device``: it registers the model the way the machine does
(same ports, same MMIO windows, same wiring between interrupt controllers) and names the inputs a
guest does not drive through a bus (interrupt lines, host input, the CPU's interrupt acknowledge),
its timers, what must stay true of its state, and a few access sequences that put it in
the states random bytes rarely reach (a timer counting, an interrupt routed): a dictionary, as
byte-level fuzzers take one, whose parameters the fuzzer still chooses. ``tests/unit/test_fuzz_devices.py`` runs every
entry; a new device (PCI, fw_cfg, IDE, VGA, virtio, Xen hypercalls) joins with one more function.
"""
from __future__ import annotations

import collections
from dataclasses import dataclass, field
from typing import Callable

from hvm import layout
from hvm.bus import MmioBus, PortIOBus
from hvm.devices.acpi_pm import AcpiPm, DEFAULT_BASE as ACPI_PM_BASE, LENGTH as ACPI_PM_LENGTH
from hvm.devices.base import Device
from hvm.devices.cmos_rtc import CMOS_SIZE, PORT as RTC_PORT, CmosRtc
from hvm.devices.debug_exit import DEFAULT_PORT as DEBUG_EXIT_PORT, PORT_COUNT, DebugExit
from hvm.devices.debugcon import DEFAULT_PORT as DEBUGCON_PORT, DebugCon
from hvm.devices.fw_cfg import BASE_PORT as FW_CFG_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from hvm.devices.i8042 import QUEUE_LIMIT, I8042
from hvm.devices.ps2_keys import KEYS
from hvm.devices.ps2_mouse import QUEUE_LIMIT as MOUSE_QUEUE_LIMIT
from hvm.devices.pc_testdev import IOMEM_SIZE, PcTestdev
from hvm.devices.irq.apic_bus import ApicBus
from hvm.devices.irq.ioapic import IoApic
from hvm.devices.irq.lapic import LocalApic
from hvm.devices.irq.pic8259 import Pic8259Pair
from hvm.devices.irq.pit8254 import Pit8254
from hvm.devices.post import DEFAULT_PORT as POST_PORT, PostCode
from hvm.devices.reset_control import RESET_PORT, ResetControl
from hvm.devices.uart16550 import HOST_INPUT_LIMIT, Uart16550
from hvm.irq import IrqLine
from hvm.memory import GuestMemory
from hvm.serial import SerialBackend

START_NS = 10**12  # not zero, so nothing can confuse "time 0" with "never"
START_S = 1_700_000_000.0  # the RTC's UTC seconds at START_NS
# Every command a PS/2 mouse knows and a few it does not (Synaptics' E1, an unassigned D0).
MOUSE_COMMANDS = (0xE6, 0xE7, 0xE8, 0xE9, 0xEA, 0xEB, 0xEC, 0xEE, 0xF0, 0xF2, 0xF3, 0xF4, 0xF5,
                  0xF6, 0xFE, 0xFF, 0xE1, 0xD0)

# Any list, queue or buffer a model keeps is expected to stay below this (per attribute) unless
# the entry states a larger bound; the fuzzer repeats accesses hundreds of times to find growth.
CONTAINER_LIMIT = 256


class FakeClock:
    """Nanoseconds that move only when the fuzzer says so."""

    def __init__(self) -> None:
        self.ns = START_NS

    def __call__(self) -> int:
        return self.ns

    def seconds(self) -> float:
        return START_S + (self.ns - START_NS) / 1e9


class CountingBackend(SerialBackend):
    """Counts guest output without keeping it: the harness must not be what grows."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def write(self, data: bytes) -> None:
        self.count += len(data)


def counting_line(gsi: int) -> IrqLine:
    """An interrupt line that goes nowhere (a device alone on its rig)."""
    return IrqLine(gsi, lambda _gsi, _level: None)


Access = tuple[str, int, int, int]  # bus ("pio"/"mmio"), address, size, value


@dataclass
class Sequence:
    """Accesses built from fields the fuzzer draws, each ``0 <= field < 1 << bits``."""

    name: str
    bits: tuple[int, ...]
    build: Callable[..., list[Access]]


@dataclass
class Window:
    """A range a device claims: the fuzzer aims accesses at it, and a little past its edges."""

    bus: str  # "pio" or "mmio"
    base: int
    length: int


@dataclass
class Rig:
    """What one entry built: its buses, inputs, timers and invariants."""

    clock: FakeClock
    pio: PortIOBus = field(default_factory=PortIOBus)
    mmio: MmioBus = field(default_factory=MmioBus)
    windows: list[Window] = field(default_factory=list)
    # Host-side inputs: each takes a random non-negative int and does what it names.
    sequences: list[Sequence] = field(default_factory=list)
    inputs: list[tuple[str, Callable[[int], None]]] = field(default_factory=list)
    timers: list = field(default_factory=list)   # objects with tick() and next_deadline_ns()
    invariants: list[tuple[str, Callable[[], bool]]] = field(default_factory=list)
    models: list[object] = field(default_factory=list)   # objects whose containers must stay small
    container_limits: dict[str, int] = field(default_factory=dict)  # attribute name -> bound
    events: collections.Counter = field(default_factory=collections.Counter)  # resets, exits ...

    def port(self, base: int, length: int, device: Device, model: object | None = None) -> None:
        self.pio.register(base, length, device)
        self.windows.append(Window("pio", base, length))
        self._model(model or device)

    def mmio_at(self, base: int, length: int, device: Device, model: object | None = None) -> None:
        self.mmio.register(base, length, device)
        self.windows.append(Window("mmio", base, length))
        self._model(model or device)

    def _model(self, model: object) -> None:
        if all(m is not model for m in self.models):
            self.models.append(model)

    def record(self, what: str) -> Callable[..., None]:
        """A callback for a machine-level request (reset, power-off, exit): counted, not acted on."""
        return lambda *_args: self.events.update([what])

    def sequence(self, name: str, *bits: int):
        """Decorator: add a dictionary sequence whose fields have the given widths."""
        def add(build: Callable[..., list[Access]]):
            self.sequences.append(Sequence(name, bits, build))
            return build
        return add

    def must(self, description: str, check: Callable[[], bool]) -> None:
        self.invariants.append((description, check))

    def oversized_containers(self) -> list[str]:
        """Attributes of the models holding more items than they may."""
        found = []
        for model in self.models:
            for name, value in vars(model).items():
                if isinstance(value, (list, collections.deque, bytearray, bytes, dict, set)):
                    limit = self.container_limits.get(name, CONTAINER_LIMIT)
                    if len(value) > limit:
                        found.append(f"{type(model).__name__}.{name} holds {len(value)} > {limit}")
        return found


DEVICES: dict[str, Callable[[FakeClock], Rig]] = {}


def device(name: str):
    """Register a rig builder under ``name``."""
    def register(build: Callable[[FakeClock], Rig]):
        DEVICES[name] = build
        return build
    return register


# -- the entries -------------------------------------------------------------------------------

@device("uart16550")
def _uart(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    uart = Uart16550(counting_line(4), CountingBackend())
    rig.port(0x3F8, 8, uart)
    # Host input waits behind the FIFO up to HOST_INPUT_LIMIT, where receive() blocks the sender;
    # the harness is the only sender, so it stops short of blocking itself.
    rig.inputs.append(("host input", lambda n: uart.receive(bytes([n & 0xFF]) * (n % 97))
                       if uart.pending_input + 97 < HOST_INPUT_LIMIT else None))
    rig.container_limits["_host_pending"] = HOST_INPUT_LIMIT
    rig.must("RX FIFO holds at most 16 bytes", lambda: len(uart._rx) <= 16)

    @rig.sequence("8n1, FIFO, interrupts, modem control, a few bytes", 8, 4, 5, 8, 5)
    def _setup(fcr: int, ier: int, mcr: int, byte: int, count: int) -> list[Access]:
        return [("pio", 0x3FB, 1, 0x03), ("pio", 0x3FA, 1, fcr), ("pio", 0x3F9, 1, ier),
                ("pio", 0x3FC, 1, mcr)] + [("pio", 0x3F8, 1, byte)] * count
    return rig


@device("i8042")
def _i8042(clock: FakeClock) -> Rig:
    """The controller with its keyboard and mouse. Held keys are not fuzzed: their repeat runs on
    the host's clock, in a thread of its own; a tap (press, release) is."""
    rig = Rig(clock)
    kbc = I8042(counting_line(1), rig.record("reset"), aux_irq=counting_line(12))
    rig.port(0x60, 1, kbc.data_port, kbc)
    rig.port(0x64, 1, kbc.command_port, kbc)
    rig._model(kbc.mouse)
    keys = sorted(KEYS)

    def tap(n: int) -> None:
        name = keys[n % len(keys)]
        kbc.key(name, True)
        kbc.key(name, False)

    def mouse(n: int) -> None:
        # Signed counts of every size (a long move, a wheel spin), and buttons pressed or released.
        def signed(v: int, bits: int) -> int:
            return v - (1 << bits) if v >> (bits - 1) & 1 else v
        kbc.mouse_event(signed(n & 0x3FF, 10), signed(n >> 10 & 0x3FF, 10), signed(n >> 20 & 0xF, 4),
                        press=n >> 24 & 0x1F, release=n >> 29 & 0x7)
    rig.inputs += [("host taps a key", tap), ("host moves the mouse, presses buttons", mouse)]

    def to_mouse(*data: int) -> list[Access]:
        return [access for byte in data for access in (("pio", 0x64, 1, 0xD4), ("pio", 0x60, 1, byte))]

    @rig.sequence("mouse command and argument", 5, 8)
    def _mouse_command(index: int, argument: int) -> list[Access]:
        return to_mouse(MOUSE_COMMANDS[index % len(MOUSE_COMMANDS)], argument)

    @rig.sequence("AUX port and its interrupt on, mouse reporting (stream or remote)", 8, 1)
    def _mouse_on(ctr: int, remote: int) -> list[Access]:
        return [("pio", 0x64, 1, 0xA8), ("pio", 0x64, 1, 0x60), ("pio", 0x60, 1, (ctr | 0x02) & ~0x20)] \
            + to_mouse(0xF0 if remote else 0xEA, 0xF4)

    @rig.sequence("IntelliMouse knock (wheel, then five buttons)", 1)
    def _knock(explorer: int) -> list[Access]:
        return to_mouse(0xF3, 200, 0xF3, 200 if explorer else 100, 0xF3, 80, 0xF2)

    @rig.sequence("keyboard command with its argument", 2, 8)
    def _keyboard_command(which: int, argument: int) -> list[Access]:
        return [("pio", 0x60, 1, (0xED, 0xF0, 0xF3, 0xF5)[which]), ("pio", 0x60, 1, argument)]

    def within(limit: int, queue) -> bool:
        return len(queue) <= limit and all(0 <= b <= 0xFF for b in queue)
    rig.must(f"keyboard buffer holds at most {QUEUE_LIMIT} bytes, the output buffer's included",
             lambda: within(QUEUE_LIMIT, kbc._queue) and kbc._keyboard_room() >= 0)
    rig.must(f"mouse holds at most {MOUSE_QUEUE_LIMIT} bytes",
             lambda: kbc.mouse.queued() <= MOUSE_QUEUE_LIMIT
             and all(0 <= b <= 0xFF for q in (kbc.mouse._replies, kbc.mouse._sending) for b in q))
    rig.must("controller answers are bounded", lambda: len(kbc._own) <= QUEUE_LIMIT)
    rig.must("the output buffer holds a byte", lambda: 0 <= kbc._out <= 0xFF)
    rig.must("packets are 3 or 4 bytes with bit 3 of the first set",
             lambda: all(len(p) in (3, 4) and p[0] & 0x08 for p in kbc.mouse._packets))
    return rig


@device("cmos-rtc")
def _rtc(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    rtc = CmosRtc(512 << 20, 1 << 30, 2, clock=clock.seconds)
    rig.port(RTC_PORT, 2, rtc)
    rig.must("CMOS is 128 bytes, index inside it", lambda: len(rtc.ram) == CMOS_SIZE and 0 <= rtc.index < CMOS_SIZE)
    return rig


@device("acpi-pm")
def _acpi_pm(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    rig.port(ACPI_PM_BASE, ACPI_PM_LENGTH, AcpiPm(rig.record("poweroff"), clock=clock))
    return rig


@device("debug-exit")
def _debug_exit(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    rig.port(DEBUG_EXIT_PORT, PORT_COUNT, DebugExit(rig.record("exit")))
    return rig


@device("debugcon")
def _debugcon(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    rig.port(DEBUGCON_PORT, 1, DebugCon(CountingBackend()))
    return rig


@device("post")
def _post(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    post = PostCode()
    rig.port(POST_PORT, 1, post)
    rig.must("history keeps the last 16 codes", lambda: len(post.history) <= PostCode.HISTORY)
    return rig


@device("reset-control")
def _reset(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    rig.port(RESET_PORT, 1, ResetControl(rig.record("reset")))
    return rig


@device("pit8254")
def _pit(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    pit = Pit8254(counting_line(0), clock)
    rig.port(0x40, 4, pit.ports, pit)
    rig.port(0x61, 1, pit.port61, pit)
    rig.timers.append(pit)

    @rig.sequence("program a counter", 2, 4, 16, 2)
    def _program(channel: int, mode_bcd: int, count: int, port61: int) -> list[Access]:
        channel %= 3
        control = channel << 6 | 0x30 | mode_bcd   # lo/hi access, any mode, BCD or not
        return [("pio", 0x43, 1, control), ("pio", 0x40 + channel, 1, count & 0xFF),
                ("pio", 0x40 + channel, 1, count >> 8), ("pio", 0x61, 1, port61)]
    for i, counter in enumerate(pit._counters):
        rig._model(counter)
        rig.must(f"counter {i} count in effect is 1..65536 or none",
                 lambda c=counter: c.reload is None or 1 <= c.reload <= 0x10000)
        rig.must(f"counter {i} latch holds at most two bytes", lambda c=counter: len(c.latched) <= 2)
    return rig


@device("pc-interrupts")
def _interrupts(clock: FakeClock) -> Rig:
    """The 8259 pair, ELCR, IOAPIC and two LAPICs wired as the unicorn machine wires them."""
    rig = Rig(clock)
    pic = Pic8259Pair(on_intr=lambda: None)
    rig.port(0x20, 2, pic.master, pic)
    rig.port(0xA0, 2, pic.slave, pic)
    rig.port(0x4D0, 2, pic.elcr, pic)
    apic_bus = ApicBus()
    ioapic = IoApic(apic_bus.route)
    apic_bus.add_ioapic(ioapic)
    rig.mmio_at(layout.IOAPIC_BASE, layout.IOAPIC_SIZE, ioapic)
    lapics = [LocalApic(i, send=apic_bus.route, eoi=apic_bus.eoi, on_intr=lambda: None,
                        extint=pic, clock=clock, x2apic=False) for i in range(2)]
    for i, lapic in enumerate(lapics):
        apic_bus.add_lapic(lapic)
        # Each CPU sees its own LAPIC at LAPIC_BASE; here the second one sits in the next page.
        rig.mmio_at(layout.LAPIC_BASE + i * layout.LAPIC_SIZE, layout.LAPIC_SIZE, lapic)
        rig.timers.append(lapic)

    def line(level_and_gsi: int) -> None:
        gsi, level = (level_and_gsi >> 1) % 24, bool(level_and_gsi & 1)
        if gsi < 16:
            pic.set_irq(gsi, level)
        ioapic.set_irq(2 if gsi == 0 else gsi, level)

    def cpu_takes_interrupt(n: int) -> None:
        # What an engine does when the CPU can take an interrupt: NMI/INIT/SIPI first, then INTR.
        lapic = lapics[n % 2]
        lapic.take_nmi(), lapic.take_smi(), lapic.take_init(), lapic.take_sipi()
        if lapic.intr():
            lapic.acknowledge()

    rig.inputs += [("interrupt line", line), ("CPU takes an interrupt", cpu_takes_interrupt),
                   ("LINT pin", lambda n: lapics[n % 2].set_lint((n >> 1) % 2, bool(n & 4))),
                   ("PIC INTA without a LAPIC", lambda _n: pic.acknowledge() if pic.intr() else None)]
    def apic(i: int, reg: int, value: int) -> Access:
        return ("mmio", layout.LAPIC_BASE + i * layout.LAPIC_SIZE + reg * 16, 4, value)

    @rig.sequence("LAPIC timer", 1, 4, 8, 2, 1, 32)
    def _lapic_timer(cpu: int, tdcr: int, vector: int, mode: int, masked: int, count: int):
        lvt = vector | mode << 17 | masked << 16
        return [apic(cpu, 0x0F, 0x1FF), apic(cpu, 0x3E, tdcr & 0xB), apic(cpu, 0x32, lvt),
                apic(cpu, 0x38, count)]

    @rig.sequence("IOAPIC route", 5, 8, 8, 2, 1)
    def _ioapic_route(pin: int, vector: int, flags: int, dest: int, cpu: int) -> list[Access]:
        pin %= 24
        return [("mmio", layout.IOAPIC_BASE, 4, 0x10 + 2 * pin),
                ("mmio", layout.IOAPIC_BASE + 0x10, 4, vector | flags << 8),
                ("mmio", layout.IOAPIC_BASE, 4, 0x11 + 2 * pin),
                ("mmio", layout.IOAPIC_BASE + 0x10, 4, dest << 24), apic(cpu, 0x0F, 0x1FF)]

    @rig.sequence("8259 init", 5, 8, 1, 5, 8)
    def _pic_init(master_base: int, master_mask: int, auto_eoi: int, slave_base: int,
                  slave_mask: int) -> list[Access]:
        icw4 = 1 | auto_eoi << 1
        return [("pio", 0x20, 1, 0x11), ("pio", 0x21, 1, master_base << 3), ("pio", 0x21, 1, 4),
                ("pio", 0x21, 1, icw4), ("pio", 0x21, 1, master_mask),
                ("pio", 0xA0, 1, 0x11), ("pio", 0xA1, 1, slave_base << 3), ("pio", 0xA1, 1, 2),
                ("pio", 0xA1, 1, icw4), ("pio", 0xA1, 1, slave_mask)]

    @rig.sequence("IPI", 1, 8, 20)
    def _ipi(cpu: int, dest: int, icr: int) -> list[Access]:
        return [apic(cpu, 0x0F, 0x1FF), apic(cpu, 0x31, dest << 24), apic(cpu, 0x30, icr)]

    for lapic in lapics:
        rig.must("LAPIC IRR/ISR/TMR are 256-bit", lambda a=lapic: max(a._irr, a._isr, a._tmr) < 1 << 256)
        rig.must("LAPIC TPR is a byte", lambda a=lapic: 0 <= a._tpr <= 0xFF)
        rig.must("LAPIC messages left nothing behind", lambda a=lapic: not a._outbox)
    rig.must("IOAPIC messages left nothing behind", lambda: not ioapic._outbox)
    for chip in (pic.master, pic.slave):
        rig.must("8259 IRR/ISR/IMR are bytes", lambda c=chip: max(c.irr, c.isr, c.imr) <= 0xFF)
    return rig


@device("fw_cfg")
def _fw_cfg(clock: FakeClock) -> Rig:
    """fw_cfg with a 64 KiB guest RAM for DMA: descriptors the fuzzer writes there point anywhere."""
    rig = Rig(clock)
    mem = GuestMemory(64 << 10)
    cfg = FwCfg(mem)
    cfg.add_u16(0x05, 2)
    cfg.add_file("etc/e820", bytes(40))
    cfg.add_file("opt/big", bytes(range(256)) * 4)
    rig.port(FW_CFG_PORT, 2, cfg.ports, cfg)
    rig.port(DMA_PORT, DMA_LENGTH, cfg.dma, cfg)
    rig.container_limits["_files"] = rig.container_limits["_names"] = 8
    rig.container_limits["_items"] = 16
    rig.container_limits["_selected"] = 1024   # the largest item (opt/big)

    keys = [0x00, 0x01, 0x05, 0x19, 0x20, 0x21, 0x8002, 0x7777]

    def descriptor(n: int) -> None:
        # One number picks the operation bits, a key (mostly existing ones), a length (sometimes
        # near 4 GiB), a target (sometimes past the end of RAM) and where the descriptor goes.
        control = keys[n >> 5 & 7] << 16 | (n & 0x1E)
        length = (n >> 8 & 0x3FF) | (0xFFFF0000 if n >> 30 & 1 else 0)
        target = (n >> 18 & 0xF) * 0x1000 + (n >> 22 & 0xFF) + (0x10000 if n >> 31 & 1 else 0)
        at = (n >> 27 & 0xF) * 0x1000 if n >> 26 & 1 else 0
        mem.write(at, control.to_bytes(4, "big") + length.to_bytes(4, "big") + target.to_bytes(8, "big"))
        if n & 1:   # and starts the transfer (a 32-bit address: only the low half)
            rig.pio.write(DMA_PORT + 4, 4, int.from_bytes(at.to_bytes(4, "big"), "little"))
    rig.inputs.append(("guest writes a DMA descriptor (and starts it)", descriptor))

    @rig.sequence("DMA transfer from a descriptor page", 4, 3)
    def _transfer(page: int, high: int) -> list[Access]:
        def be(v: int) -> int:
            return int.from_bytes(v.to_bytes(4, "big"), "little")
        return [("pio", DMA_PORT, 4, be(high // 7)), ("pio", DMA_PORT + 4, 4, be(page * 0x1000))]

    rig.must("the data offset never passes the selected item's end",
             lambda: cfg._selected is None or 0 <= cfg._offset <= len(cfg._selected))
    rig.must("the file directory lists every file",
             lambda: cfg._items[0x19][:4] == len(cfg._files).to_bytes(4, "big"))
    return rig


@device("pc-testdev")
def _pc_testdev(clock: FakeClock) -> Rig:
    rig = Rig(clock)
    levels: dict[int, bool] = {}
    dev = PcTestdev(lambda gsi, level: levels.__setitem__(gsi, level))
    dev.attach(lambda base, length, d, _name: rig.port(base, length, d, dev),
               lambda base, length, d, _name: rig.mmio_at(base, length, d, dev))
    rig.container_limits["buffer"] = IOMEM_SIZE
    rig.models.append(dev.iomem)
    rig.must("the scratch register is 32 bits", lambda: 0 <= dev.value < 1 << 32)
    rig.must("the I/O memory keeps its size", lambda: len(dev.iomem.buffer) == IOMEM_SIZE)
    rig.must("only GSIs 0-23 are driven", lambda: all(0 <= gsi < 24 for gsi in levels))
    return rig
