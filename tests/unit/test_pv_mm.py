"""Xen PV direct paging (paravirt/mm.py) on page tables placed by hand in a GuestMemory.

Each rule of Xen's validation (xen/arch/x86/mm.c, named per test) gets a minimal case: the
forbidden update refused with the errno Xen returns and guest memory and the books unchanged,
the allowed one done. Then hypothesis drives random pin/unpin/new_baseptr/mmu_update/
update_va_mapping/descriptor sequences (valid-ish and garbage) against the invariant audit
``check()``: no page-table frame writable through any reachable mapping, no foreign frame mapped,
the reserved L4 slots hvm's, and the counts equal to a from-scratch recount.
HVM_FUZZ_EXAMPLES sets the number of sequences (default 200); CI derandomizes.
"""
from __future__ import annotations

import hashlib
import os
import struct

import pytest
from hypothesis import HealthCheck, settings, strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from hvm.memory import GuestMemory, MiB
from paravirt import abi as x
from paravirt.mm import DirectPaging, FrameType, check_descriptor

P, RW, US, A, D = x.PTE_P, x.PTE_RW, x.PTE_US, x.PTE_A, x.PTE_D
PWT, PCD, PSE, PAT, G, NX = x.PTE_PWT, x.PTE_PCD, x.PTE_PSE, x.PTE_PAT, x.PTE_G, x.PTE_NX
GUEST_KERNEL = 1 << 52              # Xen's _PAGE_GUEST_KERNEL (x86_64/page.h)
PAGE = 4096

SIZE = 16 * MiB
NR = 3072                           # the domain's frames; 3072..4095 are hvm's
SHARED = NR                         # shared_info, shared with the guest read-write
HVM_L3 = NR + 10                    # hvm's table behind its L4 slots
MACHINE = SIZE // PAGE
XEN_L4 = {256: HVM_L3 * PAGE | P | RW | US, 262: (HVM_L3 + 1) * PAGE | P | RW | US}


def books(dp: DirectPaging, frames: int) -> list[tuple]:
    """Every frame's counts, and its type while it has type references (with none, the type a
    frame last had means nothing: Xen too leaves it for the next reference to change)."""
    out = []
    for m in range(frames):
        i = dp.info(m)
        out.append((i.type if i.type_count else None, i.type_count, i.count, i.pinned,
                    i.validated if i.type_count else None, i.linear))
    return out


def pte(frame: int, flags: int = P | RW) -> int:
    return frame * PAGE | flags


class Domain:
    def __init__(self, memory=None):
        self.mem = memory or GuestMemory(SIZE, [(0, SIZE)])
        self.m2p: list[tuple[int, int]] = []
        self.flushes = 0
        self.dp = DirectPaging(self.mem, NR, XEN_L4, shared_frames={SHARED},
                               on_m2p=lambda mfn, pfn: self.m2p.append((mfn, pfn)), on_flush=self._flush)

    def _flush(self):
        self.flushes += 1

    def put(self, frame: int, index: int, value: int) -> None:
        """A guest store (before the frame is a table in use: through a writable mapping)."""
        self.mem.write(frame * PAGE + index * 8, struct.pack("<Q", value))

    def get(self, frame: int, index: int) -> int:
        return struct.unpack("<Q", self.mem.read(frame * PAGE + index * 8, 8))[0]

    def update(self, frame: int, index: int, value: int, cmd: int = x.MMU_NORMAL_PT_UPDATE) -> int:
        rc, done = self.dp.mmu_update([(frame * PAGE + index * 8 | cmd, value)])
        assert done == (rc == 0)
        return rc

    def snapshot(self):
        return hashlib.sha256(self.mem.view(0, SIZE)).digest(), books(self.dp, NR + 16), dict(self.dp._base)

    def sound(self):
        assert self.dp.check() == []


@pytest.fixture
def d():
    dom = Domain()
    yield dom
    dom.mem.close()


def refused(d: Domain, errno: int, op) -> None:
    """``op()`` returns -errno and leaves guest memory and every count as they were."""
    before = d.snapshot()
    assert op() == -errno
    assert d.snapshot() == before
    d.sound()


def build_tree(d: Domain, l4=1, l3=2, l2=3, l1=4, va=0x40_0000_0000):
    """An L4 -> L3 -> L2 -> L1 chain for ``va``; returns the slot indices."""
    i4, i3, i2 = (va >> 39) & 511, (va >> 30) & 511, (va >> 21) & 511
    d.put(l4, i4, pte(l3))
    d.put(l3, i3, pte(l2))
    d.put(l2, i2, pte(l1))
    return i4, i3, i2


# -- L1 entries: get_page_from_l1e, promote_l1_table, mod_l1_entry ---------------------------------
def test_pin_l1_takes_types_and_references(d):
    d.put(10, 0, pte(20, P | RW))
    d.put(10, 1, pte(21, P))
    d.put(10, 2, pte(20, P))
    assert d.dp.pin(1, 10) == 0
    info = d.dp.info(10)
    assert (info.type, info.type_count, info.count, info.pinned, info.validated) == (FrameType.L1, 1, 1, True, True)
    assert (d.dp.info(20).type, d.dp.info(20).type_count, d.dp.info(20).count) == (FrameType.WRITABLE, 1, 2)
    assert (d.dp.info(21).type, d.dp.info(21).type_count, d.dp.info(21).count) == (FrameType.NONE, 0, 1)
    d.sound()


