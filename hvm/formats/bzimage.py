"""The Linux x86 boot protocol: the bzImage setup header and the boot_params "zero page".

Layouts from the kernel's Documentation/arch/x86/boot.rst and zero-page.rst (offsets are from
the start of the image, which is also the start of boot_params for the header copy).
"""
from __future__ import annotations

from construct import Array, Const, Int8ul, Int16ul, Int32ul, Int64ul, Struct

from .e820 import E820Entry

HEADER_OFFSET = 0x1F1  # where the setup header starts, in the image and in boot_params
BOOT_PARAMS_SIZE = 0x1000
E820_TABLE_OFFSET, E820_MAX = 0x2D0, 128
E820_ENTRIES_OFFSET = 0x1E8
ACPI_RSDP_OFFSET = 0x070

LOADFLAG_LOADED_HIGH = 0x01
XLF_KERNEL_64 = 0x01   # xloadflags: the kernel has the 64-bit entry point at load address + 0x200
LOADER_UNDEFINED = 0xFF

SetupHeader = Struct(
    "setup_sects" / Int8ul,
    "root_flags" / Int16ul,
    "syssize" / Int32ul,
    "ram_size" / Int16ul,
    "vid_mode" / Int16ul,
    "root_dev" / Int16ul,
    "boot_flag" / Int16ul,
    "jump" / Int16ul,
    "header" / Const(b"HdrS"),
    "version" / Int16ul,
    "realmode_swtch" / Int32ul,
    "start_sys_seg" / Int16ul,
    "kernel_version" / Int16ul,
    "type_of_loader" / Int8ul,
    "loadflags" / Int8ul,
    "setup_move_size" / Int16ul,
    "code32_start" / Int32ul,
    "ramdisk_image" / Int32ul,
    "ramdisk_size" / Int32ul,
    "bootsect_kludge" / Int32ul,
    "heap_end_ptr" / Int16ul,
    "ext_loader_ver" / Int8ul,
    "ext_loader_type" / Int8ul,
    "cmd_line_ptr" / Int32ul,
    "initrd_addr_max" / Int32ul,
    "kernel_alignment" / Int32ul,
    "relocatable_kernel" / Int8ul,
    "min_alignment" / Int8ul,
    "xloadflags" / Int16ul,
    "cmdline_size" / Int32ul,
    "hardware_subarch" / Int32ul,
    "hardware_subarch_data" / Int64ul,
    "payload_offset" / Int32ul,
    "payload_length" / Int32ul,
    "setup_data" / Int64ul,
    "pref_address" / Int64ul,
    "init_size" / Int32ul,
    "handover_offset" / Int32ul,
    "kernel_info_offset" / Int32ul,
)
assert SetupHeader.sizeof() == 0x26C - HEADER_OFFSET

E820Table = Array(E820_MAX, E820Entry)

__all__ = ["ACPI_RSDP_OFFSET", "SetupHeader", "E820Table", "HEADER_OFFSET", "BOOT_PARAMS_SIZE", "E820_TABLE_OFFSET",
           "E820_MAX", "E820_ENTRIES_OFFSET", "LOADFLAG_LOADED_HIGH", "XLF_KERNEL_64", "LOADER_UNDEFINED"]
