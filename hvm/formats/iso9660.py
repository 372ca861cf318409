"""The ISO 9660 primary volume descriptor (ECMA-119 §8.4): enough to tell a CD image from
another file and a complete image from a truncated one. Sector 16 onwards hold volume
descriptors of 2048 bytes; both-endian fields are stored little- then big-endian."""
from __future__ import annotations

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Padding, Struct

SECTOR = 2048
DESCRIPTORS_AT = 16 * SECTOR
PRIMARY = 1

VolumeDescriptorHead = Struct(
    "type" / Int8ul,
    "identifier" / Const(b"CD001"),
    "version" / Int8ul,
)

PrimaryVolumeDescriptor = Struct(
    "head" / VolumeDescriptorHead,
    Padding(1),
    "system_id" / Bytes(32),
    "volume_id" / Bytes(32),
    Padding(8),
    "volume_space_size" / Int32ul,
    Padding(4),                   # the same, big-endian
    Padding(32),
    "volume_set_size" / Int16ul,
    Padding(2),
    "volume_sequence_number" / Int16ul,
    Padding(2),
    "logical_block_size" / Int16ul,
)


def check_cd_image(path: str, data: bytes, size: int) -> str | None:
    """Why the file at ``path`` (``size`` bytes, ``data`` its first 34 KiB) is no usable CD
    image, or None: it must carry a primary volume descriptor, and hold the whole volume."""
    if size < DESCRIPTORS_AT + SECTOR:
        return f"is {size} bytes, too short for an ISO 9660 image (its volume descriptors start at 32 KiB)"
    head = data[DESCRIPTORS_AT:DESCRIPTORS_AT + SECTOR]
    if head[1:6] != b"CD001" or head[0] != PRIMARY:
        return "is not an ISO 9660 image (no primary volume descriptor at sector 16)"
    pvd = PrimaryVolumeDescriptor.parse(head)
    volume = pvd.volume_space_size * pvd.logical_block_size
    if volume > size:
        return f"is truncated: its volume is {volume} bytes, the file has {size}"
    return None
