"""hvm's ACPI tables: RSDP -> XSDT (and RSDT) -> FADT (-> FACS, DSDT) and MADT.

The tables describe the machine as it is built (``AcpiPlatform``): one LAPIC per vCPU, the IOAPIC
with the PC's interrupt source overrides, the PM1a blocks and PM timer of hvm's ACPI PM device,
reset through port 0xCF9, and the ISA devices present, in the DSDT with their resources, next
to the `_S5` sleep type the PM device powers off on; on the PC board also PCI bus 0 with its
windows and interrupt routing.

Two ways out: the direct board, which plays the firmware's part, places them itself in the BIOS
area below 1 MiB, where a kernel that is not told the RSDP's address finds it by scanning (ACPI
6.4, 5.2.5.1) (``build``); the PC board hands them to the firmware as QEMU does, as fw_cfg files
with a table-loader script saying which fields point where and which bytes are checksums, so
the firmware places them where it likes and fixes them up (``loader_files``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..formats import aml
from ..formats.acpi import (
    ACCESS_BYTE, ACCESS_DWORD, ACCESS_WORD, ALL_PROCESSORS, BOOT_ARCH_8042, BOOT_ARCH_LEGACY_DEVICES,
    FACS_ALIGN, FADT_PROC_C1, FADT_PWR_BUTTON, FADT_RESET_REG_SUP, FADT_REVISION, FADT_SLP_BUTTON,
    FADT_TMR_VAL_EXT, FADT_WBINVD, INTI_ACTIVE_HIGH_LEVEL, INTI_CONFORMS, LAPIC_ENABLED, MADT_PCAT_COMPAT,
    PM_PROFILE_UNSPECIFIED, RSDP_V1_SIZE, SDT_HEADER_SIZE, SPACE_SYSTEM_IO, FadtBody, Facs,
    MadtBody, MadtIoApic, MadtIso, MadtLapic, MadtLapicNmi, Rsdp, SdtHeader, checksummed, offset_of,
)
from ..formats.fw_cfg import LOADER_ZONE_FSEG, LOADER_ZONE_HIGH, LoaderCommand

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
class PciRoot:
    """PCI bus 0 behind an i440FX/PIIX3 as the DSDT describes it."""

    pirq_irqs: list[int | None]       # the ISA IRQ of PIRQ A-D as the firmware routed them; None: off
    mmio_window: tuple[int, int]      # the 32-bit memory the bridge forwards (first, last byte)
    isa_bridge_devfn: int = 0x08      # 01.0


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
    pci: PciRoot | None = None
    # The SMI command port and the values that switch ACPI mode on and off; 0: always ACPI mode.
    smi_cmd: int = 0
    acpi_enable: int = 0
    acpi_disable: int = 0


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


def _isa_device(d: IsaDevice) -> bytes:
    # A 7-character PNP ID is an EISA ID; an 8-character ACPI ID (QEMU0002) is a string.
    terms = [aml.name("_HID", aml.eisa_id(d.hid) if len(d.hid) == 7 else aml.string(d.hid))]
    if d.uid is not None:
        terms.append(aml.name("_UID", aml.integer(d.uid)))
    resources = [aml.io_port(base, count) for base, count in d.ports]
    if d.irqs:
        resources.append(aml.irq_no_flags(*d.irqs))
    terms.append(aml.name("_CRS", aml.resource_template(*resources)))
    return aml.device(d.path, *terms)


PCI_SLOTS = 32
LINKS = ("LNKA", "LNKB", "LNKC", "LNKD")
STA_PRESENT_ENABLED, STA_ABSENT = 0x0B, 0x00   # present, enabled, functioning / not there


def _pirq(slot: int, pin: int) -> int:
    """The PIRQ line INTA-INTD (``pin`` 0-3) of a device in ``slot`` reaches on a PIIX: the lines
    rotate by slot, as the PIIX3 datasheet's routing example and every PC BIOS wire them."""
    return (slot - 1 + pin) & 3


