"""Xen PV direct paging: the hypervisor's validation of a 64-bit PV guest's own page tables.

A PV guest builds its page tables in its own memory but may change them only through hypercalls
that this module validates, so that the guest can never map a page table writable, map a frame
that is not its own, or change the hypervisor's L4 slots. The rules are Xen's
(xen/arch/x86/mm.c; the function followed is named at each rule) and so are the errno values.
Pure and sans-I/O: no engine, no hypercall decoding (``paravirt.hypercalls`` does that).

Model (identity P2M): the domain owns machine frames [0, nr_frames), and its pseudo-physical
frame == machine frame. Frames from nr_frames up are hvm's (M2P, GDTs, shared_info...): no guest
entry may map them, except ``shared_frames`` (shared_info), which, like Xen's
share_xen_page_with_guest(SHARE_rw), belong to the domain with a permanent writable type
reference, so they may be mapped but never become page tables. Frames past the end of
``memory`` are not RAM (Xen: !mfn_valid, i.e. MMIO the domain has no access to).

    paging = DirectPaging(memory, nr_frames, xen_l4_entries, shared_frames=(), on_m2p=None,
                          on_flush=None)
    paging.info(mfn) -> PageInfo           type (FrameType), type_count, count, pinned, validated
    paging.pin(level, mfn) -> rc           MMUEXT_PIN_L<level>_TABLE
    paging.unpin(mfn) -> rc                MMUEXT_UNPIN_TABLE
    paging.new_baseptr(mfn, user=False, vcpu=0) -> rc   MMUEXT_NEW_(USER_)BASEPTR; user 0 = none
    paging.baseptr(user=False, vcpu=0) -> mfn | None
    paging.mmu_update([(ptr, val), ...]) -> (rc, done)  stops at the first error
    paging.update_va_mapping(va, pte, vcpu=0) -> rc     through the vCPU's kernel L4
    paging.get_seg_desc(mfn) / put_seg_desc(mfn) -> rc  set_gdt / LDT frames
    paging.get_writable(mfn) / put_writable(mfn) -> rc  a guest frame hvm writes by address
    paging.update_descriptor(maddr, desc) -> rc         HYPERVISOR_update_descriptor
    paging.clear_page(mfn) / copy_page(dst, src) -> rc  MMUEXT_CLEAR_PAGE / COPY_PAGE
    paging.type_counts() -> {type name: frames}         for --stats
    paging.check() -> [problem, ...]                    from-scratch audit; [] = sound
    paging.tlb_dirty                                    a flush the engine owes the guest

rc is 0 or a negative Xen errno. ``xen_l4_entries`` ({slot: entry}, slots 256-271) are copied
into every L4 when it is validated (Xen's init_xen_l4_slots), the other reserved slots zeroed.
``on_m2p(mfn, pfn)`` records MMU_MACHPHYS_UPDATE. ``tlb_dirty`` is set when Xen would flush TLBs:
a frame changing type (the flush that keeps stale writable translations of a frame from
outliving its becoming a page table), a directory entry changed, a new base pointer. When
``on_flush`` is given it is called at the end of such an operation and the flag cleared;
otherwise the caller clears it after flushing. Xen does not flush for L1 updates: the guest asks
(UVMF_* flags, MMUEXT_INVLPG/TLB_FLUSH).

The errors, as Xen returns them: flags Xen refuses (an L1's PWT/PCD/PAT, a directory's
PWT/PCD/PSE/G: no PV superpages) -EINVAL; an L1 entry at hvm's own frame -EBUSY, at a frame that
is not RAM -EPERM (all address bits set, Xen's INVALID_MFN: -EINVAL); a writable L1 entry at a
page table or descriptor page -EBUSY; a directory entry at a frame not the domain's or not
validating as the next level -EINVAL (or the lower table's own error, passed up); a reserved L4
slot, a second pin, unpinning what is not pinned, a frame of another type in use: -EINVAL; an
unknown mmu_update command -ENOSYS.

Linear page tables follow Xen's default (pv-linear-pt on, define_get_linear_pagetable): a
directory entry may point at a table of its own level only read-only, and only at itself or at
an already validated table without linear entries of its own, from a table not itself mapped
linearly.

Guests see Xen's adjustments in their entries (pv/mm.h adjust_guest_l1e..l4e): every present
entry gets _PAGE_USER (the 64-bit PV kernel runs in ring 3), a kernel L1 entry also the software
bit 52 (_PAGE_GUEST_KERNEL), a user L1 entry _PAGE_GLOBAL, an L4 entry _PAGE_ACCESSED. Global
user translations outlive a CR3 write when CR4.PGE is set: the engine must then flush them on a
base-pointer switch.

Reference counting, as Xen's struct page_info: ``count`` is the general references to a frame
(mappings, table entries, pins, base pointers, descriptor-table uses, hvm's permanent reference
on a shared frame; Xen's allocation reference is left out), ``type_count`` the references that
need it to keep its type. A frame's type may change only when its type count is 0; taking the
first reference of a table type validates the table (recursively taking the next level's
types), dropping the last releases what its entries hold.

Where hvm differs from Xen on purpose: Xen writes its adjustments (_PAGE_USER etc.) into a table
entry by entry while validating and leaves them when validation fails part-way; hvm writes them
only when the whole operation succeeds, so a refused hypercall leaves guest memory as it was.
Xen's preemption and continuations (-ERESTART, PGT_partial, old_guest_table) do not exist here:
operations run to completion, and a failed validation releases what it took at once, which is
the state Xen reaches when its deferred clean-up runs. The L1TF checks on non-present entries
(pv_l1tf_check_*) concern hosts running shadow paging for vulnerable CPUs and are left out.
"""
from __future__ import annotations