@pytest.mark.parametrize("bit", [PWT, PCD, PAT])
def test_l1_cache_attribute_bits_refused(d, bit):
    # l1_disallow_mask: a domU without I/O memory may not pick cache attributes.
    assert d.dp.pin(1, 10) == 0
    refused(d, x.EINVAL, lambda: d.update(10, 0, pte(20, P | RW | bit)))
    refused(d, x.EINVAL, lambda: d.update(10, 0, pte(20, P | bit)))


def test_l1_global_nx_and_available_bits_allowed(d):
    # L1_DISALLOW_MASK drops _PAGE_GLOBAL; AVAIL, AVAIL_HIGH and NX are the guest's.
    assert d.dp.pin(1, 10) == 0
    assert d.update(10, 0, pte(20, P | RW | US | G | NX | x.PTE_AVAIL | x.PTE_AVAIL_HIGH)) == 0
    assert d.get(10, 0) == pte(20, P | RW | US | G | NX | x.PTE_AVAIL | x.PTE_AVAIL_HIGH)
    d.sound()


def test_l1_entries_only_map_the_domains_frames(d):
    assert d.dp.pin(1, 10) == 0
    # hvm's page (Xen: a page of another owner -> could_not_pin -> -EBUSY), read-only or not
    refused(d, x.EBUSY, lambda: d.update(10, 0, pte(HVM_L3, P)))
    refused(d, x.EBUSY, lambda: d.update(10, 0, pte(NR, P | RW) + PAGE))
    # not RAM at all: MMIO the domain has no permission for -> -EPERM
    refused(d, x.EPERM, lambda: d.update(10, 0, pte(MACHINE, P)))
    refused(d, x.EPERM, lambda: d.update(10, 0, pte(1 << 39, P)))
    # every address bit set is INVALID_MFN -> -EINVAL
    refused(d, x.EINVAL, lambda: d.update(10, 0, x.PTE_ADDR | P))
    # the shared_info frame is the guest's to map, even writable, and stays writable-typed
    assert d.update(10, 0, pte(SHARED, P | RW)) == 0
    info = d.dp.info(SHARED)
    assert (info.type, info.type_count, info.count) == (FrameType.WRITABLE, 2, 2)
    refused(d, x.EINVAL, lambda: d.dp.pin(1, SHARED))
    d.sound()


def test_pin_refusal_releases_what_validation_took(d):
    d.put(10, 0, pte(20, P | RW))
    d.put(10, 1, pte(21, P))
    d.put(10, 7, pte(HVM_L3, P))                   # refused entry after two good ones
    refused(d, x.EBUSY, lambda: d.dp.pin(1, 10))
    assert d.dp.info(20).count == d.dp.info(20).type_count == d.dp.info(21).count == 0
    assert d.dp.info(10).type == FrameType.NONE    # validate_page: type_info = 0


def test_page_table_never_mapped_writable(d):
    assert d.dp.pin(1, 10) == 0
    assert d.dp.pin(1, 11) == 0
    # a table in use cannot take a writable type: get_page_from_l1e -> could_not_pin
    refused(d, x.EBUSY, lambda: d.update(11, 0, pte(10, P | RW)))
    refused(d, x.EBUSY, lambda: d.update(10, 0, pte(10, P | RW)))     # not even itself
    assert d.update(11, 0, pte(10, P)) == 0                            # read-only: fine
    assert d.dp.info(10).count == 2
    # ... and a frame mapped writable cannot become a table (type conflict: -EINVAL)
    assert d.update(11, 1, pte(30, P | RW)) == 0
    for level in (1, 2, 3, 4):
        refused(d, x.EINVAL, lambda: d.dp.pin(level, 30))
    # nor can a table in use be retyped
    refused(d, x.EINVAL, lambda: d.dp.pin(2, 10))
    d.sound()


def test_unmapping_the_last_writable_mapping_lets_the_frame_become_a_table(d):
    assert d.dp.pin(1, 11) == 0
    assert d.update(11, 1, pte(30, P | RW)) == 0
    flushes = d.flushes
    assert d.update(11, 1, 0) == 0
    assert d.flushes == flushes                   # Xen flushes no TLB for an L1 update ...
    assert d.dp.pin(1, 30) == 0
    assert d.flushes == flushes + 1               # ... but when a writable frame changes type
    d.sound()


def test_l1_update_writes_only_after_validation_and_adjusts_like_xen(d):
    assert d.dp.pin(1, 10) == 0
    # adjust_guest_l1e: kernel pages (no _PAGE_USER) get USER and GUEST_KERNEL, user pages GLOBAL
    assert d.update(10, 0, pte(20, P | RW)) == 0
    assert d.get(10, 0) == pte(20, P | RW | US | GUEST_KERNEL)
    assert d.update(10, 1, pte(21, P | US)) == 0
    assert d.get(10, 1) == pte(21, P | US | G)
    assert d.update(10, 2, 0xDEAD_BEEF_0000_0000) == 0              # not present: anything goes
    assert d.get(10, 2) == 0xDEAD_BEEF_0000_0000
    d.sound()


