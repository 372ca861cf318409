"""Linux bzImage boot through the 64-bit boot protocol (Documentation/arch/x86/boot.rst), as
QEMU's -kernel and Firecracker do it: no real-mode setup code runs. The protected-mode kernel is
loaded at 1 MiB, boot_params (the "zero page") gets the setup header, command line, initrd and
e820 map, and the CPU starts in 64-bit mode at load address + 0x200 with RSI pointing at
boot_params, identity-mapped page tables and flat __BOOT_CS/__BOOT_DS; the kernel's own
decompressor then runs in the guest. With host-side decompression (hvm.boot.decompress) the
vmlinux inside the payload is loaded at its physical addresses instead and entered at its own
64-bit entry (startup_64), with the same boot_params: what the decompressor would have handed it.
The helpers here (command line, initrd placement, zero page) serve the vmlinux loader too.
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


def setup_header(path: str, data: bytes):
    """The bzImage's setup header, checked: truncation and a protocol older than 2.12 are refused."""
    if len(data) < _HEADER_END:
        raise ImageError(path, f"truncated bzImage: {len(data)} bytes, shorter than the setup header")
    hdr = SetupHeader.parse(data[HEADER_OFFSET:_HEADER_END])
    if hdr.version < MIN_VERSION:
        raise ImageError(path, f"boot protocol {_version(hdr.version)} is too old: hvm boots Linux "
                               f"through the 64-bit entry of protocol {_version(MIN_VERSION)} or later")
    if not hdr.xloadflags & XLF_KERNEL_64:
        raise ImageError(path, "the kernel has no 64-bit entry point (xloadflags lacks XLF_KERNEL_64)")
    return hdr


def protected_mode_part(path: str, data: bytes, hdr) -> bytes:
    """The part of a bzImage after the real-mode setup sectors (what loads at 1 MiB)."""
    kernel_offset = ((hdr.setup_sects or 4) + 1) * 512
    kernel = data[kernel_offset:]
    if len(kernel) < hdr.syssize * 16 or not kernel:
        raise ImageError(path, f"truncated bzImage: the header promises {hdr.syssize * 16} bytes of "
                               f"kernel after {kernel_offset} bytes of setup, the file has {len(kernel)}")
    return kernel


def payload(path: str, data: bytes, hdr) -> bytes:
    """The compressed vmlinux inside a bzImage (payload_offset is from the protected-mode part)."""
    kernel = protected_mode_part(path, data, hdr)
    start, end = hdr.payload_offset, hdr.payload_offset + hdr.payload_length
    if not hdr.payload_length or end > len(kernel):
        raise ImageError(path, f"the setup header's payload [{start:#x}, {end:#x}) lies outside the "
                               f"{len(kernel):#x}-byte kernel")
    return kernel[start:end]


def bzimage_payload(path: str, data: bytes) -> bytes:
    """The compressed vmlinux of the bzImage ``data``, its header checked first."""
    return payload(path, data, setup_header(path, data))


def low_ram_end(mem: GuestMemory) -> int:
    """Where the RAM that starts at address 0 ends."""
    return min(r.end for r in mem.regions if r.gpa == 0)


def place_initrd(mem: GuestMemory, initrd: tuple[str, bytes] | None, kernel_end: int,
                 limit: int) -> tuple[int, int]:
    """Write the initrd as high in low RAM as ``limit`` (its last usable byte) allows, page
    aligned, as QEMU and GRUB do; returns (address, size), (0, 0) without one."""
    if initrd is None:
        return 0, 0
    initrd_path, blob = initrd
    top = min(low_ram_end(mem), limit + 1)
    address = (top - len(blob)) & ~0xFFF
    if address < kernel_end:
        raise ImageError(initrd_path, f"initrd of {len(blob)} bytes does not fit between the kernel "
                                      f"(up to {kernel_end:#x}) and {top:#x}")
    mem.write(address, blob)
    return address, len(blob)


def write_cmdline(mem: GuestMemory, path: str, cmdline: str, limit: int) -> int:
    """The command line at CMDLINE_ADDR; returns that address."""
    encoded = cmdline.encode()
    if b"\0" in encoded:
        raise ConfigError("the kernel command line contains a NUL byte")
    if len(encoded) > limit:
        raise ConfigError(f"kernel command line is {len(encoded)} bytes; {path} accepts at most {limit}")
    mem.write(CMDLINE_ADDR, encoded + b"\0")
    return CMDLINE_ADDR


def write_boot_params(mem: GuestMemory, header: bytes, hdr, ramdisk: tuple[int, int],
                      e820: list[tuple[int, int, int]], rsdp: int | None) -> int:
    """The zero page: ``header`` (the image's setup header bytes, copied as it has them, boot.rst:
    up to 0x202 + the byte at 0x201) with the loader's fields from ``hdr`` over it, and the e820
    map. Returns its address."""
    zero_page = bytearray(BOOT_PARAMS_SIZE)
    zero_page[HEADER_OFFSET:HEADER_OFFSET + len(header)] = header
    hdr.type_of_loader = LOADER_UNDEFINED
    hdr.cmd_line_ptr = CMDLINE_ADDR
    hdr.ramdisk_image, hdr.ramdisk_size = ramdisk
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
    return BOOT_PARAMS


def load_bzimage(mem: GuestMemory, path: str, data: bytes, cmdline: str,
                 initrd: tuple[str, bytes] | None, e820: list[tuple[int, int, int]],
                 rsdp: int | None = None, host_decompress: bool = False) -> EntryState:
    """Load a bzImage for its 64-bit entry; returns the entry state. With ``host_decompress`` the
    payload is decompressed here and the vmlinux inside entered directly (no guest decompressor)."""
    hdr = setup_header(path, data)
    header = data[HEADER_OFFSET:min(0x202 + data[0x201], len(data), BOOT_PARAMS_SIZE)]
    if host_decompress:
        from .decompress import vmlinux
        from .vmlinux import load_linux_elf

        # The vmlinux's segments must fit in RAM, so a payload inflating past it is refused
        # before it is all in host memory.
        elf = vmlinux(path, payload(path, data, hdr), limit=mem.size)
        entry, kernel_end = load_linux_elf(mem, path, elf)
        what = f"Linux bzImage (boot protocol {_version(hdr.version)}), decompressed by hvm, " \
               f"vmlinux 64-bit entry"
    else:
        kernel = protected_mode_part(path, data, hdr)
        kernel_end = LOAD_ADDR + max(len(kernel), hdr.init_size)
        if kernel_end > low_ram_end(mem):
            raise ImageError(path, f"the kernel needs {kernel_end - LOAD_ADDR:#x} bytes from 1 MiB "
                                   f"(init_size), more than the guest's memory below {low_ram_end(mem):#x}")
        mem.write(LOAD_ADDR, kernel)
        hdr.code32_start = LOAD_ADDR
        entry = LOAD_ADDR + 0x200
        what = f"Linux bzImage (boot protocol {_version(hdr.version)}), 64-bit entry"
    write_cmdline(mem, path, cmdline, hdr.cmdline_size)
    ramdisk = place_initrd(mem, initrd, kernel_end, hdr.initrd_addr_max)
    params = write_boot_params(mem, header, hdr, ramdisk, e820, rsdp)
    return EntryState(Mode.LONG, entry, {"rsi": params}, linux_selectors=True, description=what)
