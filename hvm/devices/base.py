"""The contract every device honours: a bus hands it an offset inside its range."""
from __future__ import annotations


class Device:
    """A device on a port or MMIO bus; offsets are relative to the base it was registered at."""

    name = "device"
    # Write-only sinks nobody waits on (POST codes): an engine may buffer their writes (KVM's
    # coalesced I/O) and deliver them, in the guest's order, before the vCPU's next exit.
    coalesced_writes = False
    # Offsets of byte registers the device can publish (hvm/published.py): a port bus hands it a
    # ``Published`` for each through ``attach_published``.
    published_offsets: tuple[int, ...] = ()

    def attach_published(self, offset: int, entry) -> None:
        """Keep ``entry`` showing the register at ``offset`` while its reads have no effect."""

    def read(self, offset: int, size: int) -> int:
        """Return the value the guest reads at ``offset`` (``size`` bytes, 1/2/4/8)."""
        return (1 << (size * 8)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        """Accept a guest write of ``value`` (``size`` bytes) at ``offset``."""

    # String I/O (INS/OUTS with a REP prefix): the same port read or written ``count`` times in a
    # row. A device whose data register moves blocks (IDE) serves a run at once; the defaults
    # below are the element-by-element accesses, so any other device behaves exactly as before.
    def read_string(self, offset: int, size: int, count: int) -> bytes:
        """The next ``count`` ``size``-byte reads at ``offset``, little-endian, in order. A device
        may stop early at a point of its own (the end of a data block), returning at least one
        element: the caller asks again for the rest."""
        mask = (1 << (8 * size)) - 1
        read = self.read
        return b"".join((read(offset, size) & mask).to_bytes(size, "little") for _ in range(count))

    def write_string(self, offset: int, size: int, data: bytes) -> int:
        """Write the ``size``-byte elements of ``data`` to ``offset`` in order; returns how many
        were taken (at least one; fewer than all when the device stops at a point of its own)."""
        write = self.write
        for pos in range(0, len(data), size):
            write(offset, size, int.from_bytes(data[pos:pos + size], "little"))
        return len(data) // size
