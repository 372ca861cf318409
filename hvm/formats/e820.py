"""The BIOS E820 memory map: range types and the 20-byte entry INT 15h/AX=E820h returns."""
from __future__ import annotations

from construct import Int32ul, Int64ul, Struct

# Range types from the ACPI specification ("Address Range Types"); the guest treats anything it
# does not know as reserved, so only these five are ever reported.
E820_RAM = 1
E820_RESERVED = 2
E820_ACPI = 3        # ACPI tables; reclaimable once the OS has read them
E820_NVS = 4         # ACPI non-volatile storage; must be preserved across sleep states
E820_UNUSABLE = 5    # RAM with detected errors

E820Entry = Struct(
    "addr" / Int64ul,
    "size" / Int64ul,
    "type" / Int32ul,
)
assert E820Entry.sizeof() == 20

__all__ = ["E820_RAM", "E820_RESERVED", "E820_ACPI", "E820_NVS", "E820_UNUSABLE", "E820Entry"]
