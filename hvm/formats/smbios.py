"""SMBIOS: the entry points, the structure header and string set, and the formatted areas of the
structure types hvm's PC describes itself with.

Layouts from DMTF DSP0134 (SMBIOS Reference Specification) 3.x: entry points 5.2.1 (SMBIOS 2.1,
32-bit, "_SM_" with the intermediate "_DMI_") and 5.2.2 (SMBIOS 3.0, 64-bit, "_SM3_"); the
structure header 6.1.2 and text strings 6.1.3; types 1 (7.2), 3 (7.4), 4 (7.5), 16 (7.17),
17 (7.18), 19 (7.20), 32 (7.33) and 127 (7.46). Every formatted area is declared with its header
so that field offsets read as the specification's tables give them. All values little-endian.

A structure is its formatted area (``length`` bytes, header included) followed by its string
set: each string NUL-terminated, the set ended by one more NUL, and two NULs when there are no
strings. String fields hold 1-based indices into the set; 0 means "no string".
"""
from __future__ import annotations

from construct import (Bytes, Const, Construct, GreedyRange, Int8ul, Int16ul, Int32ul, Int64ul, Rebuild,
                       Struct, this)
from construct.core import SizeofError, StreamError, stream_read, stream_write

KiB, MiB = 1 << 10, 1 << 20

# -- entry points ---------------------------------------------------------------------------------
ANCHOR_21 = b"_SM_"
INTERMEDIATE_ANCHOR = b"_DMI_"
ANCHOR_30 = b"_SM3_"

EntryPoint21 = Struct(
    "anchor" / Const(ANCHOR_21),
    "checksum" / Int8ul,                  # all ``length`` bytes sum to zero
    "length" / Int8ul,                    # 0x1F
    "major" / Int8ul,
    "minor" / Int8ul,
    "max_structure_size" / Int16ul,       # the largest structure, formatted area and strings
    "revision" / Int8ul,                  # 0: the formatted area below is reserved
    "formatted_area" / Bytes(5),
    "intermediate_anchor" / Const(INTERMEDIATE_ANCHOR),
    "intermediate_checksum" / Int8ul,     # bytes 0x10..0x1E sum to zero
    "table_length" / Int16ul,
    "table_address" / Int32ul,
    "structure_count" / Int16ul,
    "bcd_revision" / Int8ul,              # e.g. 0x28 for 2.8
)
assert EntryPoint21.sizeof() == 0x1F
INTERMEDIATE_OFFSET = 0x10                # where the "_DMI_" part, with its own checksum, begins

EntryPoint30 = Struct(
    "anchor" / Const(ANCHOR_30),
    "checksum" / Int8ul,                  # all ``length`` bytes sum to zero
    "length" / Int8ul,                    # 0x18
    "major" / Int8ul,
    "minor" / Int8ul,
    "docrev" / Int8ul,
    "revision" / Int8ul,                  # 1: the SMBIOS 3.0 entry point
    "reserved" / Const(0, Int8ul),
    "table_max_size" / Int32ul,           # the table is at most this long
    "table_address" / Int64ul,
)
assert EntryPoint30.sizeof() == 0x18
EP21_REVISION, EP30_REVISION = 0, 1


def checksummed(data: bytes, offset: int, start: int = 0, end: int | None = None) -> bytes:
    """``data`` with the byte at ``offset`` chosen so that ``data[start:end]`` sums to zero mod 256."""
    out = bytearray(data)
    out[offset] = 0
    out[offset] = -sum(out[start:end]) & 0xFF
    return bytes(out)


def sums_to_zero(data: bytes) -> bool:
    return sum(data) & 0xFF == 0


# -- structures -----------------------------------------------------------------------------------
HEADER_SIZE = 4
Header = Struct(
    "type" / Int8ul,
    "length" / Int8ul,                    # of the formatted area, this header included
    "handle" / Int16ul,
)
assert Header.sizeof() == HEADER_SIZE
# Handles 0xFF00-0xFFFF are reserved (6.1.2); 0xFFFF and 0xFFFE also say "none" / "not provided"
# where one structure refers to another.
HANDLE_NONE = 0xFFFF
HANDLE_NOT_PROVIDED = 0xFFFE
HANDLE_LIMIT = 0xFF00


