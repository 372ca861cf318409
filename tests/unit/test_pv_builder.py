"""The Xen PV domain builder (paravirt.builder, paravirt.elfnotes) against Xen's own rules.

Expected values come from outside the builder: the notes Debian's kernel carries (measured with
readelf, issue 14), the ELF bytes as pyelftools reads them, the layout rules of Xen's toolstack
(tools/libs/guest/xg_dom_x86.c) and the hypervisor's dom0 builder (the page-table count formula of
xen/arch/x86/pv/dom0_build.c), struct start_info from xen/include/public/xen.h, and the hypercall
stubs of xen/arch/x86/pv/hypercall.c. The built domain is inspected through hvm's own page walker
(hvm.paging), as the guest's MMU would see it.
"""
from __future__ import annotations

import struct
import subprocess
from pathlib import Path

import pytest
from elftools.elf.elffile import ELFFile

from hvm.errors import ImageError
from hvm.formats.elf import SHT_NOTE, read_headers, read_section_headers
from hvm.memory import GuestMemory
from hvm.paging import CR0_PG, CR4_PAE, EFER_LMA, PageFault, PagingMode, read_virtual, translate
from paravirt.builder import build
from paravirt.elfnotes import read_kernel

GUESTS = Path(__file__).parent.parent / "guests"
MiB = 1 << 20
PAGE = 4096
VBASE = 0xFFFFFFFF80000000
SHARED_INFO = 0xFEFF_F000          # a machine address outside the domain, as the caller gives it

# struct start_info, x86-64 (xen.h): offsets of the fields the tests read.
SI_MAGIC, SI_NR_PAGES, SI_SHARED_INFO, SI_FLAGS = 0, 32, 40, 48
SI_STORE_MFN, SI_STORE_EVTCHN, SI_CONSOLE_MFN, SI_CONSOLE_EVTCHN = 56, 64, 72, 80
SI_PT_BASE, SI_NR_PT_FRAMES, SI_MFN_LIST, SI_MOD_START, SI_MOD_LEN = 88, 96, 104, 112, 120
SI_CMD_LINE, SI_FIRST_P2M_PFN, SI_NR_P2M_FRAMES = 128, 1152, 1160
SIF_MOD_START_PFN = 1 << 3


def u64(data: bytes, offset: int) -> int:
    return struct.unpack_from("<Q", data, offset)[0]


def mode_for(boot) -> PagingMode:
    return PagingMode(cr0=CR0_PG | 1, cr3=boot.cr3, cr4=CR4_PAE, efer=EFER_LMA)


def nr_tables(v_start: int, v_end: int) -> int:
    """Frames needed to map [v_start, v_end) with 4-level tables: the NR() sum of Xen's
    dom0_build.c (one L4, then L3s, L2s and L1s over the aligned range)."""
    def nr(lo: int, hi: int, shift: int) -> int:
        size = 1 << shift
        return (((hi + size - 1) & ~(size - 1)) - (lo & ~(size - 1))) >> shift
    return 1 + nr(v_start, v_end, 39) + nr(v_start, v_end, 30) + nr(v_start, v_end, 21)


def mapped_frames(mem: GuestMemory, cr3: int):
    """Every 4 KiB mapping of the tables at ``cr3``: (vaddr, frame, writable), by a plain walk."""
    def entries(frame: int):
        table = mem.read(frame << 12, PAGE)
        for i in range(512):
            e = u64(table, i * 8)
            if e & 1:
                yield i, e
    for i4, e4 in entries(cr3 >> 12):
        for i3, e3 in entries((e4 & 0xFFFFFFFFFF000) >> 12):
            assert not e3 & 0x80, "the builder makes no superpages"
            for i2, e2 in entries((e3 & 0xFFFFFFFFFF000) >> 12):
                assert not e2 & 0x80
                for i1, e1 in entries((e2 & 0xFFFFFFFFFF000) >> 12):
                    va = (i4 << 39) | (i3 << 30) | (i2 << 21) | (i1 << 12)
                    if va >> 47:
                        va |= 0xFFFF << 48
                    writable = bool(e4 & e3 & e2 & e1 & 2)
                    yield va, (e1 & 0xFFFFFFFFFF000) >> 12, writable


