"""The Xen PV domain builder: a 64-bit PV kernel's domain laid out in memory as Xen's toolstack
lays it out, and the state its first vCPU starts in.

The authority is libxenguest: tools/libs/guest/xg_dom_core.c (``xc_dom_build_image``: the order in
which segments are allocated), xg_dom_x86.c (``count_pgtables``, ``alloc_pgtables_pv``,
``setup_pgtables_pv``, ``alloc_p2m_list_x86_64``, ``alloc_magic_pages_pv``, ``start_info_x86_64``,
``vcpu_x86_64``) and xg_dom_boot.c (the console page, the hypercall page); the hypervisor fills the
hypercall page (xen/arch/x86/pv/hypercall.c, ``pv_ring3_init_hypercall_page``).

The picture, in pseudo-physical frames from 0 and, for everything up to the page tables, at
``VIRT_BASE + pfn * 4096`` in the boot mapping::

    [padding up to the image] [kernel] [initrd, unless MOD_START_PFN] [P2M list, unless INIT_P2M]
    [start_info] [xenstore ring] [console ring] [page tables] [boot stack] [padding to v_end]
    [initrd with MOD_START_PFN: given as a PFN] [INIT_P2M: P2M list + the tables mapping it]

``v_end`` is where the boot mapping stops: at least 512 KiB past the boot stack, rounded up to a
4 MiB boundary; the page tables cover [VIRT_BASE, v_end) and are themselves mapped read-only.

hvm gives the domain an identity P2M (machine frame == pseudo-physical frame, frames
[0, nr_pages)); the frames that belong to the hypervisor (shared_info) come from the caller. Pages
the builder does not write are expected to read as zero, as the freshly scrubbed pages a Xen
domain is given do: GuestMemory's anonymous mappings are.
"""
from __future__ import annotations

import array
from dataclasses import dataclass, field

from hvm.errors import ImageError
from hvm.formats.xen_start_info import MAX_GUEST_CMDLINE, XenStartInfo64
from hvm.memory import GuestMemory

from . import abi
from .elfnotes import PvKernel, XenNotes, read_kernel

PAGE_SHIFT = 12
PAGE_SIZE = 1 << PAGE_SHIFT
ENTRIES_SHIFT = 9                   # 512 entries per table
LEVELS = 4
VADDR_MASK = (1 << 48) - 1          # xg_dom_x86.c: VIRT_BITS_X86_64
U64 = (1 << 64) - 1
# Protections of the boot tables' entries (x86_64_params): L1 entries present, writable,
# accessed; upper levels also dirty and user (Xen runs the 64-bit PV kernel in ring 3).
L1_PROT = abi.PTE_P | abi.PTE_RW | abi.PTE_A
UPPER_PROT = abi.PTE_P | abi.PTE_RW | abi.PTE_A | abi.PTE_D | abi.PTE_US
MAPPING_MAX = 2                     # the boot mapping and an INIT_P2M mapping
SLACK_PAGES = (512 << 10) // PAGE_SIZE   # alloc_pgtables_pv: 512 KiB free past the boot stack
V_END_ALIGN_MASK = (1 << 22) - 1    # ... and v_end on a 4 MiB boundary
INITIAL_RFLAGS = 1 << 9             # IF (vcpu_x86_64)
CONSOLE_CONNECTION = 3088           # io/console.h: xencons_interface.connection


def _mask(bits: int) -> int:
    return (1 << bits) - 1


@dataclass
class _Span:
    """One level of a mapping (xc_dom_x86_mapping_lvl): the range [start, end] (inclusive) its
    ``tables`` tables cover, the first of which is frame ``pfn``; for the mapping's area, the
    mapped range and the frame mapped at its start."""

    start: int = 0
    end: int = 0
    pfn: int = 0
    tables: int = 0


@dataclass
class _Mapping:
    """A virtual range the builder maps (xc_dom_x86_mapping); ``levels[0]`` are the L1s."""

    area: _Span = field(default_factory=_Span)
    levels: list[_Span] = field(default_factory=lambda: [_Span() for _ in range(LEVELS)])


