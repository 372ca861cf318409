"""Locked read-modify-write of a 64-bit word in host memory, for bitmaps the guest updates with
its own locked instructions at the same time (Xen's event-channel bits under a hardware engine
with several vCPUs running). Python has no atomic memory operations, so two x86-64 functions sit
on an executable page, called through ctypes (SysV ABI: address in RDI, operand in RSI, the old
word returned in RAX); LOCK CMPXCHG makes each one atomic against every CPU (Intel SDM vol. 3A
9.1.2.2, "Software controlled bus locking")."""
from __future__ import annotations

import ctypes
import mmap

# mov (%rdi),%rax; 1: mov %rax,%rdx; OP %rsi,%rdx; lock cmpxchg %rdx,(%rdi); jne 1b; ret
_LOOP = "488b07" "4889c2" "{op}" "f0480fb117" "75f3" "c3"
_OR, _AND = "4809f2", "4821f2"


def _compile() -> tuple:
    page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
    kind = ctypes.CFUNCTYPE(ctypes.c_uint64, ctypes.c_void_p, ctypes.c_uint64)
    base = ctypes.addressof(ctypes.c_char.from_buffer(page))
    functions = []
    for i, op in enumerate((_OR, _AND)):
        code = bytes.fromhex(_LOOP.format(op=op))
        page[64 * i:64 * i + len(code)] = code
        functions.append(kind(base + 64 * i))
    return page, *functions


_PAGE, fetch_or, fetch_and = _compile()