def _pci_root(pci: PciRoot, isa_devices: list[bytes]) -> list[bytes]:
    """\\_SB.PCI0 (its windows, its routing table and the ISA bridge with the ISA devices) and
    the four PIRQ link devices.

    The links report the routing the firmware chose, which is all they may use: ``_PRS`` offers
    that one IRQ and ``_SRS``/``_DIS`` change nothing, so an OS that sets a link (Linux does,
    with the IRQ it was offered) keeps what the PIIX3 registers say."""
    first, last = pci.mmio_window
    crs = aml.resource_template(
        aml.word_space(aml.SPACE_BUS, 0, 0xFF),
        aml.io_port(0xCF8, 8),
        aml.word_space(aml.SPACE_IO, 0, 0xCF7, aml.IO_ENTIRE_RANGE),
        aml.word_space(aml.SPACE_IO, 0xD00, 0xFFFF, aml.IO_ENTIRE_RANGE),
        aml.dword_memory(0xA0000, 0xBFFFF, aml.MEMORY_RW | aml.MEMORY_CACHEABLE),   # VGA window
        aml.dword_memory(first, last))
    prt = aml.package(*(aml.package(aml.integer(slot << 16 | 0xFFFF), aml.integer(pin),
                                    aml.name_string(LINKS[_pirq(slot, pin)]), aml.integer(0))
                        for slot in range(1, PCI_SLOTS) for pin in range(4)))
    isa = aml.device("ISA", aml.name("_ADR", aml.integer((pci.isa_bridge_devfn >> 3) << 16 |
                                                        (pci.isa_bridge_devfn & 7))), *isa_devices)
    root = aml.device("PCI0", aml.name("_HID", aml.eisa_id("PNP0A03")), aml.name("_UID", aml.integer(0)),
                      aml.name("_BBN", aml.integer(0)),
                      aml.name("_CRS", crs), aml.name("_PRT", prt), isa)
    links = []
    for index, irq in enumerate(pci.pirq_irqs):
        # Fixed-width values: the PC board's tables keep their size whatever the routing is.
        current = aml.resource_template(aml.interrupt(aml.IRQ_CONSUMER | aml.IRQ_SHARED, irq or 0))
        links.append(aml.device(
            LINKS[index], aml.name("_HID", aml.eisa_id("PNP0C0F")), aml.name("_UID", aml.byte_const(index + 1)),
            aml.name("_STA", aml.byte_const(STA_ABSENT if irq is None else STA_PRESENT_ENABLED)),
            aml.name("_PRS", current), aml.name("_CRS", current),
            aml.method("_SRS", 1), aml.method("_DIS", 0)))
    return [root, *links]


def dsdt(p: AcpiPlatform) -> bytes:
    """The DSDT: \\_S5 and one device per ISA device present (under the PCI root's ISA bridge
    when there is PCI)."""
    isa = [_isa_device(d) for d in p.isa_devices]
    devices = _pci_root(p.pci, isa) if p.pci is not None else isa
    # _S5: the SLP_TYP values for PM1a_CNT and PM1b_CNT, then two reserved entries (ACPI 7.4.2).
    s5 = aml.name("\\_S5", aml.package(*(aml.integer(v) for v in (p.s5_sleep_type, p.s5_sleep_type, 0, 0))))
    return _table(b"DSDT", 2, aml.scope("\\_SB", *devices) + s5)


def facs() -> bytes:
    """The FACS (no checksum; no global lock users; no waking vector: S3 is not offered)."""
    return Facs.build(dict(length=Facs.sizeof(), hardware_signature=0, firmware_waking_vector=0,
                           global_lock=0, flags=0, x_firmware_waking_vector=0, version=2, ospm_flags=0))