@dataclass(frozen=True)
class Segment:
    """A piece of the layout: ``pages`` frames from ``pfn``, mapped at ``vstart`` (None: not in
    the boot mapping)."""

    name: str
    pfn: int
    pages: int
    vstart: int | None
    size: int


@dataclass
class PvBoot:
    """What the built domain's first vCPU starts with, and how the domain was laid out."""

    rip: int                        # the kernel's entry point
    rsp: int                        # top of the boot stack
    rsi: int                        # virtual address of start_info
    l4_mfn: int                     # the top-level table: CR3 >> 12
    page_tables: list[tuple[int, int]]   # (mfn, level 1-4) of every table built, L4 first
    notes: XenNotes
    segments: list[Segment]
    virt_base: int
    virt_end: int                   # end of the boot mapping (v_end)
    start_info_pfn: int
    store_mfn: int
    console_mfn: int
    p2m_vaddr: int                  # start_info.mfn_list
    hypercall_page: int | None      # virtual address, when the kernel asked for one
    flags: int                      # start_info.flags
    cmdline_truncated: bool = False
    cs: int = abi.FLAT_KERNEL_CS
    ss: int = abi.FLAT_KERNEL_SS
    ds: int = abi.FLAT_KERNEL_DS
    rflags: int = INITIAL_RFLAGS

    @property
    def cr3(self) -> int:
        """CR3 as the vCPU loads it."""
        return self.l4_mfn << PAGE_SHIFT

    def describe(self) -> str:
        """The layout as Xen's builder logs it, for --verbose."""
        lines = [f"Xen PV domain: notes from {self.notes.source}"]
        lines += [f"  note {line}" for line in self.notes.describe()]
        for s in self.segments:
            where = f"{s.vstart:#018x}" if s.vstart is not None else "(unmapped)".ljust(18)
            lines.append(f"  {s.name:<12} {where}  pfn {s.pfn:#x} + {s.pages:#x} pages ({s.size:#x} bytes)")
        lines.append(f"  boot mapping [{self.virt_base:#x}, {self.virt_end:#x}), "
                     f"{len(self.page_tables)} page-table frames, L4 at mfn {self.l4_mfn:#x}")
        lines.append(f"  entry {self.rip:#x}, stack {self.rsp:#x}, start_info {self.rsi:#x}")
        if self.cmdline_truncated:
            lines.append(f"  command line cut to {MAX_GUEST_CMDLINE - 1} bytes")
        return "\n".join(lines)


class _Allocator:
    """Frames and virtual addresses handed out in order from frame 0 at VIRT_BASE
    (xc_dom_alloc_segment, xc_dom_alloc_page, xc_dom_alloc_pad)."""

    def __init__(self, path: str, total_pages: int, virt_base: int):
        self.path, self.total = path, total_pages
        self.pfn_end, self.virt_end = 0, virt_base
        self.segments: list[Segment] = []

    def _take(self, name: str, pages: int) -> None:
        if pages > self.total - self.pfn_end:
            raise ImageError(self.path, f"does not fit in {self.total} pages "
                                        f"({self.total * PAGE_SIZE >> 20} MiB): the {name} needs "
                                        f"{pages:#x} pages from frame {self.pfn_end:#x}")
        self.pfn_end += pages
        self.virt_end += pages * PAGE_SIZE

    def pad(self, boundary: int) -> None:
        if boundary & (PAGE_SIZE - 1):
            raise ImageError(self.path, f"segment boundary {boundary:#x} is not page aligned")
        if boundary < self.virt_end:
            raise ImageError(self.path, f"segment boundary {boundary:#x} lies below {self.virt_end:#x}, "
                                        f"which is already in use")
        pages = (boundary - self.virt_end) // PAGE_SIZE
        if pages:
            self.segments.append(Segment("padding", self.pfn_end, pages, self.virt_end, pages * PAGE_SIZE))
        self._take("padding", pages)

    def segment(self, name: str, size: int, start: int = 0, mapped: bool = True,
                at: int | None = None) -> Segment:
        """``size`` bytes from the next free frame, after padding up to ``start`` when given.
        The segment is seen at its place in the boot mapping, or at ``at`` (INIT_P2M), or, with
        ``mapped`` False, nowhere."""
        if start:
            self.pad(start)
        pages = (size + PAGE_SIZE - 1) // PAGE_SIZE
        vstart = at if at is not None else self.virt_end if mapped else None
        seg = Segment(name, self.pfn_end, pages, vstart, size)
        self._take(name, pages)
        self.segments.append(seg)
        return seg

    def page(self, name: str) -> int:
        seg = self.segment(name, PAGE_SIZE)
        return seg.pfn


