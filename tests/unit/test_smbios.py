"""hvm's SMBIOS tables (the fw_cfg files SeaBIOS installs): the entry point's checksums, counts and
lengths hold by DMTF DSP0134's definitions, every string number leads to a string, the memory and
processor structures describe the machine asked for, SeaBIOS 1.16's conditions for taking the
files are met (its src/fw/biostables.c), and dmidecode, an outside decoder, reads the same
machine out of the bytes."""
from __future__ import annotations

import re
import subprocess
from uuid import UUID

import pytest

from conftest import require_tool
from hvm.firmware import smbios
from hvm.formats import smbios as s

GiB, MiB, KiB = 1 << 30, 1 << 20, 1 << 10

# The string-number fields of each type, by their offsets in DSP0134's tables (type 3's SKU
# number sits after its contained elements: offset 0x15 + n*m).
STRING_FIELDS = {
    1: [0x04, 0x05, 0x06, 0x07, 0x19, 0x1A],
    4: [0x04, 0x07, 0x10, 0x20, 0x21, 0x22],
    17: [0x10, 0x11, 0x17, 0x18, 0x19, 0x1A],
}


def _type3_string_fields(area: bytes) -> list[int]:
    return [0x04, 0x06, 0x07, 0x08, 0x15 + area[0x13] * area[0x14]]


def _walk(table: bytes) -> list[tuple[bytes, list[bytes]]]:
    """Each structure's formatted area and strings, found by the spec's rule alone (6.1.3): the
    header's length, then strings up to a double NUL. Independent of hvm's declarations."""
    out, at = [], 0
    while at < len(table):
        length = table[at + 1]
        end = table.index(b"\0\0", at + length) + 2
        strings = table[at + length:end - 2] if end - 2 > at + length else b""
        out.append((table[at:at + length], strings.split(b"\0") if strings else []))
        at = end
    return out


@pytest.mark.parametrize("entry_point", [smbios.EP_21, smbios.EP_30])
@pytest.mark.parametrize("cpus, regions", [
    (1, [(0, 128 * MiB)]),
    (4, [(0, 3 * GiB), (4 * GiB, 37 * GiB)]),
])
def test_entry_point_and_table_agree(entry_point, cpus, regions):
    anchor, table = smbios.build(cpus, regions, entry_point=entry_point)
    walked = _walk(table)
    if entry_point == smbios.EP_21:
        ep = s.EntryPoint21.parse(anchor)
        assert (len(anchor), ep.length, ep.major, ep.minor, ep.bcd_revision) == (0x1F, 0x1F, 2, 8, 0x28)
        assert s.sums_to_zero(anchor) and s.sums_to_zero(anchor[0x10:0x1F])
        assert ep.table_length == len(table)
        assert ep.structure_count == len(walked)
        # "the largest SMBIOS structure, ... its formatted area and text strings" (5.2.1)
        assert ep.max_structure_size == max(len(area) + len(b"\0".join(st)) + 2 for area, st in walked)
    else:
        ep = s.EntryPoint30.parse(anchor)
        assert (len(anchor), ep.length, ep.major, ep.minor, ep.revision) == (0x18, 0x18, 3, 0, 1)
        assert s.sums_to_zero(anchor)
        assert ep.table_max_size == len(table)
    assert ep.table_address == 0      # the firmware's to fill in

    # hvm's declarations read back the same structures the spec's rule finds.
    parsed = s.Table.parse(table)
    assert [(p.type, p.length) for p in parsed] == [(a[0], a[1]) for a, _st in walked]
    assert [p.strings for p in parsed] == [[x.decode() for x in st] for _a, st in walked]
    assert parsed[-1].type == s.END_OF_TABLE and parsed[-1].length == 4
    handles = [p.handle for p in parsed]
    assert len(set(handles)) == len(handles) and all(0 < h < 0xFF00 for h in handles)

    for area, strings in walked:
        fields = _type3_string_fields(area) if area[0] == 3 else STRING_FIELDS.get(area[0], [])
        numbers = [area[offset] for offset in fields if offset < len(area)]
        assert all(n <= len(strings) for n in numbers), (area[0], numbers, strings)
        assert set(range(1, len(strings) + 1)) <= set(numbers), "a string nothing refers to"


def test_what_seabios_1_16_takes():
    """smbios_romfile_setup: the anchor file is exactly one entry point structure, the table file
    exactly as long as the anchor says; handle 0 and type 0 are left to SeaBIOS's own type 0."""
    for entry_point, size in ((smbios.EP_21, 31), (smbios.EP_30, 24)):
        anchor, table = smbios.build(2, 256 * MiB, entry_point=entry_point)
        assert len(anchor) == size
        stated = int.from_bytes(anchor[0x16:0x18], "little") if size == 31 else \
            int.from_bytes(anchor[0x0C:0x10], "little")
        assert stated == len(table) < 0x10000
        assert all(p.handle and p.type for p in s.Table.parse(table))