def xen_notes_of(elf: ELFFile) -> dict[int, bytes]:
    """The Xen notes of the PT_NOTE segments as raw descriptors (gABI "Note Section" layout: 4-byte
    aligned name and descriptor), read from pyelftools' segment bytes."""
    found = {}
    for seg in elf.iter_segments():
        if seg["p_type"] != "PT_NOTE":
            continue
        data, at = seg.data(), 0
        while at + 12 <= len(data):
            namesz, descsz, kind = struct.unpack_from("<III", data, at)
            name = data[at + 12:at + 12 + namesz]
            desc_at = at + 12 + (namesz + 3) // 4 * 4
            if name == b"Xen\0":
                found[kind] = data[desc_at:desc_at + descsz]
            at = desc_at + (descsz + 3) // 4 * 4
    return found


def assemble(tmp_path: Path, bits: int = 64, vbase: int = VBASE, phys: int = 0x200000,
             **defines: int) -> bytes:
    """pvnotes64.S linked with pvnotes64.ld; ``defines`` choose the variant (see the source)."""
    tag = f"pv{bits}-{vbase:x}-{phys:x}" + "".join(f"-{k}{v:x}" for k, v in sorted(defines.items()))
    obj, elf = tmp_path / f"{tag}.o", tmp_path / f"{tag}.elf"
    syms = [arg for k, v in {"VBASE": vbase, **defines}.items() for arg in ("--defsym", f"{k}={v:#x}")]
    subprocess.run(["as", f"--{bits}", *syms, "-o", str(obj), str(GUESTS / "pvnotes64.S")], check=True)
    subprocess.run(["ld", *(["-m", "elf_i386"] if bits == 32 else []), "--no-warn-rwx-segments",
                    "-z", "max-page-size=0x1000", "--build-id=none", "--defsym", f"VBASE={vbase:#x}",
                    "--defsym", f"PHYS={phys:#x}", "-T", str(GUESTS / "pvnotes64.ld"), "-o", str(elf),
                    str(obj)], check=True)
    return elf.read_bytes()


def phdr_offsets(data: bytes) -> list[int]:
    """File offsets of an ELF64 file's program headers (e_phoff @32, e_phentsize/e_phnum @54)."""
    phentsize, phnum = struct.unpack_from("<HH", data, 54)
    return [u64(data, 32) + i * phentsize for i in range(phnum)]


def build_small(data: bytes, mem_mib: int = 16, initrd: bytes | None = None, cmdline: str = "",
                nr_pages: int | None = None):
    mem = GuestMemory(mem_mib * MiB)
    boot = build(mem, "test.elf", data, initrd, cmdline, nr_pages or mem_mib * MiB // PAGE,
                 SHARED_INFO, console_evtchn=2, store_evtchn=1)
    return mem, boot


# -- the stock Debian kernel ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def debian(linux_image):
    path = linux_image / "vmlinux"
    data = path.read_bytes()
    initrd = (linux_image / "initramfs.cpio").read_bytes()
    mem = GuestMemory(256 * MiB)
    boot = build(mem, str(path), data, initrd, "console=hvc0 hvm.run=true", 256 * MiB // PAGE,
                 SHARED_INFO, console_evtchn=2, store_evtchn=1)
    yield path, data, initrd, mem, boot
    mem.close()


