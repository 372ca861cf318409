"""The PIIX3 IDE controller, PCI function 8086:7010 (Intel 82371SB datasheet, function 1), in
legacy ("compatibility") mode: programming interface 0x80 (bus-master capable, both channels
at the ISA addresses), so the primary channel is at 0x1F0-0x1F7 and 0x3F6 on IRQ 14 and the
secondary at 0x170-0x177 and 0x376 on IRQ 15, none of them BARs. BAR4 holds the SFF-8038i
bus-master registers. IDETIM (0x40-0x43) and SIDETIM (0x44) keep the timings firmware and
drivers program. The legacy ranges decode whether or not IDETIM's decode-enable bits are set,
as QEMU's do; Linux's ata_piix still reads those bits to decide which channels to probe, so
firmware, or ``enable_like_firmware`` on a board without any, has to set them.
"""
from __future__ import annotations

from typing import Callable

from ...memory import GuestMemory
from ..base import Device
from ..pci.config import CMD_IO, CMD_MASTER, COMMAND, STATUS, PciFunction
from .busmaster import BAR_SIZE, BusMaster, BusMasterChannel
from .channel import COMMAND_BLOCK_LENGTH, CONTROL_BLOCK_LENGTH, Channel, DeviceModel

VENDOR_INTEL, DEVICE_PIIX3_IDE = 0x8086, 0x7010
CLASS_IDE_LEGACY_BUSMASTER = 0x010180
IDETIM_PRIMARY, IDETIM_SECONDARY, SIDETIM = 0x40, 0x42, 0x44
IDETIM_DECODE = 0x8000
IDETIM_MASK = 0xF3FF            # bits 11:10 are reserved
STATUS_DEVSEL_MEDIUM_FAST_B2B = 0x0280
BM_BAR = 4
LEGACY = ((0x1F0, 0x3F6, 14), (0x170, 0x376, 15))

Pair = tuple[DeviceModel | None, DeviceModel | None]


class PiixIde(PciFunction):
    """PIIX3 IDE: two channels of up to two devices each (``primary`` and ``secondary`` are
    (master, slave) pairs of AtaDisk / AtapiCdrom / None), DMA into ``memory``."""

    name = "piix3-ide"

    def __init__(self, memory: GuestMemory, irq14, irq15, primary: Pair = (None, None),
                 secondary: Pair = (None, None)):
        super().__init__(VENDOR_INTEL, DEVICE_PIIX3_IDE, CLASS_IDE_LEGACY_BUSMASTER)
        self.set_config(STATUS, 2, STATUS_DEVSEL_MEDIUM_FAST_B2B)
        self.channels = (Channel(irq14, *primary, name="ide0"), Channel(irq15, *secondary, name="ide1"))
        engines = tuple(BusMasterChannel(channel, memory, self._may_master) for channel in self.channels)
        self.busmaster = BusMaster(engines)
        self.add_bar(BM_BAR, BAR_SIZE, "io", self.busmaster, name="piix3-ide-bm")
        self.writable(IDETIM_PRIMARY, 2, IDETIM_MASK)
        self.writable(IDETIM_SECONDARY, 2, IDETIM_MASK)
        self.writable(SIDETIM, 1, 0xFF)

    def _may_master(self) -> bool:
        return bool(self.command & CMD_MASTER)

    def attach(self, map_port: Callable[[int, int, Device, str], None]) -> None:
        """Register the legacy command and control block ports of both channels."""
        for channel, (command, control, _irq) in zip(self.channels, LEGACY):
            map_port(command, COMMAND_BLOCK_LENGTH, channel.command_block, channel.name)
            map_port(control, CONTROL_BLOCK_LENGTH, channel.control_block, channel.name + "-control")

    def config_written(self, offset: int, size: int, value: int) -> None:
        # Bus mastering may just have been allowed: a transfer started before runs now.
        if offset < COMMAND + 2 and offset + size > COMMAND:
            for engine in self.busmaster.channels:
                engine.kick()

    def enable_like_firmware(self, busmaster_port: int) -> None:
        """What firmware does before an OS looks (SeaBIOS's PIIX set-up): enable both channels'
        decode, place the bus-master BAR at ``busmaster_port`` and turn on I/O and bus
        mastering. For boards that start a kernel directly; call it once the function is
        plugged into its host bridge, so the BAR is mapped."""
        self.config_write(IDETIM_PRIMARY, 2, IDETIM_DECODE)
        self.config_write(IDETIM_SECONDARY, 2, IDETIM_DECODE)
        self.config_write(0x10 + 4 * BM_BAR, 4, busmaster_port)
        self.config_write(COMMAND, 2, self.command | CMD_IO | CMD_MASTER)


__all__ = ["PiixIde", "LEGACY", "DEVICE_PIIX3_IDE", "VENDOR_INTEL"]
