"""A Xen PV kernel's ELF notes and what they mean for building its domain, as libelf reads them.

The authority is Xen's libelf (xen/common/libelf/libelf-dominfo.c: which notes exist, their types,
the FEATURES string, the defaults and the sanity checks; libelf-loader.c: which program headers
load and where), the toolstack's ELF loader (tools/libs/guest/xg_dom_elfloader.c: the guest type,
the domU check) and the note numbers of xen/include/public/elfnote.h. Notes are read from PT_NOTE
segments; when those hold no Xen note, from SHT_NOTE sections; when neither does, from the legacy
``__xen_guest`` string section.

One deliberate difference: a kernel may mark features it needs with ``!``; libelf only refuses
names it does not know, the toolstack refuses ``dom0`` and auto-translation. hvm refuses every
required feature it does not provide (``REQUIRABLE_FEATURES``), so such a kernel fails here with
the reason instead of later inside the guest.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from hvm.boot.elf_segments import check_segment_in_file
from hvm.errors import ImageError
from hvm.formats import ConstructError
from hvm.formats.elf import (ELFCLASS32, EM_X86_64, PT_LOAD, PT_NOTE, SHT_NOTE, ElfFormatError, ElfNhdr,
                             read_headers, read_section_headers)

from . import abi

U64 = (1 << 64) - 1
PF_X, PF_W, PF_R = 1, 2, 4

# How libelf reads each note's descriptor (elf_xen_parse_note's table).
_INT, _STR, _RAW = "int", "str", "raw"
NOTE_KINDS = {
    abi.XEN_ELFNOTE_ENTRY: ("ENTRY", _INT),
    abi.XEN_ELFNOTE_HYPERCALL_PAGE: ("HYPERCALL_PAGE", _INT),
    abi.XEN_ELFNOTE_VIRT_BASE: ("VIRT_BASE", _INT),
    abi.XEN_ELFNOTE_PADDR_OFFSET: ("PADDR_OFFSET", _INT),
    abi.XEN_ELFNOTE_XEN_VERSION: ("XEN_VERSION", _STR),
    abi.XEN_ELFNOTE_GUEST_OS: ("GUEST_OS", _STR),
    abi.XEN_ELFNOTE_GUEST_VERSION: ("GUEST_VERSION", _STR),
    abi.XEN_ELFNOTE_LOADER: ("LOADER", _STR),
    abi.XEN_ELFNOTE_PAE_MODE: ("PAE_MODE", _STR),
    abi.XEN_ELFNOTE_FEATURES: ("FEATURES", _STR),
    abi.XEN_ELFNOTE_BSD_SYMTAB: ("BSD_SYMTAB", _STR),
    abi.XEN_ELFNOTE_HV_START_LOW: ("HV_START_LOW", _INT),
    abi.XEN_ELFNOTE_L1_MFN_VALID: ("L1_MFN_VALID", _RAW),
    abi.XEN_ELFNOTE_SUSPEND_CANCEL: ("SUSPEND_CANCEL", _INT),
    abi.XEN_ELFNOTE_INIT_P2M: ("INIT_P2M", _INT),
    abi.XEN_ELFNOTE_MOD_START_PFN: ("MOD_START_PFN", _INT),
    abi.XEN_ELFNOTE_SUPPORTED_FEATURES: ("SUPPORTED_FEATURES", _INT),
    abi.XEN_ELFNOTE_PHYS32_ENTRY: ("PHYS32_ENTRY", _INT),
    abi.XEN_ELFNOTE_PHYS32_RELOC: ("PHYS32_RELOC", _RAW),
}

# Features a kernel may require ('!name') and still get a domain from hvm:
# writable_page_tables: Xen emulates a PV guest's direct writes to its own page tables
#   (VMASST_TYPE_writable_pagetables), and Linux lists it as required;
# pae_pgdir_above_4gb: always true of a 64-bit guest, whose L4 may be anywhere.
REQUIRABLE_FEATURES = frozenset({abi.XENFEAT_WRITABLE_PAGE_TABLES, abi.XENFEAT_PAE_PGDIR_ABOVE_4GB})
_WHY_NOT = {
    abi.XENFEAT_DOM0: "the kernel cannot run unprivileged (as a domU)",
    abi.XENFEAT_AUTO_TRANSLATED_PHYSMAP: "auto-translated PV guests are gone from Xen and not built "
                                         "by hvm",
    abi.XENFEAT_SUPERVISOR_MODE_KERNEL: "a 64-bit PV kernel runs in ring 3",
}
_FEATURE_NAMES = {bit: name for name, bit in abi.XENFEAT_NAMES.items()}


@dataclass(frozen=True)
class LoadSegment:
    """A loadable program header: ``filesz`` bytes of the file at ``offset`` go to ``paddr``, then
    zeros up to ``memsz``."""

    paddr: int
    offset: int
    filesz: int
    memsz: int


@dataclass
class XenNotes:
    """What the kernel's Xen notes say, Xen's defaults applied (libelf's ``elf_dom_parms``)."""

    source: str                             # "PT_NOTE", "SHT_NOTE" or "__xen_guest"
    raw: dict[int, int | str | bytes]       # note type -> value as read, the last note of a type wins
    virt_base: int = 0
    elf_paddr_offset: int = 0
    virt_entry: int = 0
    virt_hypercall: int | None = None
    virt_hv_start_low: int | None = None
    p2m_base: int | None = None             # INIT_P2M
    unmapped_initrd: bool = False           # MOD_START_PFN
    features_supported: int = 0             # bitmap, submap 0
    features_required: int = 0
    guest_os: str = ""
    guest_version: str = ""
    xen_version: str = ""
    loader: str = ""
    pae: str = ""
    bsd_symtab: bool = False
    suspend_cancel: bool = False
    l1_mfn_valid: list[tuple[int, int]] = field(default_factory=list)  # (mask, value) pairs
    phys32_entry: int | None = None
    # The image's extent: physical (from the program headers) and where it is mapped.
    pstart: int = 0
    pend: int = 0
    virt_kstart: int = 0
    virt_kend: int = 0

    def describe(self) -> list[str]:
        """One line per note, for --verbose."""
        lines = []
        for note_type in sorted(self.raw):
            name = NOTE_KINDS.get(note_type, (f"type {note_type}",))[0]
            value = self.raw[note_type]
            shown = f"{value:#x}" if isinstance(value, int) else repr(value)
            lines.append(f"{name} = {shown}")
        return lines


@dataclass
class PvKernel:
    """A parsed 64-bit PV kernel: its notes and the segments to load."""

    notes: XenNotes
    segments: list[LoadSegment]
    e_entry: int


def _pad4(n: int) -> int:
    return (n + 3) & ~3


def _numeric(desc: bytes) -> int:
    # libelf's elf_note_numeric: a 1, 2, 4 or 8-byte descriptor, anything else reads as 0.
    return int.from_bytes(desc, "little") if len(desc) in (1, 2, 4, 8) else 0


def _string(desc: bytes) -> str:
    return desc.split(b"\0", 1)[0].decode("latin-1")


def _iter_notes(path: str, data: bytes, start: int, end: int, where: str):
    """(type, descriptor) of each note named "Xen" in ``data[start:end]``."""
    if end > len(data) or start > end:
        raise ImageError(path, f"truncated file: the {where} at {start:#x} ends at {end:#x}, the "
                               f"file has {len(data):#x} bytes")
    cursor = start
    while cursor + ElfNhdr.sizeof() <= end:
        nh = ElfNhdr.parse(data[cursor:cursor + ElfNhdr.sizeof()])
        name_at = cursor + ElfNhdr.sizeof()
        desc_at = name_at + _pad4(nh.n_namesz)
        following = desc_at + _pad4(nh.n_descsz)
        if desc_at + nh.n_descsz > end:
            raise ImageError(path, f"malformed ELF: the note at {cursor:#x} runs past its {where}")
        if data[name_at:name_at + nh.n_namesz].split(b"\0", 1)[0] == abi.XEN_NOTE_OWNER:
            yield nh.n_type, data[desc_at:desc_at + nh.n_descsz]
        cursor = following


def _strtoull(text: str) -> int:
    """C's strtoull(text, NULL, 0): the longest valid prefix in base 16 (0x), 8 (0) or 10."""
    text = text.strip()
    if text[:2].lower() == "0x":
        digits, base = text[2:], 16
    elif text.startswith("0"):
        digits, base = text, 8
    else:
        digits, base = text, 10
    valid = "0123456789abcdef"[:base]
    n = 0
    while n < len(digits) and digits[n].lower() in valid:
        n += 1
    return int(digits[:n], base) & U64 if n else 0


def parse_features(path: str, text: str, notes: XenNotes) -> None:
    """The FEATURES string: names separated by '|', '!name' required (elf_xen_parse_features)."""
    for item in text.split("|"):
        required = item.startswith("!")
        name = item[1:] if required else item
        bit = abi.XENFEAT_NAMES.get(name)
        if bit is None:
            if required:
                raise ImageError(path, f"FEATURES note requires {name!r}, a feature Xen does not know")
            continue  # a supported feature this ABI does not name: nothing to do with it
        notes.features_supported |= 1 << bit
        if required:
            notes.features_required |= 1 << bit


def _apply_note(path: str, notes: XenNotes, note_type: int, desc: bytes) -> None:
    kind = NOTE_KINDS.get(note_type)
    if kind is None:
        return  # libelf logs unknown types and goes on
    _, form = kind
    value: int | str | bytes
    value = _numeric(desc) if form == _INT else _string(desc) if form == _STR else bytes(desc)
    notes.raw[note_type] = value
    if note_type == abi.XEN_ELFNOTE_LOADER:
        notes.loader = value
    elif note_type == abi.XEN_ELFNOTE_GUEST_OS:
        notes.guest_os = value
    elif note_type == abi.XEN_ELFNOTE_GUEST_VERSION:
        notes.guest_version = value
    elif note_type == abi.XEN_ELFNOTE_XEN_VERSION:
        notes.xen_version = value
    elif note_type == abi.XEN_ELFNOTE_PAE_MODE:
        notes.pae = value
    elif note_type == abi.XEN_ELFNOTE_BSD_SYMTAB:
        notes.bsd_symtab = value == "yes"
    elif note_type == abi.XEN_ELFNOTE_VIRT_BASE:
        notes.virt_base = value
    elif note_type == abi.XEN_ELFNOTE_ENTRY:
        notes.virt_entry = value
    elif note_type == abi.XEN_ELFNOTE_INIT_P2M:
        notes.p2m_base = value
    elif note_type == abi.XEN_ELFNOTE_MOD_START_PFN:
        notes.unmapped_initrd = bool(value)
    elif note_type == abi.XEN_ELFNOTE_PADDR_OFFSET:
        notes.elf_paddr_offset = value
    elif note_type == abi.XEN_ELFNOTE_HYPERCALL_PAGE:
        notes.virt_hypercall = value
    elif note_type == abi.XEN_ELFNOTE_HV_START_LOW:
        notes.virt_hv_start_low = value
    elif note_type == abi.XEN_ELFNOTE_SUSPEND_CANCEL:
        notes.suspend_cancel = bool(value)
    elif note_type == abi.XEN_ELFNOTE_PHYS32_ENTRY:
        notes.phys32_entry = value
    elif note_type == abi.XEN_ELFNOTE_FEATURES:
        parse_features(path, value, notes)
    elif note_type == abi.XEN_ELFNOTE_SUPPORTED_FEATURES:
        # An array of 32-bit submaps (elf_note_numeric_array); submap 0 is the only one.
        if len(desc) % 4 == 0 and len(desc) >= 4:
            notes.features_supported |= int.from_bytes(desc[:4], "little")
    elif note_type == abi.XEN_ELFNOTE_L1_MFN_VALID:
        # maddr_t-sized (64-bit) mask/value pairs (elfnote.h)
        notes.l1_mfn_valid = [(int.from_bytes(desc[i:i + 8], "little"),
                               int.from_bytes(desc[i + 8:i + 16], "little"))
                              for i in range(0, len(desc) - 15, 16)]


def _parse_guest_info(path: str, text: str, notes: XenNotes) -> None:
    """The legacy ``__xen_guest`` string: NAME=VALUE pairs separated by commas
    (elf_xen_parse_guest_info)."""
    set_base = set_hypercall = False
    for item in text.split(","):
        name, _, value = item.partition("=")
        name, value = name[:31], value[:127]
        if name == "LOADER":
            notes.loader = value
        elif name == "GUEST_OS":
            notes.guest_os = value
        elif name == "GUEST_VER":
            notes.guest_version = value
        elif name == "XEN_VER":
            notes.xen_version = value
        elif name == "PAE":
            notes.pae = value
        elif name == "BSD_SYMTAB":
            notes.bsd_symtab = True
        elif name == "VIRT_BASE":
            notes.virt_base, set_base = _strtoull(value), True
            notes.raw[abi.XEN_ELFNOTE_VIRT_BASE] = notes.virt_base
        elif name == "VIRT_ENTRY":
            notes.virt_entry = _strtoull(value)
            notes.raw[abi.XEN_ELFNOTE_ENTRY] = notes.virt_entry
        elif name == "ELF_PADDR_OFFSET":
            notes.elf_paddr_offset = _strtoull(value)
            notes.raw[abi.XEN_ELFNOTE_PADDR_OFFSET] = notes.elf_paddr_offset
        elif name == "HYPERCALL_PAGE":
            # Legacy form: a page number relative to VIRT_BASE, not an address.
            notes.virt_hypercall, set_hypercall = (_strtoull(value) << 12) & U64, True
        elif name == "FEATURES":
            parse_features(path, value, notes)
    if set_base and set_hypercall:
        notes.virt_hypercall = (notes.virt_hypercall + notes.virt_base) & U64
    if set_hypercall:
        notes.raw[abi.XEN_ELFNOTE_HYPERCALL_PAGE] = notes.virt_hypercall


def _load_segments(path: str, data: bytes, phdrs) -> list[LoadSegment]:
    segments = []
    for i, ph in enumerate(phdrs):
        # libelf loads PT_LOAD headers with any of R, W, X set (elf_phdr_is_loadable).
        if ph.p_type != PT_LOAD or not ph.p_flags & (PF_R | PF_W | PF_X):
            continue
        what = f"segment {i} (paddr {ph.p_paddr:#x})"
        check_segment_in_file(path, what, ph, data)
        if ph.p_paddr + ph.p_memsz > U64 + 1:
            raise ImageError(path, f"malformed ELF: {what} runs past the top of the address space")
        segments.append(LoadSegment(ph.p_paddr, ph.p_offset, ph.p_filesz, ph.p_memsz))
    if not segments:
        raise ImageError(path, "ELF has no loadable segment")
    ordered = sorted((s for s in segments if s.memsz), key=lambda s: s.paddr)
    for a, b in zip(ordered, ordered[1:]):
        if a.paddr + a.memsz > b.paddr:
            raise ImageError(path, f"ELF segments overlap: [{a.paddr:#x}, {a.paddr + a.memsz:#x}) and "
                                   f"[{b.paddr:#x}, {b.paddr + b.memsz:#x})")
    return segments


def _find_notes(path: str, data: bytes, ehdr, phdrs, shdrs, notes: XenNotes) -> bool:
    """Read the Xen notes in libelf's order of preference; False when there are none at all."""
    found = 0
    for ph in phdrs:
        # libelf skips note segments with p_offset 0: some binutils wrote those wrongly.
        if ph.p_type == PT_NOTE and ph.p_offset:
            for note_type, desc in _iter_notes(path, data, ph.p_offset, ph.p_offset + ph.p_filesz,
                                               "note segment"):
                _apply_note(path, notes, note_type, desc)
                found += 1
    if found:
        notes.source = "PT_NOTE"
        return True
    for sh in shdrs[1:]:
        if sh.sh_type == SHT_NOTE:
            for note_type, desc in _iter_notes(path, data, sh.sh_offset, sh.sh_offset + sh.sh_size,
                                               "note section"):
                _apply_note(path, notes, note_type, desc)
                found += 1
    if found:
        notes.source = "SHT_NOTE"
        return True
    guest_info = _section_named(data, ehdr, shdrs, b"__xen_guest")
    if guest_info is not None:
        notes.source = "__xen_guest"
        _parse_guest_info(path, _string(guest_info), notes)
        return True
    return False


def _section_named(data: bytes, ehdr, shdrs, name: bytes) -> bytes | None:
    if not shdrs or ehdr.e_shstrndx >= len(shdrs):
        return None
    strtab = shdrs[ehdr.e_shstrndx]
    names = data[strtab.sh_offset:strtab.sh_offset + strtab.sh_size]
    for sh in shdrs[1:]:
        if names[sh.sh_name:].split(b"\0", 1)[0] == name:
            return data[sh.sh_offset:sh.sh_offset + sh.sh_size]
    return None


def read_kernel(path: str, data: bytes) -> PvKernel:
    """Parse a 64-bit Xen PV kernel, applying Xen's defaults and checks; raises ImageError."""
    try:
        ehdr, phdrs = read_headers(data)
        shdrs = read_section_headers(data, ehdr)
    except (ElfFormatError, ConstructError) as exc:
        raise ImageError(path, f"malformed ELF: {exc}") from None

    notes = XenNotes(source="", raw={})
    if not _find_notes(path, data, ehdr, phdrs, shdrs, notes):
        raise ImageError(path, "no Xen ELF notes: not a PV kernel")
    if ehdr.ident.elfclass == ELFCLASS32:
        raise ImageError(path, "32-bit ELF: hvm runs 64-bit PV guests only")
    if ehdr.e_machine != EM_X86_64:
        raise ImageError(path, f"ELF is for machine {ehdr.e_machine}, not x86-64")

    # elf_xen_note_check
    if not notes.loader.startswith("generic") and not notes.guest_os.startswith("linux"):
        raise ImageError(path, f"built for neither Xen's generic loader nor Linux (LOADER "
                               f"{notes.loader!r}, GUEST_OS {notes.guest_os!r}), so Xen would not "
                               f"load it either")
    if not notes.xen_version.startswith("xen-3.0"):
        raise ImageError(path, f"built for Xen interface {notes.xen_version!r}, not 'xen-3.0' "
                               f"(XEN_VERSION note)")

    segments = _load_segments(path, data, phdrs)
    notes.pstart = min(s.paddr for s in segments)
    notes.pend = max(s.paddr + s.memsz for s in segments)

    # elf_xen_addr_calc_check: a value is set when its note (or legacy key) was there.
    given = notes.raw.keys()
    if abi.XEN_ELFNOTE_PADDR_OFFSET in given and abi.XEN_ELFNOTE_VIRT_BASE not in given:
        raise ImageError(path, "PADDR_OFFSET is set but VIRT_BASE is not")
    if abi.XEN_ELFNOTE_VIRT_BASE not in given:
        notes.virt_base = 0
    if abi.XEN_ELFNOTE_PADDR_OFFSET not in given:
        # The legacy string defaults it to VIRT_BASE (old kernels put virtual addresses in
        # p_paddr); with notes it is 0.
        notes.elf_paddr_offset = notes.virt_base if notes.source == "__xen_guest" else 0
    virt_offset = (notes.virt_base - notes.elf_paddr_offset) & U64
    notes.virt_kstart = (notes.pstart + virt_offset) & U64
    notes.virt_kend = notes.pend + virt_offset
    if notes.virt_kend > U64 + 1:
        raise ImageError(path, f"the image [{notes.virt_kstart:#x}, ...) runs past the top of the "
                               f"address space")
    if abi.XEN_ELFNOTE_ENTRY not in given:
        notes.virt_entry = ehdr.e_entry
    if notes.virt_kstart > notes.virt_kend or notes.virt_base > notes.virt_kstart:
        raise ImageError(path, f"the image [{notes.virt_kstart:#x}, {notes.virt_kend:#x}) starts "
                               f"below VIRT_BASE {notes.virt_base:#x}")
    if not notes.virt_kstart <= notes.virt_entry <= notes.virt_kend:
        raise ImageError(path, f"entry point {notes.virt_entry:#x} lies outside the image "
                               f"[{notes.virt_kstart:#x}, {notes.virt_kend:#x})")
    if notes.p2m_base is not None and notes.virt_kstart <= notes.p2m_base < notes.virt_kend:
        raise ImageError(path, f"INIT_P2M {notes.p2m_base:#x} lies inside the image")
    # BSD_SYMTAB (load the symbol table after the image) is not implemented: the kernel boots
    # without its symbols, as on a Xen that ignored the note.

    _check_features(path, notes)
    return PvKernel(notes, segments, ehdr.e_entry)


def _check_features(path: str, notes: XenNotes) -> None:
    for bit in range(32):
        if notes.features_required >> bit & 1 and bit not in REQUIRABLE_FEATURES:
            name = _FEATURE_NAMES.get(bit, f"bit {bit}")
            why = _WHY_NOT.get(bit, "hvm does not offer it to PV guests")
            raise ImageError(path, f"FEATURES note requires {name!r}: {why}")


__all__ = ["LoadSegment", "NOTE_KINDS", "PvKernel", "REQUIRABLE_FEATURES", "XenNotes",
           "parse_features", "read_kernel"]
