"""Which boot protocol an image speaks, decided by its content alone (never its file name)."""
from __future__ import annotations

from .multiboot import find_header

ELF_MAGIC = b"\x7fELF"
# Linux x86 boot protocol: the setup header's "HdrS" signature sits at offset 0x202.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"
# A PC BIOS boots a sector only if its last two bytes are 55 AA: the one mark a raw binary can carry.
BOOT_SIGNATURE_OFFSET = 510
BOOT_SIGNATURE = b"\x55\xaa"


def detect_format(path: str, data: bytes) -> str:
    """One of "multiboot", "elf", "bzimage", "boot-sector" or "unknown" for the image bytes ``data``
    (a raw binary without the boot-sector signature is "unknown": only the user can say it is one)."""
    del path  # accepted so callers can pass it uniformly; the decision never looks at the name
    # Multiboot first: multiboot kernels are usually ELF files too, and must boot as multiboot.
    if find_header(data) is not None:
        return "multiboot"
    if data[:4] == ELF_MAGIC:
        return "elf"
    if data[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC:
        return "bzimage"
    if data[BOOT_SIGNATURE_OFFSET:BOOT_SIGNATURE_OFFSET + 2] == BOOT_SIGNATURE:
        return "boot-sector"
    return "unknown"
