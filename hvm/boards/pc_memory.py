"""The PC's memory map below 1 MiB and at the top of 4 GiB: the firmware ROM, its alias under
1 MiB, and the i440FX's Programmable Attribute Map (PAM) that swaps that alias for RAM.

The whole BIOS image sits just below 4 GiB, where the CPU's reset vector finds it; its last
128 KiB also show at 0xE0000-0xFFFFF, and 0xC0000-0xDFFFF (option-ROM space) shows zeros. Each of
the thirteen PAM segments there (0xF0000 as one 64 KiB segment, 0xC0000-0xEFFFF in 16 KiB ones)
has a read-enable and a write-enable bit (82441FX datasheet §3.2.15): reads come from RAM or from
the ROM side, writes go to RAM or nowhere. SeaBIOS copies itself into RAM with PAM set to RAM
read/write, then makes most of it read-only. 0xA0000-0xBFFFF is never RAM for the CPU: it is the
VGA window (MMIO).
"""
from __future__ import annotations

from ..devices.base import Device
from ..memory import GuestMemory
from ..physmap import PhysMap, Rom, Window

ISA_ROM_BASE, ISA_ROM_SIZE = 0xC0000, 0x40000
VGA_WINDOW = (0xA0000, 0x20000)
ALIAS_SIZE = 0x20000
FOUR_GIB = 1 << 32
READ_ENABLE, WRITE_ENABLE = 1, 2


def pam_segments() -> list[tuple[int, int, int, int]]:
    """(gpa, size, PAM register index, nibble shift) of the thirteen segments."""
    out = [(0xF0000, 0x10000, 0, 4)]
    for i in range(1, 7):
        base = 0xC0000 + (i - 1) * 0x8000
        out += [(base, 0x4000, i, 0), (base + 0x4000, 0x4000, i, 4)]
    return sorted(out)


class PcMemoryMap(Device):
    """The firmware ROM and PAM state; also the MMIO device that takes the CPU's stores to the
    read-only segments (registered over 0xC0000-0xFFFFF) and to the ROM below 4 GiB."""

    name = "pam"

    def __init__(self, memory: GuestMemory, bios: bytes, bios_name: str = "bios"):
        if len(bios) % 0x10000 or not 0x10000 <= len(bios) <= 0x1000000:
            raise ValueError(f"the BIOS image is {len(bios)} bytes; it must be a multiple of 64 KiB, "
                             f"at most 16 MiB")
        if memory.below_4g < 0x100000:
            raise ValueError("the PC board needs at least 1 MiB of RAM")
        self.memory = memory
        self.bios = Rom(bios, bios_name)
        alias = min(len(bios), ALIAS_SIZE)
        legacy = bytes(ISA_ROM_SIZE - alias) + bios[-alias:]
        self.legacy = Rom(legacy, "isa-rom")   # what PCI (the ROM side) shows below 1 MiB
        self.bios_base = FOUR_GIB - len(bios)
        self.segments = pam_segments()
        self.modes = [0] * len(self.segments)
        self.physmap = PhysMap(memory, self._initial_windows())

    def _initial_windows(self) -> list[Window]:
        holes = [(VGA_WINDOW[0], VGA_WINDOW[1] + ISA_ROM_SIZE)]
        windows = PhysMap.ram_windows(self.memory, holes)
        windows += [self._window(i, 0) for i in range(len(self.segments))]
        windows.append(self.bios.window(self.bios_base))
        return windows

    def _window(self, index: int, mode: int) -> Window:
        gpa, size, _, _ = self.segments[index]
        if mode & READ_ENABLE:
            region = next(r for r in self.memory.regions if r.gpa == 0)
            return Window(gpa, size, region.host_addr + gpa, readonly=not mode & WRITE_ENABLE,
                          name="ram" if mode & WRITE_ENABLE else "ram-ro", owner=self.memory)
        return self.legacy.window(gpa, gpa - ISA_ROM_BASE, size)

    def set_pam(self, registers: bytes) -> None:
        """The host bridge's PAM0-PAM6 changed: show RAM or ROM in each segment accordingly."""
        changed = []
        for i, (_gpa, _size, reg, shift) in enumerate(self.segments):
            mode = registers[reg] >> shift & 3
            if mode != self.modes[i]:
                self.modes[i] = mode
                changed.append(self._window(i, mode))
        # One replacement per contiguous run, so an engine sees a few large changes.
        run: list[Window] = []
        for window in changed + [None]:
            if run and (window is None or window.gpa != run[-1].end):
                self.physmap.replace(run)
                run = []
            if window is not None:
                run.append(window)

    # -- the CPU's stores to read-only segments (offsets from 0xC0000) --------------------------
    def write(self, offset: int, size: int, value: int) -> None:
        for i in range(size):
            gpa = ISA_ROM_BASE + offset + i
            if gpa >= ISA_ROM_BASE + ISA_ROM_SIZE:
                return
            index = self._segment_of(gpa)
            if self.modes[index] & WRITE_ENABLE:   # reads from ROM, writes to RAM
                self.memory.write_u8(gpa, value >> (8 * i) & 0xFF)

    def read(self, offset: int, size: int) -> int:
        # Only reached for segments no window covers, which never happens; as ROM space would.
        return (1 << (8 * size)) - 1

    def _segment_of(self, gpa: int) -> int:
        if gpa >= 0xF0000:
            return len(self.segments) - 1
        return (gpa - ISA_ROM_BASE) // 0x4000


class RomWrites(Device):
    """Stores into the BIOS ROM below 4 GiB: ignored, as by flash that is not being programmed."""

    name = "bios-rom"
