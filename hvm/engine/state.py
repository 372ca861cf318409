"""Architectural vCPU state in engine-neutral form (no KVM structs above the engine seam)."""
from __future__ import annotations

from dataclasses import dataclass, field, fields

GPRS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
        "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


@dataclass
class Regs:
    """General-purpose registers, RIP and RFLAGS."""

    rax: int = 0
    rbx: int = 0
    rcx: int = 0
    rdx: int = 0
    rsi: int = 0
    rdi: int = 0
    rsp: int = 0
    rbp: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0
    rip: int = 0
    rflags: int = 0x2

    def as_dict(self) -> dict[str, int]:
        """Register name → value."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class Segment:
    """A segment register with its hidden descriptor cache."""

    base: int = 0
    limit: int = 0xFFFF
    selector: int = 0
    type: int = 3
    present: int = 1
    dpl: int = 0
    db: int = 0
    s: int = 1
    l: int = 0
    g: int = 0
    avl: int = 0
    unusable: int = 0


@dataclass
class DTable:
    """GDTR or IDTR."""

    base: int = 0
    limit: int = 0xFFFF


def _seg() -> Segment:
    return Segment()


@dataclass
class SRegs:
    """Segment, descriptor-table and control registers."""

    cs: Segment = field(default_factory=_seg)
    ds: Segment = field(default_factory=_seg)
    es: Segment = field(default_factory=_seg)
    fs: Segment = field(default_factory=_seg)
    gs: Segment = field(default_factory=_seg)
    ss: Segment = field(default_factory=_seg)
    tr: Segment = field(default_factory=_seg)
    ldt: Segment = field(default_factory=_seg)
    gdt: DTable = field(default_factory=DTable)
    idt: DTable = field(default_factory=DTable)
    cr0: int = 0x60000010
    cr2: int = 0
    cr3: int = 0
    cr4: int = 0
    cr8: int = 0
    efer: int = 0
    apic_base: int = 0xFEE00900

    SEGMENTS = ("cs", "ds", "es", "fs", "gs", "ss", "tr", "ldt")

    @property
    def code_bits(self) -> int:
        """Width of the code being executed: 16, 32 or 64."""
        return code_bits(self.efer, self.cr0, self.cs.l, self.cs.db)


def code_bits(efer: int, cr0: int, cs_l: int, cs_db: int) -> int:
    """16, 32 or 64: long mode with CS.L, else protected mode with CS.D, else 16-bit code."""
    if efer & 0x400 and cs_l:
        return 64
    if cr0 & 1 and cs_db:
        return 32
    return 16


@dataclass
class Fpu:
    """The SSE state and the x87 control/status words (what fallback instructions can touch).

    The x87 data registers are not carried: no instruction the fallback executes reads them.
    """

    xmm: list[int] = field(default_factory=lambda: [0] * 16)  # 128-bit values
    mxcsr: int = 0x1F80
    fcw: int = 0x37F
    fsw: int = 0