def test_preserve_ad_keeps_the_old_accessed_and_dirty_bits(d):
    d.put(10, 0, pte(20, P | RW | US | G | A | D))
    assert d.dp.pin(1, 10) == 0
    assert d.update(10, 0, pte(20, P | RW | US), x.MMU_PT_UPDATE_PRESERVE_AD) == 0
    assert d.get(10, 0) == pte(20, P | RW | US | G | A | D)
    assert d.update(10, 0, pte(21, P | US), x.MMU_PT_UPDATE_PRESERVE_AD) == 0
    assert d.get(10, 0) == pte(21, P | US | G | A | D)
    assert d.update(10, 0, pte(21, P | US)) == 0
    assert d.get(10, 0) == pte(21, P | US | G)
    assert d.dp.info(20).count == 0 and d.dp.info(21).count == 1
    d.sound()


# -- directory entries: get_page_from_l2e..l4e, mod_l2_entry..mod_l4_entry --------------------------
def test_directory_entries_must_validate_as_the_next_level(d):
    assert d.dp.pin(2, 3) == 0
    d.put(40, 0, pte(HVM_L3, P))                   # an L1 mapping hvm's frame
    refused(d, x.EBUSY, lambda: d.update(3, 0, pte(40)))              # the L1's error comes back
    refused(d, x.EINVAL, lambda: d.update(3, 0, pte(HVM_L3)))         # not the domain's frame
    refused(d, x.EINVAL, lambda: d.update(3, 0, pte(MACHINE + 5)))
    assert d.dp.pin(1, 11) == 0
    assert d.update(11, 0, pte(41, P | RW)) == 0
    refused(d, x.EINVAL, lambda: d.update(3, 0, pte(41)))             # writable-typed frame
    assert d.update(3, 0, pte(42)) == 0                                # an empty L1 validates
    info = d.dp.info(42)
    assert (info.type, info.type_count, info.count, info.pinned) == (FrameType.L1, 1, 1, False)
    assert d.get(3, 0) == pte(42, P | RW | US)                         # adjust_guest_l2e
    d.sound()


@pytest.mark.parametrize("level", [2, 3, 4])
@pytest.mark.parametrize("bit", [PSE, PWT, PCD, G])
def test_directory_flags_xen_refuses(d, level, bit):
    # L2/L3/L4_DISALLOW_MASK = base_disallow_mask: no superpages for PV, no cache bits, no G.
    assert d.dp.pin(level, 3) == 0
    refused(d, x.EINVAL, lambda: d.update(3, 5, pte(50, P | RW | bit)))
    d.put(60, 5, pte(50, P | RW | bit))
    refused(d, x.EINVAL, lambda: d.dp.pin(level, 60))


def test_l2_superpage_refused_at_pin_and_update(d):
    d.put(3, 0, pte(0x200, P | RW | PSE))          # a 2 MiB page of the domain's own frames
    refused(d, x.EINVAL, lambda: d.dp.pin(2, 3))
    d.put(4, 0, pte(0, P | RW | PSE))              # a 1 GiB page
    refused(d, x.EINVAL, lambda: d.dp.pin(3, 4))