def _check_span(path: str, what: str, start: int, end: int) -> None:
    """A mapped range [start, end] must be canonical and leave the hypervisor's L4 slots alone."""
    if end > U64:
        raise ImageError(path, f"{what} [{start:#x}, ...) runs past the top of the address space")
    for addr in (start, end):
        if (1 << 47) <= addr < 0xFFFF800000000000:
            raise ImageError(path, f"{what} [{start:#x}, {end + 1:#x}) is not canonical")
    if (start < 1 << 47) != (end < 1 << 47):
        raise ImageError(path, f"{what} [{start:#x}, {end + 1:#x}) crosses the non-canonical hole")
    if start < abi.HYPERVISOR_VIRT_END and end >= abi.HYPERVISOR_VIRT_START:
        raise ImageError(path, f"{what} [{start:#x}, {end + 1:#x}) overlaps the hypervisor's area "
                               f"[{abi.HYPERVISOR_VIRT_START:#x}, {abi.HYPERVISOR_VIRT_END:#x})")


def _count_pgtables(path: str, maps: list[_Mapping], start: int, end: int, pfn: int,
                    pfn_alloc_end: int, p2m_size: int) -> _Mapping:
    """The tables needed to map [start, end] at frame ``pfn``, sharing the tables of the mappings
    made before (count_pgtables); their frames follow ``pfn_alloc_end``, top level first."""
    if len(maps) == MAPPING_MAX:
        raise ImageError(path, "too many mappings")
    if pfn + ((end - start) >> PAGE_SHIFT) >= p2m_size:
        raise ImageError(path, f"does not fit in {p2m_size} pages: the mapping [{start:#x}, "
                               f"{end + 1:#x}) needs frames up to {pfn + ((end - start) >> PAGE_SHIFT):#x}")
    m = _Mapping()
    m.area.start, m.area.end = start & VADDR_MASK, end & VADDR_MASK
    for other in maps:
        # (xg_dom_x86.c compares the new range unmasked; both sides masked is what it means.)
        if m.area.start <= other.area.end and m.area.end >= other.area.start:
            raise ImageError(path, f"the mapping [{start:#x}, {end + 1:#x}) overlaps the boot "
                                   f"mapping")
    for lvl in range(LEVELS - 1, -1, -1):
        span = m.levels[lvl]
        span.pfn = pfn_alloc_end + m.area.tables
        if lvl == LEVELS - 1:
            if not maps:            # one top-level table, in the first mapping only
                span.start, span.end, span.tables = 0, VADDR_MASK, 1
                m.area.tables += 1
            continue
        bits = PAGE_SHIFT + (lvl + 1) * ENTRIES_SHIFT
        span.start, span.end = m.area.start & ~_mask(bits), m.area.end | _mask(bits)
        for other in maps:
            o = other.levels[lvl]
            if o.start == o.end:
                continue
            if span.start >= o.start and span.end <= o.end:
                span.start = span.end = 0       # wholly covered by the other's tables
                break
            if o.start <= span.start <= o.end:
                span.start = o.end + 1
            if o.start <= span.end <= o.end:
                span.end = o.start - 1
        if span.start < span.end:
            span.tables = ((span.end - span.start) >> bits) + 1
        m.area.tables += span.tables
    return m


