"""The BIOS data area at 0x400 (the fields a PC BIOS fills in before it boots anything), as the
IBM PC/AT Technical Reference and SeaBIOS's ``struct bios_data_area_s`` lay it out."""
from __future__ import annotations

from construct import Array, Int16ul, Padding, Struct

BDA_ADDRESS = 0x400

# Only the leading fields early boot code reads; the rest of the 256 bytes stays zero.
BiosDataArea = Struct(
    "com_ports" / Array(4, Int16ul),    # 0x400: I/O base of COM1-COM4, 0 when absent
    "lpt_ports" / Array(3, Int16ul),    # 0x408
    "ebda_segment" / Int16ul,           # 0x40E: where the extended BIOS data area starts, >> 4
    "equipment" / Int16ul,              # 0x410: bits 9-11 serial port count, bit 1 math coprocessor
    Padding(1),
    "base_memory_kib" / Int16ul,        # 0x413: conventional memory below the EBDA, in KiB
)
assert BiosDataArea.sizeof() == 0x15

EQUIPMENT_FPU = 1 << 1
EQUIPMENT_SERIAL_SHIFT = 9