import struct
from collections import Counter
from dataclasses import dataclass
from enum import IntEnum
from typing import Callable, Iterable

from . import abi as x

PAGE = 4096
ENTRIES = 512
MASK64 = (1 << 64) - 1
_TABLE = struct.Struct("<512Q")
_ENTRY = struct.Struct("<Q")
_ZERO_PAGE = bytes(PAGE)


class FrameType(IntEnum):
    """A frame's type (Xen asm/mm.h PGT_*, shifted down): tables are their level."""

    NONE = 0
    L1 = 1
    L2 = 2
    L3 = 3
    L4 = 4
    SEG_DESC = 5
    WRITABLE = 7


_NONE, _L1, _L4, _SEG, _WRITABLE = 0, 1, 4, 5, 7
_VALIDATED, _PINNED = 1, 2            # bits of the per-frame state byte

_P, _RW, _US, _PWT, _PCD = x.PTE_P, x.PTE_RW, x.PTE_US, x.PTE_PWT, x.PTE_PCD
_A, _D, _PSE, _G = x.PTE_A, x.PTE_D, x.PTE_PSE, x.PTE_G
_ADDR = x.PTE_ADDR
_AD = _A | _D
# Xen's software bit marking a guest-kernel page (x86_64/page.h _PAGE_GUEST_KERNEL: flag bit
# 12, PTE bit 52): 64-bit PV kernels run in ring 3, so their pages get _PAGE_USER as well.
_GUEST_KERNEL = 1 << 52

# What a guest entry may set (mm.c arch_init_memory base_disallow_mask): P, RW, US, A, D, the
# available bits 9-11 and 52-62, NX. Refused: PWT, PCD, PSE/PAT, G. An L1 may set G
# (L1_DISALLOW_MASK); a domain without I/O memory may not choose cache attributes
# (l1_disallow_mask: PWT/PCD/PAT). _PAGE_GNTTAB is 0 in release builds.
_BASE_DISALLOW = _PWT | _PCD | _PSE | _G
_L1_DISALLOW = _PWT | _PCD | x.PTE_PAT
# Bits whose change re-validates an entry (mm.c FASTPATH_FLAG_WHITELIST, and with linear page
# tables allowed the same for directories): the frame, P, RW and the cache attributes.
_REVALIDATE = _ADDR | _P | _RW | _PWT | _PCD | _PSE
# Xen's INVALID_MFN as an L1 entry spells it (PADDR_MASK >> PAGE_SHIFT): -EINVAL, not -EPERM.
_INVALID_MFN = _ADDR >> 12

_XEN_SLOTS = range(x.FIRST_XEN_L4_SLOT, x.LAST_XEN_L4_SLOT + 1)
_GUEST_L4_SLOTS = [i for i in range(ENTRIES) if i not in _XEN_SLOTS]   # is_guest_l4_slot

# Segment descriptors (asm/desc.h) and GUEST_KERNEL_RPL of a 64-bit PV domain.
_SEG_TYPE, _SEG_S, _SEG_DPL, _SEG_P = 0xF << 8, 1 << 12, 3 << 13, 1 << 15
_CALL_GATE = 0xC << 8
_GUEST_KERNEL_RPL = 3


@dataclass(frozen=True)
class PageInfo:
    """A frame's accounting (Xen: count_info and type_info)."""

    type: FrameType
    type_count: int
    count: int
    pinned: bool
    validated: bool
    linear: int = 0        # Xen linear_pt_count: + linear entries held, - linear uses of it
    owned: bool = True     # the domain's (or shared with it)


def _frame(entry: int) -> int:
    return (entry & _ADDR) >> 12


def adjust_l1e(e: int) -> int:
    """pv/mm.h adjust_guest_l1e: a present entry without _PAGE_USER is the guest kernel's (it
    runs in ring 3, so gets _PAGE_USER plus the marker); the guest's user pages go global."""
    if e & _P:
        if not e & _US:
            e |= _GUEST_KERNEL | _US
        if not e & _GUEST_KERNEL:
            e |= _G | _US
    return e


def _adjust_dir(e: int, level: int) -> int:
    """adjust_guest_l2e/l3e (+_PAGE_USER) and l4e (+_PAGE_USER, +_PAGE_ACCESSED)."""
    if e & _P:
        e |= _US | (_A if level == 4 else 0)
    return e