def test_debian_kernel_notes(debian):
    path, data, *_ = debian
    notes = read_kernel(str(path), data).notes
    assert notes.source == "PT_NOTE"
    assert notes.virt_base == 0xFFFFFFFF80000000
    assert notes.p2m_base is not None and notes.unmapped_initrd
    assert notes.virt_hv_start_low == 0xFFFF800000000000
    assert notes.raw[10] == "!writable_page_tables|pae_pgdir_above_4gb"   # FEATURES
    assert notes.features_required == 1 << 0                               # writable_page_tables
    assert notes.features_supported & (1 << 0 | 1 << 4) == 1 << 0 | 1 << 4
    assert notes.virt_hypercall is None                                    # no HYPERCALL_PAGE note
    assert notes.elf_paddr_offset == 0                                     # default with notes
    with path.open("rb") as f:
        elf = ELFFile(f)
        raw = xen_notes_of(elf)
        # Issue 14's measurements: these notes are present, HYPERCALL_PAGE is not.
        assert {1, 3, 10, 12, 15, 16} <= raw.keys() and 2 not in raw
        assert int.from_bytes(raw[3], "little") == notes.virt_base
        assert int.from_bytes(raw[15], "little") == notes.p2m_base
        loads = [s for s in elf.iter_segments() if s["p_type"] == "PT_LOAD"]
        # libelf: the image spans the loadable p_paddr range, moved up by VIRT_BASE.
        assert notes.virt_kstart == VBASE + min(s["p_paddr"] for s in loads)
        assert notes.virt_kend == VBASE + max(s["p_paddr"] + s["p_memsz"] for s in loads)
    assert notes.virt_kstart <= notes.virt_entry < notes.virt_kend


def test_debian_entry_maps_to_the_elf_bytes(debian):
    path, data, _, mem, boot = debian
    with path.open("rb") as f:
        elf = ELFFile(f)
        assert boot.rip == int.from_bytes(xen_notes_of(elf)[1], "little")     # XEN_ELFNOTE_ENTRY
        for seg in elf.iter_segments():
            # The ENTRY note is a virtual address in the p_paddr + VIRT_BASE view.
            start = VBASE + seg["p_paddr"]
            if seg["p_type"] == "PT_LOAD" and start <= boot.rip < start + seg["p_filesz"]:
                f.seek(seg["p_offset"] + boot.rip - start)
                expected = f.read(64)
                break
        else:
            pytest.fail("the entry point is in no PT_LOAD segment")
    assert read_virtual(mem, mode_for(boot), boot.rip, 64) == expected
    # Xen's initial vCPU state (vcpu_x86_64): flat ring-3 selectors and interrupts on.
    assert (boot.cs, boot.ss, boot.rflags) == (0xE033, 0xE02B, 0x200)


