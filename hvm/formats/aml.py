"""The few AML encodings hvm's DSDTs need: names, integers, strings, packages, buffers, scopes,
devices, argument-less method shells, the small resource descriptors of ISA devices and the large
ones of a PCI root bridge and its interrupt links.

Encodings from the ACPI specification 6.4, chapter 20 (AML grammar: 20.2.3 package length, 20.2.2
name strings, 20.2.5 term objects), 6.4.2 (small resource data types) and 6.4.3 (large ones). Every function returns
the bytes of one term; a scope or device takes the bytes of the terms it contains.
"""
from __future__ import annotations

ZERO_OP, ONE_OP, ONES_OP = 0x00, 0x01, 0xFF
BYTE_PREFIX, WORD_PREFIX, DWORD_PREFIX, STRING_PREFIX, QWORD_PREFIX = 0x0A, 0x0B, 0x0C, 0x0D, 0x0E
NAME_OP, SCOPE_OP, BUFFER_OP, PACKAGE_OP, METHOD_OP = 0x08, 0x10, 0x11, 0x12, 0x14
DEVICE_OP = b"\x5b\x82"
ROOT_CHAR, DUAL_NAME_PREFIX, MULTI_NAME_PREFIX = 0x5C, 0x2E, 0x2F

# Small resource descriptors (6.4.2): tag byte = type << 3 | length.
_IRQ_NO_FLAGS = 0x04 << 3 | 2
_IO_PORT = 0x08 << 3 | 7
_END_TAG = 0x0F << 3 | 1
IO_DECODE16 = 1
# Large resource descriptors (6.4.3): item names; the length field that follows is 16-bit.
_DWORD_ADDRESS, _WORD_ADDRESS, _EXTENDED_IRQ = 0x87, 0x88, 0x89
SPACE_MEMORY, SPACE_IO, SPACE_BUS = 0, 1, 2
# General flags of address space descriptors (6.4.3.5.1-3): _MAF, _MIF; producer, positive decode.
_ADDRESS_FIXED = 1 << 3 | 1 << 2
IO_ENTIRE_RANGE = 0x03                    # type-specific flags of an I/O range: _RNG both
MEMORY_RW, MEMORY_CACHEABLE = 0x01, 0x02  # type-specific flags of a memory range: _RW, _MEM
# Extended interrupt flags (6.4.3.6): consumer; level-triggered (bit 1 clear); active-high (bit
# 2 clear); shared.
IRQ_CONSUMER, IRQ_EDGE, IRQ_ACTIVE_LOW, IRQ_SHARED = 1 << 0, 1 << 1, 1 << 2, 1 << 3


def pkg_length(body_length: int) -> bytes:
    """PkgLength for ``body_length`` bytes following it; the encoded length counts itself."""
    for extra in range(4):
        total = body_length + 1 + extra
        if extra == 0 and total < 0x40:
            return bytes([total])
        if extra and total < 1 << (4 + 8 * extra):
            return bytes([extra << 6 | total & 0xF]) + (total >> 4).to_bytes(extra, "little")
    raise ValueError(f"AML package of {body_length} bytes is larger than PkgLength can express")


def name_seg(seg: str) -> bytes:
    """A 4-character NameSeg, padded with underscores."""
    if not 1 <= len(seg) <= 4 or not (seg[0].isupper() or seg[0] == "_") or \
            not all(c.isupper() or c.isdigit() or c == "_" for c in seg):
        raise ValueError(f"{seg!r} is not an AML name segment")
    return seg.ljust(4, "_").encode()


def name_string(path: str) -> bytes:
    """``\\_SB.COM1`` style paths (root-relative or relative, dot-separated)."""
    prefix = b""
    if path.startswith("\\"):
        prefix, path = bytes([ROOT_CHAR]), path[1:]
    segs = [name_seg(s) for s in path.split(".")] if path else []
    if not segs:
        return prefix + b"\x00"  # NullName
    if len(segs) == 1:
        return prefix + segs[0]
    if len(segs) == 2:
        return prefix + bytes([DUAL_NAME_PREFIX]) + b"".join(segs)
    return prefix + bytes([MULTI_NAME_PREFIX, len(segs)]) + b"".join(segs)


def integer(value: int) -> bytes:
    """The shortest encoding of ``value``."""
    if value == 0:
        return bytes([ZERO_OP])
    if value == 1:
        return bytes([ONE_OP])
    for prefix, size in ((BYTE_PREFIX, 1), (WORD_PREFIX, 2), (DWORD_PREFIX, 4), (QWORD_PREFIX, 8)):
        if 0 <= value < 1 << (8 * size):
            return bytes([prefix]) + value.to_bytes(size, "little")
    raise ValueError(f"{value} does not fit an AML integer")


def string(text: str) -> bytes:
    """A null-terminated ASCII string constant."""
    raw = text.encode("ascii")
    if b"\x00" in raw:
        raise ValueError("AML strings cannot contain NUL")
    return bytes([STRING_PREFIX]) + raw + b"\x00"


