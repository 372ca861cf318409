"""Guest RAM populated ahead of a guest that sweeps through it, on another host CPU.

The first write to each page of guest RAM makes the host kernel allocate and zero a page in the
thread that wrote it: the vCPU's. On this project's nested host that costs ~2-8 us a 4 KiB page
(~2 s for 1 GiB: 13 % of a Xen + dom0 boot, whose idle CPU scrubs all free RAM; QEMU's TCG pays
it on a second thread). ``ReadAhead`` runs hvm's C thread (``hvm._readahead``) that sees which
2 MiB chunks became resident and, once the guest has gone on from one chunk into the next,
populates the following ``WINDOW`` chunks before the guest reaches them. What was resident when
it started (the kernel and modules hvm loaded) and chunks touched on their own trigger nothing:
RAM a guest never sweeps stays unallocated, as QEMU's and Firecracker's does. A process that may
run on one host CPU only gets no thread (GuestMemory.start_readahead).
"""
from __future__ import annotations

CHUNK = 2 << 20   # the size of an x86 large page, the unit THP would allocate guest RAM in
WINDOW = 8        # chunks ahead of a sweep (16 MiB: at most that much more than the guest touches)


class ReadAhead:
    """The populating thread over some (host address, size) ranges; ``close`` stops it before
    those ranges may be unmapped."""

    def __init__(self, ranges: list[tuple[int, int]], chunk: int = CHUNK, window: int = WINDOW):
        from ._readahead import ffi, lib

        self._lib = lib
        bases = ffi.new("uintptr_t[]", [base for base, _ in ranges])
        sizes = ffi.new("size_t[]", [size for _, size in ranges])
        self._ra = lib.hvm_readahead_new(len(ranges), bases, sizes, chunk, window)
        self._chunk = chunk
        if self._ra == ffi.NULL:
            raise OSError("hvm: could not start the guest RAM read-ahead thread")

    @property
    def populated(self) -> int:
        """Bytes populated ahead of the guest so far."""
        return self._lib.hvm_readahead_populated(self._ra) * self._chunk if self._ra else 0

    def close(self) -> None:
        if self._ra:
            self._lib.hvm_readahead_close(self._ra)
            self._ra = None
