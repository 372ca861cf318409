"""The ACPI tables of hvm's PC when it boots a kernel directly and so plays the firmware's part:
RSDP -> XSDT (and RSDT) -> FADT (-> FACS, DSDT) and MADT, laid out in the BIOS area below 1 MiB
where a kernel that is not told the RSDP's address finds it by scanning (ACPI 6.4, 5.2.5.1).

The tables describe the machine as it is built (``AcpiPlatform``): one LAPIC per vCPU, the IOAPIC
with the PC's interrupt source overrides, the PM1a blocks and PM timer of hvm's ACPI PM device,
reset through port 0xCF9, and the ISA devices present, in the DSDT with their resources, next
to the `_S5` sleep type the PM device powers off on.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..formats import aml
from ..formats.acpi import (
    ACCESS_BYTE, ACCESS_DWORD, ACCESS_WORD, ALL_PROCESSORS, BOOT_ARCH_8042, BOOT_ARCH_LEGACY_DEVICES,
    FACS_ALIGN, FADT_PROC_C1, FADT_PWR_BUTTON, FADT_RESET_REG_SUP, FADT_REVISION, FADT_SLP_BUTTON,
    FADT_WBINVD, INTI_ACTIVE_HIGH_LEVEL, INTI_CONFORMS, LAPIC_ENABLED, MADT_PCAT_COMPAT,
    PM_PROFILE_UNSPECIFIED, RSDP_V1_SIZE, SDT_HEADER_SIZE, SPACE_SYSTEM_IO, FadtBody, Facs,
    MadtBody, MadtIoApic, MadtIso, MadtLapic, MadtLapicNmi, Rsdp, SdtHeader, checksummed,
)

OEM_ID = b"HVM   "
OEM_TABLE_ID = b"HVMPC   "
CREATOR_ID = b"HVM "
ACPI_BASE = 0xE0000   # inside the area the e820 map reserves for the BIOS (layout.BIOS_AREA)
ACPI_LIMIT = 0x10000  # the tables stay in 0xE0000-0xEFFFF, clear of the BIOS segment
SCI_IRQ = 9           # where PC chipsets (PIIX4, ICH9) wire the SCI
C_STATE_NONE = 0x0FFF  # a C2/C3 latency above 100/1000 us says "not supported"


@dataclass
class IsaDevice:
    """A device the DSDT declares: ``_HID`` (EISA ID), ``_UID`` and its fixed resources."""

    path: str                     # e.g. "COM1"; placed under \\_SB
    hid: str                      # e.g. "PNP0501"
    ports: list[tuple[int, int]]  # (base, count)
    irqs: list[int] = field(default_factory=list)
    uid: int | None = None


@dataclass
class AcpiPlatform:
    """What the tables describe."""

    cpus: int
    ioapic_id: int
    ioapic_address: int
    lapic_address: int
    pm_base: int                  # PM1a_EVT (4 bytes), PM1a_CNT (+4, 2 bytes), PM_TMR (+8, 4 bytes)
    s5_sleep_type: int
    reset_port: int
    reset_value: int
    has_8042: bool
    century_cmos_index: int | None
    isa_devices: list[IsaDevice] = field(default_factory=list)


def _header(signature: bytes, length: int, revision: int) -> bytes:
    return SdtHeader.build(dict(signature=signature, length=length, revision=revision, checksum=0,
                                oem_id=OEM_ID, oem_table_id=OEM_TABLE_ID, oem_revision=1,
                                creator_id=CREATOR_ID, creator_revision=1))


def _table(signature: bytes, revision: int, body: bytes) -> bytes:
    """A complete system description table: header, body, checksum (header offset 9)."""
    raw = _header(signature, SDT_HEADER_SIZE + len(body), revision) + body
    return checksummed(raw, 9)


def _io(address: int, width_bytes: int) -> dict:
    access = {1: ACCESS_BYTE, 2: ACCESS_WORD, 4: ACCESS_DWORD}[width_bytes]
    return dict(space_id=SPACE_SYSTEM_IO, bit_width=8 * width_bytes, bit_offset=0,
                access_size=access, address=address)


_NO_GAS = dict(space_id=0, bit_width=0, bit_offset=0, access_size=0, address=0)


def dsdt(p: AcpiPlatform) -> bytes:
    """The DSDT: \\_S5 and one device per ISA device present."""
    devices = []
    for d in p.isa_devices:
        # A 7-character PNP ID is an EISA ID; an 8-character ACPI ID (QEMU0002) is a string.
        terms = [aml.name("_HID", aml.eisa_id(d.hid) if len(d.hid) == 7 else aml.string(d.hid))]
        if d.uid is not None:
            terms.append(aml.name("_UID", aml.integer(d.uid)))
        resources = [aml.io_port(base, count) for base, count in d.ports]
        if d.irqs:
            resources.append(aml.irq_no_flags(*d.irqs))
        terms.append(aml.name("_CRS", aml.resource_template(*resources)))
        devices.append(aml.device(d.path, *terms))
    # _S5: the SLP_TYP values for PM1a_CNT and PM1b_CNT, then two reserved entries (ACPI 7.4.2).
    s5 = aml.name("\\_S5", aml.package(*(aml.integer(v) for v in (p.s5_sleep_type, p.s5_sleep_type, 0, 0))))
    return _table(b"DSDT", 2, aml.scope("\\_SB", *devices) + s5)


def facs() -> bytes:
    """The FACS (no checksum; no global lock users; no waking vector: S3 is not offered)."""
    return Facs.build(dict(length=Facs.sizeof(), hardware_signature=0, firmware_waking_vector=0,
                           global_lock=0, flags=0, x_firmware_waking_vector=0, version=2, ospm_flags=0))


def fadt(p: AcpiPlatform, facs_addr: int, dsdt_addr: int) -> bytes:
    """The FADT: fixed hardware registers, reset register, boot architecture flags."""
    pm = p.pm_base
    body = FadtBody.build(dict(
        firmware_ctrl=facs_addr, dsdt=dsdt_addr, preferred_pm_profile=PM_PROFILE_UNSPECIFIED,
        # SMI_CMD 0: the hardware is always in ACPI mode, no SMI handshake to switch it.
        sci_int=SCI_IRQ, smi_cmd=0, acpi_enable=0, acpi_disable=0, s4bios_req=0, pstate_cnt=0,
        pm1a_evt_blk=pm, pm1b_evt_blk=0, pm1a_cnt_blk=pm + 4, pm1b_cnt_blk=0, pm2_cnt_blk=0,
        pm_tmr_blk=pm + 8, gpe0_blk=0, gpe1_blk=0, pm1_evt_len=4, pm1_cnt_len=2, pm2_cnt_len=0,
        pm_tmr_len=4, gpe0_blk_len=0, gpe1_blk_len=0, gpe1_base=0, cst_cnt=0,
        p_lvl2_lat=C_STATE_NONE, p_lvl3_lat=C_STATE_NONE, flush_size=0, flush_stride=0,
        duty_offset=0, duty_width=0, day_alrm=0, mon_alrm=0,
        century=p.century_cmos_index or 0,
        iapc_boot_arch=BOOT_ARCH_LEGACY_DEVICES | (BOOT_ARCH_8042 if p.has_8042 else 0),
        flags=FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP,
        reset_reg=_io(p.reset_port, 1), reset_value=p.reset_value, arm_boot_arch=0, minor_version=0,
        x_firmware_ctrl=0,  # FIRMWARE_CTRL is set; both at once is an error (5.2.9)
        x_dsdt=dsdt_addr,
        x_pm1a_evt_blk=_io(pm, 4), x_pm1b_evt_blk=_NO_GAS, x_pm1a_cnt_blk=_io(pm + 4, 2),
        x_pm1b_cnt_blk=_NO_GAS, x_pm2_cnt_blk=_NO_GAS, x_pm_tmr_blk=_io(pm + 8, 4),
        x_gpe0_blk=_NO_GAS, x_gpe1_blk=_NO_GAS, sleep_control_reg=_NO_GAS, sleep_status_reg=_NO_GAS,
        hypervisor_vendor=0,
    ))
    return _table(b"FACP", FADT_REVISION, body)


def madt(p: AcpiPlatform) -> bytes:
    """The MADT: LAPICs, the IOAPIC, the PC's interrupt source overrides, LINT1 as NMI."""
    entries = [MadtLapic.build(dict(processor_uid=i, apic_id=i, flags=LAPIC_ENABLED)) for i in range(p.cpus)]
    entries.append(MadtIoApic.build(dict(ioapic_id=p.ioapic_id, address=p.ioapic_address, gsi_base=0)))
    # The PIT's IRQ 0 is IOAPIC pin 2 on every PC; the SCI is level-triggered, active high.
    entries.append(MadtIso.build(dict(source=0, gsi=2, flags=INTI_CONFORMS)))
    entries.append(MadtIso.build(dict(source=SCI_IRQ, gsi=SCI_IRQ, flags=INTI_ACTIVE_HIGH_LEVEL)))
    entries.append(MadtLapicNmi.build(dict(processor_uid=ALL_PROCESSORS, flags=INTI_CONFORMS, lint=1)))
    body = MadtBody.build(dict(lapic_address=p.lapic_address, flags=MADT_PCAT_COMPAT)) + b"".join(entries)
    return _table(b"APIC", 5, body)


