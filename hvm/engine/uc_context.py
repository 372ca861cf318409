"""The few fields of unicorn's CPU state that its API does not reach, found in its saved context.

Unicorn leaves exception delivery to the embedder but keeps QEMU's bookkeeping for it:
- ``error_code`` of the exception being raised (the #PF error code QEMU's page walker computed,
  the selector error code of a #GP...), which no register read returns;
- ``old_exception``, the "exception in flight" QEMU resets only when *it* delivers one. Unicorn
  never delivers, so after the guest's first #PF every later #PF is promoted to #DF and the third
  to a triple fault (unicorn issue #1883). Resetting it after each delivery is required;
- ``hflags``' CPL bits: loading CS/SS through the API checks privileges against the current CPL,
  so a transition to a more privileged ring (interrupt gate, SYSCALL) must lower CPL first;
- the segment caches: hvm runs every guest on an instance created for 64-bit code (a narrower
  one truncates what the API reads back: GDTR, IDTR, RIP), and such an instance loads only the
  selector when CS/DS/ES/SS are written through the API. Segments are therefore written here
  with base, limit and flags, and hflags recomputed from them as QEMU's
  ``cpu_x86_load_seg_cache`` does; ``segments`` reads them back for ``get_sregs``.

``uc_context_save`` copies the leading part of QEMU's CPUX86State (up to ``end_reset_fields``),
which holds all three. Their offsets are not published, so they are located at run time from
fields the API can write (``dr[0]``, the segment selectors) and cross-checked by reproducing the
double-fault promotion and its cure on a scratch CPU. The layout is that of QEMU 5.0's
``target/i386/cpu.h`` as unicorn 2.1.x builds it; anything else fails the check with a clear
error instead of being patched blindly.
"""
from __future__ import annotations

import ctypes
import struct
from dataclasses import dataclass
from functools import cache

_DR_MARK = 0xD00DF00D  # 32 bits: DR writes are truncated to the width of a 16-bit instance
_SELECTOR_MARKS = (0x1230, 0x2340, 0x3450, 0x4560, 0x5670, 0x6780)  # ES CS SS DS FS GS (QEMU order)
HF_CPL_MASK = 3
HF_INHIBIT_IRQ = 1 << 3  # the interrupt shadow of STI, MOV SS and POP SS (QEMU's HF_INHIBIT_IRQ_MASK)
HF2_NMI = 1 << 2  # hflags2: an NMI is being served; QEMU's IRET clears it (HF2_NMI_MASK)
# QEMU's hflags bits (target/i386/cpu.h) that a real-mode CPU must not carry.
HF_CS32, HF_SS32, HF_ADDSEG, HF_PE, HF_LMA, HF_CS64, HF_VM = (
    1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 14, 1 << 15, 1 << 17)
# Descriptor flags of real-mode segment caches, as QEMU's CPU reset loads them.
DESC_P, DESC_S, DESC_CS, DESC_RW, DESC_A = 1 << 15, 1 << 12, 1 << 11, 1 << 9, 1 << 8
DESC_L, DESC_B, DESC_G, DESC_DPL_SHIFT, DESC_TYPE_SHIFT = 1 << 21, 1 << 22, 1 << 23, 13, 8
# Flags of the flat segments SYSCALL and SYSENTER load (SDM vol. 2B): code (L in IA-32e mode,
# else B) and stack, DPL 0, 4 GiB.
FLAT_CODE, FLAT_STACK = DESC_P | DESC_S | DESC_CS | DESC_RW | DESC_A | DESC_G, DESC_P | DESC_S | DESC_RW | DESC_A | DESC_G | DESC_B
ES, CS, SS, DS, FS, GS = range(6)  # QEMU's order of segs[]
_REAL_CODE, _REAL_DATA = DESC_P | DESC_S | DESC_CS | DESC_RW | DESC_A, DESC_P | DESC_S | DESC_RW | DESC_A


class LayoutError(RuntimeError):
    """This unicorn build's CPU state does not look as expected."""


@dataclass(frozen=True)
class Layout:
    """Byte offsets inside a saved context (from the start of the uc_context allocation)."""

    error_code: int
    old_exception: int
    hflags: int
    segs: int


def _blob(uc) -> tuple[object, int, bytes]:
    ctx = uc.context_save()
    ptr = ctx.context.value
    return ctx, ptr, ctypes.string_at(ptr, ctx.size)


