"""Scan codes of a US-layout PC keyboard: set 2 (what an AT keyboard sends) and set 1 (what the
i8042 passes on with translation on, and what a keyboard switched to set 1 sends), from the IBM
PC/AT and PS/2 keyboard technical references. Extended keys carry an E0 prefix in both sets; a
release is F0 before the code in set 2 and the code with bit 7 set in set 1."""
from __future__ import annotations

# name -> (set 1 code, set 2 code, extended)
KEYS: dict[str, tuple[int, int, bool]] = {
    "Escape": (0x01, 0x76, False), "Backspace": (0x0E, 0x66, False), "Tab": (0x0F, 0x0D, False),
    "Enter": (0x1C, 0x5A, False), "Space": (0x39, 0x29, False),
    "Shift": (0x2A, 0x12, False), "Ctrl": (0x1D, 0x14, False), "Alt": (0x38, 0x11, False),
    "Up": (0x48, 0x75, True), "Down": (0x50, 0x72, True), "Left": (0x4B, 0x6B, True),
    "Right": (0x4D, 0x74, True), "Home": (0x47, 0x6C, True), "End": (0x4F, 0x69, True),
    "PageUp": (0x49, 0x7D, True), "PageDown": (0x51, 0x7A, True), "Insert": (0x52, 0x70, True),
    "Delete": (0x53, 0x71, True),
    "F1": (0x3B, 0x05, False), "F2": (0x3C, 0x06, False), "F3": (0x3D, 0x04, False),
    "F4": (0x3E, 0x0C, False), "F5": (0x3F, 0x03, False), "F6": (0x40, 0x0B, False),
    "F7": (0x41, 0x83, False), "F8": (0x42, 0x0A, False), "F9": (0x43, 0x01, False),
    "F10": (0x44, 0x09, False), "F11": (0x57, 0x78, False), "F12": (0x58, 0x07, False),
}
_LETTERS = dict(zip("qwertyuiop", (0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0x19)))
_LETTERS.update(zip("asdfghjkl", (0x1E, 0x1F, 0x20, 0x21, 0x22, 0x23, 0x24, 0x25, 0x26)))
_LETTERS.update(zip("zxcvbnm", (0x2C, 0x2D, 0x2E, 0x2F, 0x30, 0x31, 0x32)))
_SET2_LETTERS = dict(zip("qwertyuiop", (0x15, 0x1D, 0x24, 0x2D, 0x2C, 0x35, 0x3C, 0x43, 0x44, 0x4D)))
_SET2_LETTERS.update(zip("asdfghjkl", (0x1C, 0x1B, 0x23, 0x2B, 0x34, 0x33, 0x3B, 0x42, 0x4B)))
_SET2_LETTERS.update(zip("zxcvbnm", (0x1A, 0x22, 0x21, 0x2A, 0x32, 0x31, 0x3A)))
for _c in _LETTERS:
    KEYS[_c] = (_LETTERS[_c], _SET2_LETTERS[_c], False)
# The other keys that type characters: (unshifted, shifted) -> codes.
_SYMBOLS = [("1!", 0x02, 0x16), ("2@", 0x03, 0x1E), ("3#", 0x04, 0x26), ("4$", 0x05, 0x25),
            ("5%", 0x06, 0x2E), ("6^", 0x07, 0x36), ("7&", 0x08, 0x3D), ("8*", 0x09, 0x3E),
            ("9(", 0x0A, 0x46), ("0)", 0x0B, 0x45), ("-_", 0x0C, 0x4E), ("=+", 0x0D, 0x55),
            ("[{", 0x1A, 0x54), ("]}", 0x1B, 0x5B), (";:", 0x27, 0x4C), ("'\"", 0x28, 0x52),
            ("`~", 0x29, 0x0E), ("\\|", 0x2B, 0x5D), (",<", 0x33, 0x41), (".>", 0x34, 0x49),
            ("/?", 0x35, 0x4A)]
# character -> (key name, shift)
CHARS: dict[str, tuple[str, bool]] = {" ": ("Space", False), "\n": ("Enter", False),
                                      "\t": ("Tab", False), "\b": ("Backspace", False)}
for _c in _LETTERS:
    CHARS[_c] = (_c, False)
    CHARS[_c.upper()] = (_c, True)
for _pair, _set1, _set2 in _SYMBOLS:
    KEYS[_pair[0]] = (_set1, _set2, False)
    CHARS[_pair[0]] = (_pair[0], False)
    CHARS[_pair[1]] = (_pair[0], True)


def scan_codes(name: str, down: bool, scan_set: int) -> bytes:
    """The bytes key ``name`` sends when pressed (``down``) or released, in ``scan_set`` 1 or 2."""
    set1, set2, extended = KEYS[name]
    prefix = b"\xe0" if extended else b""
    if scan_set == 1:
        return prefix + bytes([set1 | (0 if down else 0x80)])
    return prefix + (b"" if down else b"\xf0") + bytes([set2])
