"""hvm's SMBIOS tables for the PC board, as the two fw_cfg files QEMU hands SeaBIOS.

QEMU's ``pc`` machine gives firmware "etc/smbios/smbios-anchor" (an entry point with no table
address) and "etc/smbios/smbios-tables" (the structure table). SeaBIOS 1.16 (Debian 12's package;
src/fw/biostables.c, smbios_romfile_setup) takes the anchor only when the file is exactly an
SMBIOS 2.1 entry point (31 bytes, "_SM_") or an SMBIOS 3.0 one (24 bytes, "_SM3_"), and the table
only when its size equals the anchor's table length (2.1) or maximum size (3.0). It then puts its
own type 0 (BIOS information, handle 0) in front when the table has none (counting it in a 2.1
anchor's structure count and maximum structure size), copies the table to the F segment or high
RAM, writes the address into the anchor, redoes the checksums and places the anchor in the F
segment. It copies at most 64 KiB of table (its length is 16-bit there).

The structures follow what QEMU's hw/smbios/smbios.c describes for its ``pc`` machine, so that
guests which recognise QEMU's PC by its SMBIOS product name treat hvm's alike: system (type 1),
chassis (3), one processor per socket (4), one memory array (16) with a memory device per 16 GiB
of RAM (17), a mapped address range per RAM region (19), boot status (32) and the end (127).
Handles are QEMU's too (type << 8, plus the instance), leaving handle 0 to the firmware's type 0.
Values and layouts: DMTF DSP0134 3.x, through hvm.formats.smbios.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable
from uuid import UUID

from construct import SizeofError

from .. import __version__
from ..formats import smbios as s
from ..memory import pc_layout

ANCHOR_FILE = "etc/smbios/smbios-anchor"
TABLES_FILE = "etc/smbios/smbios-tables"

MANUFACTURER = "hvm"
PRODUCT = "Standard PC (i440FX + PIIX, 1996)"   # QEMU's pc machine's description
VERSION = __version__
SOCKET_PREFIX = "CPU"
DIMM_PREFIX = "DIMM"
DIMM_SIZE = 16 << 30         # QEMU's largest memory device
DEFAULT_MHZ = 2000           # QEMU's value: Microsoft's SVVP wants speeds that are not "unknown"

# Which entry point, and the SMBIOS version the structures are laid out for: 2.8 behind the 32-bit
# entry point (QEMU's choice for it), 3.0 behind the 64-bit one.
EP_21, EP_30 = "2.1", "3.0"
_VERSIONS = {EP_21: (2, 8), EP_30: (3, 0)}
TABLE_LIMIT = 0xFFFF         # a 2.1 anchor's table length is 16-bit; SeaBIOS 1.16 copies no more

# Handles: QEMU's numbering.
H_SYSTEM, H_CHASSIS, H_PROCESSOR, H_ARRAY, H_DEVICE, H_MAPPED, H_BOOT, H_END = (
    0x0100, 0x0300, 0x0400, 0x1000, 0x1100, 0x1300, 0x2000, 0x7F00)


@dataclass(frozen=True)
class CpuIdentity:
    """What type 4 says about each processor, from the CPUID the guest sees (empty/0: unknown)."""

    vendor: str = ""           # leaf 0, e.g. "GenuineIntel"; the processor manufacturer string
    brand: str = ""            # leaves 0x80000002-4; the processor version string
    signature: int = 0         # leaf 1 EAX: the low half of the processor ID
    features: int = 0          # leaf 1 EDX: the high half
    mhz: int = DEFAULT_MHZ

    @classmethod
    def from_cpuid(cls, query: Callable[[int], tuple[int, int, int, int]], mhz: int = DEFAULT_MHZ) -> "CpuIdentity":
        """From ``query(leaf) -> (eax, ebx, ecx, edx)`` for subleaf 0 of the vCPUs' CPUID."""
        def text(*regs: int) -> str:
            raw = b"".join(r.to_bytes(4, "little") for r in regs)
            return raw.split(b"\0")[0].decode("ascii", "replace").strip()

        _top, ebx, ecx, edx = query(0)
        vendor = text(ebx, edx, ecx)
        brand = ""
        if query(0x80000000)[0] >= 0x80000004:
            brand = text(*(r for leaf in (0x80000002, 0x80000003, 0x80000004) for r in query(leaf)))
        eax, _ebx, _ecx, edx = query(1)
        return cls(vendor=vendor, brand=brand, signature=eax, features=edx, mhz=mhz)


