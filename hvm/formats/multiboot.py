"""Multiboot specification 0.6.96 (version 1): the kernel's header and the loader's info structures.

Offsets follow the specification's tables; every structure here is little-endian because the
specification is defined for i386 only.
"""
from __future__ import annotations

from construct import Array, Bytes, Const, Default, If, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct, this

# --- The OS image header (spec §3.1.1) ---------------------------------------------------------

MULTIBOOT_HEADER_MAGIC = 0x1BADB002
MULTIBOOT_BOOTLOADER_MAGIC = 0x2BADB002     # handed to the kernel in EAX
MULTIBOOT_SEARCH = 8192                      # the header must lie entirely within this many bytes
MULTIBOOT_HEADER_ALIGN = 4

# Header flags.  Bits 0-15 are "required" (a loader that does not understand one should refuse),
# bits 16-31 are optional features.
HDR_PAGE_ALIGN = 1 << 0      # modules must be page aligned
HDR_MEMORY_INFO = 1 << 1     # mem_* (and mmap_* if available) must be provided
HDR_VIDEO_MODE = 1 << 2      # the video fields are valid; the kernel wants a graphics mode
HDR_AOUT_KLUDGE = 1 << 16    # the address fields are valid: load without parsing the image format
HDR_REQUIRED_MASK = 0xFFFF

MultibootHeaderCore = Struct(
    "magic" / Const(MULTIBOOT_HEADER_MAGIC, Int32ul),
    "flags" / Int32ul,
    "checksum" / Int32ul,   # magic + flags + checksum == 0 (mod 2**32)
)

MultibootAddressFields = Struct(
    "header_addr" / Int32ul,     # physical address the header's magic must end up at
    "load_addr" / Int32ul,       # physical address of the start of the text segment
    "load_end_addr" / Int32ul,   # end of the data segment; 0 = the rest of the file
    "bss_end_addr" / Int32ul,    # end of bss; 0 = no bss
    "entry_addr" / Int32ul,
)

MultibootVideoFields = Struct(
    "mode_type" / Int32ul,       # 0 = linear graphics, 1 = EGA text
    "width" / Int32ul,
    "height" / Int32ul,
    "depth" / Int32ul,
)

MultibootHeader = Struct(
    *MultibootHeaderCore.subcons,
    "address" / If(this.flags & HDR_AOUT_KLUDGE, MultibootAddressFields),
    # The video fields sit at fixed offsets 32..47, so when only they are present the (unused)
    # address words before them still occupy their 20 bytes.
    If(lambda ctx: bool(ctx.flags & HDR_VIDEO_MODE) and not ctx.flags & HDR_AOUT_KLUDGE,
       Padding(MultibootAddressFields.sizeof())),
    "video" / If(this.flags & HDR_VIDEO_MODE, MultibootVideoFields),
)

# --- The information structure the loader hands over in EBX (spec §3.3) -----------------------

MBI_MEMORY = 1 << 0
MBI_BOOT_DEVICE = 1 << 1
MBI_CMDLINE = 1 << 2
MBI_MODS = 1 << 3
MBI_AOUT_SYMS = 1 << 4
MBI_ELF_SHDR = 1 << 5
MBI_MMAP = 1 << 6
MBI_DRIVES = 1 << 7
MBI_CONFIG_TABLE = 1 << 8
MBI_BOOT_LOADER_NAME = 1 << 9
MBI_APM_TABLE = 1 << 10
MBI_VBE = 1 << 11
MBI_FRAMEBUFFER = 1 << 12

MultibootInfo = Struct(
    "flags" / Int32ul,                              # 0: which of the fields below are valid
    "mem_lower" / Default(Int32ul, 0),              # 4: KiB of memory from 0
    "mem_upper" / Default(Int32ul, 0),              # 8: KiB of memory from 1 MiB
    "boot_device" / Default(Int32ul, 0),            # 12: BIOS drive, partitions (0xFF = none)
    "cmdline" / Default(Int32ul, 0),                # 16: physical address of a C string
    "mods_count" / Default(Int32ul, 0),             # 20
    "mods_addr" / Default(Int32ul, 0),              # 24: array of MultibootModule
    "syms" / Default(Array(4, Int32ul), [0] * 4),   # 28: a.out symbols or ELF section headers
    "mmap_length" / Default(Int32ul, 0),            # 44: bytes, including each entry's size word
    "mmap_addr" / Default(Int32ul, 0),              # 48: address of the first entry's size word
    "drives_length" / Default(Int32ul, 0),          # 52
    "drives_addr" / Default(Int32ul, 0),            # 56
    "config_table" / Default(Int32ul, 0),           # 60: BIOS ROM configuration table
    "boot_loader_name" / Default(Int32ul, 0),       # 64: physical address of a C string
    "apm_table" / Default(Int32ul, 0),              # 68
    "vbe_control_info" / Default(Int32ul, 0),       # 72
    "vbe_mode_info" / Default(Int32ul, 0),          # 76
    "vbe_mode" / Default(Int16ul, 0),               # 80
    "vbe_interface_seg" / Default(Int16ul, 0),      # 82
    "vbe_interface_off" / Default(Int16ul, 0),      # 84
    "vbe_interface_len" / Default(Int16ul, 0),      # 86
    "framebuffer_addr" / Default(Int64ul, 0),       # 88
    "framebuffer_pitch" / Default(Int32ul, 0),      # 96
    "framebuffer_width" / Default(Int32ul, 0),      # 100
    "framebuffer_height" / Default(Int32ul, 0),     # 104
    "framebuffer_bpp" / Default(Int8ul, 0),         # 108
    "framebuffer_type" / Default(Int8ul, 0),        # 109
    "color_info" / Default(Bytes(6), bytes(6)),     # 110
)
assert MultibootInfo.sizeof() == 116

MultibootModule = Struct(
    "mod_start" / Int32ul,
    "mod_end" / Int32ul,            # one past the last byte, as GRUB and QEMU set it
    "string" / Int32ul,             # physical address of a C string, 0 = none
    "reserved" / Default(Int32ul, 0),
)
assert MultibootModule.sizeof() == 16

# The size word precedes the entry and does not count itself, so it is 20 for the base layout.
MULTIBOOT_MMAP_ENTRY_SIZE = 20
MultibootMmapEntry = Struct(
    "size" / Default(Int32ul, MULTIBOOT_MMAP_ENTRY_SIZE),
    "base_addr" / Int64ul,
    "length" / Int64ul,
    "type" / Int32ul,               # E820 type numbers (hvm.formats.e820)
)
assert MultibootMmapEntry.sizeof() == 4 + MULTIBOOT_MMAP_ENTRY_SIZE
