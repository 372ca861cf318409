"""What a PC BIOS leaves in low memory for the kernel it boots, on the direct-boot machine.

Kernels started by GRUB or by QEMU's -kernel (which runs SeaBIOS first) find a BIOS data area, an
extended BIOS data area and an interrupt vector table whose handlers answer, and some rely on
them: Xen's 32-bit start-up places its trampoline below the EBDA it finds through 0x40E and 0x413
(with zeros there it computed an address near 4 GiB), and calls int 10h and int 13h from real
mode (with a zero vector table the call ran the bytes at 0000:0000, which wrote over its own AP
trampoline). The values are the ones SeaBIOS gives a QEMU guest: COM ports as present, EBDA at
0x9FC00 (1 KiB, its size in KiB in its first byte), 639 KiB of base memory. The handlers are
bios_stub.S, answering int 15h E820/E801/88h and "not supported" to everything else.
"""
from __future__ import annotations

import struct

from ..formats.bda import BDA_ADDRESS, EQUIPMENT_FPU, EQUIPMENT_SERIAL_SHIFT, BiosDataArea
from ..formats.e820 import E820Entry
from ..layout import EBDA_START
from ..memory import GuestMemory

EBDA_SIZE_KIB = (0xA0000 - EBDA_START) // 1024
STUB_SEGMENT = 0xF000

# bios_stub.S assembled at F000:0000 (GNU as 2.40; tests/unit/test_bios_data.py reassembles it).
STUB_CODE = bytes.fromhex(
    "5589e5834e0601b4865dcf50b020e6a0e62058cf663d20e80000741f3d01e874"
    "0b80fc8875da2ea10001eb542ea102012e8b1e040189c189daeb456681fa5041"
    "4d5375bc6683f91472b62e663b1e080173ae1e56570e1f6bf31481c61001b914"
    "00fcf3a45f5e1f66432e663b1e080172036631db66b850414d5366b914000000"
    "5589e5836606fe5dcf")
STUB_ENTRIES = {"unsupported": 0x00, "irq": 0x0B, "int15": 0x14}  # offsets of bios_stub.S's symbols
STUB_DATA = 0x100          # ext_kib, e801_low, e801_high, pad, e820_count, pad, then the table
STUB_TABLE = 0x110
IRQ_VECTORS = [*range(0x08, 0x10), *range(0x70, 0x78)]  # the two 8259s' default bases

MiB = 1 << 20


def write_bios_data(mem: GuestMemory, com_ports: list[int], e820: list[tuple[int, int, int]]) -> None:
    """Fill in the interrupt vector table, the BIOS data area, the EBDA's size byte and the
    handlers with their data; ``com_ports`` are the serial ports' I/O bases in COM1.. order
    (at most four), ``e820`` the memory map the handlers report."""
    if mem.below_4g < 0x100000:
        return  # no room for a BIOS (a guest of less than 1 MiB)
    ports = (com_ports + [0] * 4)[:4]
    mem.write(BDA_ADDRESS, BiosDataArea.build(dict(
        com_ports=ports, lpt_ports=[0, 0, 0], ebda_segment=EBDA_START >> 4,
        equipment=EQUIPMENT_FPU | len([p for p in ports if p]) << EQUIPMENT_SERIAL_SHIFT,
        base_memory_kib=EBDA_START // 1024)))
    mem.write(EBDA_START, bytes([EBDA_SIZE_KIB]))

    vectors = [STUB_ENTRIES["unsupported"]] * 256
    for v in IRQ_VECTORS:
        vectors[v] = STUB_ENTRIES["irq"]
    vectors[0x15] = STUB_ENTRIES["int15"]
    mem.write(0, b"".join(struct.pack("<HH", offset, STUB_SEGMENT) for offset in vectors))

    base = STUB_SEGMENT << 4
    below_4g = sum(min(end, 1 << 32) - max(start, MiB) for start, length, kind in e820
                   for end in [start + length] if kind == 1 and end > MiB and start < 1 << 32)
    ext_kib = min(below_4g // 1024, 0xFFFF)
    e801_low = min(below_4g, 15 * MiB) // 1024
    e801_high = max(below_4g - 15 * MiB, 0) // (64 * 1024)
    table = b"".join(E820Entry.build(dict(addr=a, size=s, type=t)) for a, s, t in e820)
    mem.write(base, STUB_CODE)
    mem.write(base + STUB_DATA, struct.pack("<HHHHII", ext_kib, e801_low, e801_high, 0, len(e820), 0))
    mem.write(base + STUB_TABLE, table)
