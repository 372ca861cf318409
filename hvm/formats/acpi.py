"""ACPI tables hvm writes for the guest: RSDP, the common table header, FADT, FACS, MADT entries.

Layouts from the ACPI specification 6.4, chapter 5.2 (RSDP 5.2.5.3, header 5.2.6, Generic Address
Structure 5.2.3.2, FADT 5.2.9 (revision 6, 276 bytes), FACS 5.2.10, MADT 5.2.12). Checksums are
filled in by ``checksummed``: every byte of a table (of the RSDP: its first 20 bytes, and then all
36) sums to zero modulo 256.
"""
from __future__ import annotations

from construct import Bytes, Const, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

SDT_HEADER_SIZE = 36
RSDP_V1_SIZE = 20

Rsdp = Struct(
    "signature" / Const(b"RSD PTR "),
    "checksum" / Int8ul,            # over the first 20 bytes (the ACPI 1.0 structure)
    "oem_id" / Bytes(6),
    "revision" / Int8ul,            # 2: ACPI 2.0+, with the XSDT
    "rsdt_address" / Int32ul,
    "length" / Int32ul,
    "xsdt_address" / Int64ul,
    "extended_checksum" / Int8ul,   # over all 36 bytes
    Padding(3),
)
assert Rsdp.sizeof() == 36

SdtHeader = Struct(
    "signature" / Bytes(4),
    "length" / Int32ul,
    "revision" / Int8ul,
    "checksum" / Int8ul,
    "oem_id" / Bytes(6),
    "oem_table_id" / Bytes(8),
    "oem_revision" / Int32ul,
    "creator_id" / Bytes(4),
    "creator_revision" / Int32ul,
)
assert SdtHeader.sizeof() == SDT_HEADER_SIZE

SPACE_SYSTEM_IO = 1
ACCESS_BYTE, ACCESS_WORD, ACCESS_DWORD = 1, 2, 3

Gas = Struct(
    "space_id" / Int8ul,
    "bit_width" / Int8ul,
    "bit_offset" / Int8ul,
    "access_size" / Int8ul,
    "address" / Int64ul,
)
assert Gas.sizeof() == 12

# FADT fixed feature flags (table 5.10) and IA-PC boot architecture flags (table 5.11).
FADT_WBINVD = 1 << 0
FADT_PROC_C1 = 1 << 2
FADT_PWR_BUTTON = 1 << 4     # set: there is no fixed-hardware power button
FADT_SLP_BUTTON = 1 << 5     # set: there is no sleep button
FADT_TMR_VAL_EXT = 1 << 8     # set: the PM timer counts in 32 bits, not 24
FADT_RESET_REG_SUP = 1 << 10
BOOT_ARCH_LEGACY_DEVICES = 1 << 0
BOOT_ARCH_8042 = 1 << 1
BOOT_ARCH_NO_VGA = 1 << 2
PM_PROFILE_UNSPECIFIED = 0

FadtBody = Struct(
    "firmware_ctrl" / Int32ul,
    "dsdt" / Int32ul,
    Padding(1),
    "preferred_pm_profile" / Int8ul,
    "sci_int" / Int16ul,
    "smi_cmd" / Int32ul,
    "acpi_enable" / Int8ul,
    "acpi_disable" / Int8ul,
    "s4bios_req" / Int8ul,
    "pstate_cnt" / Int8ul,
    "pm1a_evt_blk" / Int32ul,
    "pm1b_evt_blk" / Int32ul,
    "pm1a_cnt_blk" / Int32ul,
    "pm1b_cnt_blk" / Int32ul,
    "pm2_cnt_blk" / Int32ul,
    "pm_tmr_blk" / Int32ul,
    "gpe0_blk" / Int32ul,
    "gpe1_blk" / Int32ul,
    "pm1_evt_len" / Int8ul,
    "pm1_cnt_len" / Int8ul,
    "pm2_cnt_len" / Int8ul,
    "pm_tmr_len" / Int8ul,
    "gpe0_blk_len" / Int8ul,
    "gpe1_blk_len" / Int8ul,
    "gpe1_base" / Int8ul,
    "cst_cnt" / Int8ul,
    "p_lvl2_lat" / Int16ul,
    "p_lvl3_lat" / Int16ul,
    "flush_size" / Int16ul,
    "flush_stride" / Int16ul,
    "duty_offset" / Int8ul,
    "duty_width" / Int8ul,
    "day_alrm" / Int8ul,
    "mon_alrm" / Int8ul,
    "century" / Int8ul,
    "iapc_boot_arch" / Int16ul,
    Padding(1),
    "flags" / Int32ul,
    "reset_reg" / Gas,
    "reset_value" / Int8ul,
    "arm_boot_arch" / Int16ul,
    "minor_version" / Int8ul,
    "x_firmware_ctrl" / Int64ul,
    "x_dsdt" / Int64ul,
    "x_pm1a_evt_blk" / Gas,
    "x_pm1b_evt_blk" / Gas,
    "x_pm1a_cnt_blk" / Gas,
    "x_pm1b_cnt_blk" / Gas,
    "x_pm2_cnt_blk" / Gas,
    "x_pm_tmr_blk" / Gas,
    "x_gpe0_blk" / Gas,
    "x_gpe1_blk" / Gas,
    "sleep_control_reg" / Gas,
    "sleep_status_reg" / Gas,
    "hypervisor_vendor" / Int64ul,
)
FADT_REVISION = 6
assert SDT_HEADER_SIZE + FadtBody.sizeof() == 276

