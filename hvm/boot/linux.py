"""Linux bzImage boot through the 64-bit boot protocol (Documentation/arch/x86/boot.rst), as
QEMU's -kernel and Firecracker do it: no real-mode setup code runs. The protected-mode kernel is
loaded at 1 MiB, boot_params (the "zero page") gets the setup header, command line, initrd and
e820 map, and the CPU starts in 64-bit mode at load address + 0x200 with RSI pointing at
boot_params, identity-mapped page tables and flat __BOOT_CS/__BOOT_DS. The kernel's own
decompressor then runs in the guest.
"""
from __future__ import annotations

from ..errors import ConfigError, ImageError
from ..formats.bzimage import (
    ACPI_RSDP_OFFSET, BOOT_PARAMS_SIZE, E820_ENTRIES_OFFSET, E820_MAX, E820_TABLE_OFFSET, HEADER_OFFSET,
    LOADER_UNDEFINED, XLF_KERNEL_64, E820Table, SetupHeader,
)
from ..layout import BOOT_AREA_END
from ..memory import GuestMemory
from .entry import EntryState, Mode

LOAD_ADDR = 0x100000        # where the protected-mode kernel goes, as QEMU loads it
BOOT_PARAMS = BOOT_AREA_END  # the zero page, right after the loader's GDT and page tables
CMDLINE_ADDR = 0x20000
MIN_VERSION = 0x020C        # 2.12: xloadflags and the 64-bit entry point
RSDP_VERSION = 0x020E       # 2.14: boot_params.acpi_rsdp_addr (older kernels scan for the RSDP)
_HEADER_END = HEADER_OFFSET + SetupHeader.sizeof()


def _version(v: int) -> str:
    return f"{v >> 8}.{v & 0xFF}"


def load_bzimage(mem: GuestMemory, path: str, data: bytes, cmdline: str,
                 initrd: tuple[str, bytes] | None, e820: list[tuple[int, int, int]],
                 rsdp: int | None = None) -> EntryState:
    """Load a bzImage for its 64-bit entry; returns the entry state."""
    if len(data) < _HEADER_END:
        raise ImageError(path, f"truncated bzImage: {len(data)} bytes, shorter than the setup header")
    hdr = SetupHeader.parse(data[HEADER_OFFSET:_HEADER_END])
    if hdr.version < MIN_VERSION:
        raise ImageError(path, f"boot protocol {_version(hdr.version)} is too old: hvm boots Linux "
                               f"through the 64-bit entry of protocol {_version(MIN_VERSION)} or later")
    if not hdr.xloadflags & XLF_KERNEL_64:
        raise ImageError(path, "the kernel has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")
    kernel_offset = ((hdr.setup_sects or 4) + 1) * 512
    kernel = data[kernel_offset:]
    if len(kernel) < hdr.syssize * 16 or not kernel:
        raise ImageError(path, f"truncated bzImage: the header promises {hdr.syssize * 16} bytes of "
                               f"kernel after {kernel_offset} bytes of setup, the file has {len(kernel)}")
    low_end = min(r.end for r in mem.regions if r.gpa == 0)
    kernel_end = LOAD_ADDR + max(len(kernel), hdr.init_size)
    if kernel_end > low_end:
        raise ImageError(path, f"the kernel needs {kernel_end - LOAD_ADDR:#x} bytes from 1 MiB "
                               f"(init_size), more than the guest's memory below {low_end:#x}")
    encoded = cmdline.encode()
    if len(encoded) > hdr.cmdline_size:
        raise ConfigError(f"kernel command line is {len(encoded)} bytes; {path} accepts at most "
                          f"{hdr.cmdline_size}")
    mem.write(LOAD_ADDR, kernel)
    mem.write(CMDLINE_ADDR, encoded + b"\0")

    ramdisk_image = ramdisk_size = 0
    if initrd is not None:
        initrd_path, blob = initrd
        top = min(low_end, hdr.initrd_addr_max + 1)
        ramdisk_image = (top - len(blob)) & ~0xFFF
        if ramdisk_image < kernel_end:
            raise ImageError(initrd_path, f"initrd of {len(blob)} bytes does not fit between the kernel "
                                          f"(up to {kernel_end:#x}) and {top:#x}")
        mem.write(ramdisk_image, blob)
        ramdisk_size = len(blob)

    zero_page = bytearray(BOOT_PARAMS_SIZE)
    # The setup header is copied as the image has it (boot.rst: up to 0x202 + the byte at 0x201),
    # then the loader's fields are filled in.
    header_end = min(0x202 + data[0x201], len(data), BOOT_PARAMS_SIZE)
    zero_page[HEADER_OFFSET:header_end] = data[HEADER_OFFSET:header_end]
    hdr.type_of_loader = LOADER_UNDEFINED
    hdr.cmd_line_ptr = CMDLINE_ADDR
    hdr.ramdisk_image, hdr.ramdisk_size = ramdisk_image, ramdisk_size
    hdr.code32_start = LOAD_ADDR
    zero_page[HEADER_OFFSET:_HEADER_END] = SetupHeader.build(hdr)
    if len(e820) > E820_MAX:
        raise ConfigError(f"{len(e820)} memory map entries; boot_params holds {E820_MAX}")
    table = [dict(addr=a, size=n, type=t) for a, n, t in e820]
    table += [dict(addr=0, size=0, type=0)] * (E820_MAX - len(table))
    zero_page[E820_TABLE_OFFSET:E820_TABLE_OFFSET + E820Table.sizeof()] = E820Table.build(table)
    zero_page[E820_ENTRIES_OFFSET] = len(e820)
    if rsdp is not None and hdr.version >= RSDP_VERSION:
        zero_page[ACPI_RSDP_OFFSET:ACPI_RSDP_OFFSET + 8] = rsdp.to_bytes(8, "little")
    mem.write(BOOT_PARAMS, bytes(zero_page))
    return EntryState(Mode.LONG, LOAD_ADDR + 0x200, {"rsi": BOOT_PARAMS}, linux_selectors=True,
                      description=f"Linux bzImage (boot protocol {_version(hdr.version)}), 64-bit entry")
