"""QEMU's firmware configuration interface (fw_cfg): the item keys, the file directory and the DMA
descriptor, as QEMU's docs/specs/fw_cfg.rst and include/standard-headers/linux/qemu_fw_cfg.h
define them. The directory and the descriptor are big-endian; the items' own values are
little-endian."""
from __future__ import annotations

from construct import (Array, Const, Enum, Int8ul, Int16ub, Int32ub, Int32ul, Int64ub, Padded, PaddedString,
                       Struct, Switch, this)

# Generic keys (qemu_fw_cfg.h).
SIGNATURE = 0x00
ID = 0x01
UUID = 0x02
RAM_SIZE = 0x03
NOGRAPHIC = 0x04
NB_CPUS = 0x05
MACHINE_ID = 0x06
BOOT_MENU = 0x0E
MAX_CPUS = 0x0F
FILE_DIR = 0x19
FILE_FIRST = 0x20
WRITE_CHANNEL = 0x4000   # selector bit: "write mode" (writes through the data port are ignored since QEMU 2.4)
ARCH_LOCAL = 0x8000      # selector bit: architecture-specific key
# x86 keys (QEMU hw/i386/fw_cfg.h).
IRQ0_OVERRIDE = ARCH_LOCAL | 2

SIGNATURE_VALUE = b"QEMU"
ID_TRADITIONAL = 1 << 0
ID_DMA = 1 << 1
# What the DMA address register reads as: "QEMU CFG" in big-endian byte order.
DMA_SIGNATURE = b"QEMU CFG"

# FWCfgDmaAccess.control bits.
DMA_ERROR = 1 << 0
DMA_READ = 1 << 1
DMA_SKIP = 1 << 2
DMA_SELECT = 1 << 3
DMA_WRITE = 1 << 4

NAME_LENGTH = 56

FileEntry = Struct(
    "size" / Int32ub,
    "select" / Int16ub,
    "reserved" / Const(0, Int16ub),
    "name" / PaddedString(NAME_LENGTH, "ascii"),
)
assert FileEntry.sizeof() == 64

FileDirectory = Struct(
    "count" / Int32ub,
    "files" / Array(this.count, FileEntry),
)

DmaAccess = Struct(
    "control" / Int32ub,
    "length" / Int32ub,
    "address" / Int64ub,
)
assert DmaAccess.sizeof() == 16

# The table-loader script ("etc/table-loader"): 128-byte commands that tell firmware to place fw_cfg
# files in memory and link them (QEMU's hw/acpi/bios-linker-loader.c describes the format; SeaBIOS's
# src/fw/romfile_loader.c runs it). Little-endian, unlike the rest of fw_cfg.
LOADER_ZONE_HIGH, LOADER_ZONE_FSEG = 1, 2     # anywhere in RAM / in the BIOS's F segment
LOADER_COMMAND_SIZE = 128
_LoaderName = PaddedString(NAME_LENGTH, "ascii")
LoaderCommand = Padded(LOADER_COMMAND_SIZE, Struct(
    "command" / Enum(Int32ul, allocate=1, add_pointer=2, add_checksum=3),
    "args" / Switch(this.command, {
        # Copy file ``file`` to memory aligned to ``align`` in ``zone``.
        "allocate": Struct("file" / _LoaderName, "align" / Int32ul, "zone" / Int8ul),
        # Add the address of file ``src`` to the ``size``-byte field at ``offset`` in file ``dest``.
        "add_pointer": Struct("dest" / _LoaderName, "src" / _LoaderName, "offset" / Int32ul, "size" / Int8ul),
        # Subtract the sum of ``length`` bytes from ``start`` from the byte at ``offset``.
        "add_checksum": Struct("file" / _LoaderName, "offset" / Int32ul, "start" / Int32ul,
                               "length" / Int32ul),
    }),
))

__all__ = ["FileEntry", "FileDirectory", "DmaAccess", "LoaderCommand"]
