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


def decode(code: bytes, bits: int, address: int = 0) -> Instruction | None:
    """Decode the first instruction of ``code`` in 16-, 32- or 64-bit mode; None if invalid."""
    for insn in _decoder(bits).disasm(code, address, count=1):
        return Instruction(insn.address, insn.size, insn.mnemonic, insn.op_str, bytes(insn.bytes))
    return None