def check_descriptor(raw: int) -> int | None:
    """pv/descriptor-tables.c check_descriptor for a 64-bit PV domain: the descriptor as Xen
    stores it (DPL raised to the guest kernel's 3; call gates to DPL 0 with the DPL kept in the
    selector's RPL, so that using one traps to Xen), or None when refused."""
    a, b = raw & 0xFFFFFFFF, raw >> 32 & 0xFFFFFFFF
    if not b & _SEG_P:
        return raw                                 # not present: always faults, safe
    dpl = (b >> 13) & 3
    if dpl < _GUEST_KERNEL_RPL:
        dpl = _GUEST_KERNEL_RPL
    b = (b & ~_SEG_DPL) | dpl << 13
    if b & _SEG_S:
        return a | b << 32                         # code and data: no base/limit checks
    if b & _SEG_TYPE == 0:
        return raw                                 # type 0: a call gate's second half
    if b & _SEG_TYPE != _CALL_GATE:
        return None
    cs = a >> 16
    # guest_gate_selector_okay: a guest GDT selector, Xen's flat kernel CS, or an LDT one.
    if not ((cs >> 3) < x.FIRST_RESERVED_GDT_ENTRY or cs == x.FLAT_KERNEL_CS or cs & 4):
        return None
    b &= ~_SEG_DPL
    cs = (cs & ~3) | dpl
    a = (a & 0xFFFF) | cs << 16
    if b & 0xFF:                                   # reserved bits of a 64-bit gate
        return None
    return a | b << 32


