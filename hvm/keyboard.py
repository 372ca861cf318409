"""Typing into a guest: ``machine.keyboard.type("ls\\n")`` and ``machine.keyboard.press("Enter")``
through the PS/2 keyboard, and pointing with ``machine.mouse.move(10, -5)`` and
``machine.mouse.click("left")`` through the PS/2 mouse, paced by how fast the guest reads them."""
from __future__ import annotations

import time
from typing import Callable

from .devices.i8042 import I8042
from .devices.ps2_keys import CHARS, KEYS
from .devices.ps2_mouse import BUTTON_4, BUTTON_5, COUNTER_LIMIT, LEFT, MIDDLE, RIGHT, WHEEL_MAX

# A real keyboard repeats nothing faster than ~30 characters per second; firmware and boot
# loaders poll the controller, so a key is held down this long before its release is sent.
HOLD = 0.01
BUTTONS = {"left": LEFT, "right": RIGHT, "middle": MIDDLE, "side": BUTTON_4, "extra": BUTTON_5}


def _until_taken(send: Callable[[], bool], timeout: float, device: str) -> None:
    """Call ``send`` until the device takes the input (it refuses while its buffer is full)."""
    deadline = time.monotonic() + timeout
    while not send():
        if time.monotonic() > deadline:
            raise TimeoutError(f"the guest is not reading the {device}")
        time.sleep(0.005)


class Keyboard:
    """The machine's PS/2 keyboard as an API user types on it."""

    def __init__(self, i8042: I8042):
        self.i8042 = i8042

    def _send(self, name: str, down: bool, timeout: float) -> None:
        _until_taken(lambda: self.i8042.key(name, down), timeout, "keyboard")

    @staticmethod
    def _check(*names: str) -> None:
        for key in names:
            if key not in KEYS:
                raise ValueError(f"unknown key {key!r} (known: {', '.join(sorted(KEYS))})")

    def hold(self, name: str, timeout: float = 10.0) -> None:
        """Press key ``name`` and keep it down: it repeats at the rate the guest programmed
        (typematic) until ``release``."""
        self._check(name)
        self._send(name, True, timeout)

    def release(self, name: str, timeout: float = 10.0) -> None:
        """Let go of key ``name``."""
        self._check(name)
        self._send(name, False, timeout)

    def press(self, name: str, *modifiers: str, timeout: float = 10.0) -> None:
        """Press and release key ``name`` ("Enter", "F2", "a"...), holding ``modifiers`` ("Shift",
        "Ctrl", "Alt") down around it."""
        self._check(name, *modifiers)
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


class Mouse:
    """The machine's PS/2 mouse as an API user moves it. Directions are the screen's (and Linux
    evdev's): ``dx`` right, ``dy`` down, ``wheel`` positive scrolls up (away from the user). Button
    names: left, right, middle, and side, extra (reported once the guest has switched the mouse
    to its five-button mode, as Linux's psmouse does). Nothing reaches a guest that has not
    enabled the mouse (no driver, or reporting off): the calls return without waiting then."""

    def __init__(self, i8042: I8042):
        self.i8042 = i8042

    def _send(self, timeout: float, dx: int = 0, dy: int = 0, dz: int = 0, press: int = 0,
              release: int = 0) -> None:
        _until_taken(lambda: self.i8042.mouse_event(dx, dy, dz, press=press, release=release),
                     timeout, "mouse")

    def move(self, dx: int, dy: int, wheel: int = 0, timeout: float = 10.0) -> None:
        """Move by ``dx``, ``dy`` counts and turn the wheel by ``wheel`` notches; a long way goes
        as several packets, each within what the protocol carries."""
        # The PS/2 mouse counts Y up and the wheel toward the user.
        dx, dy, dz = int(dx), -int(dy), -int(wheel)
        while dx or dy or dz:
            sx = max(-COUNTER_LIMIT, min(COUNTER_LIMIT, dx))
            sy = max(-COUNTER_LIMIT, min(COUNTER_LIMIT, dy))
            sz = max(-WHEEL_MAX, min(WHEEL_MAX, dz))
            self._send(timeout, sx, sy, sz)
            dx, dy, dz = dx - sx, dy - sy, dz - sz

    @staticmethod
    def _mask(button: str) -> int:
        if button not in BUTTONS:
            raise ValueError(f"unknown button {button!r} (known: {', '.join(BUTTONS)})")
        return BUTTONS[button]

    def press(self, button: str, timeout: float = 10.0) -> None:
        """Press ``button`` and keep it down."""
        self._send(timeout, press=self._mask(button))

    def release(self, button: str, timeout: float = 10.0) -> None:
        """Let go of ``button``."""
        self._send(timeout, release=self._mask(button))

    def click(self, button: str = "left", timeout: float = 10.0) -> None:
        """Press and release ``button``."""
        self.press(button, timeout)
        time.sleep(HOLD)
        self.release(button, timeout)
