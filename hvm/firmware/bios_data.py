"""What a PC BIOS leaves in low memory for the kernel it boots, on the direct-boot machine.

Kernels started by GRUB or by QEMU's -kernel (which runs SeaBIOS first) find a BIOS data area and
an extended BIOS data area, and some rely on them: Xen's 32-bit start-up places its trampoline
below the EBDA it finds through 0x40E and 0x413, and with zeros there computes an address near
4 GiB. The values are the ones SeaBIOS gives a QEMU guest: COM ports as present, EBDA at 0x9FC00
(1 KiB, its size in KiB in its first byte), 639 KiB of base memory.
"""
from __future__ import annotations

from ..formats.bda import BDA_ADDRESS, EQUIPMENT_FPU, EQUIPMENT_SERIAL_SHIFT, BiosDataArea
from ..layout import EBDA_START
from ..memory import GuestMemory

EBDA_SIZE_KIB = (0xA0000 - EBDA_START) // 1024


def write_bios_data(mem: GuestMemory, com_ports: list[int]) -> None:
    """Fill in the BIOS data area and the EBDA's size byte; ``com_ports`` are the serial ports'
    I/O bases in COM1.. order (at most four)."""
    if mem.below_4g < 0xA0000:
        return  # no conventional memory to hold them (a guest of less than 640 KiB)
    ports = (com_ports + [0] * 4)[:4]
    mem.write(BDA_ADDRESS, BiosDataArea.build(dict(
        com_ports=ports, lpt_ports=[0, 0, 0], ebda_segment=EBDA_START >> 4,
        equipment=EQUIPMENT_FPU | len([p for p in ports if p]) << EQUIPMENT_SERIAL_SHIFT,
        base_memory_kib=EBDA_START // 1024)))
    mem.write(EBDA_START, bytes([EBDA_SIZE_KIB]))