def _locate(uc_module, x86) -> Layout:
    uc = uc_module.Uc(uc_module.UC_ARCH_X86, uc_module.UC_MODE_16)
    uc.reg_write(x86.UC_X86_REG_DR0, _DR_MARK)
    regs = [x86.UC_X86_REG_ES, x86.UC_X86_REG_CS, x86.UC_X86_REG_SS, x86.UC_X86_REG_DS,
            x86.UC_X86_REG_FS, x86.UC_X86_REG_GS]
    for reg, sel in zip(regs, _SELECTOR_MARKS):
        uc.reg_write(reg, sel)
    _, _, blob = _blob(uc)
    dr0 = blob.find(struct.pack("<Q", _DR_MARK))
    # SegmentCache {u32 selector; u64 base; u32 limit; u32 flags}: 24 bytes, base 8-aligned.
    es = blob.find(struct.pack("<I4xQ", _SELECTOR_MARKS[0], _SELECTOR_MARKS[0] << 4))
    if dr0 < 0 or es < 0:
        raise LayoutError("debug or segment registers not found in the saved context")
    for i, sel in enumerate(_SELECTOR_MARKS):
        if struct.unpack_from("<I", blob, es + 24 * i)[0] != sel:
            raise LayoutError("segment registers are not laid out as QEMU's segs[6]")
    # error_code, exception_is_int, exception_next_eip, then dr[8]; then four breakpoint pointers
    # and old_exception. hflags and hflags2 are the two words right before segs[].
    return Layout(error_code=dr0 - 16, old_exception=dr0 + 64 + 32, hflags=es - 8, segs=es)


class ContextFields:
    """Read and patch the hidden fields of one unicorn CPU."""

    def __init__(self, uc, layout: Layout):
        self.uc, self.layout = uc, layout

    def exception(self) -> tuple[int, bool]:
        """(error_code, raised by INT n/INT3/INTO) of the exception unicorn is reporting."""
        _, _, blob = _blob(self.uc)
        error_code, is_int = struct.unpack_from("<iI", blob, self.layout.error_code)
        return error_code & 0xFFFFFFFF, bool(is_int)

    def settle(self, cpl: int | None = None) -> None:
        """Mark the exception in flight as delivered and, if ``cpl`` is given, set the CPL bits."""
        ctx, ptr, blob = _blob(self.uc)
        ctypes.memmove(ptr + self.layout.old_exception, struct.pack("<i", -1), 4)
        if cpl is not None:
            hflags = struct.unpack_from("<I", blob, self.layout.hflags)[0]
            ctypes.memmove(ptr + self.layout.hflags, struct.pack("<I", (hflags & ~HF_CPL_MASK) | cpl), 4)
        self.uc.context_restore(ctx)

    def load_real_segments(self, selectors: dict[int, int]) -> None:
        """Load segment registers (index in QEMU's order ES CS SS DS FS GS) as real mode does
        (base = selector x 16, 64 KiB limit); CR0.PE must already be clear."""
        self.load_segments({i: (sel, sel << 4, 0xFFFF, _REAL_CODE if i == CS else _REAL_DATA)
                            for i, sel in selectors.items()}, 0)

    def load_segments(self, segments: dict[int, tuple[int, int, int, int]], cpl: int,
                      delivered: bool = False) -> None:
        """Load segment caches (index in QEMU's order -> selector, base, byte-granular limit,
        descriptor flags as QEMU keeps them: the descriptor's high dword & 0x00F0FF00) and set
        hflags to match: CPL, CS32/CS64/SS32 and ADDSEG as ``cpu_x86_load_seg_cache`` derives
        them. CR0 and EFER must already hold the mode (hflags' PE and LMA follow them).
        ``delivered``: an exception has just been delivered (as ``settle``), in the same write."""
        ctx, ptr, blob = _blob(self.uc)
        caches = [struct.unpack_from("<I4xQII", blob, self.layout.segs + 24 * i) for i in range(6)]
        for index, entry in segments.items():
            caches[index] = entry
            ctypes.memmove(ptr + self.layout.segs + 24 * index, struct.pack("<I4xQII", *entry), 24)
        hflags = struct.unpack_from("<I", blob, self.layout.hflags)[0]
        hflags &= ~(HF_CPL_MASK | HF_CS32 | HF_SS32 | HF_CS64 | HF_ADDSEG)
        cs_flags, ss_flags = caches[CS][3], caches[SS][3]
        if hflags & HF_LMA and cs_flags & DESC_L:
            hflags |= HF_CS32 | HF_CS64
        elif cs_flags & DESC_B:
            hflags |= HF_CS32
        if ss_flags & DESC_B:
            hflags |= HF_SS32
        if not hflags & HF_CS64 and (not hflags & HF_PE or hflags & HF_VM or not hflags & HF_CS32
                                     or caches[DS][1] | caches[ES][1] | caches[SS][1]):
            hflags |= HF_ADDSEG  # segment bases must be added to addresses
        ctypes.memmove(ptr + self.layout.hflags, struct.pack("<I", hflags | cpl), 4)
        if delivered:
            ctypes.memmove(ptr + self.layout.old_exception, struct.pack("<i", -1), 4)
        self.uc.context_restore(ctx)

    def segments(self) -> list[tuple[int, int, int, int]]:
        """The six segment caches (QEMU's order): selector, base, limit, flags."""
        _, _, blob = _blob(self.uc)
        return [struct.unpack_from("<I4xQII", blob, self.layout.segs + 24 * i) for i in range(6)]

    def interrupt_shadow(self) -> bool:
        """True while the instruction at RIP follows STI, MOV SS or POP SS: no interrupt may be
        taken before it executes (SDM vol. 2B, STI). QEMU clears it once that instruction ran."""
        _, _, blob = _blob(self.uc)
        return bool(struct.unpack_from("<I", blob, self.layout.hflags)[0] & HF_INHIBIT_IRQ)

    def end_interrupt_shadow(self) -> None:
        """Drop the shadow (the instruction it protected is being skipped: a HLT woken up)."""
        ctx, ptr, blob = _blob(self.uc)
        hflags = struct.unpack_from("<I", blob, self.layout.hflags)[0]
        ctypes.memmove(ptr + self.layout.hflags, struct.pack("<I", hflags & ~HF_INHIBIT_IRQ), 4)
        self.uc.context_restore(ctx)

    def nmi_blocked(self) -> bool:
        """NMIs are blocked: one was delivered and no IRET has run since (SDM vol. 3A 6.7.1)."""
        _, _, blob = _blob(self.uc)
        return bool(struct.unpack_from("<I", blob, self.layout.hflags + 4)[0] & HF2_NMI)

    def block_nmi(self) -> None:
        """Block NMIs until the next IRET (QEMU's IRET helpers lift it)."""
        ctx, ptr, blob = _blob(self.uc)
        hflags2 = struct.unpack_from("<I", blob, self.layout.hflags + 4)[0]
        ctypes.memmove(ptr + self.layout.hflags + 4, struct.pack("<I", hflags2 | HF2_NMI), 4)
        self.uc.context_restore(ctx)

    def cpl(self) -> int:
        """The current privilege level as the CPU holds it."""
        _, _, blob = _blob(self.uc)
        return struct.unpack_from("<I", blob, self.layout.hflags)[0] & HF_CPL_MASK


