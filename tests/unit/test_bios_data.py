"""The real-mode handlers hvm writes at F000:0000 are bios_stub.S assembled: the bytes and entry
points kept in bios_data.py are checked against GNU as's output here, so the source is the truth."""
from __future__ import annotations

import subprocess

from conftest import REPO, require_tool
from hvm.firmware.bios_data import STUB_CODE, STUB_DATA, STUB_ENTRIES, STUB_TABLE

SOURCE = REPO / "hvm" / "firmware" / "bios_stub.S"


def test_embedded_stub_is_the_assembled_source(tmp_path):
    obj, elf, raw = tmp_path / "stub.o", tmp_path / "stub.elf", tmp_path / "stub.bin"
    subprocess.run([require_tool("as", "binutils"), "--32", "-o", str(obj), str(SOURCE)], check=True)
    subprocess.run(["ld", "-m", "elf_i386", "-e", "0", "-Ttext=0", "-o", str(elf), str(obj)], check=True)
    subprocess.run(["objcopy", "-O", "binary", str(elf), str(raw)], check=True)
    assembled = raw.read_bytes()
    assert assembled[:len(STUB_CODE)] == STUB_CODE
    assert not any(assembled[len(STUB_CODE):STUB_DATA])  # nothing of the code left out
    symbols = {name: int(addr, 16) for addr, _, name in
               (line.split() for line in subprocess.run(["nm", str(elf)], capture_output=True, text=True,
                                                        check=True).stdout.splitlines())}
    assert {name: symbols[name] for name in STUB_ENTRIES} == STUB_ENTRIES
    assert symbols["ext_kib"] == STUB_DATA and symbols["e820_table"] == STUB_TABLE
