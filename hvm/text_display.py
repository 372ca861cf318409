"""``hvmrun --display text``: the guest's VGA text screen drawn on the terminal, and the terminal's
keys typed on the guest's PS/2 keyboard (what QEMU's ``-display curses`` offers).

Three pieces, the first two pure so they can be tested without a terminal or a guest:

- ``KeyDecoder`` turns the bytes a terminal sends in raw mode into key presses: ASCII, the C0
  controls (Ctrl+letter), and the escape sequences xterm and the Linux/VT console send for cursor,
  editing and function keys (xterm's "ctlseqs", PC-style function keys; ECMA-48 for the CSI
  syntax), plus hvm's Ctrl-A escapes (Ctrl-A x quits, as on the serial console);
- ``Renderer`` turns ``Screen.cells()`` into ANSI output, redrawing only the rows that changed:
  the attribute byte's colours (IBM VGA Technical Reference: bits 3-0 foreground, 6-4 background,
  7 blink or bright background) through the card's palette to the nearest of the 16 ANSI colours;
- ``TextDisplay`` owns the terminal: raw mode and xterm's alternate screen (mode 1049) while it
  runs, both undone on every way out; a thread that polls the screen ~25 times a second, one that
  reads stdin and one that presses the keys (a key waits until the guest has read the last).
"""
from __future__ import annotations

import atexit
import enum
import os
import queue
import select
import sys
import termios
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from .devices.ps2_keys import CHARS
from .devices.vga.screen import CP437, TextCells
from .serial import ESCAPE_CHAR
from .threads import Failure, start_thread

# -- keys ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    """A key to press, with modifiers held around it (names from ``ps2_keys.KEYS``)."""

    name: str
    modifiers: tuple[str, ...] = ()


class Command(enum.Enum):
    """An hvm escape (Ctrl-A then a letter) rather than a key for the guest."""

    QUIT = "quit"
    HELP = "help"


Event = Key | Command

ESC = 0x1B
# A lone ESC is the Escape key only if nothing follows it this soon: terminals send a whole
# sequence in one write, a person cannot type the next key within 50 ms.
ESC_TIMEOUT = 0.05
# Longer than any key's sequence: what exceeds it is swallowed up to its final byte.
SEQUENCE_LIMIT = 32

# CSI n ~ (VT220 editing keys, xterm's function keys; 7/8 are rxvt's Home/End).
_TILDE = {1: "Home", 2: "Insert", 3: "Delete", 4: "End", 5: "PageUp", 6: "PageDown", 7: "Home", 8: "End",
          11: "F1", 12: "F2", 13: "F3", 14: "F4", 15: "F5", 17: "F6", 18: "F7", 19: "F8", 20: "F9",
          21: "F10", 23: "F11", 24: "F12"}
# The final byte of CSI (normal cursor keys) or SS3 (application cursor keys, VT100 PF1-PF4).
_FINAL = {"A": "Up", "B": "Down", "C": "Right", "D": "Left", "H": "Home", "F": "End",
          "P": "F1", "Q": "F2", "R": "F3", "S": "F4"}
# Linux console: ESC [ [ A..E are F1-F5.
_LINUX_F = {"A": "F1", "B": "F2", "C": "F3", "D": "F4", "E": "F5"}
# C0 controls a terminal sends for keys of their own; the rest of 0x01-0x1A are Ctrl+letter.
_CONTROL_KEYS = {0x0D: Key("Enter"), 0x0A: Key("Enter"), 0x09: Key("Tab"), 0x08: Key("Backspace"),
                 0x7F: Key("Backspace"), 0x00: Key("Space", ("Ctrl",)), 0x1C: Key("\\", ("Ctrl",)),
                 0x1D: Key("]", ("Ctrl",)), 0x1E: Key("6", ("Ctrl",)), 0x1F: Key("-", ("Ctrl",))}


def _modifiers(param: int | None) -> tuple[str, ...]:
    """xterm's modifier parameter: 1 + (1 Shift | 2 Alt | 4 Ctrl)."""
    if param is None or param < 2:
        return ()
    bits = param - 1
    return tuple(name for bit, name in ((4, "Ctrl"), (2, "Alt"), (1, "Shift")) if bits & bit)


