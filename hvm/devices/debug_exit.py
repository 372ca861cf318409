"""isa-debug-exit: a guest write ends the VM with process exit code ``(value << 1) | 1`` (QEMU's rule)."""
from __future__ import annotations

from typing import Callable

from .base import Device

DEFAULT_PORT = 0xF4
PORT_COUNT = 4  # QEMU test setups use iobase=0xf4,iosize=0x04


class DebugExit(Device):
    """Writing any value requests exit with status ``(value << 1) | 1``; reads return all ones."""

    name = "isa-debug-exit"

    def __init__(self, on_exit: Callable[[int], None]):
        self._on_exit = on_exit

    def write(self, offset: int, size: int, value: int) -> None:
        """The guest asked to exit with ``value``."""
        self._on_exit(value)
