"""Where things live in the guest-physical address space of the PC machine hvm builds."""
from __future__ import annotations

from .formats.e820 import E820_RAM, E820_RESERVED
from .memory import HIGHMEM_BASE, GuestMemory

# Conventional memory ends below the EBDA, as on a PC; 0xA0000-0xFFFFF is VGA and ROM space.
EBDA_START = 0x9FC00
BIOS_AREA = (0xE0000, 0x20000)  # extended BIOS ROM area and BIOS; ACPI tables live in it

# Scratch the loaders' CPU setup owns: a GDT and identity page tables for 64-bit entry.
BOOT_GDT = 0x500
BOOT_PML4 = 0x1000          # PML4, PDPT, then four page directories: 0x1000-0x6FFF
BOOT_AREA_END = 0x7000

# KVM (on Intel) wants three pages for the real-mode TSS and one for the EPT identity map,
# outside guest RAM; QEMU uses the same spot just below the BIOS ROM.
KVM_IDENTITY_MAP = 0xFFFBC000
KVM_TSS = 0xFFFBD000

IOAPIC_BASE = 0xFEC00000
IOAPIC_SIZE = 0x1000
LAPIC_BASE = 0xFEE00000
LAPIC_SIZE = 0x1000


def e820_map(mem: GuestMemory) -> list[tuple[int, int, int]]:
    """The BIOS-style memory map the guest is told about: (address, length, type)."""
    entries: list[tuple[int, int, int]] = []
    for r in mem.regions:
        if r.gpa == 0:
            low = min(r.end, EBDA_START)
            entries.append((0, low, E820_RAM))
            if r.end > EBDA_START:
                entries.append((EBDA_START, 0xA0000 - EBDA_START, E820_RESERVED))
            entries.append((BIOS_AREA[0], BIOS_AREA[1], E820_RESERVED))
            if r.end > 0x100000:
                entries.append((0x100000, r.end - 0x100000, E820_RAM))
        else:
            entries.append((r.gpa, r.size, E820_RAM))
    entries.append((KVM_IDENTITY_MAP, 0x4000, E820_RESERVED))
    return sorted(entries)


__all__ = ["e820_map", "HIGHMEM_BASE", "BOOT_GDT", "BOOT_PML4", "KVM_TSS", "KVM_IDENTITY_MAP"]