def _char_key(char: str, modifiers: tuple[str, ...] = ()) -> Key | None:
    """The US-layout key that types ``char``, Shift added where it needs it."""
    if char not in CHARS:
        return None
    name, shift = CHARS[char]
    return Key(name, modifiers + (("Shift",) if shift else ()))


def _byte_key(byte: int) -> Key | None:
    """A byte on its own: a printable character, a control or nothing (non-ASCII)."""
    if byte in _CONTROL_KEYS:
        return _CONTROL_KEYS[byte]
    if 0x01 <= byte <= 0x1A:
        return Key(chr(0x60 + byte), ("Ctrl",))
    if 0x20 <= byte <= 0x7E:
        return _char_key(chr(byte))
    return None     # UTF-8 and other 8-bit bytes: nothing on a US keyboard types them


def _params(text: str) -> list[int | None] | None:
    """CSI parameters ``1;5``; None for private or malformed ones (``?``, ``<``, ``:``)."""
    out: list[int | None] = []
    for part in text.split(";") if text else []:
        if part and not part.isdigit():
            return None
        out.append(int(part) if part else None)
    return out


def _csi_key(params_text: str, final: str) -> Key | None:
    params = _params(params_text)
    if params is None:
        return None
    mods = _modifiers(params[1] if len(params) > 1 else None)
    if final == "~":
        return Key(_TILDE[params[0]], mods) if params and params[0] in _TILDE else None
    if final == "Z":
        return Key("Tab", ("Shift",))
    if final in _FINAL:
        return Key(_FINAL[final], mods)
    return None


class KeyDecoder:
    """Terminal bytes to ``Key`` presses and ``Command``s; keeps an unfinished escape sequence
    (or a Ctrl-A) across ``feed`` calls. ``flush`` settles what is pending when no more bytes
    came within ``ESC_TIMEOUT``: a lone ESC is then the Escape key."""

    def __init__(self) -> None:
        self._seq = bytearray()     # an escape sequence begun: ESC, ESC [, ESC O ...
        self._skipping = False      # inside an over-long sequence, until its final byte
        self._ctrl_a = False

    @property
    def pending(self) -> bool:
        """An escape sequence is unfinished (the caller should ``flush`` after a pause)."""
        return bool(self._seq) or self._skipping

    def feed(self, data: bytes) -> list[Event]:
        """The events ``data`` completes, in order."""
        events: list[Event] = []
        for byte in data:
            self._byte(byte, events)
        return events

    def flush(self) -> list[Event]:
        """Settle a pending sequence: ESC alone is Escape, ESC [ and ESC O are Alt+[ and Alt+O
        (what those keys send); a longer unfinished sequence is dropped."""
        seq, self._seq, self._skipping = bytes(self._seq), bytearray(), False
        if seq == b"\x1b":
            return [Key("Escape")]
        if len(seq) == 2:
            key = _char_key(chr(seq[1]), ("Alt",))
            return [key] if key else []
        return []

    def _byte(self, byte: int, events: list[Event]) -> None:
        if self._skipping:
            self._skipping = not 0x40 <= byte <= 0x7E
            return
        if self._seq:
            self._sequence(byte, events)
            return
        if self._ctrl_a:
            # As the serial console: x quits, h helps, Ctrl-A sends Ctrl-A, anything else is dropped.
            self._ctrl_a = False
            if byte == ord("x"):
                events.append(Command.QUIT)
            elif byte == ord("h"):
                events.append(Command.HELP)
            elif byte == ESCAPE_CHAR:
                events.append(Key("a", ("Ctrl",)))
            return
        if byte == ESCAPE_CHAR:
            self._ctrl_a = True
        elif byte == ESC:
            self._seq.append(byte)
        else:
            key = _byte_key(byte)
            if key is not None:
                events.append(key)

    def _sequence(self, byte: int, events: list[Event]) -> None:
        seq = self._seq
        if len(seq) == 1:                       # after ESC
            if byte in b"[O":
                seq.append(byte)
            elif byte == ESC:                   # Escape pressed twice
                events.append(Key("Escape"))
            elif 0x20 <= byte <= 0x7F:          # the Meta/Alt prefix: ESC then the key's byte
                seq.clear()
                key = _char_key(chr(byte), ("Alt",)) if byte != 0x7F else Key("Backspace", ("Alt",))
                if key is not None:
                    events.append(key)
            else:                               # a control after ESC: Escape, then that control
                seq.clear()
                events.append(Key("Escape"))
                self._byte(byte, events)
            return
        if seq[1] == ord("[") and len(seq) == 2 and byte == ord("["):
            seq.append(byte)                    # Linux console F1-F5: ESC [ [ A..E
            return
        if seq[1] == ord("[") and len(seq) == 3 and seq[2] == ord("["):
            seq.clear()
            name = _LINUX_F.get(chr(byte))
            if name is not None:
                events.append(Key(name))
            return
        if 0x20 <= byte <= 0x3F:                # parameter and intermediate bytes (ECMA-48 5.4)
            seq.append(byte)
            if len(seq) > SEQUENCE_LIMIT:
                seq.clear()
                self._skipping = True
            return
        body = seq[2:].decode("ascii")
        kind = seq[1]
        seq.clear()
        if not 0x40 <= byte <= 0x7E:
            # Not a sequence after all (a control byte inside it): drop it, keep the byte.
            self._byte(byte, events)
            return
        final = chr(byte)
        if kind == ord("["):
            key = _csi_key(body, final)
        elif final == "M":
            key = Key("Enter")                  # SS3 M: keypad Enter in application mode
        else:
            key = _csi_key(body, final) if final in _FINAL else None
        if key is not None:
            events.append(key)