def fadt(p: AcpiPlatform, facs_addr: int = 0, dsdt_addr: int = 0) -> bytes:
    """The FADT: fixed hardware registers, reset register, boot architecture flags."""
    pm = p.pm_base
    body = FadtBody.build(dict(
        firmware_ctrl=facs_addr, dsdt=dsdt_addr, preferred_pm_profile=PM_PROFILE_UNSPECIFIED,
        sci_int=SCI_IRQ, smi_cmd=p.smi_cmd, acpi_enable=p.acpi_enable, acpi_disable=p.acpi_disable,
        s4bios_req=0, pstate_cnt=0,
        pm1a_evt_blk=pm, pm1b_evt_blk=0, pm1a_cnt_blk=pm + 4, pm1b_cnt_blk=0, pm2_cnt_blk=0,
        pm_tmr_blk=pm + 8, gpe0_blk=0, gpe1_blk=0, pm1_evt_len=4, pm1_cnt_len=2, pm2_cnt_len=0,
        pm_tmr_len=4, gpe0_blk_len=0, gpe1_blk_len=0, gpe1_base=0, cst_cnt=0,
        p_lvl2_lat=C_STATE_NONE, p_lvl3_lat=C_STATE_NONE, flush_size=0, flush_stride=0,
        duty_offset=0, duty_width=0, day_alrm=0, mon_alrm=0,
        century=p.century_cmos_index or 0,
        iapc_boot_arch=BOOT_ARCH_LEGACY_DEVICES | (BOOT_ARCH_8042 if p.has_8042 else 0),
        flags=FADT_WBINVD | FADT_PROC_C1 | FADT_PWR_BUTTON | FADT_SLP_BUTTON | FADT_RESET_REG_SUP
        | FADT_TMR_VAL_EXT,
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
    # PCI interrupts routed to ISA IRQs are level-triggered, and high while asserted on this board.
    routed = sorted({irq for irq in (p.pci.pirq_irqs if p.pci else ()) if irq is not None} - {SCI_IRQ})
    entries += [MadtIso.build(dict(source=irq, gsi=irq, flags=INTI_ACTIVE_HIGH_LEVEL)) for irq in routed]
    entries.append(MadtLapicNmi.build(dict(processor_uid=ALL_PROCESSORS, flags=INTI_CONFORMS, lint=1)))
    body = MadtBody.build(dict(lapic_address=p.lapic_address, flags=MADT_PCAT_COMPAT)) + b"".join(entries)
    return _table(b"APIC", 5, body)


@dataclass
class Pointer:
    """A field of table ``table`` (``size`` bytes at ``offset``) holding ``target``'s address."""

    table: str
    offset: int
    size: int
    target: str


_FADT_POINTERS = (("firmware_ctrl", 4, "FACS"), ("dsdt", 4, "DSDT"), ("x_dsdt", 8, "DSDT"))
# The RSDP stands apart. The MADT comes last: on the PC board it grows with the PCI routing.
_ORDER = ("FACS", "DSDT", "FACP", "XSDT", "RSDT", "APIC")


def _unlinked(p: AcpiPlatform) -> tuple[dict[str, bytes], list[Pointer]]:
    """The tables with every address field zero, and where those fields are."""
    pointed = ["FACP", "APIC"]
    tables = {"FACS": facs(), "DSDT": dsdt(p), "FACP": fadt(p), "APIC": madt(p),
              "XSDT": _table(b"XSDT", 1, bytes(8 * len(pointed))),
              "RSDT": _table(b"RSDT", 1, bytes(4 * len(pointed))),
              "RSDP": Rsdp.build(dict(checksum=0, oem_id=OEM_ID, revision=2, rsdt_address=0,
                                      length=Rsdp.sizeof(), xsdt_address=0, extended_checksum=0))}
    pointers = [Pointer("FACP", SDT_HEADER_SIZE + offset_of(FadtBody, name), size, target)
                for name, size, target in _FADT_POINTERS]
    pointers += [Pointer("XSDT", SDT_HEADER_SIZE + 8 * i, 8, t) for i, t in enumerate(pointed)]
    pointers += [Pointer("RSDT", SDT_HEADER_SIZE + 4 * i, 4, t) for i, t in enumerate(pointed)]
    pointers += [Pointer("RSDP", offset_of(Rsdp, "rsdt_address"), 4, "RSDT"),
                 Pointer("RSDP", offset_of(Rsdp, "xsdt_address"), 8, "XSDT")]
    return tables, pointers


def _align(name: str) -> int:
    return FACS_ALIGN if name == "FACS" else 16


def _checksums(name: str, length: int) -> list[tuple[int, int, int]]:
    """(checksum byte, first byte, length) of each checksum ``name`` carries, in the order to fix."""
    if name == "RSDP":
        return [(offset_of(Rsdp, "checksum"), 0, RSDP_V1_SIZE),
                (offset_of(Rsdp, "extended_checksum"), 0, Rsdp.sizeof())]
    return [] if name == "FACS" else [(9, 0, length)]


def _fill(data: bytes, pointers: list[Pointer], name: str, address_of) -> bytes:
    out = bytearray(data)
    for ptr in pointers:
        if ptr.table == name:
            out[ptr.offset:ptr.offset + ptr.size] = address_of(ptr.target).to_bytes(ptr.size, "little")
    return bytes(out)


def _sealed(data: bytes, name: str) -> bytes:
    """``data`` with its checksums right."""
    for at, first, length in _checksums(name, len(data)):
        data = checksummed(data, at, first + length)
    return data


def _unsealed(data: bytes, name: str) -> bytes:
    # The loader's checksum command subtracts the range's sum from the checksum byte: it starts at 0.
    out = bytearray(data)
    for at, _first, _length in _checksums(name, len(out)):
        out[at] = 0
    return bytes(out)


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
    tables, pointers = _unlinked(p)
    addresses: dict[str, int] = {}
    cursor = base
    for name in ("RSDP", *_ORDER):
        cursor = -(-cursor // _align(name)) * _align(name)
        addresses[name] = cursor
        cursor += len(tables[name])
    if cursor - base > ACPI_LIMIT:
        raise ValueError(f"ACPI tables of {cursor - base} bytes do not fit the {ACPI_LIMIT}-byte area")
    blob = bytearray(cursor - base)
    for name, data in tables.items():
        offset = addresses[name] - base
        blob[offset:offset + len(data)] = _sealed(_fill(data, pointers, name, addresses.__getitem__), name)
    return AcpiTables(base, bytes(blob), addresses)


TABLES_FILE, RSDP_FILE, LOADER_FILE = "etc/acpi/tables", "etc/acpi/rsdp", "etc/table-loader"


@dataclass
class LoaderFiles:
    """The fw_cfg files that hand the tables to firmware (QEMU's scheme): ``tables`` holds all but
    the RSDP, each address field holding its target's offset in that file; ``loader`` says to
    place ``rsdp`` in the F segment (where OSes scan for it) and ``tables`` anywhere, then add the
    files' addresses to those fields and recompute the checksums."""

    tables: bytes
    rsdp: bytes
    loader: bytes


def _madt_room(p: AcpiPlatform, madt_length: int) -> int:
    """Zero bytes after the MADT that keep the tables file one size whatever the routing: room
    for an override per PIRQ line, less those present."""
    if p.pci is None:
        return 0
    most = len(madt(AcpiPlatform(**{**vars(p), "pci": PciRoot([None] * len(p.pci.pirq_irqs), (0, 0))})))
    return most + MadtIso.sizeof() * len(p.pci.pirq_irqs) - madt_length


def loader_files(p: AcpiPlatform) -> LoaderFiles:
    tables, pointers = _unlinked(p)
    offsets: dict[str, int] = {"RSDP": 0}
    blob = bytearray()
    for name in _ORDER:
        blob += bytes(-len(blob) % _align(name))
        offsets[name] = len(blob)
        blob += tables[name]
    file_of = {name: TABLES_FILE for name in _ORDER} | {"RSDP": RSDP_FILE}
    commands = [("allocate", dict(file=RSDP_FILE, align=16, zone=LOADER_ZONE_FSEG)),
                ("allocate", dict(file=TABLES_FILE, align=FACS_ALIGN, zone=LOADER_ZONE_HIGH))]
    for ptr in pointers:
        commands.append(("add_pointer", dict(dest=file_of[ptr.table], src=file_of[ptr.target],
                                             offset=offsets[ptr.table] + ptr.offset, size=ptr.size)))
    # The MADT's checksum runs over the room after it too: zeros change no sum.
    room = _madt_room(p, len(tables["APIC"]))
    blob += bytes(room)
    for name in (*_ORDER, "RSDP"):
        for at, first, length in _checksums(name, len(tables[name]) + (room if name == "APIC" else 0)):
            commands.append(("add_checksum", dict(file=file_of[name], offset=offsets[name] + at,
                                                  start=offsets[name] + first, length=length)))
    for name in _ORDER:
        # The target's offset in its file: the firmware adds the file's address.
        data = _unsealed(_fill(tables[name], pointers, name, offsets.__getitem__), name)
        blob[offsets[name]:offsets[name] + len(data)] = data
    rsdp = _unsealed(_fill(tables["RSDP"], pointers, "RSDP", offsets.__getitem__), "RSDP")
    return LoaderFiles(bytes(blob), rsdp,
                       b"".join(LoaderCommand.build(dict(command=c, args=a)) for c, a in commands))