def test_directory_update_takes_the_new_reference_before_dropping_the_old(d):
    reads = []

    class Spy(GuestMemory):
        def read(self, gpa, length):
            reads.append(gpa // PAGE)
            return super().read(gpa, length)

    dom = Domain(Spy(SIZE, [(0, SIZE)]))
    try:
        dom.put(3, 0, pte(42, P | RW))
        dom.put(42, 0, pte(43, P | RW))
        assert dom.dp.pin(2, 3) == 0
        reads.clear()
        # RW changes re-validate the entry: if the old reference went first, the L1 would be
        # released and validated again (its contents re-read).
        assert dom.update(3, 0, pte(42, P)) == 0
        assert 42 not in reads
        assert dom.dp.info(42).type_count == 1 and dom.dp.info(42).validated
        assert dom.dp.info(43).type_count == 1
        dom.sound()
    finally:
        dom.mem.close()


def test_replacing_a_directory_entry_releases_the_old_subtree(d):
    d.put(42, 0, pte(43, P | RW))
    d.put(3, 0, pte(42))
    assert d.dp.pin(2, 3) == 0
    assert d.dp.info(43).type == FrameType.WRITABLE and d.dp.info(43).type_count == 1
    assert d.update(3, 0, pte(44)) == 0
    assert not d.dp.info(42).validated and d.dp.info(42).type_count == 0
    assert d.dp.info(43).count == d.dp.info(43).type_count == 0
    assert d.dp.pin(1, 43) == 0                    # free to become a table now
    d.sound()


# -- the reserved L4 slots: init_xen_l4_slots, mod_l4_entry ----------------------------------------
def test_reserved_l4_slots_are_hvms(d):
    d.put(1, 256, pte(50))                         # guest garbage where hvm's entries go
    d.put(1, 260, 0x1234)
    d.put(1, 255, pte(51))                         # a guest slot: validated as an L3
    assert d.dp.pin(4, 1) == 0
    for slot in range(256, 272):
        assert d.get(1, slot) == XEN_L4.get(slot, 0)
    assert d.dp.info(50).count == 0                # never taken as the guest's
    assert d.dp.info(51).type == FrameType.L3
    for slot in (256, 262, 263, 271):
        refused(d, x.EINVAL, lambda: d.update(1, slot, 0))
        refused(d, x.EINVAL, lambda: d.update(1, slot, pte(52)))
    assert d.update(1, 272, pte(52)) == 0
    assert d.update(1, 255, 0) == 0
    d.sound()


# -- pin / unpin / base pointers: do_mmuext_op, new_guest_cr3 -----------------------------------------
def test_pin_and_unpin_rules(d):
    refused(d, x.EINVAL, lambda: d.dp.unpin(10))                      # not pinned
    assert d.dp.pin(1, 10) == 0
    refused(d, x.EINVAL, lambda: d.dp.pin(1, 10))                     # "already pinned"
    refused(d, x.EINVAL, lambda: d.dp.pin(2, 10))                     # another type while in use
    for foreign in (NR, HVM_L3, MACHINE, 1 << 52):
        refused(d, x.EINVAL, lambda: d.dp.pin(1, foreign))
        refused(d, x.EINVAL, lambda: d.dp.unpin(foreign))
    assert d.dp.unpin(10) == 0
    refused(d, x.EINVAL, lambda: d.dp.unpin(10))                      # twice
    info = d.dp.info(10)
    assert (info.type_count, info.count, info.pinned, info.validated) == (0, 0, False, False)


def test_base_pointer_holds_its_l4(d):
    i4, i3, i2 = build_tree(d)
    d.put(4, 0, pte(100, P | RW))
    assert d.dp.pin(4, 1) == 0
    assert d.dp.new_baseptr(1) == 0
    assert d.dp.info(1).type_count == 2
    assert d.dp.unpin(1) == 0                      # still the base pointer: stays an L4
    info = d.dp.info(1)
    assert (info.type, info.type_count, info.validated) == (FrameType.L4, 1, True)
    refused(d, x.EINVAL, lambda: d.dp.unpin(1))
    refused(d, x.EINVAL, lambda: d.dp.pin(3, 1))                       # retype
    assert d.dp.pin(1, 20) == 0
    refused(d, x.EBUSY, lambda: d.update(20, 0, pte(1, P | RW)))
    refused(d, x.EBUSY, lambda: d.update(20, 0, pte(4, P | RW)))       # its L1, down the tree
    refused(d, x.EINVAL, lambda: d.dp.new_baseptr(HVM_L3))
    d.put(5, 0, pte(HVM_L3 + 1))
    refused(d, x.EINVAL, lambda: d.dp.new_baseptr(5))                  # does not validate
    assert d.dp.new_baseptr(6) == 0                # switching drops the old L4 and its tree
    for frame in (1, 2, 3, 4):
        assert d.dp.info(frame).type_count == 0 and not d.dp.info(frame).validated
    assert d.dp.info(100).count == 0
    assert d.dp.baseptr() == 6
    d.sound()


def test_user_base_pointer(d):
    assert d.dp.new_baseptr(7, user=True) == 0
    assert d.dp.info(7).type == FrameType.L4 and d.dp.info(7).type_count == 1
    assert d.dp.new_baseptr(7) == 0                # the kernel's is a reference of its own
    assert d.dp.info(7).type_count == 2
    assert d.dp.new_baseptr(0, user=True) == 0     # 0: no user page table
    assert d.dp.baseptr(user=True) is None and d.dp.info(7).type_count == 1
    d.sound()


def test_unpinning_the_top_releases_the_whole_hierarchy(d):
    build_tree(d)
    build_tree(d, va=0x80_0000_0000, l3=12, l2=13, l1=14)
    d.put(4, 3, pte(100, P | RW))
    d.put(14, 9, pte(101, P))
    d.put(3, 400, pte(4))                          # the same L1 twice
    assert d.dp.pin(4, 1) == 0
    assert d.dp.info(4).type_count == 2
    d.sound()
    assert d.dp.unpin(1) == 0
    for frame in range(NR + 1):
        info = d.dp.info(frame)
        assert info.count == (frame == SHARED) and info.type_count == (frame == SHARED), frame
    d.sound()


# -- linear page tables: get_l4_linear_pagetable & co. (Xen's default: allowed read-only) ------------
def test_linear_page_tables(d):
    d.put(1, 0, pte(1, P))                         # self-map, read-only: holds no reference
    assert d.dp.pin(4, 1) == 0
    assert d.dp.info(1).count == 1
    d.put(5, 0, pte(5, P | RW))                    # writable self-map: the guest's PTEs writable
    refused(d, x.EINVAL, lambda: d.dp.pin(4, 5))
    refused(d, x.EINVAL, lambda: d.update(1, 0, pte(1, P | RW)))
    assert d.dp.pin(4, 6) == 0
    refused(d, x.EINVAL, lambda: d.update(1, 1, pte(6, P | RW)))
    assert d.update(1, 1, pte(6, P)) == 0          # another validated L4, read-only
    assert (d.dp.info(6).type_count, d.dp.info(6).linear, d.dp.info(1).linear) == (2, -1, 1)
    # a table used linearly may not have linear entries, one with them may not be used so
    assert d.dp.pin(4, 7) == 0
    refused(d, x.EINVAL, lambda: d.update(6, 1, pte(7, P)))
    assert d.dp.pin(4, 8) == 0
    refused(d, x.EINVAL, lambda: d.update(8, 1, pte(1, P)))
    # an L4 no longer in use is no linear target (and as an L3 its hvm slots do not validate)
    assert d.dp.unpin(7) == 0
    refused(d, x.EINVAL, lambda: d.update(1, 2, pte(7, P)))
    assert d.update(1, 1, 0) == 0
    assert (d.dp.info(6).type_count, d.dp.info(6).linear, d.dp.info(1).linear) == (1, 0, 0)
    d.sound()


def test_l2_linear_entry_maps_page_tables_read_only(d):
    d.put(42, 0, pte(43, P | RW))
    d.put(3, 0, pte(42))
    assert d.dp.pin(2, 3) == 0
    assert d.dp.pin(2, 30) == 0
    assert d.update(30, 1, pte(3, P)) == 0         # L2 3's L1s appear as read-only pages
    refused(d, x.EINVAL, lambda: d.update(30, 2, pte(3, P | RW)))
    assert d.dp.unpin(3) == 0                      # the linear entry keeps it an L2
    assert d.dp.info(3).type == FrameType.L2 and d.dp.info(3).validated
    assert d.update(30, 1, 0) == 0                 # last reference: released down the tree
    assert not d.dp.info(3).validated and d.dp.info(42).type_count == 0
    d.sound()


# -- update_va_mapping: __do_update_va_mapping through map_guest_l1e -----------------------------------
def test_update_va_mapping_through_the_kernel_l4(d):
    va = 0x40_0000_0000 + 5 * PAGE
    build_tree(d, va=va)
    refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(va, pte(100)))  # no base pointer yet
    assert d.dp.new_baseptr(1) == 0
    assert d.dp.update_va_mapping(va, pte(100, P | RW)) == 0
    assert d.get(4, 5) == pte(100, P | RW | US | GUEST_KERNEL)
    assert d.dp.info(100).type == FrameType.WRITABLE
    refused(d, x.EBUSY, lambda: d.dp.update_va_mapping(va, pte(3, P | RW)))
    refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(va, pte(100, P | PWT)))
    refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(va + (1 << 21), pte(100)))   # no L2 entry
    refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(va + (1 << 30), pte(100)))   # no L3 entry
    for bad in (x.HYPERVISOR_VIRT_START, x.HYPERVISOR_VIRT_END - PAGE, 1 << 47, 0x8000_0000_0000_0000):
        refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(bad, pte(100)))
    assert d.dp.update_va_mapping(va, 0) == 0
    assert d.dp.info(100).type_count == 0
    d.sound()


