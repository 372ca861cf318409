"""Raw binaries: copy the file to one address and jump to it, in the CPU mode the user chose.

Also home of the placement checks every loader shares: "does this range fit in guest RAM the guest
can address" and "would hvm's own CPU setup overwrite it".
"""
from __future__ import annotations

from ..errors import ImageError
from ..layout import BOOT_AREA_END, BOOT_GDT, BOOT_PML4, EBDA_START
from ..memory import HIGHMEM_BASE, MiB, GuestMemory
from .entry import EntryState, Mode

# A boot sector lands here (the IBM PC BIOS convention), so a raw real-mode image works unchanged.
REAL_MODE_LOAD = 0x7C00
# 1 MiB is where protected-mode kernels conventionally start: clear of the IVT, BDA, EBDA, VGA
# and the BIOS ROM, and of the boot area the CPU setup writes below 0x7000.
PROTECTED_LOAD = 0x100000
# Conventional memory ends here; above it lie VGA memory and the ROMs, which a real-mode image
# must not overwrite.
CONVENTIONAL_END = 0xA0000
REAL_MODE_LIMIT = 0x100000   # first address real mode cannot reach (ignoring the A20 wrap)
# Protected/long-mode stack: 512 KiB sits in conventional RAM below the EBDA, above the boot area.
STACK_TOP = 0x80000
STACK_SIZE = 0x10000         # how much room below the stack top we guarantee is not the image
# The EBDA, VGA memory and ROMs: RAM in hvm, but reserved in the E820 map the guest sees.
LEGACY_HOLE_START, LEGACY_HOLE_END = EBDA_START, 0x100000


def require_ram(mem: GuestMemory, path: str, start: int, length: int, what: str) -> None:
    """Raise ImageError unless ``[start, start+length)`` is guest RAM below 4 GiB."""
    end = start + length
    if length <= 0 or (start >= 0 and end <= HIGHMEM_BASE and mem.contains(start, length)):
        return
    # RAM below 4 GiB starts at 0 on the PC layout, so "ends above the RAM top" is "too big";
    # anything else (a gap between regions of a custom layout) is named as such.
    if end > mem.below_4g or start < 0:
        needed, available = -(-end // MiB), mem.below_4g // MiB
        beyond = "; a 32-bit boot protocol cannot reach past 4 GiB" if end > HIGHMEM_BASE else ""
        raise ImageError(path, f"{what} at [{start:#x}, {end:#x}) is too big for RAM "
                               f"({needed} MiB needed, {available} MiB available){beyond}")
    raise ImageError(path, f"{what} at [{start:#x}, {end:#x}) is not backed by guest RAM")


def scratch_area(mode: Mode) -> tuple[int, int]:
    """The guest-physical range hvm's CPU setup writes after loading, for an entry in ``mode``."""
    if mode == Mode.LONG:
        return BOOT_GDT, BOOT_AREA_END    # GDT plus identity page tables
    if mode == Mode.PROTECTED:
        return BOOT_GDT, BOOT_PML4        # the GDT slot only
    return 0, 0                           # real mode: segments are loaded as-is, nothing written


def require_clear_of_scratch(path: str, mode: Mode, start: int, length: int, what: str) -> None:
    """Raise ImageError if the CPU setup would silently overwrite ``[start, start+length)``."""
    lo, hi = scratch_area(mode)
    if length > 0 and start < hi and start + length > lo:
        raise ImageError(path, f"{what} at [{start:#x}, {start + length:#x}) overlaps "
                               f"[{lo:#x}, {hi:#x}), where hvm writes the boot GDT/page tables")


def _real_mode_cs(entry: int) -> int:
    """A code segment on a 64 KiB boundary that puts ``entry`` within a 16-bit IP."""
    return (entry >> 4) & 0xF000


def _stack_top(mem: GuestMemory, path: str, mode: Mode, start: int, end: int) -> int:
    """Where the stack pointer starts: see load_flat's docstring for the policy."""
    if mode == Mode.REAL:
        # SS is 0 in real mode, so SP can only address the first 64 KiB.  Just below the image is
        # what a BIOS gives a boot sector (SP = 0x7C00); for an image above 64 KiB, SP = 0 wraps
        # so the first push lands at 0xFFFE, the top of that segment and still below the image.
        return start if start <= 0xFFFF else 0
    top = STACK_TOP
    if start < top and end > top - STACK_SIZE:
        # The image covers the default stack: prefer just below the image (clear of the boot
        # area), else just above it, stepping over the EBDA/VGA/ROM hole.
        if start - STACK_SIZE >= BOOT_AREA_END:
            top = start & ~15
        else:
            top = ((end + 15) & ~15) + STACK_SIZE
            if top > LEGACY_HOLE_START and top - STACK_SIZE < LEGACY_HOLE_END:
                top = max(LEGACY_HOLE_END, (end + 15) & ~15) + STACK_SIZE
    require_ram(mem, path, top - STACK_SIZE, STACK_SIZE, "initial stack")
    return top


def load_flat(mem: GuestMemory, path: str, data: bytes, mode: Mode,
              load_addr: int | None = None, entry: int | None = None) -> EntryState:
    """Copy a raw binary into guest RAM and return an entry state for its first byte (or ``entry``).

    Defaults: real mode loads at 0x7C00 (a boot sector), protected and long mode at 1 MiB; the
    entry is the load address.  The stack pointer is the load address in real mode when that is
    below 64 KiB (0x7C00 -> SP 0x7C00), else 0 (wrapping to the top of the first 64 KiB); in
    protected/long mode it is 0x80000 or, when the image covers that spot, just below the image
    (or 64 KiB above it if there is no room below).
    """
    if not data:
        raise ImageError(path, "empty image")
    if load_addr is None:
        load_addr = REAL_MODE_LOAD if mode == Mode.REAL else PROTECTED_LOAD
    if entry is None:
        entry = load_addr
    end = load_addr + len(data)

    if mode == Mode.REAL:
        if load_addr < 0 or end > CONVENTIONAL_END:
            raise ImageError(path, f"real-mode image at [{load_addr:#x}, {end:#x}) does not fit below "
                                   f"{CONVENTIONAL_END:#x} (conventional memory)")
        if not 0 <= entry < REAL_MODE_LIMIT:
            raise ImageError(path, f"real-mode entry {entry:#x} is beyond the first MiB")
    require_ram(mem, path, load_addr, len(data), "image")
    require_clear_of_scratch(path, mode, load_addr, len(data), "image")
    if not mem.contains(entry) or entry >= HIGHMEM_BASE:
        # Paging is off (protected) or identity-maps only the first 4 GiB (long).
        raise ImageError(path, f"entry point {entry:#x} is outside guest RAM below 4 GiB")

    sp = _stack_top(mem, path, mode, load_addr, end)
    mem.write(load_addr, data)

    if mode == Mode.REAL:
        return EntryState(Mode.REAL, entry, regs={"esp": sp}, real_cs=_real_mode_cs(entry),
                          description="flat binary, real mode")
    reg = "rsp" if mode == Mode.LONG else "esp"
    return EntryState(mode, entry, regs={reg: sp}, description=f"flat binary, {mode.value} mode")
