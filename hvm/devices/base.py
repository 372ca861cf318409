"""The contract every device honours: a bus hands it an offset inside its range."""
from __future__ import annotations


class Device:
    """A device on a port or MMIO bus; offsets are relative to the base it was registered at."""

    name = "device"

    def read(self, offset: int, size: int) -> int:
        """Return the value the guest reads at ``offset`` (``size`` bytes, 1/2/4/8)."""
        return (1 << (size * 8)) - 1

    def write(self, offset: int, size: int, value: int) -> None:
        """Accept a guest write of ``value`` (``size`` bytes) at ``offset``."""
