"""The hypervisor's own pages of a PV domain: what hvm keeps in memory beside the guest's frames
and maps into the L4 slots Xen reserves for itself (256-271).

Machine frames [0, nr_pages) are the domain's (identity P2M: its pseudo-physical frame numbers
are machine frame numbers); the frames after them are hvm's and no guest entry may map them
(``paravirt.mm`` refuses). In them: the shared_info page, the machine-to-phys table (one u64 per
machine frame) that every guest L4 maps read-only at MACH2PHYS_VIRT_START, as Xen does, a GDT per
vCPU whose last two pages carry Xen's reserved flat selectors (0xe000 up), a window per vCPU
for its LDT, each vCPU's ring 0 (below), and the page tables for those mappings. ``l4_entries`` are what every validated guest L4
gets in the reserved slots.

Ring 0 is what a hardware engine (KVM) needs to take the guest's exceptions and SYSCALLs: per vCPU
a page of entry stubs, an IDT, a 64-bit TSS and a stack, all supervisor-only, and ring-0 code and
data descriptors at Xen's selectors (0xe008, 0xe010: Xen's asm/desc.h __HYPERVISOR_CS and
__HYPERVISOR_DS32). A stub records what happened on hvm's stack and executes ``out`` to
``RING0_PORT``; it never returns, hvm takes the vCPU back to ring 3 itself (``paravirt.ring0``).
"""
from __future__ import annotations

import struct
from dataclasses import dataclass

from hvm.engine.state import Segment

from .abi import (FIRST_RESERVED_GDT_PAGE, FLAT_RING3_CS32, FLAT_RING3_CS64, FLAT_RING3_DS32,
                  MACH2PHYS_VIRT_START, PTE_A, PTE_ADDR, PTE_D, PTE_NX, PTE_P, PTE_RW, PTE_US)

PAGE = 4096
ENTRIES = 512
# Grant-table frames a domain may set up (libxl's default max_grant_frames for a domU), 512 v1
# entries each.
GRANT_FRAMES = 32
GDT_PAGES = 16                      # 8192 descriptors: guest pages 0-13, Xen's from page 14
# The M2P once more, in L4 slot 257: on this project's kvm_pvm host ring-3 code cannot reach L4
# slot 256 at all (every access there faults as not present, measured 2026-12-04; slots 257-511
# work), so the M2P at MACH2PHYS_VIRT_START is out of a PV kernel's reach under KVM there.
# XENMEM_machphys_mapping exists to tell the guest where the M2P is: a guest that asks (Linux
# does) can be given this address on any engine; one that hard-codes Xen's cannot run there.
M2P_ALIAS_VIRT_START = 0xFFFF808000000000
# hvm's private mappings (the GDTs) live in L4 slot 262, as Xen's per-domain area does.
PRIVATE_VIRT_START = 0xFFFF830000000000
GDT_STRIDE = GDT_PAGES * PAGE       # vCPU n's GDT at PRIVATE_VIRT_START + n * GDT_STRIDE
MAX_PV_VCPUS = ENTRIES * ENTRIES // GDT_PAGES // 512   # what one L2 of GDT mappings holds
# Each vCPU's ring 0, one L3 entry further: its pages at RING0_VIRT_START + n * RING0_STRIDE, in
# the order of RING0_PAGES; the page after the TSS stays unmapped, so a stack overflow faults
# instead of reaching the TSS.
RING0_VIRT_START = PRIVATE_VIRT_START + (1 << 30)
CODE, IDT, TSS, GUARD, STACK = range(5)
# Each vCPU's LDT window, one more L3 entry further (Xen's LDT_VIRT_START, beside its GDT): the
# guest's LDT pages mapped read-only by MMUEXT_SET_LDT, LDTR pointing here.
LDT_PAGES = 16                      # 8192 descriptors, the most an LDT holds
LDT_VIRT_START = PRIVATE_VIRT_START + (2 << 30)
LDT_STRIDE = LDT_PAGES * PAGE
LDT_SELECTORS = 0xF800             # vCPU n's LDT descriptor at 0xf800 + 16 n (GDT page 15)
RING0_PAGES = 5
RING0_STRIDE = 8 * PAGE
RING0_PORT = 0x0EF0              # the port the stubs write; nothing else on hvm's boards uses it
HYPERVISOR_CS, HYPERVISOR_DS = 0xE008, 0xE010
# vCPU n's TSS descriptor at 0xf000 + 16 n (GDT page 15). Xen keeps its at 0xe040 in each CPU's
# own GDT page; hvm's reserved GDT pages are shared by the vCPUs.
TSS_SELECTORS = 0xF000
TSS_SIZE = 104                   # the 64-bit TSS (SDM vol. 3A, "Task management in 64-bit mode")
# Entry stubs: vector v's at 14 v in the code page, then the start stub and the SYSCALL stubs
# (LSTAR: from 64-bit code; CSTAR: from compatibility mode).
STUB_SIZE = 14
START_STUB, LSTAR_STUB, CSTAR_STUB = 0xE00, 0xE40, 0xE80
# What a vector stub leaves on the stack, from its top down (SDM vol. 3A, "64-bit mode stack
# frame": SS, RSP, RFLAGS, CS, RIP, [error code]): the CPU's frame, the error code (0 pushed by the stub where the CPU
# pushes none), the vector, the interrupted RDX.
FRAME = struct.Struct("<8Q")     # rdx, vector, error, rip, cs, rflags, rsp, ss
ERROR_CODE_VECTORS = frozenset({8, 10, 11, 12, 13, 14, 17, 21})

