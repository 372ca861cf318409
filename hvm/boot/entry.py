"""What a loader hands back: the CPU mode and registers the guest must start with."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..engine.state import SRegs


class Mode(str, Enum):
    """CPU mode at the guest's first instruction."""

    REAL = "real"            # 16-bit real mode, CS:IP
    PROTECTED = "protected"  # 32-bit flat protected mode, paging off
    LONG = "long"            # 64-bit mode, identity-mapped page tables built by hvm
    RESET = "reset"          # a CPU after RESET: real mode at the reset vector, CS base FFFF0000
    GIVEN = "given"          # the loader gives every control and segment register (``cpu``)


@dataclass
class EntryState:
    """The guest's first instruction and the registers it expects (names like 'eax', 'rsi')."""

    mode: Mode
    entry: int                      # linear address of the first instruction (real mode: CS*16+IP)
    regs: dict[str, int] = field(default_factory=dict)
    real_cs: int | None = None      # real mode only: the CS selector to use (IP = entry - CS*16)
    description: str = ""           # e.g. "multiboot v1 ELF32", shown by -v
    # Protected/long mode: the selectors the kernel expects (Linux's boot protocol wants its
    # __BOOT_CS 0x10 and __BOOT_DS 0x18; hvm's own layout is 0x08 code, 0x10 data).
    linux_selectors: bool = False
    cpu: "SRegs | None" = None      # Mode.GIVEN: the control and segment registers, complete