def _pt_frames(m: _Mapping) -> range:
    return range(m.levels[LEVELS - 1].pfn, m.levels[LEVELS - 1].pfn + m.area.tables)


def _setup_pgtables(maps: list[_Mapping]) -> dict[int, bytearray]:
    """Fill every mapping's tables (setup_pgtables_pv); returns frame -> table contents."""
    tables: dict[int, bytearray] = {}
    for m in maps:
        for pfn in _pt_frames(m):
            tables[pfn] = bytearray(PAGE_SIZE)
    read_only = [_pt_frames(m) for m in maps]
    for lvl in range(LEVELS - 1, -1, -1):
        shift = PAGE_SHIFT + lvl * ENTRIES_SHIFT
        for m1 in maps:
            start, end, base = m1.levels[lvl].start, m1.levels[lvl].end, m1.levels[lvl].pfn
            for m2 in maps:
                # What the entries point at: the next level's tables, or the mapped frames.
                target = m2.levels[lvl - 1] if lvl > 0 else m2.area
                if lvl > 0 and target.tables == 0:
                    continue
                if target.start >= end or target.end <= start:
                    continue
                first = (max(start, target.start) - start) >> shift
                last = (min(end, target.end) - start) >> shift
                pfn = ((max(start, target.start) - target.start) >> shift) + target.pfn
                for index in range(first, last + 1):
                    if lvl > 0:
                        prot = UPPER_PROT
                    else:
                        # The boot tables map themselves, read-only: a PV guest may never hold a
                        # writable mapping of a page table.
                        prot = L1_PROT & ~abi.PTE_RW if any(pfn in r for r in read_only) else L1_PROT
                    table = tables[base + (index >> ENTRIES_SHIFT)]
                    slot = (index & _mask(ENTRIES_SHIFT)) * 8
                    table[slot:slot + 8] = ((pfn << PAGE_SHIFT) | prot).to_bytes(8, "little")
                    pfn += 1
    return tables


