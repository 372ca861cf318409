"""PT_LOAD segments and notes of an ELF kernel, every range checked against the file: shared by the
multiboot, Linux 64-bit and PVH loaders (System V gABI, "Program Header" and "Note Section")."""
from __future__ import annotations

from dataclasses import dataclass

from ..errors import ImageError
from ..formats import ConstructError
from ..formats.elf import PT_LOAD, PT_NOTE, ElfFormatError, ElfNhdr, read_headers
from ..memory import GuestMemory
from .entry import Mode
from .flat import require_clear_of_scratch, require_ram


@dataclass
class Chunk:
    """A piece of the kernel image: ``data`` copied to ``addr``, then zeroed up to ``memsz``."""

    addr: int
    data: memoryview
    memsz: int
    what: str

def check_segment_in_file(path: str, what: str, ph, data: bytes) -> None:
    """Refuse a program header whose file bytes are not all in ``data`` or that claims more file
    bytes than memory."""
    if ph.p_filesz > ph.p_memsz:
        raise ImageError(path, f"malformed ELF: {what} has p_filesz {ph.p_filesz:#x} > "
                               f"p_memsz {ph.p_memsz:#x}")
    if ph.p_offset + ph.p_filesz > len(data):
        raise ImageError(path, f"truncated file: {what} needs file bytes [{ph.p_offset:#x}, "
                               f"{ph.p_offset + ph.p_filesz:#x}) but the file has {len(data):#x}")


def check_chunks(mem: GuestMemory, path: str, chunks: list[Chunk], mode: Mode) -> int:
    """Refuse chunks outside RAM or over the CPU setup's scratch area; returns the image's end."""
    for c in chunks:
        require_ram(mem, path, c.addr, c.memsz, c.what)
        require_clear_of_scratch(path, mode, c.addr, c.memsz, c.what)
    return max(c.addr + c.memsz for c in chunks)


def write_chunks(mem: GuestMemory, chunks: list[Chunk]) -> None:
    """Copy each chunk in and zero the rest of its memory size (bss)."""
    for c in chunks:
        mem.write(c.addr, c.data)
        mem.fill(c.addr + len(c.data), c.memsz - len(c.data))


def elf_chunks(path: str, data: bytes, machines: tuple[int, ...]) -> tuple[list[Chunk], int, int]:
    """PT_LOAD segments at their physical addresses, the physical entry point, and the ELF class."""
    try:
        ehdr, headers = read_headers(data)
    except (ElfFormatError, ConstructError) as exc:
        raise ImageError(path, f"malformed ELF: {exc}") from None
    if ehdr.e_machine not in machines:
        raise ImageError(path, f"ELF is for machine {ehdr.e_machine}, not x86")
    phdrs = [ph for ph in headers if ph.p_type == PT_LOAD]
    e_entry, elfclass = ehdr.e_entry, 32 if ehdr.ident.elfclass == 1 else 64
    if not phdrs:
        raise ImageError(path, "ELF has no PT_LOAD segment")

    chunks = []
    for i, ph in enumerate(phdrs):
        what = f"ELF segment {i} (paddr {ph.p_paddr:#x})"
        check_segment_in_file(path, what, ph, data)
        if ph.p_memsz:
            chunks.append(Chunk(ph.p_paddr, memoryview(data)[ph.p_offset:ph.p_offset + ph.p_filesz],
                                 ph.p_memsz, what))
    if not chunks:
        raise ImageError(path, "ELF has no PT_LOAD segment with a size (every p_memsz is 0)")

    # e_entry is a virtual address; for a higher-half kernel (vaddr != paddr) the CPU starts with
    # paging off, so it must be moved into the segment's physical placement.
    entry = e_entry
    for ph in phdrs:
        if ph.p_vaddr != ph.p_paddr and ph.p_vaddr <= e_entry < ph.p_vaddr + ph.p_memsz:
            entry = e_entry - ph.p_vaddr + ph.p_paddr
            break
    return chunks, entry, elfclass


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def elf_notes(path: str, data: bytes) -> dict[tuple[str, int], bytes]:
    """The notes in the PT_NOTE segments, keyed by (owner name, type)."""
    try:
        _, headers = read_headers(data)
    except (ElfFormatError, ConstructError) as exc:
        raise ImageError(path, f"malformed ELF: {exc}") from None
    notes: dict[tuple[str, int], bytes] = {}
    for ph in headers:
        if ph.p_type != PT_NOTE:
            continue
        end = ph.p_offset + ph.p_filesz
        if end > len(data):
            raise ImageError(path, f"truncated file: a note segment ends at {end:#x}, the file has "
                                   f"{len(data):#x} bytes")
        cursor = ph.p_offset
        while cursor + ElfNhdr.sizeof() <= end:
            nh = ElfNhdr.parse(data[cursor:cursor + ElfNhdr.sizeof()])
            name_at = cursor + ElfNhdr.sizeof()
            desc_at = name_at + _pad4(nh.n_namesz)
            cursor = desc_at + _pad4(nh.n_descsz)
            if cursor > end:
                raise ImageError(path, f"malformed ELF: a note at {name_at - ElfNhdr.sizeof():#x} "
                                       f"runs past its segment")
            owner = data[name_at:name_at + nh.n_namesz].rstrip(b"\0").decode("latin-1")
            notes.setdefault((owner, nh.n_type), data[desc_at:desc_at + nh.n_descsz])
    return notes
