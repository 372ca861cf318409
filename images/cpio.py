"""The cpio "newc" archive format Linux unpacks as its initramfs, written by hvm's own code.

Format: Documentation/driver-api/early-userspace/buffer-format.rst in the kernel tree. Each entry
is a 110-byte ASCII header (magic ``070701`` and thirteen 8-digit hex fields), the NUL-terminated
name padded to a multiple of 4 bytes (counting the header), then the data padded the same way.
A ``TRAILER!!!`` entry ends the archive.
"""
from __future__ import annotations

import stat
import string
from dataclasses import dataclass

from construct import Bytes, Const, ConstructError, ExprAdapter, Struct


class CpioFormatError(ValueError):
    """The bytes are not a complete newc archive; the message says where it goes wrong."""


def _hex8(raw: bytes) -> int:
    # Exactly eight hex digits, as the kernel reads them: int() alone would also take a sign,
    # blanks or underscores, and a writer bug producing them must not read back as fine.
    if not all(c in string.hexdigits.encode() for c in raw):
        raise CpioFormatError(f"header field {raw!r} is not 8 hex digits")
    return int(raw, 16)


def _to_hex8(value: int) -> bytes:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{value} does not fit a newc header field (8 hex digits)")
    return b"%08X" % value


_HEX8 = ExprAdapter(Bytes(8), decoder=lambda raw, ctx: _hex8(raw), encoder=lambda value, ctx: _to_hex8(value))

NEWC_HEADER = Struct(
    "magic" / Const(b"070701"),
    "ino" / _HEX8,
    "mode" / _HEX8,
    "uid" / _HEX8,
    "gid" / _HEX8,
    "nlink" / _HEX8,
    "mtime" / _HEX8,
    "filesize" / _HEX8,
    "devmajor" / _HEX8,
    "devminor" / _HEX8,
    "rdevmajor" / _HEX8,
    "rdevminor" / _HEX8,
    "namesize" / _HEX8,
    "check" / _HEX8,
)
TRAILER = "TRAILER!!!"


@dataclass(frozen=True)
class Entry:
    """One file, directory, symlink (``data`` is the target) or device node of the archive."""

    name: str
    mode: int
    data: bytes = b""
    rdev: tuple[int, int] = (0, 0)


def directory(name: str, perm: int = 0o755) -> Entry:
    return Entry(name, stat.S_IFDIR | perm)


def file(name: str, data: bytes, perm: int = 0o644) -> Entry:
    return Entry(name, stat.S_IFREG | perm, data)


def symlink(name: str, target: str) -> Entry:
    return Entry(name, stat.S_IFLNK | 0o777, target.encode())


def char_device(name: str, major: int, minor: int, perm: int = 0o600) -> Entry:
    return Entry(name, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


def archive(entries: list[Entry], mtime: int = 0) -> bytes:
    """The newc archive of ``entries`` (owned by root; a fixed ``mtime`` keeps it reproducible)."""
    for e in entries:
        # A NUL would cut the name short in the kernel's reader, and a "TRAILER!!!" entry would
        # end the archive there: both would silently lose what follows.
        if "\0" in e.name or e.name.lstrip("/") == TRAILER:
            raise ValueError(f"cpio entry name {e.name!r} cannot be archived")
        if not all(0 <= v <= 0xFFFFFFFF for v in (e.mode, *e.rdev)):
            raise ValueError(f"cpio entry {e.name!r}: mode or device number does not fit 32 bits")
    out = bytearray()
    for ino, e in enumerate([*entries, Entry(TRAILER, 0)], start=1):
        name = e.name.lstrip("/").encode() + b"\0"
        header = NEWC_HEADER.build(dict(
            ino=0 if e.name == TRAILER else ino, mode=e.mode, uid=0, gid=0,
            nlink=2 if stat.S_ISDIR(e.mode) else 1, mtime=mtime, filesize=len(e.data), devmajor=0,
            devminor=0, rdevmajor=e.rdev[0], rdevminor=e.rdev[1], namesize=len(name), check=0))
        out += header + name + _pad4(len(header) + len(name))
        out += e.data + _pad4(len(e.data))
    return bytes(out)


def entries_of(data: bytes) -> list[tuple[str, int, bytes]]:
    """(name, mode, data) of each entry of a newc archive, up to the trailer; CpioFormatError
    when the bytes are not one."""
    result, pos = [], 0
    while True:
        try:
            h = NEWC_HEADER.parse(data[pos:pos + NEWC_HEADER.sizeof()])
        except (ConstructError, ValueError) as exc:
            raise CpioFormatError(f"no newc header at offset {pos:#x} ({exc})") from None
        pos += NEWC_HEADER.sizeof()
        raw = data[pos:pos + h.namesize]
        if len(raw) != h.namesize or not raw.endswith(b"\0"):
            raise CpioFormatError(f"the name at offset {pos:#x} is not {h.namesize} bytes ending in NUL")
        try:
            name = raw[:-1].decode()
        except UnicodeDecodeError:
            raise CpioFormatError(f"the name at offset {pos:#x} is not UTF-8") from None
        pos += h.namesize + (-(NEWC_HEADER.sizeof() + h.namesize) % 4)
        if name == TRAILER:
            return result
        if pos + h.filesize > len(data):
            raise CpioFormatError(f"the data of {name!r} runs past the end of the archive")
        result.append((name, h.mode, data[pos:pos + h.filesize]))
        pos += h.filesize + (-h.filesize % 4)