# -- the screen ----------------------------------------------------------------------------------

# The 16 ANSI colours (SGR 30-37, 90-97) as a terminal with the VGA colour scheme shows them, in
# ANSI order: black, red, green, yellow (the VGA's brown), blue, magenta, cyan, white, then bright.
ANSI_RGB = ((0, 0, 0), (170, 0, 0), (0, 170, 0), (170, 85, 0), (0, 0, 170), (170, 0, 170), (0, 170, 170),
            (170, 170, 170), (85, 85, 85), (255, 85, 85), (85, 255, 85), (255, 255, 85), (85, 85, 255),
            (255, 85, 255), (85, 255, 255), (255, 255, 255))


def nearest_ansi(rgb: tuple[int, int, int]) -> int:
    """The ANSI colour closest to ``rgb``: the VGA's default palette maps onto them exactly."""
    return min(range(16), key=lambda i: sum((a - b) ** 2 for a, b in zip(ANSI_RGB[i], rgb)))


def _sgr(attr: int, ansi: tuple[int, ...], blink: bool) -> str:
    fg = ansi[attr & 0x0F]
    bg = ansi[attr >> 4 & (0x07 if blink else 0x0F)]
    codes = [0, 30 + fg if fg < 8 else 82 + fg, 40 + bg if bg < 8 else 92 + bg]
    if blink and attr & 0x80:
        codes.append(5)
    return "\x1b[" + ";".join(map(str, codes)) + "m"


def render_row(chars: bytes, attrs: bytes, ansi: tuple[int, ...], blink: bool) -> str:
    """One row of cells as text with SGR colour changes where the attribute changes."""
    out = []
    last = None
    for code, attr in zip(chars, attrs):
        if attr != last:
            out.append(_sgr(attr, ansi, blink))
            last = attr
        out.append(CP437[code])
    return "".join(out)


HIDE_CURSOR, SHOW_CURSOR = "\x1b[?25l", "\x1b[?25h"