class _Table:
    """The structure table as it grows, with what the entry point counts."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.count = 0
        self.largest = 0

    def add(self, layout, kind: int, handle: int, length: int | None = None, **fields) -> None:
        """One structure; ``str`` fields become string numbers ("" or None: no string)."""
        if not 0 < handle < s.HANDLE_LIMIT:
            raise ValueError(f"SMBIOS handle {handle:#x} is reserved")
        strings: list[str] = []
        for name, value in fields.items():
            if isinstance(value, str) or value is None:
                if value and value not in strings:
                    strings.append(value)
                fields[name] = strings.index(value) + 1 if value else 0
        if length is None:
            try:
                length = layout.sizeof()
            except SizeofError:   # type 3: as long as its contained elements make it
                length = len(layout.build(dict(header=dict(type=kind, length=0, handle=handle), **fields)))
        area = layout.build(dict(header=dict(type=kind, length=length, handle=handle), **fields))[:length]
        structure = area + s.StringSet().build(strings)
        self.data += structure
        self.count += 1
        self.largest = max(self.largest, len(structure))


def memory_devices(total: int) -> list[int]:
    """The sizes of the memory devices holding ``total`` bytes: QEMU's 16 GiB DIMMs, the last one
    with the rest."""
    full, rest = divmod(total, DIMM_SIZE)
    return [DIMM_SIZE] * full + ([rest] if rest else [])


def build(cpus: int, ram: int | Iterable[tuple[int, int]], *, cpu: CpuIdentity = CpuIdentity(),
          cores_per_socket: int = 1, uuid: UUID | None = None, entry_point: str = EP_21,
          manufacturer: str = MANUFACTURER, product: str = PRODUCT, version: str = VERSION) -> tuple[bytes, bytes]:
    """(anchor, tables) for ``cpus`` vCPUs, ``cores_per_socket`` of them to a socket (one type 4
    per socket), and RAM given as its (gpa, size) regions or its size (laid out as hvm's PC lays
    it out). The anchor's table address is 0 and its checksums hold for that: the firmware fills
    the address in (``locate``)."""
    if entry_point not in _VERSIONS:
        raise ValueError(f"SMBIOS entry point {entry_point!r}: {EP_21} or {EP_30}")
    major, minor = _VERSIONS[entry_point]
    regions = pc_layout(ram) if isinstance(ram, int) else [(gpa, size) for gpa, size in ram]
    if not regions or any(size <= 0 for _gpa, size in regions):
        raise ValueError(f"RAM regions {regions!r}: at least one, none empty")
    if cpus < 1 or cores_per_socket < 1:
        raise ValueError("at least one CPU and one core per socket")
    total = sum(size for _gpa, size in regions)
    sockets = -(-cpus // cores_per_socket)
    devices = memory_devices(total)
    if sockets > H_ARRAY - H_PROCESSOR or len(devices) > H_MAPPED - H_DEVICE or len(regions) > H_BOOT - H_MAPPED:
        raise ValueError("more processors, memory devices or RAM regions than QEMU's handle numbering has room for")

    t = _Table()
    t.add(s.SystemInformation, s.SYSTEM_INFORMATION, H_SYSTEM,
          manufacturer=manufacturer, product_name=product, version=version, serial_number=None,
          # The wire format of SMBIOS 2.6+ (7.2.1): the first three fields little-endian.
          uuid=uuid.bytes_le if uuid is not None else bytes(16),
          wake_up_type=s.WAKE_UP_POWER_SWITCH, sku_number=None, family=None)
    t.add(s.SystemEnclosure, s.SYSTEM_ENCLOSURE, H_CHASSIS,
          manufacturer=manufacturer, type=s.CHASSIS_OTHER, version=version, serial_number=None, asset_tag=None,
          boot_up_state=s.STATE_SAFE, power_supply_state=s.STATE_SAFE, thermal_state=s.STATE_SAFE,
          security_status=s.SECURITY_UNKNOWN, oem_defined=0, height=0, power_cords=0,
          contained_element_count=0, contained_element_record_length=0, contained_elements=b"", sku_number=None)

    # SMBIOS 3.0 added the 16-bit counts; 2.6-2.8 structures end at processor_family2.
    processor_length = s.ProcessorInformation.sizeof() if major >= 3 else s.PROCESSOR_LENGTH_26
    for socket in range(sockets):
        cores = min(cores_per_socket, cpus - socket * cores_per_socket)
        count = cores if cores < s.COUNT_IN_COUNT2 or major < 3 else s.COUNT_IN_COUNT2
        # hvm's CPUs are x86-64 ones under both engines.
        characteristics = s.PROCESSOR_64BIT_CAPABLE | (s.PROCESSOR_MULTI_CORE if cores > 1 else 0)
        t.add(s.ProcessorInformation, s.PROCESSOR_INFORMATION, H_PROCESSOR + socket, processor_length,
              socket_designation=f"{SOCKET_PREFIX} {socket}", processor_type=s.PROCESSOR_CENTRAL,
              processor_family=s.PROCESSOR_FAMILY_OTHER, manufacturer=cpu.vendor or manufacturer,
              processor_id=cpu.signature & 0xFFFFFFFF | (cpu.features & 0xFFFFFFFF) << 32,
              version=cpu.brand or None, voltage=0, external_clock=0, max_speed=cpu.mhz, current_speed=cpu.mhz,
              status=s.PROCESSOR_STATUS_POPULATED | s.PROCESSOR_STATUS_ENABLED,
              processor_upgrade=s.PROCESSOR_UPGRADE_OTHER, l1_cache_handle=s.HANDLE_NONE,
              l2_cache_handle=s.HANDLE_NONE, l3_cache_handle=s.HANDLE_NONE, serial_number=None, asset_tag=None,
              part_number=None, core_count=min(count, 0xFF), core_enabled=min(count, 0xFF),
              thread_count=min(count, 0xFF), characteristics=characteristics,
              processor_family2=s.PROCESSOR_FAMILY_OTHER, core_count2=cores, core_enabled2=cores, thread_count2=cores)

    capacity, extended_capacity = s.array_capacity(total)
    t.add(s.PhysicalMemoryArray, s.PHYSICAL_MEMORY_ARRAY, H_ARRAY,
          location=s.ARRAY_LOCATION_OTHER, use=s.ARRAY_USE_SYSTEM_MEMORY,
          # Multi-bit ECC as QEMU and SeaBIOS say (Windows is said to want it).
          error_correction=s.ARRAY_ECC_MULTI_BIT, maximum_capacity=capacity,
          error_information_handle=s.HANDLE_NOT_PROVIDED, device_count=len(devices),
          extended_maximum_capacity=extended_capacity)
    for index, size in enumerate(devices):
        size_field, extended_size = s.device_size(size)
        t.add(s.MemoryDevice, s.MEMORY_DEVICE, H_DEVICE + index,
              array_handle=H_ARRAY, error_information_handle=s.HANDLE_NOT_PROVIDED,
              total_width=s.WIDTH_UNKNOWN, data_width=s.WIDTH_UNKNOWN, size=size_field,
              form_factor=s.FORM_FACTOR_DIMM, device_set=0, device_locator=f"{DIMM_PREFIX} {index}",
              bank_locator=None, memory_type=s.MEMORY_TYPE_RAM, type_detail=s.TYPE_DETAIL_OTHER, speed=0,
              manufacturer=manufacturer, serial_number=None, asset_tag=None, part_number=None, attributes=0,
              extended_size=extended_size, configured_speed=0, minimum_voltage=0, maximum_voltage=0,
              configured_voltage=0)
    for index, (gpa, size) in enumerate(regions):
        t.add(s.MemoryArrayMappedAddress, s.MEMORY_ARRAY_MAPPED_ADDRESS, H_MAPPED + index,
              array_handle=H_ARRAY, partition_width=1, **s.mapped_range(gpa, size))
    t.add(s.SystemBootInformation, s.SYSTEM_BOOT_INFORMATION, H_BOOT,
          length=s.BOOT_INFORMATION_LENGTH, reserved=bytes(6),
          boot_status=bytes([s.BOOT_STATUS_NO_ERRORS]))
    t.add(s.EndOfTable, s.END_OF_TABLE, H_END)

    tables = bytes(t.data)
    if len(tables) > TABLE_LIMIT:
        raise ValueError(f"SMBIOS table of {len(tables)} bytes: SeaBIOS takes at most {TABLE_LIMIT}")
    if entry_point == EP_21:
        anchor = s.EntryPoint21.build(dict(
            checksum=0, length=s.EntryPoint21.sizeof(), major=major, minor=minor, max_structure_size=t.largest,
            revision=s.EP21_REVISION, formatted_area=bytes(5), intermediate_checksum=0, table_length=len(tables),
            table_address=0, structure_count=t.count, bcd_revision=major << 4 | minor))
    else:
        anchor = s.EntryPoint30.build(dict(
            checksum=0, length=s.EntryPoint30.sizeof(), major=major, minor=minor, docrev=0,
            revision=s.EP30_REVISION, table_max_size=len(tables), table_address=0))
    return locate(anchor, 0), tables


def locate(anchor: bytes, address: int) -> bytes:
    """``anchor`` saying its table is at ``address``, checksums redone: what firmware does when it
    places the table."""
    if anchor.startswith(s.ANCHOR_30):
        ep = s.EntryPoint30.parse(anchor)
        ep.table_address = address
        return s.checksummed(s.EntryPoint30.build(ep), 5, 0, ep.length)
    ep = s.EntryPoint21.parse(anchor)
    ep.table_address = address
    raw = s.EntryPoint21.build(ep)
    # The intermediate part first: once it sums to zero, the whole does when the head does.
    raw = s.checksummed(raw, 0x15, s.INTERMEDIATE_OFFSET, ep.length)
    return s.checksummed(raw, 4, 0, ep.length)