def hypercall_page() -> bytes:
    """The 64-bit PV hypercall page: 0xCC, then a 32-byte stub per hypercall that keeps RCX and
    R11 around ``syscall``; the iret stub is jumped to and never returns
    (pv_ring3_init_hypercall_page)."""
    page = bytearray(b"\xcc" * PAGE_SIZE)
    iret = abi.HYPERCALL_NUMBERS["iret"]
    for nr in range(PAGE_SIZE // abi.HYPERCALL_SLOT_SIZE):
        if nr == iret:
            # push %rcx; push %r11; push %rax; mov $23,%eax; syscall
            stub = b"\x51\x41\x53\x50\xb8" + nr.to_bytes(4, "little") + b"\x0f\x05"
        else:
            # push %rcx; push %r11; mov $nr,%eax; syscall; pop %r11; pop %rcx; ret
            stub = b"\x51\x41\x53\xb8" + nr.to_bytes(4, "little") + b"\x0f\x05\x41\x5b\x59\xc3"
        at = nr * abi.HYPERCALL_SLOT_SIZE
        page[at:at + len(stub)] = stub
    return bytes(page)


def _load_kernel(memory: GuestMemory, kernel: PvKernel, data: bytes, seg: Segment) -> None:
    """Copy the loadable segments to their frames (elf_load_binary) and zero the rest of the
    kernel's pages (alloc_segment clears them first)."""
    base = seg.pfn << PAGE_SHIFT
    pieces = sorted((s.paddr - kernel.notes.pstart, s) for s in kernel.segments)
    cursor = 0
    for offset, s in pieces:
        if offset > cursor:
            memory.fill(base + cursor, offset - cursor)
        memory.write(base + offset, memoryview(data)[s.offset:s.offset + s.filesz])
        cursor = max(cursor, offset + s.filesz)
        if s.memsz > s.filesz:
            memory.fill(base + offset + s.filesz, s.memsz - s.filesz)
            cursor = max(cursor, offset + s.memsz)
    end = seg.pages * PAGE_SIZE
    if end > cursor:
        memory.fill(base + cursor, end - cursor)


def build(memory: GuestMemory, kernel_path: str, kernel_bytes: bytes, initrd: bytes | None,
          cmdline: str, nr_pages: int, shared_info_maddr: int, console_evtchn: int,
          store_evtchn: int) -> PvBoot:
    """Lay out a 64-bit PV domain of ``nr_pages`` frames in ``memory`` and return its boot state.

    Raises ImageError (naming ``kernel_path``) when the kernel is not a usable 64-bit PV kernel or
    the domain is too small for it; ValueError when the arguments contradict each other.
    """
    if nr_pages <= 0 or not memory.contains(0, nr_pages << PAGE_SHIFT):
        raise ValueError(f"{nr_pages} pages from address 0 are not all guest RAM")
    kernel = read_kernel(kernel_path, kernel_bytes)
    notes = kernel.notes
    initrd = initrd or None
    dom = _Allocator(kernel_path, nr_pages, notes.virt_base)
    maps: list[_Mapping] = []
    flags = 0
    mod_start = mod_len = 0

    kernel_seg = dom.segment("kernel", notes.virt_kend - notes.virt_kstart, start=notes.virt_kstart)
    if initrd and not notes.unmapped_initrd:
        initrd_seg = dom.segment("initrd", len(initrd))
        mod_start, mod_len = initrd_seg.vstart, len(initrd)

    # xc_dom_build_image quietly ignores an INIT_P2M above VIRT_BASE or not page aligned.
    p2m_base = notes.p2m_base
    if p2m_base is not None and (p2m_base >= notes.virt_base or p2m_base & (PAGE_SIZE - 1)):
        p2m_base = None
    p2m_bytes = (nr_pages * 8 + PAGE_SIZE - 1) & ~(PAGE_SIZE - 1)
    p2m_seg = dom.segment("phys2mach", p2m_bytes) if p2m_base is None else None

    start_info_pfn = dom.page("start info")
    store_pfn = dom.page("xenstore")
    console_pfn = dom.page("console")

    # alloc_pgtables_pv: the tables map [VIRT_BASE, v_end), v_end depends on how many tables
    # there are; grow the guess until both agree.
    extra = 1 + SLACK_PAGES                     # the boot stack, then the slack
    pages = extra
    while True:
        try_end = (dom.virt_end + pages * PAGE_SIZE) | V_END_ALIGN_MASK
        _check_span(kernel_path, "the boot mapping", notes.virt_base, try_end)
        boot_map = _count_pgtables(kernel_path, maps, notes.virt_base, try_end, 0, dom.pfn_end, nr_pages)
        pages = boot_map.area.tables + extra
        if dom.virt_end + pages * PAGE_SIZE <= try_end + 1:
            break
    boot_map.area.pfn = 0
    maps.append(boot_map)
    virt_end = try_end + 1
    pt_seg = dom.segment("page tables", boot_map.area.tables * PAGE_SIZE)
    stack_pfn = dom.page("boot stack")
    dom.pad(virt_end)

    if initrd and notes.unmapped_initrd:
        initrd_seg = dom.segment("initrd", len(initrd), mapped=False)
        flags |= abi.SIF_MOD_START_PFN
        # As xc_dom_build_image: a PFN, and the length in whole pages.
        mod_start, mod_len = initrd_seg.pfn, initrd_seg.pages * PAGE_SIZE

    first_p2m_pfn = nr_p2m_frames = 0
    if p2m_base is not None:
        # alloc_p2m_list_x86_64: the list at INIT_P2M, its own tables right after it.
        _check_span(kernel_path, "the INIT_P2M mapping", p2m_base, p2m_base + p2m_bytes - 1)
        p2m_map = _count_pgtables(kernel_path, maps, p2m_base, p2m_base + p2m_bytes - 1,
                                  dom.pfn_end, dom.pfn_end, nr_pages)
        p2m_map.area.pfn = dom.pfn_end
        for span in p2m_map.levels:
            span.pfn += p2m_bytes >> PAGE_SHIFT
        maps.append(p2m_map)
        p2m_seg = dom.segment("phys2mach", p2m_bytes + p2m_map.area.tables * PAGE_SIZE, at=p2m_base)
        first_p2m_pfn, nr_p2m_frames = p2m_seg.pfn, p2m_seg.pages

    # Xen fills whichever frame the address names; hvm keeps it to the kernel's own pages, so
    # that the page cannot land on start_info, the rings or the tables.
    hypercall_vaddr = notes.virt_hypercall
    if hypercall_vaddr is not None and not notes.virt_kstart <= hypercall_vaddr < notes.virt_kend:
        raise ImageError(kernel_path, f"HYPERCALL_PAGE {hypercall_vaddr:#x} lies outside the kernel "
                                      f"image [{notes.virt_kstart:#x}, {notes.virt_kend:#x})")

    # -- the layout is decided: write it -------------------------------------------------------
    _load_kernel(memory, kernel, kernel_bytes, kernel_seg)
    for seg in dom.segments:
        if seg.name not in ("kernel", "padding"):
            memory.fill(seg.pfn << PAGE_SHIFT, seg.pages * PAGE_SIZE)
    if initrd:
        memory.write(initrd_seg.pfn << PAGE_SHIFT, initrd)
    # The console backend is hvm itself, attached from the start: the ring reads as connected
    # (XENCONSOLE_CONNECTED, 0) as xenconsoled leaves it once it has mapped the page.
    memory.write_u8((console_pfn << PAGE_SHIFT) + CONSOLE_CONNECTION, abi.XENCONSOLE_CONNECTED)
    # Identity P2M: entry pfn holds machine frame pfn.
    memory.write(p2m_seg.pfn << PAGE_SHIFT, array.array("Q", range(nr_pages)).tobytes())
    tables = _setup_pgtables(maps)
    for pfn, table in tables.items():
        memory.write(pfn << PAGE_SHIFT, table)
    if hypercall_vaddr is not None:
        memory.write(((hypercall_vaddr - notes.virt_base) >> PAGE_SHIFT) << PAGE_SHIFT, hypercall_page())

    encoded = cmdline.encode()
    truncated = len(encoded) > MAX_GUEST_CMDLINE - 1
    memory.write(start_info_pfn << PAGE_SHIFT, XenStartInfo64.build(dict(
        magic=abi.START_INFO_MAGIC.decode(),
        nr_pages=nr_pages,
        shared_info=shared_info_maddr,
        flags=flags,
        store_mfn=store_pfn,
        store_evtchn=store_evtchn,
        console_mfn=console_pfn,
        console_evtchn=console_evtchn,
        pt_base=pt_seg.vstart,
        nr_pt_frames=boot_map.area.tables,
        mfn_list=p2m_seg.vstart,
        mod_start=mod_start,
        mod_len=mod_len,
        cmd_line=encoded[:MAX_GUEST_CMDLINE - 1].ljust(MAX_GUEST_CMDLINE, b"\0"),
        first_p2m_pfn=first_p2m_pfn,
        nr_p2m_frames=nr_p2m_frames,
    )))

    page_tables = [(pfn, lvl + 1) for m in maps for lvl in range(LEVELS - 1, -1, -1)
                   for pfn in range(m.levels[lvl].pfn, m.levels[lvl].pfn + m.levels[lvl].tables)]
    return PvBoot(
        rip=notes.virt_entry,
        rsp=notes.virt_base + (stack_pfn + 1) * PAGE_SIZE,
        rsi=notes.virt_base + start_info_pfn * PAGE_SIZE,
        l4_mfn=pt_seg.pfn,
        page_tables=page_tables,
        notes=notes,
        segments=list(dom.segments),
        virt_base=notes.virt_base,
        virt_end=virt_end,
        start_info_pfn=start_info_pfn,
        store_mfn=store_pfn,
        console_mfn=console_pfn,
        p2m_vaddr=p2m_seg.vstart,
        hypercall_page=hypercall_vaddr,
        flags=flags,
        cmdline_truncated=truncated,
    )


__all__ = ["PvBoot", "Segment", "build", "hypercall_page"]