FACS_ALIGN = 64
Facs = Struct(
    "signature" / Const(b"FACS"),
    "length" / Int32ul,
    "hardware_signature" / Int32ul,
    "firmware_waking_vector" / Int32ul,
    "global_lock" / Int32ul,
    "flags" / Int32ul,
    "x_firmware_waking_vector" / Int64ul,
    "version" / Int8ul,
    Padding(3),
    "ospm_flags" / Int32ul,
    Padding(24),
)
assert Facs.sizeof() == 64

# MADT (5.2.12): the fixed part after the header, then interrupt controller structures.
MADT_PCAT_COMPAT = 1 << 0     # dual 8259s present: the OS must mask them before using the IOAPIC
MadtBody = Struct("lapic_address" / Int32ul, "flags" / Int32ul)

MADT_LAPIC, MADT_IOAPIC, MADT_ISO, MADT_LAPIC_NMI = 0, 1, 2, 4
LAPIC_ENABLED = 1 << 0
# MPS INTI flags: polarity in bits 1:0 (1 high, 3 low), trigger mode in bits 3:2 (1 edge, 3 level).
INTI_CONFORMS = 0
INTI_ACTIVE_HIGH_LEVEL = 0x1 | 0x3 << 2

MadtLapic = Struct("type" / Const(MADT_LAPIC, Int8ul), "length" / Const(8, Int8ul),
                   "processor_uid" / Int8ul, "apic_id" / Int8ul, "flags" / Int32ul)
MadtIoApic = Struct("type" / Const(MADT_IOAPIC, Int8ul), "length" / Const(12, Int8ul),
                    "ioapic_id" / Int8ul, Padding(1), "address" / Int32ul, "gsi_base" / Int32ul)
MadtIso = Struct("type" / Const(MADT_ISO, Int8ul), "length" / Const(10, Int8ul),
                 "bus" / Const(0, Int8ul), "source" / Int8ul, "gsi" / Int32ul, "flags" / Int16ul)
MadtLapicNmi = Struct("type" / Const(MADT_LAPIC_NMI, Int8ul), "length" / Const(6, Int8ul),
                      "processor_uid" / Int8ul, "flags" / Int16ul, "lint" / Int8ul)
ALL_PROCESSORS = 0xFF


def offset_of(struct, field: str) -> int:
    """Where ``field`` of a fixed-size construct ``struct`` begins."""
    offset = 0
    for sub in struct.subcons:
        if sub.name == field:
            return offset
        offset += sub.sizeof()
    raise KeyError(field)


def checksummed(table: bytes, offset: int, length: int | None = None) -> bytes:
    """``table`` with the byte at ``offset`` set so that its first ``length`` bytes (all of it by
    default) sum to zero modulo 256."""
    out = bytearray(table)
    out[offset] = 0
    out[offset] = -sum(out[:length if length is not None else len(out)]) & 0xFF
    return bytes(out)


def sums_to_zero(data: bytes) -> bool:
    """Whether ``data`` passes an ACPI checksum."""
    return sum(data) & 0xFF == 0

