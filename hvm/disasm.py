"""Disassembly of guest instruction bytes (capstone), for crash reports and the fallback hook."""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache


@dataclass(frozen=True)
class Instruction:
    """One decoded instruction."""

    address: int
    size: int
    mnemonic: str
    op_str: str
    raw: bytes

    def __str__(self) -> str:
        return f"{self.mnemonic} {self.op_str}".strip()


@lru_cache(maxsize=3)
def _decoder(bits: int):
    # Imported lazily: capstone's library is large and only needed when something goes wrong.
    import capstone

    mode = {16: capstone.CS_MODE_16, 32: capstone.CS_MODE_32, 64: capstone.CS_MODE_64}[bits]
    return capstone.Cs(capstone.CS_ARCH_X86, mode)


# The KVM fallback decodes the same few instructions (a loop's popcnt) over and over; capstone
# takes ~10 us each time. Bounded: the bytes and addresses are the guest's.
_decoded: dict[tuple[bytes, int, int], Instruction | None] = {}
_DECODED_LIMIT = 4096


def decode(code: bytes, bits: int, address: int = 0) -> Instruction | None:
    """Decode the first instruction of ``code`` in 16-, 32- or 64-bit mode; None if invalid."""
    key = (code, bits, address)
    found = _decoded.get(key, _decoded)
    if found is not _decoded:
        return found
    result = None
    for insn in _decoder(bits).disasm(code, address, count=1):
        result = Instruction(insn.address, insn.size, insn.mnemonic, insn.op_str, bytes(insn.bytes))
        break
    if len(_decoded) >= _DECODED_LIMIT:
        _decoded.clear()
    _decoded[key] = result
    return result