class StringSet(Construct):
    """The text strings after a formatted area (DSP0134 6.1.3), as a list of ``str``. An empty
    string cannot be written (its NUL would end the set): say "no string" with index 0 instead."""

    def _parse(self, stream, context, path):
        strings: list[str] = []
        while True:
            raw = bytearray()
            while (byte := stream_read(stream, 1, path)) != b"\0":
                raw += byte
            if not raw:
                break
            strings.append(raw.decode("ascii"))
        if not strings and stream_read(stream, 1, path) != b"\0":
            raise StreamError("a structure without strings ends in two NULs", path=path)
        return strings

    def _build(self, obj, stream, context, path):
        out = bytearray()
        for s in obj:
            raw = s.encode("ascii")
            if not raw or b"\0" in raw:
                raise StreamError(f"SMBIOS string {s!r}: 1 or more characters, no NUL", path=path)
            out += raw + b"\0"
        out += b"\0" if obj else b"\0\0"
        stream_write(stream, bytes(out), len(out), path)
        return obj

    def _sizeof(self, context, path):
        raise SizeofError("a string set's size depends on its strings", path=path)


# One structure as it sits in the table, its formatted area kept as bytes (parse them further
# with FORMATTED[type]).
Structure = Struct(
    "type" / Int8ul,
    "length" / Rebuild(Int8ul, lambda ctx: HEADER_SIZE + len(ctx.formatted)),
    "handle" / Int16ul,
    "formatted" / Bytes(this.length - HEADER_SIZE),
    "strings" / StringSet(),
)
Table = GreedyRange(Structure)

StringNumber = Int8ul   # a 1-based index into the structure's string set, 0 for none

# Type 1, System Information (7.2), 2.4+ layout: 0x1B bytes.
SYSTEM_INFORMATION = 1
SystemInformation = Struct(
    "header" / Header,
    "manufacturer" / StringNumber,
    "product_name" / StringNumber,
    "version" / StringNumber,
    "serial_number" / StringNumber,
    "uuid" / Bytes(16),                   # 2.6+: time_low, time_mid, time_hi_and_version little-endian
    "wake_up_type" / Int8ul,
    "sku_number" / StringNumber,
    "family" / StringNumber,
)
assert SystemInformation.sizeof() == 0x1B
WAKE_UP_POWER_SWITCH = 0x06

# Type 3, System Enclosure or Chassis (7.4), 2.7+ layout: 0x15 + n*m bytes, then the SKU string.
SYSTEM_ENCLOSURE = 3
SystemEnclosure = Struct(
    "header" / Header,
    "manufacturer" / StringNumber,
    "type" / Int8ul,                      # bit 7: chassis lock present
    "version" / StringNumber,
    "serial_number" / StringNumber,
    "asset_tag" / StringNumber,
    "boot_up_state" / Int8ul,
    "power_supply_state" / Int8ul,
    "thermal_state" / Int8ul,
    "security_status" / Int8ul,
    "oem_defined" / Int32ul,
    "height" / Int8ul,                    # in U (1.75 in); 0: unspecified
    "power_cords" / Int8ul,
    "contained_element_count" / Int8ul,
    "contained_element_record_length" / Int8ul,
    "contained_elements" / Bytes(this.contained_element_count * this.contained_element_record_length),
    "sku_number" / StringNumber,
)
CHASSIS_OTHER = 0x01
STATE_SAFE = 0x03
SECURITY_UNKNOWN = 0x02

