"""Port 0x80: POST codes from firmware, and the I/O-delay writes Linux issues; remembered, not acted on."""
from __future__ import annotations

from .base import Device

DEFAULT_PORT = 0x80


class PostCode(Device):
    """Keeps the last POST code and a short history (shown in crash reports and by -v)."""

    name = "post"
    HISTORY = 16
    # Firmware and Linux's I/O delay write here thousands of times and wait for nothing: under
    # KVM the writes queue in the kernel and reach ``write`` in order at the vCPU's next exit.
    coalesced_writes = True

    def __init__(self) -> None:
        self.last = 0
        self.history: list[int] = []
        self.writes = 0

    def read(self, offset: int, size: int) -> int:
        """The last code written, as diagnostic cards show it."""
        return self.last

    def write(self, offset: int, size: int, value: int) -> None:
        """Record a POST code."""
        self.writes += 1
        self.last = value & 0xFF
        self.history.append(self.last)
        if len(self.history) > self.HISTORY:
            del self.history[0]
