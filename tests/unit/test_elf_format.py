"""hvm.formats.elf against pyelftools on real ELF files, and its refusals of damaged ones."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile
from elftools.elf.enums import ENUM_E_MACHINE, ENUM_P_TYPE_BASE

from hvm.formats.elf import ElfFormatError, read_headers

# Real files of both classes from the host: the interpreter (ELF64) and, where present, 32-bit libs.
SAMPLES = [Path(sys.executable).resolve(), Path("/bin/sh").resolve()]
SAMPLES += [p for p in Path("/usr/lib32").glob("*.so*") if p.is_file()][:1]


@pytest.mark.parametrize("path", SAMPLES, ids=str)
def test_headers_match_pyelftools(path: Path) -> None:
    data = path.read_bytes()
    ehdr, phdrs = read_headers(data)
    with path.open("rb") as f:
        ref = ELFFile(f)
        assert ehdr.ident.elfclass * 32 == ref.elfclass
        assert ehdr.e_machine == ENUM_E_MACHINE[ref["e_machine"]]
        for field in ("e_entry", "e_phoff", "e_phnum", "e_phentsize"):
            assert ehdr[field] == ref[field], field
        assert len(phdrs) == ref.num_segments() > 0
        for ours, theirs in zip(phdrs, (seg.header for seg in ref.iter_segments())):
            assert ENUM_P_TYPE_BASE.get(theirs.p_type, theirs.p_type) == ours.p_type
            for field in ("p_offset", "p_vaddr", "p_paddr", "p_filesz", "p_memsz", "p_flags", "p_align"):
                assert ours[field] == theirs[field], field


def test_truncated_program_header_table_is_refused() -> None:
    data = Path(sys.executable).resolve().read_bytes()
    ehdr, _ = read_headers(data)
    cut = data[:ehdr.e_phoff + ehdr.e_phentsize]  # the first header only
    with pytest.raises(ElfFormatError, match="truncated file: program headers end at"):
        read_headers(cut)


@pytest.mark.parametrize("data, reason", [
    (b"", "no ELF magic"),
    (b"MZ" + bytes(62), "no ELF magic"),
    (b"\x7fELF\x03\x01" + bytes(58), "unknown ELF class 3"),
    (b"\x7fELF\x01\x02" + bytes(58), "big-endian"),
    (b"\x7fELF\x02\x01" + bytes(30), "shorter than the ELF header"),
])
def test_damaged_identification_is_refused(data: bytes, reason: str) -> None:
    with pytest.raises(ElfFormatError, match=reason):
        read_headers(data)


def test_short_program_header_entries_are_refused() -> None:
    data = bytearray(Path(sys.executable).resolve().read_bytes()[:0x1000])
    data[54:56] = (16).to_bytes(2, "little")  # e_phentsize of an ELF64 header
    with pytest.raises(ElfFormatError, match="e_phentsize 16"):
        read_headers(bytes(data))