def test_update_va_mapping_needs_an_l1_in_use(d):
    va = 0x40_0000_0000
    build_tree(d, va=va)
    assert d.dp.new_baseptr(1) == 0
    assert d.update(3, (va >> 21) & 511, pte(3, P)) == 0      # the L2 maps itself (linear) ...
    refused(d, x.EINVAL, lambda: d.dp.update_va_mapping(va, pte(100)))  # ... whose "L1" is an L2
    d.sound()


# -- mmu_update: do_mmu_update --------------------------------------------------------------------
def test_mmu_update_stops_at_the_first_error(d):
    assert d.dp.pin(1, 10) == 0
    rc, done = d.dp.mmu_update([(10 * PAGE, pte(20)), (10 * PAGE + 8, pte(21, P | PCD)),
                                (10 * PAGE + 16, pte(22))])
    assert (rc, done) == (-x.EINVAL, 1)
    assert d.get(10, 0) != 0 and d.get(10, 1) == d.get(10, 2) == 0
    assert d.dp.mmu_update([]) == (0, 0)
    rc, done = d.dp.mmu_update([(10 * PAGE | 5, 0)])                    # no such command
    assert (rc, done) == (-x.ENOSYS, 0)
    d.sound()


def test_mmu_update_of_a_page_not_in_use_is_a_plain_write(d):
    assert d.update(50, 3, pte(HVM_L3, P | RW)) == 0                    # just data
    assert d.get(50, 3) == pte(HVM_L3, P | RW)
    refused(d, x.EBUSY, lambda: d.dp.pin(1, 50))                        # until it is a table
    refused(d, x.EINVAL, lambda: d.update(NR + 1, 0, 0))                # hvm's page
    refused(d, x.EINVAL, lambda: d.update(1 << 40, 0, 0))
    d.sound()


def test_machphys_update(d):
    rc, done = d.dp.mmu_update([(77 * PAGE | x.MMU_MACHPHYS_UPDATE, 1234)])
    assert (rc, done) == (0, 1) and d.m2p == [(77, 1234)]
    for foreign in (NR + 1, MACHINE):
        rc, done = d.dp.mmu_update([(foreign * PAGE | x.MMU_MACHPHYS_UPDATE, 1)])
        assert (rc, done) == (-x.EINVAL, 0)
    assert d.m2p == [(77, 1234)]


