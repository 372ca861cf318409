"""hvm's ACPI tables: every checksum holds, pointers lead where they should, and Intel's iasl
(acpica-tools) disassembles each table without complaint and recompiles the DSDT cleanly."""
from __future__ import annotations

import subprocess

import pytest

from conftest import require_tool
from hvm.firmware.acpi import AcpiPlatform, IsaDevice, PciRoot, build, loader_files
from hvm.formats import aml
from hvm.formats.acpi import FadtBody, MadtBody, Rsdp, SdtHeader, sums_to_zero
from hvm.formats.fw_cfg import LoaderCommand


def _platform(cpus=2, pci=None):
    return AcpiPlatform(cpus=cpus, ioapic_id=cpus, ioapic_address=0xFEC00000, lapic_address=0xFEE00000,
                        pm_base=0x600, s5_sleep_type=0, reset_port=0xCF9, reset_value=6, has_8042=True,
                        century_cmos_index=0x32,
                        isa_devices=[IsaDevice("COM1", "PNP0501", [(0x3F8, 8)], [4], uid=1),
                                     IsaDevice("RTC", "PNP0B00", [(0x70, 2)], [8])], pci=pci,
                        smi_cmd=0xB2 if pci else 0, acpi_enable=0xF1 if pci else 0)


# What SeaBIOS routes the PIIX3's PIRQ A-D to (its pciinit.c), and QEMU's pc 32-bit window at 256 MiB.
SEABIOS_PIRQS = [10, 10, 11, 11]
PC_PCI = PciRoot(SEABIOS_PIRQS, (0x10000000, 0xFEBFFFFF))


def _run_loader(files: dict[str, bytes], script: bytes, at: dict[str, int]) -> dict[int, bytes]:
    """Do what firmware does with a table-loader script (QEMU's bios-linker-loader format):
    place each allocated file at ``at[name]``, add the addresses, fix the checksums."""
    placed: dict[str, bytearray] = {}
    for i in range(0, len(script), 128):
        cmd = LoaderCommand.parse(script[i:i + 128])
        a = cmd.args
        if cmd.command == "allocate":
            assert at[a.file] % a.align == 0
            placed[a.file] = bytearray(files[a.file])
        elif cmd.command == "add_pointer":
            field = placed[a.dest][a.offset:a.offset + a.size]
            value = int.from_bytes(field, "little") + at[a.src]
            placed[a.dest][a.offset:a.offset + a.size] = value.to_bytes(a.size, "little")
        else:
            data = placed[a.file]
            data[a.offset] = (data[a.offset] - sum(data[a.start:a.start + a.length])) & 0xFF
    return {at[name]: bytes(data) for name, data in placed.items()}


def _read(memory: dict[int, bytes], address: int, length: int) -> bytes:
    for base, data in memory.items():
        if base <= address and address + length <= base + len(data):
            return data[address - base:address - base + length]
    raise AssertionError(f"{address:#x} is in no placed file")


@pytest.mark.parametrize("pirqs", [SEABIOS_PIRQS, [None, 5, None, 9]])
def test_table_loader_places_and_links_the_tables(pirqs):
    pci = PciRoot(pirqs, PC_PCI.mmio_window)
    files = loader_files(_platform(pci=pci))
    # The file sizes do not depend on the routing: firmware learns them before it routes.
    assert len(files.tables) == len(loader_files(_platform(pci=PC_PCI)).tables)
    mem = _run_loader({"etc/acpi/rsdp": files.rsdp, "etc/acpi/tables": files.tables}, files.loader,
                      {"etc/acpi/rsdp": 0xF5A40, "etc/acpi/tables": 0x0FFFE000})
    rsdp_raw = mem[0xF5A40]
    assert rsdp_raw[:8] == b"RSD PTR " and sums_to_zero(rsdp_raw[:20]) and sums_to_zero(rsdp_raw[:36])
    rsdp = Rsdp.parse(rsdp_raw)

    def table(address, signature):
        hdr = SdtHeader.parse(_read(mem, address, 36))
        assert hdr.signature == signature
        body = _read(mem, address, hdr.length)
        assert sums_to_zero(body), signature
        return body

    xsdt = table(rsdp.xsdt_address, b"XSDT")
    rsdt = table(rsdp.rsdt_address, b"RSDT")
    via_x = [int.from_bytes(xsdt[i:i + 8], "little") for i in range(36, len(xsdt), 8)]
    assert via_x == [int.from_bytes(rsdt[i:i + 4], "little") for i in range(36, len(rsdt), 4)]
    fadt = FadtBody.parse(table(via_x[0], b"FACP")[36:])
    assert fadt.dsdt == fadt.x_dsdt and (fadt.smi_cmd, fadt.acpi_enable) == (0xB2, 0xF1)
    assert _read(mem, fadt.firmware_ctrl, 4) == b"FACS" and fadt.firmware_ctrl % 64 == 0
    assert b"PNP0A03" not in table(fadt.dsdt, b"DSDT")   # (an EISA ID is compressed, never ASCII)
    madt = table(via_x[1], b"APIC")
    overrides, cursor = {}, 44
    while cursor < len(madt):
        if madt[cursor] == 2:
            overrides[madt[cursor + 3]] = int.from_bytes(madt[cursor + 8:cursor + 10], "little")
        cursor += madt[cursor + 1]
    # Each IRQ a PIRQ line is routed to is level-triggered, active high (flags 0xD), as QEMU says.
    level_high = {irq: 0xD for irq in pirqs if irq is not None}
    assert overrides == {0: 0, 9: 0xD, **level_high}


