"""Typing into a guest: ``machine.keyboard.type("ls\\n")`` and ``machine.keyboard.press("Enter")``
through the PS/2 keyboard, paced by how fast the guest reads it."""
from __future__ import annotations

import time

from .devices.i8042 import I8042
from .devices.ps2_keys import CHARS, KEYS

# A real keyboard repeats nothing faster than ~30 characters per second; firmware and boot
# loaders poll the controller, so a key is held down this long before its release is sent.
HOLD = 0.01


class Keyboard:
    """The machine's PS/2 keyboard as an API user types on it."""

    def __init__(self, i8042: I8042):
        self.i8042 = i8042

    def _send(self, name: str, down: bool, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not self.i8042.key(name, down):
            if time.monotonic() > deadline:
                raise TimeoutError("the guest is not reading the keyboard")
            time.sleep(0.005)

    def press(self, name: str, *modifiers: str, timeout: float = 10.0) -> None:
        """Press and release key ``name`` ("Enter", "F2", "a"...), holding ``modifiers`` ("Shift",
        "Ctrl", "Alt") down around it."""
        for key in (name, *modifiers):
            if key not in KEYS:
                raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(KEYS))})")
        for modifier in modifiers:
            self._send(modifier, True, timeout)
        self._send(name, True, timeout)
        time.sleep(HOLD)
        self._send(name, False, timeout)
        for modifier in reversed(modifiers):
            self._send(modifier, False, timeout)

    def type(self, text: str, timeout: float = 10.0) -> None:
        """Type ``text`` on a US layout ("\\n" is Enter)."""
        unknown = sorted({c for c in text if c not in CHARS})
        if unknown:
            raise ValueError(f"cannot type {''.join(unknown)!r} on a US keyboard")
        for char in text:
            name, shift = CHARS[char]
            self.press(name, *(("Shift",) if shift else ()), timeout=timeout)