# -- descriptor pages: validate_segdesc_page, do_update_descriptor ------------------------------------
CODE64_DPL0 = 0x00AF9B000000FFFF
CODE64_DPL3 = 0x00AFFB000000FFFF


def call_gate(selector: int, dpl: int = 3) -> int:
    return (0x8C00 | dpl << 13) << 32 | selector << 16


def test_descriptor_pages(d):
    d.put(60, 1, CODE64_DPL0)
    d.put(60, 2, call_gate(0x10))
    assert d.dp.get_seg_desc(60) == 0
    assert d.get(60, 1) == CODE64_DPL3              # DPL raised to the guest kernel's ring 3
    assert d.get(60, 2) == (0x8C00 << 32 | 0x13 << 16)   # gate DPL 0, old DPL in the RPL
    assert d.dp.info(60).type == FrameType.SEG_DESC
    assert d.dp.pin(1, 10) == 0
    refused(d, x.EBUSY, lambda: d.update(10, 0, pte(60, P | RW)))
    assert d.update(10, 0, pte(60, P)) == 0
    refused(d, x.EINVAL, lambda: d.update(60, 0, 0))
    refused(d, x.EINVAL, lambda: d.dp.pin(1, 60))
    assert d.dp.update_descriptor(60 * PAGE + 8 * 3, CODE64_DPL0) == 0
    assert d.get(60, 3) == CODE64_DPL3
    refused(d, x.EINVAL, lambda: d.dp.update_descriptor(60 * PAGE + 4, CODE64_DPL3))
    refused(d, x.EINVAL, lambda: d.dp.update_descriptor(10 * PAGE, CODE64_DPL3))   # an L1
    assert d.dp.put_seg_desc(60) == 0
    assert d.dp.put_seg_desc(60) == -x.EINVAL
    assert d.update(10, 1, pte(60, P | RW)) == 0
    d.sound()


@pytest.mark.parametrize("desc", [
    call_gate(0xE008),                             # a Xen selector that is not FLAT_KERNEL_CS
    0x0000890000000067,                            # a TSS: only call gates among system types
    call_gate(0x10) | 1 << 32,                     # reserved bits of a 64-bit gate
])
def test_descriptors_xen_refuses(d, desc):
    d.put(60, 9, desc)
    assert check_descriptor(desc) is None
    refused(d, x.EINVAL, lambda: d.dp.get_seg_desc(60))
    refused(d, x.EINVAL, lambda: d.dp.update_descriptor(61 * PAGE, desc))
    assert check_descriptor(call_gate(x.FLAT_KERNEL_CS)) is not None


def test_hvm_writable_holds(d):
    assert d.dp.get_writable(80) == 0              # e.g. the console ring hvm writes into
    refused(d, x.EINVAL, lambda: d.dp.pin(1, 80))
    d.put(81, 0, pte(80, P | RW))
    refused(d, x.EINVAL, lambda: d.dp.pin(2, 81))  # nor as an L1 below an L2
    assert d.dp.pin(1, 82) == 0
    refused(d, x.EINVAL, lambda: d.dp.get_writable(82))
    refused(d, x.EINVAL, lambda: d.dp.get_writable(HVM_L3))
    assert d.dp.put_writable(80) == 0
    assert d.dp.put_writable(80) == -x.EINVAL
    assert d.dp.pin(1, 80) == 0
    d.sound()


def test_clear_and_copy_page(d):
    d.put(70, 0, 0x1122)
    assert d.dp.copy_page(71, 70) == 0 and d.get(71, 0) == 0x1122
    assert d.dp.clear_page(70) == 0 and d.get(70, 0) == 0
    assert d.dp.pin(1, 72) == 0
    refused(d, x.EINVAL, lambda: d.dp.clear_page(72))
    refused(d, x.EINVAL, lambda: d.dp.copy_page(72, 71))
    refused(d, x.EINVAL, lambda: d.dp.copy_page(71, HVM_L3))
    assert d.dp.copy_page(71, 72) == 0             # reading a table is fine


def test_check_sees_corruption_behind_the_validators_back(d):
    """The audit is not vacuous: tables changed without a hypercall are reported."""
    build_tree(d)
    assert d.dp.pin(4, 1) == 0
    d.sound()
    d.put(4, 7, pte(3, P | RW))                    # the L2, writable, behind Xen's back
    assert any("mapped writable" in p for p in d.dp.check())
    d.put(4, 7, pte(HVM_L3, P))
    assert any("not the domain's" in p for p in d.dp.check())
    d.put(4, 7, 0)
    d.put(1, 256, 0)
    assert any("reserved slots" in p for p in d.dp.check())


def test_type_counts_for_stats(d):
    build_tree(d)
    assert d.dp.pin(4, 1) == 0
    assert d.dp.type_counts() == {"L1": 1, "L2": 1, "L3": 1, "L4": 1, "WRITABLE": 1}


# -- random sequences against the audit ---------------------------------------------------------------
EXAMPLES = int(os.environ.get("HVM_FUZZ_EXAMPLES", "200"))
FUZZ_NR = 24                                       # a small domain: random entries collide
FUZZ_SIZE = 32 * PAGE                              # 24..31 hvm's, 32 on not RAM
FUZZ_SHARED = FUZZ_NR
FUZZ_XEN = {256: (FUZZ_NR + 2) * PAGE | P | RW | US}