def test_the_machine_described():
    uuid = UUID("12345678-9abc-def0-1122-334455667788")
    cpu = smbios.CpuIdentity(vendor="GenuineIntel", brand="Test CPU", signature=0x000306C3, features=0xBFEBFBFF)
    _anchor, table = smbios.build(3, [(0, 3 * GiB), (4 * GiB, 37 * GiB)], cpu=cpu, uuid=uuid)
    by_type: dict[int, list] = {}
    for p in s.Table.parse(table):
        by_type.setdefault(p.type, []).append((s.parse_formatted(p), p.strings))

    ((system, strings),) = by_type[1]
    assert [strings[system[f] - 1] for f in ("manufacturer", "product_name")] == \
        ["hvm", "Standard PC (i440FX + PIIX, 1996)"]
    assert system.uuid == bytes.fromhex("78563412bc9af0de1122334455667788")   # 2.6+ wire format

    processors = by_type[4]
    assert [st[p.socket_designation - 1] for p, st in processors] == ["CPU 0", "CPU 1", "CPU 2"]
    p, st = processors[0]
    assert (st[p.manufacturer - 1], st[p.version - 1]) == ("GenuineIntel", "Test CPU")
    assert p.processor_id == 0xBFEBFBFF_000306C3 and p.header.length == 0x2A    # a 2.8 structure
    assert (p.core_count, p.thread_count, p.status) == (1, 1, 0x41)

    ((array, _),) = by_type[16]
    assert (array.maximum_capacity, array.device_count) == (40 * GiB // KiB, 3)
    devices = [(d.size, d.extended_size) for d, _st in by_type[17]]
    assert devices == [(16384, 0), (16384, 0), (8192, 0)]             # QEMU's 16 GiB devices
    assert [(m.starting_address, m.ending_address) for m, _st in by_type[19]] == \
        [(0, 3 * GiB // KiB - 1), (4 * GiB // KiB, 41 * GiB // KiB - 1)]
    ((boot, _),) = by_type[32]
    assert (boot.header.length, boot.boot_status) == (11, b"\0")


def test_several_cores_to_a_socket():
    _anchor, table = smbios.build(300, 1 * GiB, cores_per_socket=300, entry_point=smbios.EP_30)
    ((p, _st),) = [(s.parse_formatted(x), x.strings) for x in s.Table.parse(table) if x.type == 4]
    # 3.0: counts above 254 go to the 16-bit fields, the 8-bit ones saying 0xFF (7.5.6, 7.5.8).
    assert (p.header.length, p.core_count, p.core_count2, p.thread_count2) == (0x30, 0xFF, 300, 300)
    assert p.characteristics & s.PROCESSOR_MULTI_CORE


@pytest.mark.parametrize("size, fields", [
    (512 * KiB, (0x8000 | 512, 0)),           # granularity bit: KiB
    (16 * GiB, (16384, 0)),
    (32 * GiB - 2 * MiB, (0x7FFE, 0)),
    (32 * GiB - MiB, (0x7FFF, 32767)),        # "32 GB-1 MB or greater": 7FFFh and the extended size
    (64 * GiB, (0x7FFF, 65536)),
])
def test_memory_device_size(size, fields):
    assert s.device_size(size) == fields


@pytest.mark.parametrize("size, fields", [
    (256 * MiB, (256 * 1024, 0)),
    (2 * 1024 * GiB - KiB, (0x7FFFFFFF, 0)),
    (2 * 1024 * GiB, (0x80000000, 2 * 1024 * GiB)),   # 2 TB and up: 8000 0000h and bytes
])
def test_array_capacity(size, fields):
    assert s.array_capacity(size) == fields


def test_mapped_range_beyond_4_tib_is_extended():
    assert s.mapped_range(4 * GiB, GiB)["ending_address"] == 5 * GiB // KiB - 1
    far = s.mapped_range(0, 4 * 1024 * GiB)
    assert (far["starting_address"], far["ending_address"]) == (0xFFFFFFFF, 0xFFFFFFFF)
    assert (far["extended_starting_address"], far["extended_ending_address"]) == (0, 4 * 1024 * GiB - 1)


def test_string_set_encoding():
    assert s.StringSet().build([]) == b"\0\0"
    assert s.StringSet().build(["a", "bc"]) == b"a\0bc\0\0"
    assert s.StringSet().parse(b"a\0bc\0\0") == ["a", "bc"]
    assert s.StringSet().parse(b"\0\0") == []
    with pytest.raises(Exception):
        s.StringSet().build([""])


def test_locate_keeps_the_checksums():
    for entry_point in (smbios.EP_21, smbios.EP_30):
        anchor, _table = smbios.build(1, 64 * MiB, entry_point=entry_point)
        placed = smbios.locate(anchor, 0xF5A00)
        assert s.sums_to_zero(placed) and (entry_point == smbios.EP_30 or s.sums_to_zero(placed[0x10:]))
        assert 0xF5A00 .to_bytes(4, "little") in placed


def test_cpu_identity_from_cpuid():
    regs = {0: (0xD, *(int.from_bytes(x, "little") for x in (b"Genu", b"ntel", b"ineI"))),
            1: (0x000306C3, 0, 0, 0xBFEBFBFF), 0x80000000: (0x80000004, 0, 0, 0)}
    brand = b"Example CPU @ 3.40GHz".ljust(48, b"\0")
    for i, leaf in enumerate((0x80000002, 0x80000003, 0x80000004)):
        chunk = brand[16 * i:16 * i + 16]
        regs[leaf] = tuple(int.from_bytes(chunk[j:j + 4], "little") for j in range(0, 16, 4))
    cpu = smbios.CpuIdentity.from_cpuid(lambda leaf: regs[leaf])
    assert (cpu.vendor, cpu.brand, cpu.signature, cpu.features) == \
        ("GenuineIntel", "Example CPU @ 3.40GHz", 0x000306C3, 0xBFEBFBFF)


# -- dmidecode -------------------------------------------------------------------------------------

def _dmidecode(tmp_path, anchor: bytes, table: bytes, *args: str) -> str:
    """dmidecode's reading of a dump as its --dump-bin writes one: the entry point at offset 0,
    saying the table is at 0x20, where the table follows."""
    tool = require_tool("dmidecode", "dmidecode")
    dump = tmp_path / "smbios.bin"
    dump.write_bytes(smbios.locate(anchor, 0x20).ljust(0x20, b"\0") + table)
    run = subprocess.run([tool, "--from-dump", str(dump), *args], capture_output=True, text=True, timeout=30)
    assert run.returncode == 0, run.stderr
    assert "Wrong DMI structures" not in run.stdout + run.stderr     # count and length as announced
    return run.stdout


def _sizes(text: str) -> int:
    units = {"kB": KiB, "MB": MiB, "GB": GiB}
    return sum(int(n) * units[u] for n, u in re.findall(r"^\tSize: (\d+) (kB|MB|GB)$", text, re.M))


@pytest.mark.parametrize("entry_point, says", [(smbios.EP_21, "SMBIOS 2.8 present."),
                                               (smbios.EP_30, "SMBIOS 3.0.0 present.")])
@pytest.mark.parametrize("cpus, ram", [(2, 256 * MiB), (5, 20 * GiB)])
def test_dmidecode_reads_the_machine(tmp_path, entry_point, says, cpus, ram):
    uuid = UUID("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0")
    cpu = smbios.CpuIdentity(vendor="GenuineIntel", brand="Example CPU", signature=0x000306C3, features=0xBFEBFBFF)
    anchor, table = smbios.build(cpus, ram, cpu=cpu, uuid=uuid, entry_point=entry_point)
    everything = _dmidecode(tmp_path, anchor, table)
    assert says in everything
    assert _dmidecode(tmp_path, anchor, table, "-s", "system-manufacturer").strip() == "hvm"
    assert _dmidecode(tmp_path, anchor, table, "-s", "system-product-name").strip() == \
        "Standard PC (i440FX + PIIX, 1996)"
    assert _dmidecode(tmp_path, anchor, table, "-s", "system-uuid").strip() == str(uuid)

    processors = _dmidecode(tmp_path, anchor, table, "-t", "processor")
    assert processors.count("Processor Information") == cpus
    assert processors.count("Manufacturer: GenuineIntel") == cpus
    assert processors.count("ID: C3 06 03 00 FF FB EB BF") == cpus       # leaf 1 EAX, then EDX
    assert processors.count("Status: Populated, Enabled") == cpus

    memory = _dmidecode(tmp_path, anchor, table, "-t", "memory")
    assert _sizes(memory) == ram
    assert f"Number Of Devices: {-(-ram // (16 * GiB))}" in memory
    mapped = _dmidecode(tmp_path, anchor, table, "-t", "19")
    ranges = re.findall(r"Range Size: (\d+) (MB|GB)", mapped)
    assert sum(int(n) * {"MB": MiB, "GB": GiB}[u] for n, u in ranges) == ram
    assert "Status: No errors detected" in _dmidecode(tmp_path, anchor, table, "-t", "32")