@cache
def layout() -> Layout:
    """The offsets for the loaded unicorn, verified once per process on a scratch CPU."""
    import unicorn
    from unicorn import x86_const as x86

    found = _locate(unicorn, x86)
    _verify(unicorn, x86, found)
    return found


def _verify(unicorn, x86, found: Layout) -> None:
    # Two page faults in a row on a scratch long-mode CPU: unpatched, the second arrives as #DF;
    # with old_exception reset in between it must stay #PF with the write error code (W=1, P=0).
    uc = unicorn.Uc(unicorn.UC_ARCH_X86, unicorn.UC_MODE_64)
    uc.mem_map(0, 0x10000)
    pml4, pdpt, pd, pt = 0x1000, 0x2000, 0x3000, 0x4000
    uc.mem_write(pml4, struct.pack("<Q", pdpt | 3))
    uc.mem_write(pdpt, struct.pack("<Q", pd | 3))
    uc.mem_write(pd, struct.pack("<Q", pt | 3))
    uc.mem_write(pt, b"".join(struct.pack("<Q", (i << 12) | 3) for i in range(16)))  # 64 KiB mapped
    uc.reg_write(x86.UC_X86_REG_CR3, pml4)
    uc.reg_write(x86.UC_X86_REG_CR4, 0x20)
    uc.reg_write(x86.UC_X86_REG_MSR, (0xC0000080, 0x500))
    uc.reg_write(x86.UC_X86_REG_CR0, 0x80000011)
    store = b"\x89\x04\x25\x00\x00\x20\x00"  # mov [0x200000], eax: an unmapped page
    code = 0x8000
    uc.mem_write(code, store * 2)
    fields = ContextFields(uc, found)
    seen: list[tuple[int, int]] = []

    def hook(uc, vector, _):
        error_code, _software = fields.exception()
        seen.append((vector, error_code))
        fields.settle()
        uc.reg_write(x86.UC_X86_REG_RIP, uc.reg_read(x86.UC_X86_REG_RIP) + len(store))

    uc.hook_add(unicorn.UC_HOOK_INTR, hook)
    if fields.cpl() != 0:
        raise LayoutError("CPL of a fresh CPU does not read as 0")
    try:
        uc.emu_start(code, code + 2 * len(store), count=4)
    except unicorn.UcError as exc:
        raise LayoutError(f"check run failed: {exc}") from None
    if seen != [(14, 2), (14, 2)]:
        raise LayoutError(f"page faults seen as {seen}, expected two #PF with error code 2")
