"""The host bridge's configuration mechanism #1 and the placement of every function's BARs.

CONFIG_ADDRESS at 0xCF8 (dword accesses only: a byte at 0xCF9 is the PC's reset register) holds
enable (bit 31), bus, device, function and register; CONFIG_DATA at 0xCFC-0xCFF reads or writes
that register, a narrower access at 0xCFC + n reaching byte n of it (PCI Local Bus Specification
3.0, 3.2.2.3.2). Only bus 0 exists; absent functions read as all ones. Where the guest places a
BAR, the function's device is registered on the port or memory bus; a placement that collides
with another device is refused silently, as a misprogrammed BAR decodes nothing useful on real
hardware either.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from ...bus import BusError
from ..base import Device
from .config import CONFIG_SIZE, PciFunction

CONFIG_ADDRESS, CONFIG_DATA = 0xCF8, 0xCFC
ENABLE = 1 << 31


def devfn(device: int, function: int = 0) -> int:
    """The 8-bit device/function number as configuration addresses carry it."""
    return device << 3 | function


@dataclass
class BusOps:
    """How the host bridge puts a BAR's device on a bus and takes it off again."""

    map_port: Callable[[int, int, Device, str], None]
    unmap_port: Callable[[int], None]
    map_mmio: Callable[[int, int, Device, str], None]
    unmap_mmio: Callable[[int], None]


class _RomDevice(Device):
    """An expansion ROM as its BAR shows it: read-only bytes."""

    def __init__(self, data: bytes, name: str):
        self.data, self.name = data, name

    def read(self, offset: int, size: int) -> int:
        return int.from_bytes(self.data[offset:offset + size].ljust(size, b"\xff"), "little")


class _AddressPort(Device):
    name = "pci-config-address"

    def __init__(self, host: "PciHost"):
        self.host = host

    def read(self, offset: int, size: int) -> int:
        return self.host.address if size == 4 and offset == 0 else (1 << (8 * size)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        if size == 4 and offset == 0:
            self.host.address = value & 0x80FFFFFC


class _DataPort(Device):
    name = "pci-config-data"

    def __init__(self, host: "PciHost"):
        self.host = host

    def read(self, offset: int, size: int) -> int:
        target = self.host.target(offset, size)
        if target is None:
            return (1 << (8 * size)) - 1
        function, register = target
        return function.config_read(register, size)

    def write(self, offset: int, size: int, value: int) -> None:
        target = self.host.target(offset, size)
        if target is not None:
            function, register = target
            function.config_write(register, size, value)


class PciHost:
    """Bus 0 of a PCI host bridge: its functions by device/function number, their configuration
    space through ports 0xCF8/0xCFC, and their BARs on the machine's buses."""

    def __init__(self, ops: BusOps):
        self.ops = ops
        self.address = 0
        self.functions: dict[int, PciFunction] = {}
        self._mapped: dict[tuple[int, object], tuple[bool, int]] = {}  # (devfn, bar or "rom") -> (io, base)
        self.address_port, self.data_port = _AddressPort(self), _DataPort(self)

    def attach(self, map_port: Callable[[int, int, Device, str], None]) -> None:
        """Claim the configuration ports."""
        map_port(CONFIG_ADDRESS, 1, self.address_port, "pci-config")
        map_port(CONFIG_DATA, 4, self.data_port, "pci-config")

    def add(self, slot: int, function: PciFunction) -> None:
        """Plug ``function`` in at device/function ``slot`` (see ``devfn``)."""
        if slot in self.functions:
            raise ValueError(f"PCI {slot >> 3:02x}.{slot & 7}: already taken")
        self.functions[slot] = function
        function.on_remap = lambda f, slot=slot: self._remap(slot, f)

    def target(self, offset: int, size: int) -> tuple[PciFunction, int] | None:
        """The function and register a data-port access at ``offset`` reaches, if any."""
        address = self.address
        if not address & ENABLE or address >> 16 & 0xFF:
            return None
        register = (address & 0xFC) + offset
        if register + size > CONFIG_SIZE:
            return None
        function = self.functions.get(address >> 8 & 0xFF)
        return (function, register) if function is not None else None

    def _remap(self, slot: int, function: PciFunction) -> None:
        bars, rom_at = function.mapping()
        wanted: dict[tuple[int, object], tuple[bool, int]] = {(slot, index): (function.bars[index].io, base)
                                                             for index, base in bars}
        if rom_at is not None:
            wanted[(slot, "rom")] = (False, rom_at)
        for key in [k for k in self._mapped if k[0] == slot]:
            if wanted.get(key) != self._mapped[key]:
                io, base = self._mapped.pop(key)
                (self.ops.unmap_port if io else self.ops.unmap_mmio)(base)
        for key, (io, base) in wanted.items():
            if key in self._mapped:
                continue
            if key[1] == "rom":
                size, device, name = len(function.rom), _RomDevice(function.rom, f"{function.name}-rom"), \
                    f"{function.name}-rom"
            else:
                bar = function.bars[key[1]]
                if bar.device is None:
                    continue
                size, device, name = bar.size, bar.device, bar.name
            try:
                (self.ops.map_port if io else self.ops.map_mmio)(base, size, device, name)
            except (BusError, ValueError):
                continue   # collides with another device or RAM: it decodes nothing
            self._mapped[key] = (io, base)