def _tables(t):
    out = {}
    for name, addr in t.addresses.items():
        if name in ("RSDP", "FACS"):
            continue
        off = addr - t.base
        hdr = SdtHeader.parse(t.blob[off:off + SdtHeader.sizeof()])
        out[hdr.signature.decode()] = t.blob[off:off + hdr.length]
    return out


def test_checksums_and_pointers():
    t = build(_platform())
    rsdp = Rsdp.parse(t.blob[:Rsdp.sizeof()])
    assert sums_to_zero(t.blob[:20]) and sums_to_zero(t.blob[:36])
    tables = _tables(t)
    assert set(tables) == {"DSDT", "FACP", "APIC", "XSDT", "RSDT"}
    assert all(sums_to_zero(body) for body in tables.values())
    assert rsdp.xsdt_address == t.addresses["XSDT"] and rsdp.rsdt_address == t.addresses["RSDT"]
    xsdt = tables["XSDT"][36:]
    pointed = {int.from_bytes(xsdt[i:i + 8], "little") for i in range(0, len(xsdt), 8)}
    assert pointed == {t.addresses["FACP"], t.addresses["APIC"]}
    fadt = FadtBody.parse(tables["FACP"][36:])
    assert (fadt.dsdt, fadt.x_dsdt, fadt.firmware_ctrl) == (t.addresses["DSDT"],) * 2 + (t.addresses["FACS"],)
    assert t.addresses["FACS"] % 64 == 0 and t.blob[t.addresses["FACS"] - t.base:][:4] == b"FACS"
    assert (fadt.pm1a_cnt_blk, fadt.pm_tmr_blk, fadt.reset_reg.address, fadt.reset_value) == (0x604, 0x608, 0xCF9, 6)


def test_madt_lists_each_cpu_and_the_pc_overrides():
    madt = _tables(build(_platform(cpus=3)))["APIC"]
    body = MadtBody.parse(madt[36:44])
    assert body.lapic_address == 0xFEE00000
    entries, cursor = [], 44
    while cursor < len(madt):
        entries.append(madt[cursor:cursor + madt[cursor + 1]])
        cursor += madt[cursor + 1]
    assert [e[3] for e in entries if e[0] == 0] == [0, 1, 2]                 # APIC IDs
    overrides = {e[3]: int.from_bytes(e[4:8], "little") for e in entries if e[0] == 2}
    assert overrides == {0: 2, 9: 9}


def test_aml_encodings():
    assert aml.pkg_length(10) == bytes([11])
    assert aml.pkg_length(0x3E) == bytes([0x3F])
    assert aml.pkg_length(0x3F) == bytes([0x41, 0x04])       # 0x41 total: two bytes
    assert aml.pkg_length(0x1000) == bytes([0x83, 0x00, 0x01])  # 0x1003 total: three bytes, low nibble 3
    assert aml.eisa_id("PNP0501") == b"\x0c\x41\xd0\x05\x01"
    assert aml.name_string("\\_SB.COM1") == b"\\\x2e_SB_COM1"
    with pytest.raises(ValueError):
        aml.name_seg("com1")


@pytest.mark.parametrize("pci", [None, PC_PCI])
def test_iasl_accepts_every_table(tmp_path, pci):
    require_tool("iasl", "acpica-tools")
    for sig, body in _tables(build(_platform(pci=pci))).items():
        path = tmp_path / f"{sig.lower()}.dat"
        path.write_bytes(body)
        r = subprocess.run(["iasl", "-d", str(path)], capture_output=True, text=True, cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "Error" not in out and "Invalid" not in out and "checksum" not in out.lower(), out
    # A 32-bit PM timer (TMR_VAL_EXT), so an OS that reads it seldom (Xen between its overflow
    # checks while it builds dom0) does not lose a 24-bit wrap every 4.7 s.
    assert "32-bit PM Timer (V1) : 1" in (tmp_path / "facp.dsl").read_text()
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert 'EisaId ("PNP0501")' in dsl and "Name (\\_S5, Package (0x04)" in dsl and "IRQNoFlags" in dsl
    if pci is not None:
        # The root bridge with its windows, each slot's pins on the rotating PIRQ links, and the
        # links on the firmware's IRQs (level, active high, shared).
        flat = " ".join(dsl.split())
        assert 'EisaId ("PNP0A03")' in flat and "WordBusNumber" in flat and "0xFEBFFFFF" in flat
        # PIIX rotation (PIIX3 datasheet; QEMU and SeaBIOS agree): slot 1 INTA -> PIRQA, INTB -> PIRQB,
        # slot 2 INTA -> PIRQB, slot 4 INTD -> PIRQC.
        for slot, pin, link in ((1, "Zero", "LNKA"), (1, "One", "LNKB"), (2, "Zero", "LNKB"), (4, "0x03", "LNKC")):
            assert f"Package (0x04) {{ 0x000{slot}FFFF, {pin}, {link}, Zero }}" in flat
        assert "Interrupt (ResourceConsumer, Level, ActiveHigh, Shared, ,, ) { 0x0000000A, }" in flat
    r = subprocess.run(["iasl", "-p", str(tmp_path / "re"), str(tmp_path / "dsdt.dsl")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "0 Errors, 0 Warnings" in r.stdout, r.stdout + r.stderr