@dataclass
class AcpiTables:
    """The tables as placed in guest memory: ``blob`` belongs at ``base``; the RSDP is at ``base``."""

    base: int
    blob: bytes
    addresses: dict[str, int]

    @property
    def rsdp(self) -> int:
        return self.addresses["RSDP"]


def build(p: AcpiPlatform, base: int = ACPI_BASE) -> AcpiTables:
    """Lay the tables out from ``base`` (16-byte aligned, the FACS 64-byte aligned)."""
    if base % FACS_ALIGN:
        raise ValueError("the ACPI area must be 64-byte aligned")
    addresses: dict[str, int] = {}
    cursor = base

    def place(name: str, size: int, align: int = 16) -> int:
        nonlocal cursor
        cursor = (cursor + align - 1) & ~(align - 1)
        addresses[name] = cursor
        cursor += size
        return addresses[name]

    place("RSDP", Rsdp.sizeof())
    place("FACS", Facs.sizeof(), FACS_ALIGN)
    dsdt_bytes = dsdt(p)
    place("DSDT", len(dsdt_bytes))
    fadt_bytes = fadt(p, addresses["FACS"], addresses["DSDT"])
    place("FACP", len(fadt_bytes))
    madt_bytes = madt(p)
    place("APIC", len(madt_bytes))
    pointed = ["FACP", "APIC"]
    xsdt_bytes = _table(b"XSDT", 1, b"".join(addresses[n].to_bytes(8, "little") for n in pointed))
    place("XSDT", len(xsdt_bytes))
    rsdt_bytes = _table(b"RSDT", 1, b"".join(addresses[n].to_bytes(4, "little") for n in pointed))
    place("RSDT", len(rsdt_bytes))
    if cursor - base > ACPI_LIMIT:
        raise ValueError(f"ACPI tables of {cursor - base} bytes do not fit the {ACPI_LIMIT}-byte area")

    rsdp = Rsdp.build(dict(checksum=0, oem_id=OEM_ID, revision=2, rsdt_address=addresses["RSDT"],
                           length=Rsdp.sizeof(), xsdt_address=addresses["XSDT"], extended_checksum=0))
    rsdp = checksummed(checksummed(rsdp, 8, RSDP_V1_SIZE), 32)
    blob = bytearray(cursor - base)
    for name, data in (("RSDP", rsdp), ("FACS", facs()), ("DSDT", dsdt_bytes), ("FACP", fadt_bytes),
                       ("APIC", madt_bytes), ("XSDT", xsdt_bytes), ("RSDT", rsdt_bytes)):
        offset = addresses[name] - base
        blob[offset:offset + len(data)] = data
    return AcpiTables(base, bytes(blob), addresses)
