"""Which boot protocol an image speaks, decided by its content alone (never its file name)."""
from __future__ import annotations

from .multiboot import find_header

ELF_MAGIC = b"\x7fELF"
# Linux x86 boot protocol: the setup header's "HdrS" signature sits at offset 0x202.
BZIMAGE_MAGIC_OFFSET = 0x202
BZIMAGE_MAGIC = b"HdrS"


def detect_format(path: str, data: bytes) -> str:
    """One of "multiboot", "elf", "bzimage" or "flat" for the image bytes ``data``."""
    del path  # accepted so callers can pass it uniformly; the decision never looks at the name
    # Multiboot first: multiboot kernels are usually ELF files too, and must boot as multiboot.
    if find_header(data) is not None:
        return "multiboot"
    if data[:4] == ELF_MAGIC:
        return "elf"
    if data[BZIMAGE_MAGIC_OFFSET:BZIMAGE_MAGIC_OFFSET + 4] == BZIMAGE_MAGIC:
        return "bzimage"
    return "flat"