class Renderer:
    """What to write to a terminal of a given size so that it shows the guest's screen, given
    what was written before: changed rows only, everything after a change of size or mode."""

    def __init__(self) -> None:
        self._shape: tuple | None = None
        self._rows: dict[int, tuple[bytes, bytes]] = {}
        self._colours: tuple | None = None
        self._ansi: tuple[int, ...] = tuple(range(16))
        self._cursor: tuple[int, int] | None | str = "unset"

    def frame(self, cells: TextCells | None, graphics: str, note: str, size: tuple[int, int]) -> str:
        """The output for one frame: ``cells`` of a text mode, or (``cells`` None) the one-line
        ``graphics`` description; ``note`` on a line of its own under the screen (or over its
        last line on a terminal too short); ``size`` the terminal's (columns, lines)."""
        width, height = size
        shape = (size, None if cells is None else (cells.cols, cells.rows), graphics, note)
        out = []
        if shape != self._shape:
            self._shape, self._rows, self._cursor = shape, {}, "unset"
            out.append("\x1b[0m\x1b[2J")
            if cells is None:
                out.append("\x1b[1;1H" + graphics[:width])
            if note:
                line = cells.rows + 1 if cells is not None and height > cells.rows else height
                out.append(f"\x1b[{line};1H\x1b[0;7m{note[:width]}\x1b[0m")
        if cells is None:
            if self._cursor is not None:
                out.append(HIDE_CURSOR)
                self._cursor = None
            return "".join(out)
        if (cells.colours, cells.blink) != self._colours:
            self._colours = (cells.colours, cells.blink)
            self._ansi = tuple(nearest_ansi(c) for c in cells.colours)
            self._rows = {}
        shown = min(cells.rows, height - 1 if note and height <= cells.rows else height)
        cols = min(cells.cols, width)
        for r in range(shown):
            row = (cells.chars[r], cells.attrs[r])
            if self._rows.get(r) != row:
                self._rows[r] = row
                out.append(f"\x1b[{r + 1};1H" + render_row(row[0][:cols], row[1][:cols], self._ansi, cells.blink))
        cursor = cells.cursor if cells.cursor and cells.cursor[0] < shown and cells.cursor[1] < cols else None
        if out or cursor != self._cursor:
            if out:
                out.append("\x1b[0m")
            out.append(HIDE_CURSOR if cursor is None else f"\x1b[{cursor[0] + 1};{cursor[1] + 1}H{SHOW_CURSOR}")
            self._cursor = cursor
        return "".join(out)


# -- the terminal --------------------------------------------------------------------------------

ENTER_SCREEN = "\x1b[?1049h\x1b[2J"              # xterm: save the cursor, switch to the alternate screen
LEAVE_SCREEN = "\x1b[0m\x1b[?25h\x1b[?1049l"     # colours off, cursor shown, the user's screen back
HELP = "hvm: Ctrl-A x quit | Ctrl-A Ctrl-A send Ctrl-A | Ctrl-A h this help"
FRAME_INTERVAL = 0.04                            # 25 frames a second
NOTE_SECONDS = 8.0
# How long a key waits for the guest to read the one before; a guest that reads no keyboard
# (a hung one, graphics code polling nothing) loses the keys typed meanwhile rather than
# getting them all later.
KEY_TIMEOUT = 2.0


