"""Bochs/QEMU debug console on port 0xE9: bytes written go to a backend; a read returns 0xE9."""
from __future__ import annotations

from .base import Device

DEFAULT_PORT = 0xE9


class DebugCon(Device):
    """Port 0xE9: guests (SeaBIOS, Xen-aware kernels, test code) print here with one OUT."""

    name = "debugcon"

    def __init__(self, backend):
        self.backend = backend
        self.bytes_out = 0

    def read(self, offset: int, size: int) -> int:
        """0xE9 tells a guest the console is present (Bochs convention)."""
        return 0xE9

    def write(self, offset: int, size: int, value: int) -> None:
        """One character to the backend."""
        self.bytes_out += 1
        self.backend.write(bytes([value & 0xFF]))