frames = st.one_of(st.integers(0, FUZZ_NR - 1), st.integers(0, FUZZ_NR - 1),
                   st.sampled_from([FUZZ_SHARED, FUZZ_NR + 2, 31, 32, 1 << 20, x.PTE_ADDR >> 12]))
indices = st.one_of(st.integers(0, 7), st.sampled_from([255, 256, 263, 271, 272, 511]))
flag_sets = st.sampled_from([P, P | RW, P | US, P | RW | US, P | RW | A | D, P | RW | US | NX, P | G,
                             P | RW | PSE, P | PWT, P | PCD, P | RW | GUEST_KERNEL, 0, RW])
entries = st.one_of(
    st.builds(lambda f, fl: f * PAGE | fl, frames, flag_sets),
    st.builds(lambda f, fl: f * PAGE | fl, frames, flag_sets),
    st.integers(0, (1 << 64) - 1),
    st.sampled_from([0, P, (1 << 64) - 1]))
cmds = st.sampled_from([x.MMU_NORMAL_PT_UPDATE, x.MMU_NORMAL_PT_UPDATE, x.MMU_PT_UPDATE_PRESERVE_AD,
                        x.MMU_MACHPHYS_UPDATE, x.MMU_PT_UPDATE_NO_TRANSLATE, 4, 7])
descriptors = st.sampled_from([0, CODE64_DPL0, CODE64_DPL3, call_gate(0x10), call_gate(0xE008),
                               0x0000890000000067, call_gate(x.FLAT_KERNEL_CS, 0)])