# Flat descriptors, accessed bit set (firmware-style; the CPU then never writes them): DPL 3,
# base 0, limit 4 GiB. 64-bit code (L=1), 32-bit code, and data.
_CODE64_DPL3 = 0x00AFFB000000FFFF
_CODE32_DPL3 = 0x00CFFB000000FFFF
_DATA_DPL3 = 0x00CFF3000000FFFF
_CODE64_DPL0 = 0x00AF9B000000FFFF
_DATA_DPL0 = 0x00CF93000000FFFF
XEN_DESCRIPTORS = {FLAT_RING3_CS32: _CODE32_DPL3, FLAT_RING3_DS32: _DATA_DPL3, FLAT_RING3_CS64: _CODE64_DPL3,
                   HYPERVISOR_CS: _CODE64_DPL0, HYPERVISOR_DS: _DATA_DPL0}
# Machine code of the stubs (SDM vol. 2 opcodes), only instructions KVM's emulator runs at CPL0
# on a host that emulates ring 0 (push, mov, out; ../shared/HOST-KVM.md).
_PUSH_IMM8, _PUSH_IMM32, _PUSH_RDX = b"\x6a", b"\x68", b"\x52"
_OUT_RING0_PORT = b"\xba" + struct.pack("<I", RING0_PORT) + b"\xee"    # mov $port, %edx; out %al, %dx
_UD2, _INT3 = b"\x0f\x0b", b"\xcc"
_MOV_RDX_TO_RIP_REL = b"\x48\x89\x15"                                   # mov %rdx, disp32(%rip)


_TABLE = PTE_P | PTE_RW | PTE_US | PTE_A   # an entry of hvm's pointing to one of its tables


def _index(va: int, level: int) -> int:
    return (va >> (12 + 9 * (level - 1))) & (ENTRIES - 1)


