"""The PVH boot ABI: the ELF note naming the 32-bit entry point and the start info the loader
passes in EBX. Layouts from Xen's public headers (xen/include/public/elfnote.h,
arch-x86/hvm/start_info.h) and docs/misc/pvh.pandoc; memory map types are the e820 ones.
"""
from __future__ import annotations

from construct import Int32ul, Int64ul, Padding, Struct

XEN_NOTE_OWNER = "Xen"
XEN_ELFNOTE_PHYS32_ENTRY = 18
HVM_START_MAGIC = 0x336EC578
HVM_START_VERSION = 1  # version 1 adds the memory map

HvmStartInfo = Struct(
    "magic" / Int32ul,
    "version" / Int32ul,
    "flags" / Int32ul,
    "nr_modules" / Int32ul,
    "modlist_paddr" / Int64ul,
    "cmdline_paddr" / Int64ul,
    "rsdp_paddr" / Int64ul,
    "memmap_paddr" / Int64ul,
    "memmap_entries" / Int32ul,
    Padding(4),
)
assert HvmStartInfo.sizeof() == 56

HvmModlistEntry = Struct("paddr" / Int64ul, "size" / Int64ul, "cmdline_paddr" / Int64ul, Padding(8))
assert HvmModlistEntry.sizeof() == 32

HvmMemmapEntry = Struct("addr" / Int64ul, "size" / Int64ul, "type" / Int32ul, Padding(4))
assert HvmMemmapEntry.sizeof() == 24

__all__ = ["XEN_NOTE_OWNER", "XEN_ELFNOTE_PHYS32_ENTRY", "HVM_START_MAGIC", "HVM_START_VERSION",
           "HvmStartInfo", "HvmModlistEntry", "HvmMemmapEntry"]