class DirectPaging:
    """The frame types and reference counts of one PV domain, and the hypercalls changing them."""

    def __init__(self, memory, nr_frames: int, xen_l4_entries: dict[int, int], *,
                 shared_frames: Iterable[int] = (), on_m2p: Callable[[int, int], None] | None = None,
                 on_flush: Callable[[], None] | None = None):
        self.memory = memory
        self.nr_frames = nr_frames
        self._shared = frozenset(shared_frames)
        if any(f < nr_frames for f in self._shared):
            raise ValueError("shared frames are hvm's, above the domain's frames")
        bad = [s for s in xen_l4_entries if s not in _XEN_SLOTS]
        if bad:
            raise ValueError(f"L4 slots {bad} are not the hypervisor's (256-271)")
        self._limit = max([nr_frames, *(f + 1 for f in self._shared)])
        size = getattr(memory, "size", None)
        self.machine_frames = size // PAGE if size is not None else self._limit
        if self.machine_frames < self._limit:
            raise ValueError("memory does not hold the domain's frames")
        self._xen_l4 = [xen_l4_entries.get(s, 0) & MASK64 for s in _XEN_SLOTS]
        self.on_m2p, self.on_flush = on_m2p, on_flush
        n = self._limit
        self._type = bytearray(n)
        self._state = bytearray(n)
        self._tcount = [0] * n
        self._count = [0] * n
        self._linear = [0] * n
        for f in self._shared:               # share_xen_page_with_guest(SHARE_rw)
            self._type[f], self._state[f] = _WRITABLE, _VALIDATED
            self._tcount[f] = self._count[f] = 1
        self._base: dict[tuple[int, bool], int] = {}
        self._holds: Counter[tuple[int, int]] = Counter()   # (frame, type): hvm's own references
        self._pending: list[tuple[int, bytes]] = []
        self.tlb_dirty = False

    # -- queries ------------------------------------------------------------------------------
    def _owned(self, m: int) -> bool:
        return 0 <= m < self.nr_frames or m in self._shared

    def info(self, mfn: int) -> PageInfo:
        if not 0 <= mfn < self._limit:
            return PageInfo(FrameType.NONE, 0, 0, False, False, 0, False)
        state = self._state[mfn]
        return PageInfo(FrameType(self._type[mfn]), self._tcount[mfn], self._count[mfn],
                        bool(state & _PINNED), bool(state & _VALIDATED), self._linear[mfn],
                        self._owned(mfn))

    def baseptr(self, user: bool = False, vcpu: int = 0) -> int | None:
        return self._base.get((vcpu, user))

    def type_counts(self) -> dict[str, int]:
        """Frames in use per type (type count > 0)."""
        seen = Counter(self._type[m] for m in range(self._limit) if self._tcount[m])
        return {FrameType(t).name: seen[t] for t in sorted(seen)}

    # -- operations (each applies its deferred writes only when it succeeds) --------------------
    def _done(self, rc: int) -> int:
        if rc == 0:
            for gpa, data in self._pending:
                self.memory.write(gpa, data)
        self._pending.clear()
        return rc

    def _flushed(self) -> None:
        if self.tlb_dirty and self.on_flush is not None:
            self.tlb_dirty = False
            self.on_flush()

    def pin(self, level: int, mfn: int) -> int:
        """do_mmuext_op MMUEXT_PIN_L*_TABLE."""
        rc = self._done(self._pin(level, mfn))
        self._flushed()
        return rc

    def _pin(self, level: int, m: int) -> int:
        if not 1 <= level <= 4 or not self._owned(m):
            return -x.EINVAL                    # get_page_from_gfn fails: not the domain's
        self._count[m] += 1
        rc = self._get_type(m, level)
        if rc:
            self._count[m] -= 1
            return rc
        if self._state[m] & _PINNED:
            self._put_type(m)                   # pin_drop
            self._count[m] -= 1
            return -x.EINVAL
        self._state[m] |= _PINNED
        return 0

    def unpin(self, mfn: int) -> int:
        """do_mmuext_op MMUEXT_UNPIN_TABLE: drops the pin's type and general references."""
        if not self._owned(mfn) or not self._state[mfn] & _PINNED:
            return -x.EINVAL
        self._state[mfn] &= ~_PINNED
        self._put_type(mfn)
        self._count[mfn] -= 1
        self._flushed()
        return 0

    def new_baseptr(self, mfn: int, user: bool = False, vcpu: int = 0) -> int:
        """new_guest_cr3 (kernel) / MMUEXT_NEW_USER_BASEPTR: take an L4 type reference on the
        new table, then drop the old one's. A user base of 0 means none (the ABI's)."""
        rc = self._done(self._new_baseptr(mfn, user, vcpu))
        self._flushed()
        return rc

    def _new_baseptr(self, m: int, user: bool, vcpu: int) -> int:
        key = (vcpu, user)
        old = self._base.get(key)
        if user and m == 0:
            if old is not None:
                del self._base[key]
                self._put_page_and_type(old)
            return 0
        if old == m:
            if not user:
                self.tlb_dirty = True           # write_ptbase
            return 0
        rc = self._get_page_and_type(m, _L4)
        if rc:
            return rc
        self._base[key] = m
        self.tlb_dirty = True
        if old is not None:
            self._put_page_and_type(old)
        return 0

    def mmu_update(self, requests: Iterable[tuple[int, int]]) -> tuple[int, int]:
        """do_mmu_update: (rc, requests done); stops at the first failing request."""
        done = 0
        rc = 0
        for ptr, val in requests:
            rc = self._done(self._mmu_one(ptr & MASK64, val & MASK64))
            if rc:
                break
            done += 1
        self._flushed()
        return rc, done

    def _mmu_one(self, ptr: int, val: int) -> int:
        cmd = ptr & 7
        if cmd in (x.MMU_NORMAL_PT_UPDATE, x.MMU_PT_UPDATE_PRESERVE_AD, x.MMU_PT_UPDATE_NO_TRANSLATE):
            ptr -= cmd
            m = ptr >> 12
            if not self._owned(m):
                return -x.EINVAL                # "Could not get page for normal update"
            index = (ptr & (PAGE - 1)) >> 3
            preserve_ad = cmd == x.MMU_PT_UPDATE_PRESERVE_AD
            if self._tcount[m] and self._state[m] & _VALIDATED:    # page_lock() succeeds
                t = self._type[m]
                if t == _L1:
                    return self._mod_l1(m, index, val, preserve_ad)
                if t <= _L4:
                    rc = self._mod_dir(m, index, val, preserve_ad, t)
                    if rc == 0:
                        self.tlb_dirty = True   # flush_linear_pt
                    return rc
                if t == _WRITABLE:
                    self.memory.write(ptr, _ENTRY.pack(val))
                    return 0
                return -x.EINVAL                # a descriptor page: update_descriptor only
            # Not in use as anything: a plain write under a transient writable type reference.
            self._get_type(m, _WRITABLE)
            self.memory.write(ptr, _ENTRY.pack(val))
            self._put_type(m)
            return 0
        if cmd == x.MMU_MACHPHYS_UPDATE:
            m = ptr >> 12
            if not self._owned(m):
                return -x.EINVAL
            if self.on_m2p is not None:
                self.on_m2p(m, val)
            return 0
        return -x.ENOSYS

    def update_va_mapping(self, va: int, pte: int, vcpu: int = 0) -> int:
        """__do_update_va_mapping: the L1 entry mapping ``va`` in the vCPU's kernel L4 (found
        as map_guest_l1e finds it through Xen's linear mapping), changed as mod_l1_entry."""
        rc = self._done(self._update_va(va & MASK64, pte & MASK64, vcpu))
        self._flushed()
        return rc

    def _update_va(self, va: int, pte: int, vcpu: int) -> int:
        l1 = self.kernel_l1(va, vcpu)
        if l1 is None:
            return -x.EINVAL
        return self._mod_l1(l1, (va >> 12) & 511, pte, False)

    def kernel_l1(self, va: int, vcpu: int = 0) -> int | None:
        """The validated L1 table that maps ``va`` in the vCPU's kernel page tables (Xen's
        map_guest_l1e / guest_get_eff_kern_l1e), or None."""
        if not (va < 1 << 47 or va >= x.HYPERVISOR_VIRT_END):   # __addr_ok
            return None
        table = self._base.get((vcpu, False))
        if table is None:
            return None
        for shift in (39, 30):
            entry = self._entry(table, (va >> shift) & 511)
            if not entry & _P or not self._owned(_frame(entry)):
                return None
            table = _frame(entry)
        l2e = self._entry(table, (va >> 21) & 511)
        if l2e & (_P | _PSE) != _P:
            return None
        l1 = _frame(l2e)
        if not self._owned(l1) or not (self._tcount[l1] and self._state[l1] & _VALIDATED) \
                or self._type[l1] != _L1:
            return None
        return l1

    def is_l1_table(self, mfn: int) -> bool:
        """A frame in use as a validated L1 page table."""
        return 0 <= mfn < self._limit and self._type[mfn] == _L1 and bool(self._tcount[mfn]) \
            and bool(self._state[mfn] & _VALIDATED)

    def write_l1_entry(self, l1: int, index: int, expected: int, new: int) -> int:
        """A guest's own store into an L1 table, as Xen's ptwr_emulated_update takes it: the new
        entry validated as mod_l1_entry does; -EAGAIN when the entry no longer holds
        ``expected`` (what the emulated instruction read)."""
        if not self.is_l1_table(l1) or not 0 <= index < 512:
            return -x.EINVAL
        if self._entry(l1, index) != expected:
            return -x.EAGAIN
        rc = self._done(self._mod_l1(l1, index, new & MASK64, False))
        self._flushed()
        return rc

    def get_seg_desc(self, mfn: int) -> int:
        """A GDT/LDT frame (pv_set_gdt, pv_map_ldt_shadow_page): SEG_DESC type, its 512
        descriptors validated (validate_segdesc_page). -EINVAL when refused."""
        return self._hold(mfn, _SEG)

    def put_seg_desc(self, mfn: int) -> int:
        """Release a get_seg_desc reference (pv_destroy_gdt, pv_destroy_ldt)."""
        return self._release(mfn, _SEG)

    def get_writable(self, mfn: int) -> int:
        """A writable type reference for a guest frame hvm itself writes by machine address
        (a console or xenstore ring, a registered vcpu_info), as Xen's map_guest_area and the
        console backend's mapping hold one: while held the frame cannot become a page table or
        descriptor page, so hvm's writes can never land in one. -EINVAL when refused."""
        return self._hold(mfn, _WRITABLE)

    def put_writable(self, mfn: int) -> int:
        return self._release(mfn, _WRITABLE)

    def _hold(self, mfn: int, t: int) -> int:
        rc = self._done(self._get_page_and_type(mfn, t))
        self._flushed()
        if rc:
            return -x.EINVAL                    # pv_set_gdt, map_guest_area: any failure
        self._holds[mfn, t] += 1
        return 0

    def _release(self, mfn: int, t: int) -> int:
        if not self._holds[mfn, t]:
            self._holds.pop((mfn, t), None)
            return -x.EINVAL
        self._holds[mfn, t] -= 1
        if not self._holds[mfn, t]:
            del self._holds[mfn, t]
        self._put_page_and_type(mfn)
        return 0

    def update_descriptor(self, maddr: int, desc: int) -> int:
        """do_update_descriptor: one descriptor, checked, into a descriptor page or a page not
        in use as a table."""
        maddr, desc = maddr & MASK64, desc & MASK64
        fixed = check_descriptor(desc)
        if maddr & 7 or fixed is None:
            return -x.EINVAL
        m = maddr >> 12
        if not self._owned(m):
            return -x.EINVAL
        t = _SEG if self._type[m] == _SEG else _WRITABLE
        if self._get_type(m, t):
            return -x.EINVAL
        self.memory.write(maddr, _ENTRY.pack(fixed))
        self._put_type(m)
        self._flushed()
        return 0

    def clear_page(self, mfn: int) -> int:
        """MMUEXT_CLEAR_PAGE: only a page that can take a writable type."""
        if not self._owned(mfn) or self._get_type(mfn, _WRITABLE):
            return -x.EINVAL
        self.memory.write(mfn * PAGE, bytes(PAGE))
        self._put_type(mfn)
        self._flushed()
        return 0

    def copy_page(self, dst: int, src: int) -> int:
        """MMUEXT_COPY_PAGE: any page of the domain into one that can take a writable type."""
        if not self._owned(src) or not self._owned(dst) or self._get_type(dst, _WRITABLE):
            return -x.EINVAL
        self.memory.write(dst * PAGE, self.memory.read(src * PAGE, PAGE))
        self._put_type(dst)
        self._flushed()
        return 0

    # -- memory -------------------------------------------------------------------------------
    def _table(self, m: int) -> tuple[int, ...]:
        return _TABLE.unpack(self.memory.read(m * PAGE, PAGE))

    def _entry(self, m: int, index: int) -> int:
        return _ENTRY.unpack(self.memory.read(m * PAGE + index * 8, 8))[0]

    def _set_entry(self, m: int, index: int, old: int, new: int, preserve_ad: bool) -> None:
        """update_intpte: with MMU_PT_UPDATE_PRESERVE_AD the old entry's A/D bits survive."""
        if preserve_ad:
            new |= old & _AD
        self.memory.write(m * PAGE + index * 8, _ENTRY.pack(new))

    # -- references (mm.c get_page/put_page, _get_page_type/_put_page_type) --------------------
    def _get_page_and_type(self, m: int, t: int) -> int:
        """get_page_and_type_from_mfn: -EINVAL for a frame not the domain's."""
        if not self._owned(m):
            return -x.EINVAL
        self._count[m] += 1
        rc = self._get_type(m, t)
        if rc:
            self._count[m] -= 1
        return rc

    def _put_page_and_type(self, m: int) -> None:
        self._put_type(m)
        self._count[m] -= 1

    def _get_type(self, m: int, t: int) -> int:
        """_get_page_type: another reference of type ``t``; the first one of a table or
        descriptor type validates the frame's contents."""
        tc = self._tcount[m]
        if tc:
            # Only levels below a table are validated from it, so a frame mid-validation is
            # never asked for its own type: unvalidated here means refused.
            if self._type[m] != t or not self._state[m] & _VALIDATED:
                return -x.EINVAL
            self._tcount[m] = tc + 1
            return 0
        old = self._type[m]
        if old != t:
            if old != _NONE:
                self.tlb_dirty = True           # no stale translation may outlive the old type
            self._type[m] = t
            self._state[m] &= ~_VALIDATED
        self._tcount[m] = 1
        if self._state[m] & _VALIDATED:
            return 0
        if t == _WRITABLE:
            self._state[m] |= _VALIDATED
            return 0
        self._linear[m] = 0
        rc = self._validate(m, t)
        if rc:
            self._type[m], self._tcount[m] = _NONE, 0    # validate_page: type_info = 0
            return rc
        self._state[m] |= _VALIDATED
        return 0

    def _put_type(self, m: int, container: int = -1) -> None:
        """_put_page_type: dropping the last reference of a table releases its entries
        (_put_final_page_type). ``container`` is the table whose entry held the reference: a
        same-type container means a linear page-table entry, whose counts go too."""
        tc = self._tcount[m]
        t = self._type[m]
        linear = container >= 0 and self._type[container] == t
        if tc == 1 and _L1 <= t <= _L4 and self._state[m] & _VALIDATED:
            self._state[m] &= ~_VALIDATED
            self._devalidate(m, t)
        self._tcount[m] = tc - 1
        if linear:
            self._linear[m] += 1                # dec_linear_uses
            self._linear[container] -= 1        # dec_linear_entries

    def _put_table_page(self, m: int, container: int) -> None:
        """put_pt_page."""
        self._put_type(m, container)
        self._count[m] -= 1

    # -- entries (mm.c get_page_from_l1e..l4e, put_page_from_l1e..l4e) --------------------------
    def _get_l1e(self, e: int) -> int:
        """get_page_from_l1e for a present entry."""
        if e & _L1_DISALLOW:
            return -x.EINVAL
        m = (e & _ADDR) >> 12
        if not (m < self.nr_frames or m in self._shared):
            if m >= self.machine_frames:        # not RAM: MMIO the domain may not map
                return -x.EINVAL if m == _INVALID_MFN else -x.EPERM
            return -x.EBUSY                     # hvm's own page: could_not_pin
        self._count[m] += 1
        if e & _RW and self._get_type(m, _WRITABLE):
            self._count[m] -= 1
            return -x.EBUSY                     # a table or descriptor page: never writable
        return 0

    def _put_l1e(self, e: int) -> None:
        m = (e & _ADDR) >> 12
        if e & _RW:
            self._put_type(m)
        self._count[m] -= 1

    def _get_dir_entry(self, e: int, level: int, table: int) -> int:
        """get_page_from_l2e/l3e/l4e for a present entry of a level-``level`` table: the next
        level's type, or failing that a linear page-table entry."""
        if e & _BASE_DISALLOW:
            return -x.EINVAL                    # PSE among them: no PV superpages
        m = (e & _ADDR) >> 12
        rc = self._get_page_and_type(m, level - 1)
        if rc == -x.EINVAL and self._get_linear(e, m, table, level):
            rc = 0
        return rc

    def _get_linear(self, e: int, m: int, table: int, level: int) -> bool:
        """define_get_linear_pagetable (Xen's default, pv-linear-pt on): an entry may point at
        a table of its own level only read-only (else the guest could write its own PTEs) and
        only at itself or at an already validated table that has no linear entries of its own,
        from a table not itself used linearly -- which keeps the references acyclic."""
        if e & _RW:
            return False
        if m == table:
            return True                          # a self-map holds no reference
        if not self._owned(m):
            return False
        linear = self._linear
        if linear[table] < 0 or linear[m] > 0:
            return False
        if self._type[m] != level or not self._state[m] & _VALIDATED:
            return False
        linear[table] += 1
        linear[m] -= 1
        self._count[m] += 1
        self._tcount[m] += 1
        return True

    def _put_dir_entry(self, e: int, table: int) -> None:
        """put_page_from_l2e/l3e/l4e for a present entry."""
        m = (e & _ADDR) >> 12
        if m != table:
            self._put_table_page(m, table)

    # -- whole tables (mm.c promote_l*_table / demote_l*_table) --------------------------------
    def _validate(self, m: int, t: int) -> int:
        if t == _SEG:
            return self._validate_seg_desc(m)
        entries = self._table(m)
        if t == _L1:
            return self._promote_l1(m, entries)
        return self._promote_dir(m, entries, t)

    def _promote_l1(self, m: int, entries: tuple[int, ...]) -> int:
        taken = []
        get = self._get_l1e
        for i, e in enumerate(entries):
            if e & _P:
                rc = get(e)
                if rc:
                    for j in taken:
                        self._put_l1e(entries[j])
                    return rc
                taken.append(i)
        if taken:
            adjusted = list(entries)
            for i in taken:
                adjusted[i] = adjust_l1e(entries[i])
            self._defer_table(m, entries, adjusted)
        return 0

    def _promote_dir(self, m: int, entries: tuple[int, ...], level: int) -> int:
        taken = []
        slots = _GUEST_L4_SLOTS if level == _L4 else range(ENTRIES)
        for i in slots:
            e = entries[i]
            if e & _P:
                rc = self._get_dir_entry(e, level, m)
                if rc:
                    for j in reversed(taken):
                        self._put_dir_entry(entries[j], m)
                    return rc
                taken.append(i)
        adjusted = list(entries)
        for i in taken:
            adjusted[i] = _adjust_dir(entries[i], level)
        if level == _L4:
            adjusted[x.FIRST_XEN_L4_SLOT:x.LAST_XEN_L4_SLOT + 1] = self._xen_l4   # init_xen_l4_slots
        self._defer_table(m, entries, adjusted)
        return 0

    def _defer_table(self, m: int, entries, adjusted: list[int]) -> None:
        if list(entries) != adjusted:
            self._pending.append((m * PAGE, _TABLE.pack(*adjusted)))

    def _devalidate(self, m: int, t: int) -> None:
        entries = self._table(m)
        if t == _L1:
            put = self._put_l1e
            for e in entries:
                if e & _P:
                    put(e)
            return
        slots = _GUEST_L4_SLOTS if t == _L4 else range(ENTRIES)
        for i in reversed(slots):
            e = entries[i]
            if e & _P:
                self._put_dir_entry(e, m)

    def _validate_seg_desc(self, m: int) -> int:
        """validate_segdesc_page: all 512 descriptors pass check_descriptor (as fixed by it)."""
        descs = self._table(m)
        fixed = [check_descriptor(d) for d in descs]
        if None in fixed:
            return -x.EINVAL
        self._defer_table(m, descs, fixed)
        return 0

    # -- single entries (mm.c mod_l1_entry .. mod_l4_entry) ------------------------------------
    def _mod_l1(self, m: int, index: int, new: int, preserve_ad: bool) -> int:
        old = self._entry(m, index)
        if new & _P:
            if new & _L1_DISALLOW:
                return -x.EINVAL
            new = adjust_l1e(new)
            if not (old ^ new) & _REVALIDATE:   # same frame and rights: no references move
                self._set_entry(m, index, old, new, preserve_ad)
                return 0
            rc = self._get_l1e(new)
            if rc:
                return rc
        self._set_entry(m, index, old, new, preserve_ad)
        if old & _P:
            self._put_l1e(old)
        return 0

    def _mod_dir(self, m: int, index: int, new: int, preserve_ad: bool, level: int) -> int:
        if level == _L4 and index in _XEN_SLOTS:
            return -x.EINVAL                    # "L4 update in Xen-private area"
        old = self._entry(m, index)
        if new & _P:
            if new & _BASE_DISALLOW:
                return -x.EINVAL
            new = _adjust_dir(new, level)
            if not (old ^ new) & _REVALIDATE:
                self._set_entry(m, index, old, new, preserve_ad)
                return 0
            rc = self._get_dir_entry(new, level, m)
            if rc:
                return rc
        self._set_entry(m, index, old, new, preserve_ad)
        if old & _P:
            self._put_dir_entry(old, m)
        return 0

    # -- audit ---------------------------------------------------------------------------------
    def check(self) -> list[str]:
        """Recount every reference from the tables in memory, the pins, base pointers and hvm's
        own references, compare with the books, and walk every validated L4 as the CPU would:
        a list of what is wrong (empty when sound). For tests: it reads every table."""
        problems: list[str] = []
        n = self._limit
        types, states, owned = self._type, self._state, self._owned
        count, tcount, linear = [0] * n, [0] * n, [0] * n
        wants: dict[int, set[int]] = {}
        rows: dict[int, list[tuple[int, int]]] = {}

        def present(m: int) -> list[tuple[int, int]]:
            if m not in rows:
                raw = self.memory.read(m * PAGE, PAGE)
                rows[m] = [] if raw == _ZERO_PAGE else [(i, e) for i, e in enumerate(_TABLE.unpack(raw)) if e & _P]
            return rows[m]

        def hold(m: int, t: int | None, why: str) -> None:
            if not owned(m):
                problems.append(f"{why}: frame {m:#x} is not the domain's")
                return
            count[m] += 1
            if t is not None:
                tcount[m] += 1
                wants.setdefault(m, set()).add(t)

        for f in self._shared:
            hold(f, _WRITABLE, "shared frame")
        for (vcpu, user), m in self._base.items():
            hold(m, _L4, f"vCPU {vcpu} {'user' if user else 'kernel'} base pointer")
        for (m, t), k in self._holds.items():
            for _ in range(k):
                hold(m, t, f"hvm's {FrameType(t).name} reference")
        for m in range(n):
            state, t = states[m], types[m]
            if state & _PINNED:
                if not (_L1 <= t <= _L4 and state & _VALIDATED):
                    problems.append(f"frame {m:#x} pinned but not a validated table")
                hold(m, t, "pin")
            if not state & _VALIDATED or not _L1 <= t <= _L4:
                continue
            where = f"L{t} {m:#x}"
            if t == _L4 and [self._entry(m, i) for i in _XEN_SLOTS] != self._xen_l4:
                problems.append(f"{where}: reserved slots 256-271 are not hvm's")
            for i, e in present(m):
                if t == _L4 and i in _XEN_SLOTS:
                    continue
                target = _frame(e)
                at = f"{where}[{i}]"
                if t == _L1:
                    if e & _L1_DISALLOW:
                        problems.append(f"{at}: flags {e & _L1_DISALLOW:#x} Xen refuses")
                    hold(target, _WRITABLE if e & _RW else None, at)
                    continue
                if e & _BASE_DISALLOW:
                    problems.append(f"{at}: flags {e & _BASE_DISALLOW:#x} Xen refuses")
                if target == m:
                    if e & _RW:
                        problems.append(f"{at}: writable self-map")
                    continue
                if owned(target) and types[target] == t:
                    if e & _RW:
                        problems.append(f"{at}: writable linear page-table entry")
                    linear[m] += 1
                    linear[target] -= 1
                    hold(target, t, at)
                else:
                    hold(target, t - 1, at)
        for m in range(n):
            t, tc, state = types[m], self._tcount[m], states[m]
            if (count[m], tcount[m]) != (self._count[m], tc):
                problems.append(f"frame {m:#x}: books say count {self._count[m]} type count {tc}, "
                                f"the tables {count[m]} and {tcount[m]}")
            if linear[m] != self._linear[m]:
                problems.append(f"frame {m:#x}: linear count {self._linear[m]}, recount {linear[m]}")
            for want in wants.get(m, ()):
                if want != t:
                    problems.append(f"frame {m:#x} is {FrameType(t).name}, referenced as {FrameType(want).name}")
            if tc and t != _WRITABLE and not state & _VALIDATED:
                problems.append(f"frame {m:#x} in use as {FrameType(t).name} but not validated")
            if not tc and state & _VALIDATED and _L1 <= t <= _L4:
                problems.append(f"frame {m:#x}: table validated with no type reference")
            if t == _SEG and tc and any(check_descriptor(d) != d for d in self._table(m)):
                problems.append(f"frame {m:#x}: descriptor page holds unchecked descriptors")
        problems += self._walk(present)
        return problems

    def _walk(self, present: Callable[[int], list[tuple[int, int]]]) -> list[str]:
        """Every translation a validated L4 gives the CPU (linear entries read as the level
        they are used at): no writable leaf may be anything but a writable-typed frame, no
        leaf may be a frame that is not the domain's, no superpage."""
        problems = []
        types, states, owned = self._type, self._state, self._owned
        seen = set()
        stack = [(m, 4, True) for m in range(self._limit) if types[m] == _L4 and states[m] & _VALIDATED]
        while stack:
            key = stack.pop()
            if key in seen:
                continue
            seen.add(key)
            m, level, writable = key
            hvm_slots = types[m] == _L4 and states[m] & _VALIDATED
            for i, e in present(m):
                if hvm_slots and i in _XEN_SLOTS:
                    continue
                target = _frame(e)
                rw = writable and bool(e & _RW)
                if not owned(target):
                    problems.append(f"frame {m:#x}[{i}] read as L{level}: maps frame {target:#x}, not the domain's")
                elif level in (2, 3) and e & _PSE:
                    problems.append(f"frame {m:#x}[{i}] read as L{level}: a superpage")
                elif level > 1:
                    stack.append((target, level - 1, rw))
                elif rw and not (types[target] == _WRITABLE and self._tcount[target]):
                    problems.append(f"frame {m:#x}[{i}]: {FrameType(types[target]).name} "
                                    f"frame {target:#x} mapped writable")
        return problems


__all__ = ["DirectPaging", "FrameType", "PageInfo", "adjust_l1e", "check_descriptor"]