def eisa_id(text: str) -> bytes:
    """EISAID("PNP0501"): three letters in 5 bits each and four hex digits, as a DWord."""
    if len(text) != 7 or not text[:3].isalpha() or not text[:3].isupper():
        raise ValueError(f"{text!r} is not an EISA ID (three capitals and four hex digits)")
    letters = (ord(text[0]) - 0x40) << 10 | (ord(text[1]) - 0x40) << 5 | (ord(text[2]) - 0x40)
    raw = letters.to_bytes(2, "big") + int(text[3:], 16).to_bytes(2, "big")
    return integer(int.from_bytes(raw, "little"))


def byte_const(value: int) -> bytes:
    """A ByteConst (BytePrefix and one byte), fixed-width even for 0 and 1: for tables whose size
    must not depend on the values in them."""
    if not 0 <= value <= 0xFF:
        raise ValueError(f"{value} is not a byte")
    return bytes([BYTE_PREFIX, value])


def name(path: str, value: bytes) -> bytes:
    """Name(path, value)."""
    return bytes([NAME_OP]) + name_string(path) + value


def package(*elements: bytes) -> bytes:
    """Package(){elements}."""
    if len(elements) > 255:
        raise ValueError("a Package holds at most 255 elements")
    body = bytes([len(elements)]) + b"".join(elements)
    return bytes([PACKAGE_OP]) + pkg_length(len(body)) + body


def buffer(data: bytes) -> bytes:
    """Buffer(){data}."""
    body = integer(len(data)) + data
    return bytes([BUFFER_OP]) + pkg_length(len(body)) + body


def scope(path: str, *terms: bytes) -> bytes:
    """Scope(path){terms}."""
    body = name_string(path) + b"".join(terms)
    return bytes([SCOPE_OP]) + pkg_length(len(body)) + body


def device(path: str, *terms: bytes) -> bytes:
    """Device(path){terms}."""
    body = name_string(path) + b"".join(terms)
    return DEVICE_OP + pkg_length(len(body)) + body


def method(path: str, args: int, *terms: bytes) -> bytes:
    """Method(path, args, NotSerialized){terms}."""
    if not 0 <= args <= 7:
        raise ValueError("a method takes 0 to 7 arguments")
    body = name_string(path) + bytes([args]) + b"".join(terms)
    return bytes([METHOD_OP]) + pkg_length(len(body)) + body


def io_port(base: int, length: int) -> bytes:
    """IO(Decode16, base, base, 1, length): a fixed range of ``length`` ports."""
    if not 0 <= base <= 0xFFFF or not 0 < length <= 0xFF:
        raise ValueError(f"I/O range {base:#x}+{length} cannot be described by an IO descriptor")
    return bytes([_IO_PORT, IO_DECODE16]) + base.to_bytes(2, "little") * 2 + bytes([1, length])


def irq_no_flags(*irqs: int) -> bytes:
    """IRQNoFlags(){irqs}: edge-triggered, active-high ISA interrupts."""
    mask = 0
    for irq in irqs:
        if not 0 <= irq < 16:
            raise ValueError(f"IRQ {irq} is not an ISA interrupt")
        mask |= 1 << irq
    return bytes([_IRQ_NO_FLAGS]) + mask.to_bytes(2, "little")


def _large(item: int, body: bytes) -> bytes:
    return bytes([item]) + len(body).to_bytes(2, "little") + body


def word_space(kind: int, minimum: int, maximum: int, type_flags: int = 0) -> bytes:
    """WordBusNumber/WordIO (ResourceProducer, MinFixed, MaxFixed, PosDecode): the range
    ``minimum``-``maximum`` a bridge decodes (6.4.3.5.3)."""
    if not 0 <= minimum <= maximum <= 0xFFFF:
        raise ValueError(f"{minimum:#x}-{maximum:#x} is not a 16-bit range")
    fields = (0, minimum, maximum, 0, maximum - minimum + 1)   # granularity ... length
    return _large(_WORD_ADDRESS, bytes([kind, _ADDRESS_FIXED, type_flags]) +
                  b"".join(v.to_bytes(2, "little") for v in fields))


def dword_memory(minimum: int, maximum: int, type_flags: int = MEMORY_RW) -> bytes:
    """DWordMemory (ResourceProducer, PosDecode, MinFixed, MaxFixed) over ``minimum``-``maximum``
    (6.4.3.5.2)."""
    if not 0 <= minimum <= maximum <= 0xFFFFFFFF:
        raise ValueError(f"{minimum:#x}-{maximum:#x} is not a 32-bit range")
    fields = (0, minimum, maximum, 0, maximum - minimum + 1)
    return _large(_DWORD_ADDRESS, bytes([SPACE_MEMORY, _ADDRESS_FIXED, type_flags]) +
                  b"".join(v.to_bytes(4, "little") for v in fields))


def interrupt(flags: int, *irqs: int) -> bytes:
    """Interrupt(...){irqs}: the extended interrupt descriptor (6.4.3.6)."""
    if not 1 <= len(irqs) <= 255:
        raise ValueError("an interrupt descriptor lists 1 to 255 interrupts")
    return _large(_EXTENDED_IRQ, bytes([flags, len(irqs)]) + b"".join(i.to_bytes(4, "little") for i in irqs))


def resource_template(*descriptors: bytes) -> bytes:
    """ResourceTemplate(){descriptors}: a buffer ending with an End Tag (checksum 0: "none")."""
    return buffer(b"".join(descriptors) + bytes([_END_TAG, 0]))
