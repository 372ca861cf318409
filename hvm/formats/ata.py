"""The 512-byte IDENTIFY DEVICE / IDENTIFY PACKET DEVICE data (ATA/ATAPI-6, the tables of both
commands): the words an ATA or ATAPI device model fills in, every other word zero."""
from __future__ import annotations

from construct import Bytes, Default, ExprAdapter, Int16ul, Int32ul, Int64ul, Padding, Struct


def _swap_pairs(data: bytes) -> bytes:
    out = bytearray(data)
    out[0::2], out[1::2] = data[1::2], data[0::2]
    return bytes(out)


def AtaString(length: int):
    """An ATA string field: ASCII, space padded, the first character of each pair in
    the word's high byte."""
    return Default(ExprAdapter(Bytes(length),
                               lambda obj, ctx: _swap_pairs(obj).decode("ascii").rstrip(" "),
                               lambda obj, ctx: _swap_pairs(obj.encode("ascii")[:length].ljust(length, b" "))),
                   "")


W = Default(Int16ul, 0)

Identify = Struct(
    "general" / W,                    # 0: ATA/ATAPI device type, removable, packet size
    "cylinders" / W,                  # 1: default CHS translation
    Padding(2),
    "heads" / W,                      # 3
    Padding(4),
    "sectors_per_track" / W,          # 6
    Padding(6),
    "serial" / AtaString(20),         # 10-19
    Padding(6),
    "firmware" / AtaString(8),        # 23-26
    "model" / AtaString(40),          # 27-46
    "max_multiple" / W,               # 47: 0x80 in the high byte, DRQ block limit below
    "dword_io" / W,                   # 48: reserved since ATA-4; older drivers read "32-bit PIO"
    "capabilities" / W,               # 49: DMA, LBA, IORDY
    "capabilities2" / W,              # 50
    "pio_timing" / W,                 # 51-52: obsolete timing modes
    "dma_timing" / W,
    "valid" / W,                      # 53: words 54-58, 64-70 and 88 valid
    "current_cylinders" / W,          # 54-58: the current CHS translation
    "current_heads" / W,
    "current_sectors" / W,
    "current_capacity" / Default(Int32ul, 0),
    "multiple" / W,                   # 59: current DRQ block size, bit 8 valid
    "lba28_sectors" / Default(Int32ul, 0),   # 60-61
    "swdma" / W,                      # 62
    "mwdma" / W,                      # 63: supported modes 0-2 (low byte), selected (high byte)
    "pio_modes" / W,                  # 64: advanced PIO modes 3-4
    "mwdma_min_cycle" / W,            # 65-68: cycle times in ns
    "mwdma_cycle" / W,
    "pio_min_cycle" / W,
    "pio_min_cycle_iordy" / W,
    Padding(4),
    "packet_release" / W,             # 71-72: packet devices' bus release / service times
    "service_release" / W,
    Padding(14),
    "major_version" / W,              # 80
    "minor_version" / W,              # 81
    "supported1" / W,                 # 82-84: command sets supported
    "supported2" / W,
    "supported_ext" / W,
    "enabled1" / W,                   # 85-87: command sets enabled
    "enabled2" / W,
    "enabled_default" / W,
    "udma" / W,                       # 88: supported modes (low byte), selected (high byte)
    Padding(8),
    "reset_result" / W,               # 93: hardware reset result, cable detection
    Padding(12),
    "lba48_sectors" / Default(Int64ul, 0),   # 100-103
    Padding(4),
    "sector_size" / W,                # 106
    Padding(2 * (255 - 107)),
    "integrity" / W,                  # 255: signature 0xA5, checksum (filled by build_identify)
)
assert Identify.sizeof() == 512

INTEGRITY_SIGNATURE = 0xA5


def build_identify(**fields) -> bytes:
    """The 512 bytes of ``fields`` with word 255's signature and checksum: all 512 bytes sum to
    zero modulo 256 (the integrity word)."""
    data = bytearray(Identify.build(fields))
    data[510] = INTEGRITY_SIGNATURE
    data[511] = -sum(data[:511]) & 0xFF
    return bytes(data)


__all__ = ["AtaString", "Identify", "INTEGRITY_SIGNATURE", "build_identify"]
