"""hvm's ACPI tables: every checksum holds, pointers lead where they should, and Intel's iasl
(acpica-tools) disassembles each table without complaint and recompiles the DSDT cleanly."""
from __future__ import annotations

import subprocess

import pytest

from conftest import require_tool
from hvm.firmware.acpi import AcpiPlatform, IsaDevice, build
from hvm.formats import aml
from hvm.formats.acpi import FadtBody, MadtBody, Rsdp, SdtHeader, sums_to_zero


def _platform(cpus=2):
    return AcpiPlatform(cpus=cpus, ioapic_id=cpus, ioapic_address=0xFEC00000, lapic_address=0xFEE00000,
                        pm_base=0x600, s5_sleep_type=0, reset_port=0xCF9, reset_value=6, has_8042=True,
                        century_cmos_index=0x32,
                        isa_devices=[IsaDevice("COM1", "PNP0501", [(0x3F8, 8)], [4], uid=1),
                                     IsaDevice("RTC", "PNP0B00", [(0x70, 2)], [8])])


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


def test_iasl_accepts_every_table(tmp_path):
    require_tool("iasl", "acpica-tools")
    for sig, body in _tables(build(_platform())).items():
        path = tmp_path / f"{sig.lower()}.dat"
        path.write_bytes(body)
        r = subprocess.run(["iasl", "-d", str(path)], capture_output=True, text=True, cwd=tmp_path)
        out = r.stdout + r.stderr
        assert r.returncode == 0 and "Error" not in out and "Invalid" not in out and "checksum" not in out.lower(), out
    dsl = (tmp_path / "dsdt.dsl").read_text()
    assert 'EisaId ("PNP0501")' in dsl and "Name (\\_S5, Package (0x04)" in dsl and "IRQNoFlags" in dsl
    r = subprocess.run(["iasl", "-p", str(tmp_path / "re"), str(tmp_path / "dsdt.dsl")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 0 and "0 Errors, 0 Warnings" in r.stdout, r.stdout + r.stderr