# Type 4, Processor Information (7.5), 3.0+ layout: 0x30 bytes. Earlier versions end sooner:
# 2.6 to 2.8 after processor_family2 (PROCESSOR_LENGTH_26).
PROCESSOR_INFORMATION = 4
ProcessorInformation = Struct(
    "header" / Header,
    "socket_designation" / StringNumber,
    "processor_type" / Int8ul,
    "processor_family" / Int8ul,          # 0xFE: see processor_family2
    "manufacturer" / StringNumber,
    "processor_id" / Int64ul,             # x86: CPUID leaf 1 EAX in the low half, EDX in the high
    "version" / StringNumber,
    "voltage" / Int8ul,                   # 0: unknown / not given
    "external_clock" / Int16ul,           # MHz; 0: unknown
    "max_speed" / Int16ul,                # MHz
    "current_speed" / Int16ul,            # MHz
    "status" / Int8ul,
    "processor_upgrade" / Int8ul,
    "l1_cache_handle" / Int16ul,
    "l2_cache_handle" / Int16ul,
    "l3_cache_handle" / Int16ul,
    "serial_number" / StringNumber,
    "asset_tag" / StringNumber,
    "part_number" / StringNumber,
    "core_count" / Int8ul,                # 0xFF: see core_count2 (3.0+)
    "core_enabled" / Int8ul,
    "thread_count" / Int8ul,
    "characteristics" / Int16ul,
    "processor_family2" / Int16ul,
    "core_count2" / Int16ul,
    "core_enabled2" / Int16ul,
    "thread_count2" / Int16ul,
)
assert ProcessorInformation.sizeof() == 0x30
PROCESSOR_LENGTH_26 = 0x2A
PROCESSOR_CENTRAL = 0x03
PROCESSOR_FAMILY_OTHER = 0x01
PROCESSOR_UPGRADE_OTHER = 0x01
PROCESSOR_STATUS_POPULATED = 1 << 6
PROCESSOR_STATUS_ENABLED = 0x01
PROCESSOR_64BIT_CAPABLE = 1 << 2
PROCESSOR_MULTI_CORE = 1 << 3
COUNT_IN_COUNT2 = 0xFF

# Type 16, Physical Memory Array (7.17), 2.7+ layout: 0x17 bytes.
PHYSICAL_MEMORY_ARRAY = 16
PhysicalMemoryArray = Struct(
    "header" / Header,
    "location" / Int8ul,
    "use" / Int8ul,
    "error_correction" / Int8ul,
    "maximum_capacity" / Int32ul,         # KiB; 0x80000000: see extended_maximum_capacity
    "error_information_handle" / Int16ul,
    "device_count" / Int16ul,
    "extended_maximum_capacity" / Int64ul,   # bytes
)
assert PhysicalMemoryArray.sizeof() == 0x17
ARRAY_LOCATION_OTHER = 0x01
ARRAY_USE_SYSTEM_MEMORY = 0x03
ARRAY_ECC_MULTI_BIT = 0x06
CAPACITY_IN_EXTENDED = 0x80000000

# Type 17, Memory Device (7.18), 2.8 layout: 0x28 bytes.
MEMORY_DEVICE = 17
MemoryDevice = Struct(
    "header" / Header,
    "array_handle" / Int16ul,
    "error_information_handle" / Int16ul,
    "total_width" / Int16ul,              # bits; 0xFFFF: unknown
    "data_width" / Int16ul,
    "size" / Int16ul,                     # see device_size()
    "form_factor" / Int8ul,
    "device_set" / Int8ul,
    "device_locator" / StringNumber,
    "bank_locator" / StringNumber,
    "memory_type" / Int8ul,
    "type_detail" / Int16ul,
    "speed" / Int16ul,                    # MT/s; 0: unknown
    "manufacturer" / StringNumber,
    "serial_number" / StringNumber,
    "asset_tag" / StringNumber,
    "part_number" / StringNumber,
    "attributes" / Int8ul,
    "extended_size" / Int32ul,            # MiB in bits 30:0, when size is SIZE_IN_EXTENDED
    "configured_speed" / Int16ul,
    "minimum_voltage" / Int16ul,          # mV; 0: unknown
    "maximum_voltage" / Int16ul,
    "configured_voltage" / Int16ul,
)
assert MemoryDevice.sizeof() == 0x28
FORM_FACTOR_DIMM = 0x09
MEMORY_TYPE_RAM = 0x07
TYPE_DETAIL_OTHER = 0x02
WIDTH_UNKNOWN = 0xFFFF
SIZE_IN_KIB = 1 << 15                     # size's granularity bit: set, KiB; clear, MiB
SIZE_IN_EXTENDED = 0x7FFF