class PagingMachine(RuleBasedStateMachine):
    """Random hypercall sequences from a hostile or confused guest, from an empty domain or
    from a booted-looking one (a pinned kernel L4 in use with a few tables and mappings)."""

    @initialize(tree=st.booleans())
    def start(self, tree):
        self.mem = GuestMemory(FUZZ_SIZE, [(0, FUZZ_SIZE)])
        self.dp = DirectPaging(self.mem, FUZZ_NR, FUZZ_XEN, shared_frames={FUZZ_SHARED})
        self.holds: list[tuple[str, int]] = []
        if tree:
            for frame, index, value in [(1, 0, pte(2)), (1, 1, pte(1, P)), (2, 0, pte(3)), (2, 1, pte(11)),
                                        (3, 0, pte(4)), (3, 1, pte(5)), (4, 0, pte(6)), (4, 1, pte(7, P)),
                                        (4, 2, pte(3, P)), (5, 0, pte(FUZZ_SHARED)), (11, 0, pte(5))]:
                self.mem.write(frame * PAGE + index * 8, struct.pack("<Q", value))
            assert self.dp.pin(4, 1) == 0 and self.dp.new_baseptr(1) == 0 and self.dp.pin(2, 3) == 0

    def teardown(self):
        if hasattr(self, "mem"):
            self.mem.close()

    def _state(self):
        return self.mem.read(0, FUZZ_NR * PAGE), books(self.dp, FUZZ_NR + 1), dict(self.dp._base)

    def _single(self, op):
        """One operation: when refused, nothing may have changed."""
        before = self._state()
        rc = op()
        assert rc <= 0
        if rc:
            assert self._state() == before, rc
        return rc

    def _in_use(self, types=(1, 2, 3, 4)):
        return [m for m in range(FUZZ_NR) if self.dp.info(m).type_count and self.dp.info(m).type in types]

    def _aimed_entry(self, data, level: int) -> int:
        """An entry for a level-``level`` table: at a table one level down or of its own level
        (linear) -- for an L1, at any table or descriptor page --, at any frame, or garbage."""
        kind = data.draw(st.sampled_from(["down", "same", "frame", "garbage"]))
        if level == 1:
            pool = self._in_use((1, 2, 3, 4, 5)) if kind in ("down", "same") else []
        else:
            pool = self._in_use((level - 1,) if kind == "down" else (level,)) if kind in ("down", "same") else []
        if pool:
            return data.draw(st.sampled_from(pool)) * PAGE | data.draw(flag_sets)
        return data.draw(entries)

    @rule(frame=st.integers(0, FUZZ_NR - 1), index=indices, value=entries)
    def guest_store(self, frame, index, value):
        """A store through a writable mapping: there is none of a frame in use as a table or
        descriptor page; any other frame is (or becomes, by its mapping) writable-typed."""
        info = self.dp.info(frame)
        if info.type == FrameType.WRITABLE and info.type_count:
            self.mem.write(frame * PAGE + index * 8, struct.pack("<Q", value))
        elif not info.type_count:
            assert self.dp.get_writable(frame) == 0
            self.mem.write(frame * PAGE + index * 8, struct.pack("<Q", value))
            assert self.dp.put_writable(frame) == 0

    @rule(level=st.integers(0, 4), frame=frames, in_use=st.booleans(), data=st.data())
    def pin_or_unpin(self, level, frame, in_use, data):
        if in_use and self._in_use():
            frame = data.draw(st.sampled_from(self._in_use()))
        self._single(lambda: self.dp.pin(level, frame) if level else self.dp.unpin(frame))

    @rule(frame=frames, user=st.booleans(), in_use=st.booleans(), data=st.data())
    def new_baseptr(self, frame, user, in_use, data):
        if in_use and self._in_use((4,)):
            frame = data.draw(st.sampled_from(self._in_use((4,))))
        self._single(lambda: self.dp.new_baseptr(frame, user=user))

    @rule(frame=frames, index=indices, value=entries, cmd=cmds)
    def mmu_update_any(self, frame, index, value, cmd):
        self._single(lambda: self.dp.mmu_update([(frame * PAGE + index * 8 | cmd, value)])[0])

    @rule(reqs=st.lists(st.tuples(frames, indices, entries, cmds), max_size=6))
    def mmu_update_batch(self, reqs):
        rc, done = self.dp.mmu_update([(f * PAGE + i * 8 | c, v) for f, i, v, c in reqs])
        assert 0 <= done <= len(reqs) and (rc == 0) == (done == len(reqs))

    @rule(data=st.data(), cmd=st.sampled_from([x.MMU_NORMAL_PT_UPDATE, x.MMU_PT_UPDATE_PRESERVE_AD]))
    def mmu_update_in_use(self, data, cmd):
        tables = self._in_use()
        if tables:
            frame = data.draw(st.sampled_from(tables))
            index, value = data.draw(indices), self._aimed_entry(data, self.dp.info(frame).type)
            self._single(lambda: self.dp.mmu_update([(frame * PAGE + index * 8 | cmd, value)])[0])

    @rule(data=st.data(), mapped=st.booleans())
    def update_va_mapping(self, data, mapped):
        """At an address the kernel L4 maps down to an L2 entry, or at any address."""
        va, table = 0, self.dp.baseptr()
        for shift in (39, 30, 21):
            present = []
            if mapped and table is not None and table < FUZZ_NR:
                row = struct.unpack("<512Q", self.mem.read(table * PAGE, PAGE))
                present = [i for i in range(512) if row[i] & P and not (shift == 39 and 256 <= i < 272)]
            i = data.draw(st.sampled_from(present) if present else indices)
            va |= i << shift
            table = (row[i] & x.PTE_ADDR) >> 12 if present else None
        va |= data.draw(indices) << 12
        if va >= 1 << 47:
            va |= 0xFFFF << 48
        value = self._aimed_entry(data, 1)
        self._single(lambda: self.dp.update_va_mapping(va, value))

    @rule(kind=st.sampled_from(["seg", "writable"]), frame=frames, put=st.booleans(), data=st.data())
    def hold(self, kind, frame, put, data):
        """hvm's own references: descriptor tables (set_gdt/LDT) and frames it writes itself."""
        mine = [h for h in self.holds if h[0] == kind]
        if put and mine:
            held = mine[data.draw(st.integers(0, len(mine) - 1))]
            self.holds.remove(held)
            release = self.dp.put_seg_desc if kind == "seg" else self.dp.put_writable
            assert release(held[1]) == 0
            return
        take = self.dp.get_seg_desc if kind == "seg" else self.dp.get_writable
        rc = self._single(lambda: take(frame))
        if rc == 0:
            self.holds.append((kind, frame))
        else:
            assert rc == -x.EINVAL

    @rule(frame=frames, index=indices, desc=descriptors)
    def update_descriptor(self, frame, index, desc):
        self._single(lambda: self.dp.update_descriptor(frame * PAGE + index * 8, desc))

    @rule(dst=frames, src=frames, clear=st.booleans())
    def clear_or_copy(self, dst, src, clear):
        self._single(lambda: self.dp.clear_page(dst) if clear else self.dp.copy_page(dst, src))

    @invariant()
    def sound(self):
        if hasattr(self, "dp"):
            assert self.dp.check() == []


PagingMachine.TestCase.settings = settings(
    max_examples=EXAMPLES, stateful_step_count=40, deadline=None, derandomize=bool(os.environ.get("CI")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much])
TestPagingMachine = PagingMachine.TestCase


def test_fuzz_start_and_rules_replayed():
    """The state machine's booted-looking start is a sound four-level tree in use (with a
    read-only self-map and a table mapped read-only), and its rules drive the validator."""
    m = PagingMachine()
    m.start(tree=True)
    try:
        assert [m.dp.info(f).type for f in (1, 2, 3, 4)] == [FrameType.L4, FrameType.L3, FrameType.L2, FrameType.L1]
        # L2 3: the L3's entry and the pin hold its type; the L1's read-only mapping only a count
        assert m.dp.baseptr() == 1 and (m.dp.info(3).type_count, m.dp.info(3).count) == (2, 3)
        m.sound()
        m.mmu_update_any(4, 3, pte(6, P | RW), x.MMU_NORMAL_PT_UPDATE)
        m.mmu_update_any(4, 4, pte(2, P | RW), x.MMU_NORMAL_PT_UPDATE)   # refused: -EBUSY
        m.pin_or_unpin(0, 3, False, None)
        assert m.dp.info(6).type_count == 2 and (m.dp.info(3).type_count, m.dp.info(3).count) == (1, 2)
        m.sound()
    finally:
        m.teardown()