def test_debian_start_info(debian):
    path, data, initrd, mem, boot = debian
    mode = mode_for(boot)
    si = read_virtual(mem, mode, boot.rsi, 1168)
    assert si[SI_MAGIC:SI_MAGIC + 32] == b"xen-3.0-x86_64".ljust(32, b"\0")
    assert u64(si, SI_NR_PAGES) == 256 * MiB // PAGE
    assert u64(si, SI_SHARED_INFO) == SHARED_INFO
    assert struct.unpack_from("<I", si, SI_FLAGS)[0] == SIF_MOD_START_PFN
    assert struct.unpack_from("<I", si, SI_STORE_EVTCHN)[0] == 1
    assert struct.unpack_from("<I", si, SI_CONSOLE_EVTCHN)[0] == 2
    # pt_base is the virtual address of the L4 that CR3 names.
    assert translate(mem, mode, u64(si, SI_PT_BASE)) == boot.cr3
    # nr_pt_frames covers the boot mapping [VIRT_BASE, v_end): dom0_build.c's count.
    assert u64(si, SI_NR_PT_FRAMES) == nr_tables(VBASE, boot.virt_end)
    # mfn_list: at INIT_P2M, identity entries, readable through the tables built for it.
    notes = read_kernel(str(path), data).notes
    assert u64(si, SI_MFN_LIST) == notes.p2m_base
    for pfn in (0, 1, 0x1234, 256 * MiB // PAGE - 1):
        assert u64(read_virtual(mem, mode, notes.p2m_base + 8 * pfn, 8), 0) == pfn
    # The P2M frames (list and its tables) lie past every other frame and inside the domain.
    first, count = u64(si, SI_FIRST_P2M_PFN), u64(si, SI_NR_P2M_FRAMES)
    assert count == 256 * MiB // PAGE * 8 // PAGE + 3       # 128 list pages + L3, L2, L1
    assert first + count <= 256 * MiB // PAGE
    assert translate(mem, mode, notes.p2m_base) == first * PAGE
    # MOD_START_PFN: the initrd is given as a frame number, its length in whole pages.
    mod_start, mod_len = u64(si, SI_MOD_START), u64(si, SI_MOD_LEN)
    assert mod_len == -(-len(initrd) // PAGE) * PAGE
    assert mem.read(mod_start * PAGE, len(initrd)) == initrd
    assert boot.virt_end <= VBASE + mod_start * PAGE          # not in the boot mapping
    assert si[SI_CMD_LINE:SI_CMD_LINE + 27] == b"console=hvc0 hvm.run=true\0\0"
    # The store and console rings are zeroed pages of the domain, mapped in the boot mapping.
    for mfn in (u64(si, SI_STORE_MFN), struct.unpack_from("<Q", si, SI_CONSOLE_MFN)[0]):
        assert mfn < 256 * MiB // PAGE
        assert translate(mem, mode, VBASE + mfn * PAGE) == mfn * PAGE
        assert mem.read(mfn * PAGE, PAGE) == bytes(PAGE)


def test_debian_page_tables_read_only_stack_writable(debian):
    _, _, _, mem, boot = debian
    mode = mode_for(boot)
    tables = {mfn for mfn, _ in boot.page_tables}
    assert boot.page_tables[0] == (boot.l4_mfn, 4)
    mapped = list(mapped_frames(mem, boot.cr3))
    # Every frame a table entry names as a next-level table is one the builder reported.
    seen_tables = {frame for _, frame, _ in mapped if frame in tables}
    assert seen_tables, "the boot tables map themselves"
    for va, frame, writable in mapped:
        if frame in tables:
            assert not writable, f"page-table frame {frame:#x} writable at {va:#x}"
    for mfn in seen_tables:
        va = VBASE + mfn * PAGE
        assert translate(mem, mode, va) == mfn * PAGE
        with pytest.raises(PageFault, match="read-only"):
            translate(mem, mode, va, write=True)
    # The stack is the page below RSP, writable; the hypervisor's L4 slots are left empty.
    assert translate(mem, mode, boot.rsp - 8, write=True) == (boot.rsp - 8) - VBASE
    l4 = mem.read(boot.cr3, PAGE)
    assert all(u64(l4, slot * 8) == 0 for slot in range(256, 272))


def test_debian_v_end_rules(debian):
    _, _, _, mem, boot = debian
    mode = mode_for(boot)
    # xg_dom_x86.c alloc_pgtables_pv: v_end on a 4 MiB boundary, more than 512 KiB past the boot
    # stack, and the first such boundary.
    assert boot.virt_end % (4 * MiB) == 0
    assert boot.virt_end - boot.rsp > 512 * 1024
    assert boot.virt_end - 4 * MiB <= boot.rsp + 512 * 1024
    translate(mem, mode, boot.virt_end - 1)                   # mapped to the last byte
    with pytest.raises(PageFault):
        translate(mem, mode, boot.virt_end)
    # Everything below v_end is the identity view VIRT_BASE + pfn.
    for va in (VBASE, VBASE + 0x123000, boot.virt_end - PAGE):
        assert translate(mem, mode, va) == va - VBASE


def test_section_headers_match_pyelftools(debian):
    path, data, *_ = debian
    ehdr, _ = read_headers(data)
    ours = read_section_headers(data, ehdr)
    with path.open("rb") as f:
        ref = ELFFile(f)
        assert len(ours) == ref.num_sections() > 1
        for mine, theirs in zip(ours, (sec.header for sec in ref.iter_sections())):
            for name in ("sh_name", "sh_offset", "sh_size", "sh_addr", "sh_flags"):
                assert mine[name] == theirs[name], name
        assert [i for i, sh in enumerate(ours) if sh.sh_type == SHT_NOTE] == \
               [i for i, sec in enumerate(ref.iter_sections()) if sec["sh_type"] == "SHT_NOTE"]


# -- small kernels of our own ----------------------------------------------------------------------

def test_small_kernel_layout_by_hand(tmp_path):
    """A 5-page kernel at 2 MiB in a 16 MiB domain, laid out as xc_dom_build_image would:
    kernel pfn 0x200-0x204, P2M 8 pages (4096 entries), start_info, xenstore, console, 5 tables
    (L4, L3, L2, two L1s for [VIRT_BASE, VIRT_BASE + 4 MiB)), the boot stack, v_end = 4 MiB."""
    mem, boot = build_small(assemble(tmp_path), mem_mib=16)
    mode = mode_for(boot)
    assert boot.rip == VBASE + 0x200000
    si = read_virtual(mem, mode, boot.rsi, 1168)
    assert u64(si, SI_MFN_LIST) == VBASE + 0x205000
    assert boot.rsi == VBASE + 0x20D000
    assert (u64(si, SI_STORE_MFN), u64(si, SI_CONSOLE_MFN)) == (0x20E, 0x20F)
    assert u64(si, SI_PT_BASE) == VBASE + 0x210000 and boot.l4_mfn == 0x210
    assert u64(si, SI_NR_PT_FRAMES) == 5
    assert [lvl for _, lvl in boot.page_tables] == [4, 3, 2, 1, 1]
    assert boot.rsp == VBASE + 0x216000
    assert boot.virt_end == VBASE + 4 * MiB
    assert (u64(si, SI_FIRST_P2M_PFN), u64(si, SI_NR_P2M_FRAMES)) == (0, 0)
    assert u64(read_virtual(mem, mode, VBASE + 0x205000 + 8 * 4095, 8), 0) == 4095
    assert read_virtual(mem, mode, VBASE + 0x203000, 15) == b"pvnotes64 data\n"
    assert read_virtual(mem, mode, VBASE + 0x203000 + 15, PAGE) == bytes(PAGE)   # .bss zeroed


def test_slack_pushes_v_end_to_the_next_4mib(tmp_path):
    """With a 1.5 MiB .bss the kernel ends at frame 0x384 and the tables start at 0x38f: 512 KiB
    past them crosses 4 MiB, so the boot mapping grows to 8 MiB (7 tables: four L1s) and the
    stack is frame 0x396 (alloc_pgtables_pv's fixed point)."""
    mem, boot = build_small(assemble(tmp_path, BSS_SIZE=0x180000))
    si = read_virtual(mem, mode_for(boot), boot.rsi, 1168)
    assert boot.virt_end == VBASE + 8 * MiB
    assert u64(si, SI_PT_BASE) == VBASE + 0x38F000
    assert u64(si, SI_NR_PT_FRAMES) == 7 == nr_tables(VBASE, boot.virt_end)
    assert boot.rsp == VBASE + 0x397000


def test_hypercall_page_holds_xens_64bit_stubs(tmp_path):
    mem, boot = build_small(assemble(tmp_path))
    assert boot.hypercall_page == VBASE + 0x201000
    page = read_virtual(mem, mode_for(boot), boot.hypercall_page, PAGE)
    for nr in (0, 1, 17, 22, 24, 29, 127):
        slot = page[nr * 32:nr * 32 + 32]
        # push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11; pop %rcx; ret; then int3 fill
        assert slot == b"\x51\x41\x53\xb8" + struct.pack("<I", nr) + b"\x0f\x05\x41\x5b\x59\xc3" + b"\xcc" * 18
    # iret (23) is jumped to with its frame on the stack and never returns.
    assert page[23 * 32:24 * 32] == b"\x51\x41\x53\x50\xb8\x17\x00\x00\x00\x0f\x05" + b"\xcc" * 21


def test_defaults_when_notes_are_absent(tmp_path):
    # Only GUEST_OS/LOADER/XEN_VERSION: VIRT_BASE 0, PADDR_OFFSET 0, entry = e_entry, no
    # hypercall page; the kernel is mapped at its physical address.
    data = assemble(tmp_path, vbase=0, phys=0x400000, FULL=0)
    notes = read_kernel("k", data).notes
    assert (notes.virt_base, notes.elf_paddr_offset, notes.virt_entry) == (0, 0, 0x400000)
    assert notes.virt_hypercall is None and notes.p2m_base is None and not notes.unmapped_initrd
    mem, boot = build_small(data)
    assert boot.hypercall_page is None
    assert read_virtual(mem, mode_for(boot), 0x401000, 4) == b"\xc3" * 4   # left as linked
    assert translate(mem, mode_for(boot), boot.rip) == 0x400000
    assert boot.rsi == boot.start_info_pfn * PAGE


def test_mapped_initrd_and_long_command_line(tmp_path):
    initrd = bytes(range(256)) * 40 + b"tail"
    mem, boot = build_small(assemble(tmp_path), initrd=initrd, cmdline="x" * 2000)
    mode = mode_for(boot)
    si = read_virtual(mem, mode, boot.rsi, 1168)
    assert struct.unpack_from("<I", si, SI_FLAGS)[0] == 0
    # Without MOD_START_PFN: a virtual address right after the kernel, the exact length.
    assert (u64(si, SI_MOD_START), u64(si, SI_MOD_LEN)) == (VBASE + 0x205000, len(initrd))
    assert read_virtual(mem, mode, VBASE + 0x205000, len(initrd)) == initrd
    # cmd_line is cut to 1023 bytes and NUL-terminated, as strncpy + terminator in start_info_x86_64.
    assert si[SI_CMD_LINE:SI_CMD_LINE + 1024] == b"x" * 1023 + b"\0"
    assert boot.cmdline_truncated


def test_unmapped_initrd_and_init_p2m(tmp_path):
    data = assemble(tmp_path, INIT_P2M=0x8000000000, MOD_START_PFN=1)
    initrd = b"initrd!" * 1000
    mem, boot = build_small(data, initrd=initrd)
    mode = mode_for(boot)
    si = read_virtual(mem, mode, boot.rsi, 1168)
    assert struct.unpack_from("<I", si, SI_FLAGS)[0] == SIF_MOD_START_PFN
    assert u64(si, SI_MFN_LIST) == 0x8000000000
    # After v_end (frame 0x400): the initrd (2 pages), then the 8-page list and its L3, L2, L1.
    assert (u64(si, SI_MOD_START), u64(si, SI_MOD_LEN)) == (0x400, 2 * PAGE)
    assert mem.read(0x400 * PAGE, len(initrd)) == initrd
    assert (u64(si, SI_FIRST_P2M_PFN), u64(si, SI_NR_P2M_FRAMES)) == (0x402, 8 + 3)
    assert [(mfn, lvl) for mfn, lvl in boot.page_tables[-3:]] == [(0x40A, 3), (0x40B, 2), (0x40C, 1)]
    for pfn in (0, 0x402, 4095):
        assert u64(read_virtual(mem, mode, 0x8000000000 + 8 * pfn, 8), 0) == pfn
    translate(mem, mode, 0x8000000000 + 8 * PAGE - 1, write=True)
    with pytest.raises(PageFault):
        translate(mem, mode, 0x8000000000 + 8 * PAGE)
    # The P2M mapping's tables are not mapped anywhere (elfnote.h: the kernel must cope).
    assert not any(frame in (0x40A, 0x40B, 0x40C) for _, frame, _ in mapped_frames(mem, boot.cr3))


def test_init_p2m_above_virt_base_is_ignored(tmp_path):
    # xc_dom_build_image drops an INIT_P2M at or above VIRT_BASE: the list goes in the boot mapping.
    mem, boot = build_small(assemble(tmp_path, INIT_P2M=0xFFFFFFFFC0000000))
    assert boot.p2m_vaddr == VBASE + 0x205000


def test_notes_only_in_a_note_section(tmp_path):
    # libelf falls back to SHT_NOTE sections when no PT_NOTE segment holds a Xen note.
    data = bytearray(assemble(tmp_path))
    with_segment = read_kernel("k", bytes(data)).notes
    for at in phdr_offsets(data):
        if struct.unpack_from("<I", data, at)[0] == 4:      # PT_NOTE
            struct.pack_into("<I", data, at, 0)             # -> PT_NULL
    notes = read_kernel("k", bytes(data)).notes
    assert (with_segment.source, notes.source) == ("PT_NOTE", "SHT_NOTE")
    assert notes.raw == with_segment.raw


def test_legacy_xen_guest_string(tmp_path):
    # p_paddr holds virtual addresses; ELF_PADDR_OFFSET defaults to VIRT_BASE; HYPERCALL_PAGE is
    # page 0x201 from VIRT_BASE.
    data = assemble(tmp_path, vbase=0, phys=VBASE + 0x200000, NOTES=2)
    notes = read_kernel("k", data).notes
    assert notes.source == "__xen_guest"
    assert (notes.virt_base, notes.elf_paddr_offset) == (VBASE, VBASE)
    assert (notes.virt_kstart, notes.virt_hypercall) == (VBASE + 0x200000, VBASE + 0x201000)
    mem, boot = build_small(data)
    assert read_virtual(mem, mode_for(boot), VBASE + 0x201000, 4) == b"\x51\x41\x53\xb8"


def test_supported_but_unknown_feature_is_accepted(tmp_path):
    notes = read_kernel("k", assemble(tmp_path, FEATURES=5)).notes
    assert notes.features_required == 0
    assert notes.features_supported & (1 << 1)          # writable_descriptor_tables


@pytest.mark.parametrize("variant, reason", [
    (dict(NOTES=0), "no Xen ELF notes: not a PV kernel"),
    (dict(FEATURES=2), "requires 'dom0': the kernel cannot run unprivileged"),
    (dict(FEATURES=3), "requires 'auto_translated_physmap'"),
    (dict(FEATURES=4), "requires 'no_such_feature', a feature Xen does not know"),
    (dict(ENTRY=0x1000), "entry point 0x1000 lies outside the image"),
])
def test_bad_kernels_are_refused(tmp_path, variant, reason):
    with pytest.raises(ImageError, match=reason):
        build_small(assemble(tmp_path, **variant))


def test_32bit_kernel_is_refused(tmp_path):
    with pytest.raises(ImageError, match="32-bit ELF: hvm runs 64-bit PV guests only"):
        build_small(assemble(tmp_path, bits=32, vbase=0, FULL=0))


@pytest.mark.parametrize("data, reason", [
    (b"", "malformed ELF: no ELF magic"),
    (bytes(range(256)) * 64, "malformed ELF: no ELF magic"),
    (b"\x7fELF\x02\x01\x01" + bytes(40), "malformed ELF: truncated file"),
])
def test_garbage_is_refused(data, reason):
    with pytest.raises(ImageError, match=reason):
        build_small(data)


def test_truncated_kernel_is_refused(tmp_path):
    data = assemble(tmp_path)
    with pytest.raises(ImageError, match="truncated file"):
        build_small(data[:0x2000])


def test_overlapping_segments_are_refused(tmp_path):
    data = bytearray(assemble(tmp_path))
    loads = [at for at in phdr_offsets(data) if struct.unpack_from("<I", data, at)[0] == 1]
    struct.pack_into("<Q", data, loads[1] + 24, 0x201000)   # data's p_paddr into the text
    with pytest.raises(ImageError, match="ELF segments overlap"):
        build_small(bytes(data))


def test_hypercall_page_outside_the_image_is_refused(tmp_path):
    # A HYPERCALL_PAGE over the builder's own pages (here frame 0x210, where the L4 goes) would
    # overwrite them: only a page of the kernel image is taken.
    data = bytearray(assemble(tmp_path))
    notes = read_kernel("k", bytes(data)).notes
    hc = data.find(struct.pack("<Q", notes.virt_hypercall))
    struct.pack_into("<Q", data, hc, VBASE + 0x210000)
    with pytest.raises(ImageError, match="HYPERCALL_PAGE 0xffffffff80210000 lies outside the kernel"):
        build_small(bytes(data))


def test_kernel_larger_than_memory_is_refused(tmp_path):
    # The image alone: 2 MiB of padding, then a kernel with a 4 MiB .bss, in a 4 MiB domain.
    with pytest.raises(ImageError, match="does not fit in 1024 pages .* the kernel needs"):
        build_small(assemble(tmp_path, BSS_SIZE=4 * MiB), mem_mib=4)
    # The image fits but the boot mapping (v_end = 4 MiB past VIRT_BASE) does not.
    with pytest.raises(ImageError, match="does not fit in 768 pages"):
        build_small(assemble(tmp_path), mem_mib=4, nr_pages=768)