def device_size(size: int) -> tuple[int, int]:
    """(size, extended_size) of a type 17 holding ``size`` bytes (7.18.5): MiB below 32 GiB - 1 MiB,
    else 0x7FFF and the MiB in the extended field; KiB granularity for a size that is no whole
    number of MiB and fits in 15 bits of KiB."""
    if size % MiB and size // KiB < SIZE_IN_KIB:
        return SIZE_IN_KIB | -(-size // KiB), 0
    mib = -(-size // MiB)
    if mib < SIZE_IN_EXTENDED:
        return mib, 0
    if mib >= 1 << 31:
        raise ValueError(f"{size} bytes is beyond what a memory device's extended size can say")
    return SIZE_IN_EXTENDED, mib


def array_capacity(size: int) -> tuple[int, int]:
    """(maximum_capacity, extended_maximum_capacity) of a type 16 of ``size`` bytes (7.17.4):
    KiB when that fits below 2 TiB, else 0x80000000 and the bytes in the extended field."""
    kib = -(-size // KiB)
    return (kib, 0) if kib < CAPACITY_IN_EXTENDED else (CAPACITY_IN_EXTENDED, size)


# Type 19, Memory Array Mapped Address (7.20), 2.7+ layout: 0x1F bytes.
MEMORY_ARRAY_MAPPED_ADDRESS = 19
MemoryArrayMappedAddress = Struct(
    "header" / Header,
    "starting_address" / Int32ul,         # KiB; 0xFFFFFFFF: see the extended addresses
    "ending_address" / Int32ul,           # KiB, the last KiB of the range
    "array_handle" / Int16ul,
    "partition_width" / Int8ul,
    "extended_starting_address" / Int64ul,   # bytes
    "extended_ending_address" / Int64ul,     # bytes, the last byte of the range
)
assert MemoryArrayMappedAddress.sizeof() == 0x1F
ADDRESS_IN_EXTENDED = 0xFFFFFFFF


def mapped_range(start: int, size: int) -> dict:
    """The address fields of a type 19 for ``size`` bytes from ``start`` (7.20): KiB numbers while
    both ends fit below 0xFFFFFFFF KiB (4 TiB), else the extended fields in bytes."""
    if size <= 0 or start % KiB or size % KiB:
        raise ValueError(f"range {start:#x}+{size:#x}: a type 19 range is whole KiB, and not empty")
    last = start + size - 1
    if last // KiB < ADDRESS_IN_EXTENDED:
        return dict(starting_address=start // KiB, ending_address=last // KiB,
                    extended_starting_address=0, extended_ending_address=0)
    return dict(starting_address=ADDRESS_IN_EXTENDED, ending_address=ADDRESS_IN_EXTENDED,
                extended_starting_address=start, extended_ending_address=last)


# Type 32, System Boot Information (7.33): 0x0B bytes with the one-byte status "no errors".
SYSTEM_BOOT_INFORMATION = 32
SystemBootInformation = Struct(
    "header" / Header,
    "reserved" / Const(bytes(6)),
    "boot_status" / Bytes(this.header.length - 10),
)
BOOT_STATUS_NO_ERRORS = 0x00
BOOT_INFORMATION_LENGTH = 0x0B            # with a one-byte status

# Type 127, End-of-Table (7.46): the header alone.
END_OF_TABLE = 127
EndOfTable = Struct("header" / Header)

FORMATTED = {
    SYSTEM_INFORMATION: SystemInformation,
    SYSTEM_ENCLOSURE: SystemEnclosure,
    PROCESSOR_INFORMATION: ProcessorInformation,
    PHYSICAL_MEMORY_ARRAY: PhysicalMemoryArray,
    MEMORY_DEVICE: MemoryDevice,
    MEMORY_ARRAY_MAPPED_ADDRESS: MemoryArrayMappedAddress,
    SYSTEM_BOOT_INFORMATION: SystemBootInformation,
    END_OF_TABLE: EndOfTable,
}


def parse_formatted(structure) -> object:
    """The fields of a parsed ``Structure``'s formatted area, by FORMATTED[type]. A structure of an
    earlier version is shorter than the layout declared here: the fields it lacks read as 0."""
    layout = FORMATTED[structure.type]
    raw = Header.build(dict(type=structure.type, length=structure.length, handle=structure.handle))
    raw += structure.formatted
    try:
        raw = raw.ljust(layout.sizeof(), b"\0")
    except SizeofError:
        pass   # variable-length areas (types 3, 32) are parsed as they are
    return layout.parse(raw)


__all__ = ["EntryPoint21", "EntryPoint30", "Header", "StringSet", "Structure", "Table", "FORMATTED",
           "checksummed", "sums_to_zero", "device_size", "array_capacity", "mapped_range", "parse_formatted"]
