"""Guest-virtual access: walk the guest's own page tables through GuestMemory.

Used for string I/O, crash reports and hypercall arguments, and shared by every engine. Page-table
entries are guest data: each one is read through the bounds-checked memory API, and a walk that
leaves RAM is reported as a fault, never followed.
"""
from __future__ import annotations

from dataclasses import dataclass

from .memory import GuestMemory, GuestMemoryError

CR0_PG = 1 << 31
CR4_PSE = 1 << 4
CR4_PAE = 1 << 5
CR4_LA57 = 1 << 12
EFER_LMA = 1 << 10

_P, _RW, _US, _PS = 1, 2, 4, 0x80
_ADDR_MASK = 0x000FFFFFFFFFF000


class PageFault(Exception):
    """A guest-virtual address the guest's page tables do not map (as the walk found it)."""

    def __init__(self, vaddr: int, reason: str):
        super().__init__(f"guest virtual address {vaddr:#x}: {reason}")
        self.vaddr, self.reason = vaddr, reason


@dataclass(frozen=True)
class PagingMode:
    """The control-register bits that decide how a linear address is translated."""

    cr0: int
    cr3: int
    cr4: int
    efer: int

    @property
    def enabled(self) -> bool:
        """Paging on (CR0.PG)."""
        return bool(self.cr0 & CR0_PG)


def translate(mem: GuestMemory, mode: PagingMode, vaddr: int, write: bool = False) -> int:
    """Guest-physical address for ``vaddr``; raises PageFault if unmapped or read-only for a write."""
    if not mode.enabled:
        return vaddr & 0xFFFFFFFF
    try:
        if mode.efer & EFER_LMA:
            levels = 5 if mode.cr4 & CR4_LA57 else 4
            return _walk_long(mem, mode.cr3, vaddr, levels, write)
        if mode.cr4 & CR4_PAE:
            return _walk_pae(mem, mode.cr3, vaddr & 0xFFFFFFFF, write)
        return _walk_32(mem, mode, vaddr & 0xFFFFFFFF, write)
    except GuestMemoryError as exc:
        raise PageFault(vaddr, f"page-table walk left guest RAM ({exc})") from None


def _check(entry: int, vaddr: int, level: str, write: bool) -> None:
    if not entry & _P:
        raise PageFault(vaddr, f"not present at {level}")
    if write and not entry & _RW:
        raise PageFault(vaddr, f"read-only at {level}")


def _walk_long(mem: GuestMemory, cr3: int, vaddr: int, levels: int, write: bool) -> int:
    table = cr3 & _ADDR_MASK
    names = ["PML5", "PML4", "PDPT", "PD", "PT"][5 - levels:]
    for depth, name in enumerate(names):
        shift = 12 + 9 * (levels - 1 - depth)
        entry = mem.read_u64(table + ((vaddr >> shift) & 0x1FF) * 8)
        _check(entry, vaddr, name, write)
        if name in ("PDPT", "PD") and entry & _PS:
            size = 1 << shift
            base = entry & _ADDR_MASK & ~(size - 1)
            return base | (vaddr & (size - 1))
        table = entry & _ADDR_MASK
    return table | (vaddr & 0xFFF)


def _walk_pae(mem: GuestMemory, cr3: int, vaddr: int, write: bool) -> int:
    pdpte = mem.read_u64((cr3 & 0xFFFFFFE0) + ((vaddr >> 30) & 3) * 8)
    if not pdpte & _P:
        raise PageFault(vaddr, "not present at PDPTE")
    pde = mem.read_u64((pdpte & _ADDR_MASK) + ((vaddr >> 21) & 0x1FF) * 8)
    _check(pde, vaddr, "PD", write)
    if pde & _PS:
        return (pde & _ADDR_MASK & ~0x1FFFFF) | (vaddr & 0x1FFFFF)
    pte = mem.read_u64((pde & _ADDR_MASK) + ((vaddr >> 12) & 0x1FF) * 8)
    _check(pte, vaddr, "PT", write)
    return (pte & _ADDR_MASK) | (vaddr & 0xFFF)


def _walk_32(mem: GuestMemory, mode: PagingMode, vaddr: int, write: bool) -> int:
    pde = mem.read_u32((mode.cr3 & 0xFFFFF000) + (vaddr >> 22) * 4)
    _check(pde, vaddr, "PD", write)
    if pde & _PS and mode.cr4 & CR4_PSE:
        # PSE-36: bits 20:13 of the entry extend the physical address above 4 GiB.
        return (pde & 0xFFC00000) | ((pde >> 13) & 0xFF) << 32 | (vaddr & 0x3FFFFF)
    pte = mem.read_u32((pde & 0xFFFFF000) + ((vaddr >> 12) & 0x3FF) * 4)
    _check(pte, vaddr, "PT", write)
    return (pte & 0xFFFFF000) | (vaddr & 0xFFF)


def read_virtual(mem: GuestMemory, mode: PagingMode, vaddr: int, length: int) -> bytes:
    """Copy ``length`` bytes at a guest-virtual address, page by page."""
    out = bytearray()
    while length > 0:
        chunk = min(length, 0x1000 - (vaddr & 0xFFF))
        out += mem.read(translate(mem, mode, vaddr), chunk)
        vaddr += chunk
        length -= chunk
    return bytes(out)


def write_virtual(mem: GuestMemory, mode: PagingMode, vaddr: int, data: bytes) -> None:
    """Copy ``data`` to a guest-virtual address; every page is translated before any byte is written."""
    pieces = []
    pos = 0
    while pos < len(data):
        chunk = min(len(data) - pos, 0x1000 - (vaddr & 0xFFF))
        pieces.append((translate(mem, mode, vaddr, write=True), pos, chunk))
        vaddr += chunk
        pos += chunk
    for gpa, start, chunk in pieces:
        mem.write(gpa, data[start:start + chunk])
