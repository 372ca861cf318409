"""Interrupt lines handed to devices, so device cores never know who delivers their interrupts."""
from __future__ import annotations

import threading
from typing import Callable


class IrqLine:
    """One interrupt input (a GSI); devices call ``set_level`` and never see the irqchip behind it."""

    def __init__(self, gsi: int, deliver: Callable[[int, bool], None],
                 retrigger: Callable[[int], None] | None = None):
        self.gsi = gsi
        self._deliver = deliver
        self._retrigger = retrigger  # the irqchip's "low, then high again" in one call, if any
        self._level = False
        self._lock = threading.Lock()
        self.raised = 0  # rising edges, for --stats and tests

    @property
    def level(self) -> bool:
        """Current level of the line as last set by the device."""
        return self._level

    def set_level(self, level: bool) -> None:
        """Drive the line; the irqchip is only told about changes."""
        level = bool(level)
        with self._lock:
            if level == self._level:
                return
            self._level = level
            if level:
                self.raised += 1
            self._deliver(self.gsi, level)

    def retrigger(self) -> None:
        """Drop the line and raise it again at once (a device's interrupt acknowledged and raised
        anew within one register access, such as a UART's THR write with THRE interrupts on): a
        fresh edge for edge-triggered inputs, as ``set_level(False)`` then ``set_level(True)``."""
        with self._lock:
            self.raised += 1
            if not self._level:
                self._level = True
                self._deliver(self.gsi, True)
            elif self._retrigger is not None:
                self._retrigger(self.gsi)
            else:
                self._deliver(self.gsi, False)
                self._deliver(self.gsi, True)

    def pulse(self) -> None:
        """Raise then lower the line: one edge for edge-triggered inputs."""
        self.set_level(True)
        self.set_level(False)


class RecordingIrqLine(IrqLine):
    """An IrqLine that only records levels: for pure device-core tests with no VM."""

    def __init__(self, gsi: int = 0):
        self.history: list[bool] = []
        super().__init__(gsi, lambda _gsi, lvl: self.history.append(lvl))
