"""ELF kernels that are not multiboot: a Linux ``vmlinux`` entered at its 64-bit entry with
boot_params (as Firecracker boots one), or any kernel with a PVH entry note entered in 32-bit
protected mode with ``hvm_start_info`` in EBX (Xen's docs/misc/pvh.pandoc; QEMU's -kernel does the
same for such images). The choice is the image's: the PVH note wins, since it is the kernel's own
statement of how it wants to be entered; a vmlinux without one uses the Linux boot protocol.
"""
from __future__ import annotations

from ..errors import ImageError
from ..formats.bzimage import SetupHeader, XLF_KERNEL_64
from ..formats.elf import EM_386, EM_X86_64
from ..formats.pvh import (
    HVM_START_MAGIC, HVM_START_VERSION, XEN_ELFNOTE_PHYS32_ENTRY, XEN_NOTE_OWNER, HvmMemmapEntry,
    HvmModlistEntry, HvmStartInfo,
)
from ..memory import HIGHMEM_BASE, GuestMemory
from .elf_segments import check_chunks, elf_chunks, elf_notes, write_chunks
from .entry import EntryState, Mode
from .flat import require_ram
from .linux import BOOT_PARAMS, place_initrd, write_boot_params, write_cmdline

LINUX_NOTE_OWNER = "Linux"
# What a vmlinux has no setup header to say: x86's COMMAND_LINE_SIZE, an initrd anywhere below
# 2 GiB, and protocol 2.15 (boot_params fields the kernel reads, such as acpi_rsdp_addr).
VMLINUX_CMDLINE_SIZE = 2048
VMLINUX_INITRD_MAX = 0x7FFFFFFF
VMLINUX_PROTOCOL = 0x020F
PVH_CMDLINE_LIMIT = 4095


def _load_chunks(mem: GuestMemory, path: str, data: bytes, machines: tuple[int, ...],
                 mode: Mode) -> tuple[int, int, int]:
    """Write the PT_LOAD segments at their physical addresses; (entry, end of the image, class)."""
    chunks, entry, elfclass = elf_chunks(path, data, machines)
    end = check_chunks(mem, path, chunks, mode)
    write_chunks(mem, chunks)
    return entry, end, elfclass


def load_linux_elf(mem: GuestMemory, path: str, data: bytes) -> tuple[int, int]:
    """A 64-bit vmlinux's segments; returns (physical 64-bit entry, end of the image)."""
    entry, end, elfclass = _load_chunks(mem, path, data, (EM_X86_64,), Mode.LONG)
    if elfclass != 64:
        raise ImageError(path, "a Linux vmlinux entered in 64-bit mode must be an ELF64 file")
    if not mem.contains(entry):
        raise ImageError(path, f"entry point {entry:#x} is outside guest RAM")
    return entry, end


def _synthetic_header():
    """The setup header a bzImage would carry, for a vmlinux (which has none)."""
    fields = {name: 0 for name in (sc.name for sc in SetupHeader.subcons) if name and name != "header"}
    fields.update(boot_flag=0xAA55, version=VMLINUX_PROTOCOL, cmdline_size=VMLINUX_CMDLINE_SIZE,
                  initrd_addr_max=VMLINUX_INITRD_MAX, xloadflags=XLF_KERNEL_64)
    raw = SetupHeader.build(fields)
    return raw, SetupHeader.parse(raw)


def load_vmlinux(mem: GuestMemory, path: str, data: bytes, cmdline: str,
                 initrd: tuple[str, bytes] | None, e820: list[tuple[int, int, int]],
                 rsdp: int | None = None) -> EntryState:
    """Boot an ELF kernel by PVH if it has the entry note, else as a Linux vmlinux."""
    notes = elf_notes(path, data)
    pvh = notes.get((XEN_NOTE_OWNER, XEN_ELFNOTE_PHYS32_ENTRY))
    if pvh is not None:
        if len(pvh) < 4:
            raise ImageError(path, f"the PVH entry note has {len(pvh)} bytes, not an address")
        return load_pvh(mem, path, data, int.from_bytes(pvh[:4], "little"), cmdline, initrd, e820, rsdp)
    if not any(owner == LINUX_NOTE_OWNER for owner, _ in notes):
        raise ImageError(path, "ELF image without an entry note: no multiboot header, no PVH entry "
                               "(XEN_ELFNOTE_PHYS32_ENTRY) and no Linux notes saying it is a vmlinux")
    entry, kernel_end = load_linux_elf(mem, path, data)
    header, hdr = _synthetic_header()
    write_cmdline(mem, path, cmdline, hdr.cmdline_size)
    ramdisk = place_initrd(mem, initrd, kernel_end, hdr.initrd_addr_max)
    params = write_boot_params(mem, header, hdr, ramdisk, e820, rsdp)
    return EntryState(Mode.LONG, entry, {"rsi": params}, linux_selectors=True,
                      description="Linux vmlinux (ELF), 64-bit entry")


def load_pvh(mem: GuestMemory, path: str, data: bytes, entry: int, cmdline: str,
             initrd: tuple[str, bytes] | None, e820: list[tuple[int, int, int]],
             rsdp: int | None = None) -> EntryState:
    """PVH: segments, command line, initrd as module 0, memory map and RSDP in hvm_start_info."""
    _, kernel_end, elfclass = _load_chunks(mem, path, data, (EM_386, EM_X86_64), Mode.PROTECTED)
    if not (0 < entry < HIGHMEM_BASE and mem.contains(entry)):
        raise ImageError(path, f"PVH entry point {entry:#x} is outside guest RAM below 4 GiB")
    cmdline_addr = write_cmdline(mem, path, cmdline, PVH_CMDLINE_LIMIT)
    ramdisk_addr, ramdisk_size = place_initrd(mem, initrd, kernel_end, HIGHMEM_BASE - 1)
    memmap = list(e820)  # the same map boot_params would carry, legacy hole reserved
    modules = [(ramdisk_addr, ramdisk_size)] if ramdisk_size else []
    info_size = HvmStartInfo.sizeof()
    modlist = BOOT_PARAMS + info_size
    memmap_at = modlist + HvmModlistEntry.sizeof() * len(modules)
    end = memmap_at + HvmMemmapEntry.sizeof() * len(memmap)
    require_ram(mem, path, BOOT_PARAMS, end - BOOT_PARAMS, "PVH start info")
    mem.write(BOOT_PARAMS, HvmStartInfo.build(dict(
        magic=HVM_START_MAGIC, version=HVM_START_VERSION, flags=0, nr_modules=len(modules),
        modlist_paddr=modlist if modules else 0, cmdline_paddr=cmdline_addr, rsdp_paddr=rsdp or 0,
        memmap_paddr=memmap_at, memmap_entries=len(memmap))))
    for i, (addr, size) in enumerate(modules):
        mem.write(modlist + i * HvmModlistEntry.sizeof(),
                  HvmModlistEntry.build(dict(paddr=addr, size=size, cmdline_paddr=0)))
    for i, (addr, size, kind) in enumerate(memmap):
        mem.write(memmap_at + i * HvmMemmapEntry.sizeof(),
                  HvmMemmapEntry.build(dict(addr=addr, size=size, type=kind)))
    return EntryState(Mode.PROTECTED, entry, {"ebx": BOOT_PARAMS},
                      description=f"PVH (ELF{elfclass}, XEN_ELFNOTE_PHYS32_ENTRY), 32-bit entry")