class TextDisplay:
    """The terminal on ``stdin_fd``/``stdout_fd`` as the machine's screen and keyboard.
    ``screen`` is a ``Screen`` (``cells()``, ``geometry()``), ``keyboard`` a ``Keyboard``
    (``press()``); ``on_quit`` is called for Ctrl-A x, ``on_failure`` when a thread fails."""

    def __init__(self, screen: Any, keyboard: Any, on_quit: Callable[[], None],
                 on_failure: Failure | None = None, stdin_fd: int = 0, stdout_fd: int = 1) -> None:
        self.screen, self.keyboard = screen, keyboard
        self.on_quit, self.on_failure = on_quit, on_failure
        self.in_fd, self.out_fd = stdin_fd, stdout_fd
        self.quit_requested = False
        self._renderer = Renderer()
        self._decoder = KeyDecoder()
        self._keys: queue.Queue[Key | None] = queue.Queue()
        self._stop = threading.Event()
        self._out_lock = threading.Lock()
        self._note = ("", 0.0)
        self._saved: list[Any] | None = None
        self._wake_r = self._wake_w = -1
        self._threads: list[threading.Thread] = []
        # Box-drawing and other code page 437 glyphs need UTF-8; another locale gets "?" for them.
        self._encoding = getattr(sys.stdout, "encoding", None) or "utf-8"
        self._started = self._closed = False

    def start(self) -> None:
        """Take the terminal (raw mode, alternate screen) and start drawing and reading."""
        self._started = True
        saved = termios.tcgetattr(self.in_fd)
        mode = termios.tcgetattr(self.in_fd)
        iflag, cflag, lflag, cc = 0, 2, 3, 6     # tcgetattr's order; oflag stays: hvm's messages need CR
        mode[iflag] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                         | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
        mode[cflag] = (mode[cflag] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        # ISIG off: Ctrl-C is a key for the guest, Ctrl-A x is the way out.
        mode[lflag] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[cc][termios.VMIN], mode[cc][termios.VTIME] = 1, 0
        termios.tcsetattr(self.in_fd, termios.TCSADRAIN, mode)
        self._saved = saved
        # The last resort for a way out that skips close(): the interpreter's own exit.
        atexit.register(self.close)
        self._wake_r, self._wake_w = os.pipe()
        self._write(ENTER_SCREEN)
        self._threads = [start_thread(self._draw_loop, "display-draw", self.on_failure),
                         start_thread(self._read_loop, "display-stdin", self.on_failure),
                         start_thread(self._key_loop, "display-keys", self.on_failure)]

    def close(self) -> None:
        """Stop the threads and give the terminal back as it was; safe to call repeatedly."""
        if self._closed or not self._started:
            return
        self._closed = True
        atexit.unregister(self.close)
        self._stop.set()
        self._keys.put(None)
        if self._wake_w >= 0:
            os.write(self._wake_w, b"x")
        # The key thread may wait up to KEY_TIMEOUT for the guest; it never touches the terminal.
        for thread in self._threads[:2]:
            if thread is not threading.current_thread():
                thread.join(timeout=2)
        with self._out_lock:
            self._write_now(LEAVE_SCREEN)
        if self._saved is not None:
            try:
                termios.tcsetattr(self.in_fd, termios.TCSADRAIN, self._saved)
            except (termios.error, OSError):
                pass
        for fd in (self._wake_r, self._wake_w):
            if fd >= 0:
                os.close(fd)
        self._wake_r = self._wake_w = -1
        if self.quit_requested:
            sys.stderr.write("hvm: terminated by Ctrl-A x\n")
            sys.stderr.flush()

    # -- output --------------------------------------------------------------------------------
    def _write(self, text: str) -> None:
        with self._out_lock:
            if not self._closed:
                self._write_now(text)

    def _write_now(self, text: str) -> None:
        view = memoryview(text.encode(self._encoding, errors="replace"))
        try:
            while view:
                try:
                    view = view[os.write(self.out_fd, view):]
                except BlockingIOError:
                    select.select([], [self.out_fd], [], 1.0)
        except (OSError, ValueError):
            pass    # the terminal went away: SIGHUP ends the run

    def _size(self) -> tuple[int, int]:
        try:
            columns, lines = os.get_terminal_size(self.out_fd)
        except OSError:
            columns = lines = 0
        return columns or 80, lines or 24

    def _draw_loop(self) -> None:
        while not self._stop.is_set():
            cells = self.screen.cells()
            graphics = ""
            if cells is None:
                g = self.screen.geometry()
                graphics = f"graphics mode {g.width}x{g.height}: use --screenshot"
            note, until = self._note
            if note and time.monotonic() > until:
                note = ""
                self._note = ("", 0.0)
            self._write(self._renderer.frame(cells, graphics, note, self._size()))
            self._stop.wait(FRAME_INTERVAL)

    def _show_note(self, text: str) -> None:
        self._note = (text, time.monotonic() + NOTE_SECONDS)

    # -- input ---------------------------------------------------------------------------------
    def _read_loop(self) -> None:
        decoder = self._decoder
        while True:
            timeout = ESC_TIMEOUT if decoder.pending else None
            try:
                ready, _, _ = select.select([self.in_fd, self._wake_r], [], [], timeout)
            except (OSError, ValueError):
                return
            if self._wake_r in ready:
                return
            if not ready:
                events = decoder.flush()
            else:
                try:
                    data = os.read(self.in_fd, 4096)
                except OSError:
                    return          # EIO: the terminal hung up
                if not data:
                    return
                events = decoder.feed(data)
            for event in events:
                if event is Command.QUIT:
                    self.quit_requested = True
                    self.on_quit()
                    return
                if event is Command.HELP:
                    self._show_note(HELP)
                elif isinstance(event, Key):
                    self._keys.put(event)

    def _key_loop(self) -> None:
        while True:
            key = self._keys.get()
            if key is None or self._stop.is_set():
                return
            try:
                self.keyboard.press(key.name, *key.modifiers, timeout=KEY_TIMEOUT)
            except TimeoutError:
                dropped = 1
                while True:
                    try:
                        if self._keys.get_nowait() is None:
                            return
                    except queue.Empty:
                        break
                    dropped += 1
                self._show_note(f"hvm: the guest is not reading its keyboard: {dropped} key(s) dropped")
