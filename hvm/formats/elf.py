"""ELF headers a loader needs (System V gABI, "ELF Header", "Program Header", "Note Section").

Only what booting takes is declared: the file header, program headers, section headers (a Xen PV
kernel's notes may sit in SHT_NOTE sections only) and note headers, in both classes, little-endian
(x86 only).  Symbols and DWARF stay with pyelftools, imported by the code
that needs them; the boot path avoids it because pyelftools loads its DWARF readers with
``ELFFile`` and that costs the VMM about 2 MiB of resident memory.
"""
from __future__ import annotations

from construct import Const, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

ELFCLASS32 = 1
ELFCLASS64 = 2
ELFDATA2LSB = 1
EM_386 = 3
EM_X86_64 = 62
PT_LOAD = 1
PT_NOTE = 4
SHT_NOTE = 7

ElfIdent = Struct(
    "magic" / Const(b"\x7fELF"),
    "elfclass" / Int8ul,
    "data" / Int8ul,
    "version" / Int8ul,
    "osabi" / Int8ul,
    Padding(8),
)


def _ehdr(addr):
    return Struct(
        "ident" / ElfIdent,
        "e_type" / Int16ul,
        "e_machine" / Int16ul,
        "e_version" / Int32ul,
        "e_entry" / addr,
        "e_phoff" / addr,
        "e_shoff" / addr,
        "e_flags" / Int32ul,
        "e_ehsize" / Int16ul,
        "e_phentsize" / Int16ul,
        "e_phnum" / Int16ul,
        "e_shentsize" / Int16ul,
        "e_shnum" / Int16ul,
        "e_shstrndx" / Int16ul,
    )


Elf32Ehdr = _ehdr(Int32ul)
Elf64Ehdr = _ehdr(Int64ul)

Elf32Phdr = Struct(
    "p_type" / Int32ul, "p_offset" / Int32ul, "p_vaddr" / Int32ul, "p_paddr" / Int32ul,
    "p_filesz" / Int32ul, "p_memsz" / Int32ul, "p_flags" / Int32ul, "p_align" / Int32ul,
)
# The 64-bit layout moves p_flags up to keep the 64-bit fields aligned.
Elf64Phdr = Struct(
    "p_type" / Int32ul, "p_flags" / Int32ul, "p_offset" / Int64ul, "p_vaddr" / Int64ul,
    "p_paddr" / Int64ul, "p_filesz" / Int64ul, "p_memsz" / Int64ul, "p_align" / Int64ul,
)


def _shdr(word):
    return Struct(
        "sh_name" / Int32ul, "sh_type" / Int32ul, "sh_flags" / word, "sh_addr" / word,
        "sh_offset" / word, "sh_size" / word, "sh_link" / Int32ul, "sh_info" / Int32ul,
        "sh_addralign" / word, "sh_entsize" / word,
    )


Elf32Shdr = _shdr(Int32ul)
Elf64Shdr = _shdr(Int64ul)
# Same in both classes; name and descriptor follow, each padded to 4 bytes.
ElfNhdr = Struct("n_namesz" / Int32ul, "n_descsz" / Int32ul, "n_type" / Int32ul)

assert (Elf32Ehdr.sizeof(), Elf64Ehdr.sizeof()) == (52, 64)
assert (Elf32Phdr.sizeof(), Elf64Phdr.sizeof(), ElfNhdr.sizeof()) == (32, 56, 12)
assert (Elf32Shdr.sizeof(), Elf64Shdr.sizeof()) == (40, 64)

HEADERS = {ELFCLASS32: (Elf32Ehdr, Elf32Phdr), ELFCLASS64: (Elf64Ehdr, Elf64Phdr)}


class ElfFormatError(ValueError):
    """The bytes are not a little-endian ELF file whose headers lie within the file."""


def read_headers(data: bytes):
    """The file header and the program header table of ``data``, every range checked.

    Returns ``(ehdr, phdrs)``; raises ElfFormatError saying what is wrong.
    """
    if len(data) < ElfIdent.sizeof() or data[:4] != b"\x7fELF":
        raise ElfFormatError("no ELF magic")
    ident = ElfIdent.parse(data)
    if ident.elfclass not in HEADERS:
        raise ElfFormatError(f"unknown ELF class {ident.elfclass}")
    if ident.data != ELFDATA2LSB:
        raise ElfFormatError("big-endian ELF cannot be an x86 image")
    ehdr_format, phdr_format = HEADERS[ident.elfclass]
    if len(data) < ehdr_format.sizeof():
        raise ElfFormatError(f"truncated file: {len(data)} bytes, shorter than the ELF header")
    ehdr = ehdr_format.parse(data)
    if ehdr.e_phnum and ehdr.e_phentsize < phdr_format.sizeof():
        raise ElfFormatError(f"e_phentsize {ehdr.e_phentsize} is smaller than a program header")
    table_end = ehdr.e_phoff + ehdr.e_phnum * ehdr.e_phentsize
    if table_end > len(data):
        raise ElfFormatError(f"truncated file: program headers end at {table_end:#x} "
                             f"but the file has {len(data):#x} bytes")
    if not ehdr.e_phnum:
        # Nothing to read; e_phentsize may then be anything, even 0, which no step can be.
        return ehdr, []
    phdrs = [phdr_format.parse(data[off:off + phdr_format.sizeof()])
             for off in range(ehdr.e_phoff, table_end, ehdr.e_phentsize)]
    return ehdr, phdrs


def read_section_headers(data: bytes, ehdr) -> list:
    """The section header table of ``data`` (whose file header is ``ehdr``), its range checked.

    Sections are not needed to load a file, only to find what a loader may look for outside the
    segments; a file without a table (e_shnum 0) has none.
    """
    shdr_format = Elf64Shdr if ehdr.ident.elfclass == ELFCLASS64 else Elf32Shdr
    if not ehdr.e_shnum:
        return []
    if ehdr.e_shentsize < shdr_format.sizeof():
        raise ElfFormatError(f"e_shentsize {ehdr.e_shentsize} is smaller than a section header")
    table_end = ehdr.e_shoff + ehdr.e_shnum * ehdr.e_shentsize
    if table_end > len(data):
        raise ElfFormatError(f"truncated file: section headers end at {table_end:#x} "
                             f"but the file has {len(data):#x} bytes")
    return [shdr_format.parse(data[off:off + shdr_format.sizeof()])
            for off in range(ehdr.e_shoff, table_end, ehdr.e_shentsize)]


__all__ = ["ELFCLASS32", "ELFCLASS64", "EM_386", "EM_X86_64", "PT_LOAD", "PT_NOTE", "SHT_NOTE",
           "ElfIdent", "Elf32Ehdr", "Elf64Ehdr", "Elf32Phdr", "Elf64Phdr", "Elf32Shdr", "Elf64Shdr",
           "ElfNhdr", "ElfFormatError", "read_headers", "read_section_headers"]