@dataclass
class HypervisorArea:
    """hvm's frames of a PV domain with ``nr_pages`` frames and ``vcpus`` vCPUs."""

    nr_pages: int
    vcpus: int

    def __post_init__(self) -> None:
        if not 1 <= self.vcpus <= MAX_PV_VCPUS:
            raise ValueError(f"{self.vcpus} vCPUs: a PV domain here has 1 to {MAX_PV_VCPUS}")
        self._next = self.nr_pages
        self.shared_info = self._take(1)
        self.zero_page = self._take(1)          # stands for guest GDT pages not given yet
        self.xen_gdt = self._take(2)            # pages 14 and 15 of every GDT (Xen's selectors)
        self.grant_frames = self._take(GRANT_FRAMES)   # the domain's grant table (v1 entries)
        # The guest's frames and hvm's own (few) ones.
        m2p_entries = self.nr_pages + 64 + GRANT_FRAMES + RING0_PAGES * self.vcpus
        self.m2p_frames = -(-m2p_entries * 8 // PAGE) + 1
        self.m2p = self._take(self.m2p_frames)
        self.ring0_frames = [self._take(RING0_PAGES) for _ in range(self.vcpus)]
        self._writes = self._lay_out()
        self.tables = sorted(self._writes)      # the page-table frames hvm's mappings use
        self.frames = self._next - self.nr_pages
        self._memory = None

    def _take(self, count: int) -> int:
        first, self._next = self._next, self._next + count
        return first

    @property
    def shared_frames(self) -> set[int]:
        """hvm's frames the guest may map (writable), as Xen shares them with a domain."""
        return {self.shared_info, *range(self.grant_frames, self.grant_frames + GRANT_FRAMES)}

    @property
    def shared_info_maddr(self) -> int:
        return self.shared_info * PAGE

    def gdt_base(self, vcpu: int) -> int:
        """The linear address of vCPU ``vcpu``'s GDT (GDTR.base)."""
        return PRIVATE_VIRT_START + vcpu * GDT_STRIDE

    def ldt_base(self, vcpu: int) -> int:
        """The linear address of vCPU ``vcpu``'s LDT window (LDTR.base)."""
        return LDT_VIRT_START + vcpu * LDT_STRIDE

    def ldt_segment(self, vcpu: int, entries: int) -> Segment:
        """LDTR for an LDT of ``entries`` descriptors in the vCPU's window (none: a NUL LDT)."""
        if not entries:
            return Segment(base=0, limit=0, selector=0, type=0x2, present=1, s=0)
        return Segment(base=self.ldt_base(vcpu), limit=entries * 8 - 1, selector=LDT_SELECTORS + 16 * vcpu,
                       type=0x2, present=1, s=0)

    def ring0(self, vcpu: int) -> "Ring0":
        """Where vCPU ``vcpu``'s ring 0 is."""
        return Ring0(RING0_VIRT_START + vcpu * RING0_STRIDE, self.ring0_frames[vcpu] * PAGE,
                     TSS_SELECTORS + 16 * vcpu)

    def _lay_out(self) -> dict[int, dict[int, int]]:
        """The page tables of hvm's mappings: {frame: {index: entry}}."""
        tables: dict[tuple[int, int], int] = {}     # (level, first va it maps) -> frame
        writes: dict[int, dict[int, int]] = {}     # frame -> {index: entry}

        def table(level: int, va: int) -> int:
            key = (level, va & ~((1 << (12 + 9 * level)) - 1))
            if key not in tables:
                tables[key] = self._take(1)
                writes[tables[key]] = {}
            return tables[key]

        def map_page(va: int, frame: int, flags: int) -> None:
            l3 = table(3, va)
            l2 = table(2, va)
            l1 = table(1, va)
            # Upper levels allow everything; the leaf says what the mapping permits. Accessed
            # (and dirty, where writable) from the start, so the CPU never writes hvm's tables
            # (as the descriptors above): under KVM its walks through them are real ones.
            writes[l3][_index(va, 3)] = l2 * PAGE | _TABLE
            writes[l2][_index(va, 2)] = l1 * PAGE | _TABLE
            writes[l1][_index(va, 1)] = frame * PAGE | flags | PTE_A | (PTE_D if flags & PTE_RW else 0)

        # The M2P, read-only for the guest (user pages: its kernel runs in ring 3), at the ABI's
        # address and at M2P_ALIAS_VIRT_START.
        for i in range(self.m2p_frames):
            for start in (MACH2PHYS_VIRT_START, M2P_ALIAS_VIRT_START):
                map_page(start + i * PAGE, self.m2p + i, PTE_P | PTE_US | PTE_NX)
        # GDTs: supervisor pages (the CPU's own descriptor reads), never user-visible.
        for vcpu in range(self.vcpus):
            base = self.gdt_base(vcpu)
            for page in range(GDT_PAGES):
                first_xen = page - FIRST_RESERVED_GDT_PAGE
                frame = self.xen_gdt + first_xen if first_xen >= 0 else self.zero_page
                map_page(base + page * PAGE, frame, PTE_P | PTE_NX)
        # LDT windows: empty (the zero page) until MMUEXT_SET_LDT; supervisor, read-only.
        for vcpu in range(self.vcpus):
            for page in range(LDT_PAGES):
                map_page(self.ldt_base(vcpu) + page * PAGE, self.zero_page, PTE_P | PTE_NX)
        # Ring 0: supervisor-only; the stubs executable and read-only, the stack writable, the
        # IDT and TSS read-only (a 64-bit CPU never writes either).
        flags = {CODE: PTE_P, IDT: PTE_P | PTE_NX, TSS: PTE_P | PTE_NX, STACK: PTE_P | PTE_RW | PTE_NX}
        for vcpu in range(self.vcpus):
            for page, page_flags in flags.items():
                map_page(RING0_VIRT_START + vcpu * RING0_STRIDE + page * PAGE,
                         self.ring0_frames[vcpu] + page, page_flags)
        self._l3 = {key[1]: frame for key, frame in tables.items() if key[0] == 3}
        return writes

    def build(self, memory) -> None:
        """Write hvm's pages into ``memory`` (GuestMemory, which must reach ``end``)."""
        self._memory = memory
        memory.fill(self.nr_pages * PAGE, self.frames * PAGE)
        for frame, entries in self._writes.items():
            for index, entry in entries.items():
                memory.write(frame * PAGE + index * 8, struct.pack("<Q", entry))
        xen_page = self.xen_gdt * PAGE
        for selector, descriptor in XEN_DESCRIPTORS.items():
            memory.write(xen_page + (selector & ~7) - FIRST_RESERVED_GDT_PAGE * PAGE,
                         struct.pack("<Q", descriptor))
        for vcpu in range(self.vcpus):
            ring0 = self.ring0(vcpu)
            ring0.build(memory)
            memory.write(xen_page + (ring0.tss_selector & ~7) - FIRST_RESERVED_GDT_PAGE * PAGE,
                         struct.pack("<2Q", *_system_descriptor(ring0.tss, TSS_SIZE - 1, 0x89)))
            # The LDT descriptor spans the window; LDTR's cached limit is the guest's.
            memory.write(xen_page + LDT_SELECTORS + 16 * vcpu - FIRST_RESERVED_GDT_PAGE * PAGE,
                         struct.pack("<2Q", *_system_descriptor(self.ldt_base(vcpu), LDT_STRIDE - 1, 0x82)))
        # Identity M2P: machine frame n holds pseudo-physical frame n (hvm's frames included,
        # which no guest maps).
        count = min(self.m2p_frames * PAGE // 8, self._next)
        memory.write(self.m2p * PAGE, struct.pack(f"<{count}Q", *range(count)))

    @property
    def end(self) -> int:
        """The first machine frame past hvm's."""
        return self._next

    @property
    def l4_entries(self) -> dict[int, int]:
        """{L4 slot: entry} for the reserved slots hvm uses."""
        return {_index(va, 4): frame * PAGE | _TABLE for va, frame in self._l3.items()}

    def set_m2p(self, mfn: int, pfn: int) -> None:
        """Record MMU_MACHPHYS_UPDATE (the caller checked ``mfn`` is the guest's)."""
        self._memory.write(self.m2p * PAGE + mfn * 8, struct.pack("<Q", pfn))


def frame_of(entry: int) -> int:
    return (entry & PTE_ADDR) >> 12


@dataclass(frozen=True)
class Ring0:
    """One vCPU's ring 0: ``base`` its linear address, ``maddr`` the machine address of its first
    page (the pages are contiguous in both)."""

    base: int
    maddr: int
    tss_selector: int

    @property
    def idt(self) -> int:
        return self.base + IDT * PAGE

    @property
    def tss(self) -> int:
        return self.base + TSS * PAGE

    @property
    def stack_top(self) -> int:
        """RSP0: every entry from ring 3 starts from it with an empty stack."""
        return self.base + (STACK + 1) * PAGE

    @property
    def frame_maddr(self) -> int:
        """The machine address of what a vector stub leaves on the stack (``FRAME``)."""
        return self.maddr + (STACK + 1) * PAGE - FRAME.size

    @property
    def rdx_slot_maddr(self) -> int:
        """Where the SYSCALL stub keeps RDX: the bottom of the stack page."""
        return self.maddr + STACK * PAGE

    def stub(self, vector: int) -> int:
        return self.base + vector * STUB_SIZE

    @property
    def vector_stubs_end(self) -> int:
        return self.base + 256 * STUB_SIZE

    @property
    def start(self) -> int:
        """Where the vCPU starts: a stub that only exits, so hvm sets the vCPU up before the
        guest's first instruction (``paravirt.ring0``)."""
        return self.base + START_STUB

    @property
    def lstar(self) -> int:
        return self.base + LSTAR_STUB

    @property
    def cstar(self) -> int:
        return self.base + CSTAR_STUB

    def resumes(self) -> tuple[int, int, int]:
        """RIP after the ``out`` of the start stub and of the two SYSCALL stubs: how hvm tells
        these exits apart."""
        syscall = len(_MOV_RDX_TO_RIP_REL) + 4 + len(_OUT_RING0_PORT)
        return self.start + len(_OUT_RING0_PORT), self.lstar + syscall, self.cstar + syscall

    def code(self) -> bytes:
        page = bytearray(_INT3 * PAGE)        # never executed: the stubs end in `out`
        for vector in range(256):
            stub = b"" if vector in ERROR_CODE_VECTORS else _PUSH_IMM8 + b"\x00"
            stub += _PUSH_IMM8 + bytes([vector]) if vector < 0x80 else _PUSH_IMM32 + struct.pack("<I", vector)
            stub += _PUSH_RDX + _OUT_RING0_PORT
            page[vector * STUB_SIZE:vector * STUB_SIZE + len(stub)] = stub
        start = _OUT_RING0_PORT + _UD2
        page[START_STUB:START_STUB + len(start)] = start
        # At SYSCALL's entry RSP is still the guest's: the stub keeps RDX in hvm's stack page
        # instead of pushing it (AMD APM vol. 2, "SYSCALL and SYSRET": no stack switch).
        slot = self.base + STACK * PAGE
        for entry in (LSTAR_STUB, CSTAR_STUB):
            displacement = slot - (self.base + entry + len(_MOV_RDX_TO_RIP_REL) + 4)
            syscall = _MOV_RDX_TO_RIP_REL + struct.pack("<i", displacement) + _OUT_RING0_PORT + _UD2
            page[entry:entry + len(syscall)] = syscall
        return bytes(page)

    def idt_page(self) -> bytes:
        """256 64-bit interrupt gates (SDM vol. 3A, "64-bit mode IDT") on HYPERVISOR_CS, as
        Xen's PV IDT: DPL 0, but 3 for #BP and #OF so that INT3 and INTO from ring 3 arrive as
        themselves; any other INT n from ring 3 is a #GP with the gate in its error code."""
        gates = []
        for vector in range(256):
            offset, dpl = self.stub(vector), 3 if vector in (3, 4) else 0
            gates.append((offset & 0xFFFF) | HYPERVISOR_CS << 16 | (0x8E | dpl << 5) << 40
                         | (offset >> 16 & 0xFFFF) << 48)
            gates.append(offset >> 32)
        return struct.pack("<512Q", *gates)

    def tss_page(self) -> bytes:
        # RSP0 at offset 4; the I/O map base at 102 points past the limit: no I/O bitmap, so
        # every IN/OUT from ring 3 faults (SDM vol. 1, "I/O permission bit map").
        tss = bytearray(TSS_SIZE)
        struct.pack_into("<Q", tss, 4, self.stack_top)
        struct.pack_into("<H", tss, 102, TSS_SIZE)
        return bytes(tss)

    def build(self, memory) -> None:
        memory.write(self.maddr + CODE * PAGE, self.code())
        memory.write(self.maddr + IDT * PAGE, self.idt_page())
        memory.write(self.maddr + TSS * PAGE, self.tss_page())


def _system_descriptor(base: int, limit: int, access: int) -> tuple[int, int]:
    """A 16-byte 64-bit system descriptor (SDM vol. 3A, "TSS descriptor in 64-bit mode"; an
    LDT's has the same form): ``access`` is present, DPL and type (0x89 available TSS, 0x82
    LDT)."""
    low = (limit & 0xFFFF) | (base & 0xFFFFFF) << 16 | access << 40 | (limit >> 16 & 0xF) << 48
    low |= (base >> 24 & 0xFF) << 56
    return low, base >> 32
