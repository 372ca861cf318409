"""hvm.text_display without a guest: the key decoder against the sequences terminals send (as
the host's terminfo database records them), the renderer against ECMA-48's SGR colours, the
screen's cell accessor against a VGA driven as a BIOS drives it, and the whole display on a
pseudo-terminal typing on a real i8042."""
from __future__ import annotations

import json
import os
import random
import select
import subprocess
import sys
import termios
import threading
import time

import pytest

from hvm.devices.i8042 import I8042
from hvm.devices.ps2_keys import KEYS
from hvm.devices.vga.screen import CP437, TextCells
from hvm.irq import RecordingIrqLine
from hvm.keyboard import Keyboard
from hvm.text_display import (ENTER_SCREEN, LEAVE_SCREEN, Command, Key, KeyDecoder, Renderer, TextDisplay,
                              nearest_ansi, render_row)

from test_vga import MODE3, Rig, put

CTRL, SHIFT, ALT = ("Ctrl",), ("Shift",), ("Alt",)


def decode(*chunks: bytes) -> list:
    d = KeyDecoder()
    events = [e for chunk in chunks for e in d.feed(chunk)]
    return events + d.flush()


# -- keys ----------------------------------------------------------------------------------------
CAPS = {"kcuu1": "Up", "kcud1": "Down", "kcub1": "Left", "kcuf1": "Right", "khome": "Home", "kend": "End",
        "kpp": "PageUp", "knp": "PageDown", "kich1": "Insert", "kdch1": "Delete", "kbs": "Backspace",
        **{f"kf{n}": f"F{n}" for n in range(1, 13)}}
TERMINALS = ("xterm", "xterm-256color", "linux", "screen", "tmux-256color", "rxvt", "vt220")


def _terminfo(term: str) -> dict[str, str]:
    """The key strings terminfo (ncurses-base) records for ``term``; setupterm works once per
    process, hence a child each."""
    script = ("import curses, json, sys\ncurses.setupterm(sys.argv[1], 1)\n"
              "print(json.dumps({c: (curses.tigetstr(c) or b'').decode('latin-1') for c in sys.argv[2:]}))")
    r = subprocess.run([sys.executable, "-c", script, term, *CAPS], capture_output=True, text=True)
    if r.returncode:
        pytest.skip(f"no terminfo entry for {term}: {r.stderr.strip()[-200:]}")
    return {cap: s for cap, s in json.loads(r.stdout).items() if s}


@pytest.mark.parametrize("term", TERMINALS)
def test_every_key_terminfo_knows_decodes(term):
    caps = _terminfo(term)
    assert len(caps) >= 12, caps
    for cap, text in caps.items():
        data = text.encode("latin-1")
        assert decode(data) == [Key(CAPS[cap])], (term, cap, data)
        # The same bytes one read at a time (a slow line, a busy host): the same key.
        assert decode(*(bytes([b]) for b in data)) == [Key(CAPS[cap])], (term, cap, data)


@pytest.mark.parametrize("data, key", [
    # xterm's PC-style modified keys: CSI 1 ; m X and CSI n ; m ~ with m = 1 + Shift 1 | Alt 2 | Ctrl 4.
    (b"\x1b[1;5A", Key("Up", CTRL)), (b"\x1b[1;2D", Key("Left", SHIFT)), (b"\x1b[3;5~", Key("Delete", CTRL)),
    (b"\x1b[1;2P", Key("F1", SHIFT)), (b"\x1b[15;3~", Key("F5", ALT)), (b"\x1b[1;6C", Key("Right", ("Ctrl", "Shift"))),
    # Normal-mode cursor keys, rxvt's Home/End, back-tab.
    (b"\x1b[A", Key("Up")), (b"\x1b[H", Key("Home")), (b"\x1b[F", Key("End")), (b"\x1b[7~", Key("Home")),
    (b"\x1b[8~", Key("End")), (b"\x1b[Z", Key("Tab", SHIFT)), (b"\x1bOM", Key("Enter")),
])
def test_modified_and_alternative_sequences(data, key):
    assert decode(data) == [key]


def test_plain_bytes_on_a_us_keyboard():
    assert decode(b"aZ1!~ ") == [Key("a"), Key("z", SHIFT), Key("1"), Key("1", SHIFT), Key("`", SHIFT), Key("Space")]
    assert decode(b"\r\n\t\x7f\x08") == [Key("Enter"), Key("Enter"), Key("Tab"), Key("Backspace"), Key("Backspace")]
    assert decode(b"\x03\x1a\x17") == [Key("c", CTRL), Key("z", CTRL), Key("w", CTRL)]
    assert decode("é".encode()) == []          # no key on a US keyboard types it


def test_escape_alone_waits_for_the_pause():
    d = KeyDecoder()
    assert d.feed(b"\x1b") == [] and d.pending
    assert d.flush() == [Key("Escape")] and not d.pending
    assert decode(b"\x1b\x1b") == [Key("Escape"), Key("Escape")]
    assert decode(b"\x1b\x03") == [Key("Escape"), Key("c", CTRL)]
    assert decode(b"\x1bx") == [Key("x", ALT)]     # the Meta prefix xterm sends for Alt
    assert decode(b"\x1b[") == [Key("[", ALT)]     # Alt+[ is ESC [ and then nothing


def test_sequences_split_across_reads():
    assert decode(b"\x1b", b"[", b"A") == [Key("Up")]
    assert decode(b"ab\x1b[1", b"5~cd") == [Key("a"), Key("b"), Key("F5"), Key("c"), Key("d")]
    assert decode(b"\x1b[1;", b"5", b"A") == [Key("Up", CTRL)]
    assert decode(b"\x1bO", b"P") == [Key("F1")]


def test_unknown_sequences_are_ignored():
    assert decode(b"\x1b[99~x") == [Key("x")]
    assert decode(b"\x1b[?1;2cy") == [Key("y")]           # a device-attributes report
    assert decode(b"\x1b[200~z") == [Key("z")]            # bracketed paste start
    assert decode(b"\x1bOzq") == [Key("q")]
    assert decode(b"\x1b[" + b"1;" * 40 + b"Aw") == [Key("w")]   # over-long: skipped to its end
    assert decode(b"\x1b[1\x03") == [Key("c", CTRL)]     # broken off by a control


def test_ctrl_a_escapes():
    assert decode(b"ls\x01x") == [Key("l"), Key("s"), Command.QUIT]
    assert decode(b"\x01", b"x") == [Command.QUIT]
    assert decode(b"\x01h") == [Command.HELP]
    assert decode(b"\x01\x01") == [Key("a", CTRL)]
    assert decode(b"\x01qz") == [Key("z")]                # anything else after Ctrl-A is dropped
    assert decode(b"\x1b\x01x") == [Key("Escape"), Command.QUIT]


def test_random_bytes_only_ever_press_known_keys():
    rng = random.Random(1)
    d = KeyDecoder()
    for _ in range(2000):
        chunk = bytes(rng.choice(b"\x1b[O;0123456789~ABCDHFPQRSZax\x01\x7f\r\xff") for _ in range(rng.randrange(1, 9)))
        for event in d.feed(chunk) + (d.flush() if rng.random() < 0.2 else []):
            if isinstance(event, Key):
                assert event.name in KEYS and all(m in KEYS for m in event.modifiers), (chunk, event)


# -- the screen ----------------------------------------------------------------------------------
def _cells(rows, cursor=None, cols=4, blink=True, colours=None):
    from test_vga import ega
    return TextCells(cols, len(rows), tuple(r[0] for r in rows), tuple(r[1] for r in rows),
                     colours or tuple(ega(i) for i in (0, 1, 2, 3, 4, 5, 0x14, 7, *range(0x38, 0x40))),
                     blink, cursor)


def test_the_vga_default_palette_is_the_ansi_colours():
    from test_vga import ega
    # CGA/EGA colour order (blue 1, green 2, cyan 3, red 4, magenta 5, brown 6, grey 7, then bright)
    # against ANSI's (red 1, green 2, yellow 3, blue 4, magenta 5, cyan 6, white 7).
    cga = [ega(i) for i in (0, 1, 2, 3, 4, 5, 0x14, 7, *range(0x38, 0x40))]
    assert [nearest_ansi(c) for c in cga] == [0, 4, 2, 6, 1, 5, 3, 7, 8, 12, 10, 14, 9, 13, 11, 15]


def test_rows_carry_sgr_colours():
    ansi = (0, 4, 2, 6, 1, 5, 3, 7, 8, 12, 10, 14, 9, 13, 11, 15)
    # 0x1F bright white on blue; 0x07 grey on black; 0xC0: blink on red (blink mode) or on bright red.
    assert render_row(b"Hi!", bytes((0x1F, 0x1F, 0x07)), ansi, True) == "\x1b[0;97;44mHi\x1b[0;37;40m!"
    assert render_row(b"\x01", b"\xc0", ansi, True) == "\x1b[0;30;41;5m☺"
    assert render_row(b"\xc9", b"\xc0", ansi, False) == "\x1b[0;30;101m╔"


def test_renderer_draws_changed_rows_and_the_cursor():
    r = Renderer()
    first = r.frame(_cells([(b"ab  ", b"\x07" * 4), (b"cd  ", b"\x07" * 4)], cursor=(1, 2)), "", "", (80, 24))
    assert first.startswith("\x1b[0m\x1b[2J") and "\x1b[1;1H" in first and "\x1b[2;1H" in first
    assert first.endswith("\x1b[2;3H\x1b[?25h")
    assert r.frame(_cells([(b"ab  ", b"\x07" * 4), (b"cd  ", b"\x07" * 4)], cursor=(1, 2)), "", "", (80, 24)) == ""
    second = r.frame(_cells([(b"ab  ", b"\x07" * 4), (b"cdef", b"\x07" * 4)], cursor=(1, 2)), "", "", (80, 24))
    assert "\x1b[1;1H" not in second and "\x1b[2;1H" in second and "cdef" in second
    hidden = r.frame(_cells([(b"ab  ", b"\x07" * 4), (b"cdef", b"\x07" * 4)], cursor=None), "", "", (80, 24))
    assert hidden == "\x1b[?25l"
    # A terminal narrower than the screen shows its left part; a note goes under the screen.
    narrow = r.frame(_cells([(b"wxyz", b"\x07" * 4)]), "", "note", (2, 24))
    assert "\x1b[1;1H\x1b[0;37;40mwx\x1b[0m" in narrow and "\x1b[2;1H\x1b[0;7mno\x1b[0m" in narrow
    # A terminal shorter than the screen: the note takes its last line, the screen the others.
    short = r.frame(_cells([(b"wxyz", b"\x07" * 4)] * 25), "", "note", (80, 24))
    assert "\x1b[24;1H\x1b[0;7mnote" in short and "\x1b[23;1H" in short and "\x1b[24;1H\x1b[0;37" not in short


def test_graphics_mode_says_so():
    out = Renderer().frame(None, "graphics mode 640x480: use --screenshot", "", (80, 24))
    assert "\x1b[1;1Hgraphics mode 640x480: use --screenshot" in out and out.endswith("\x1b[?25l")


def test_screen_cells_read_back_characters_attributes_and_cursor():
    rig = Rig()
    rig.set_mode(MODE3)
    rig.ega_palette()
    put(rig, 0, 0, "GNU", attr=0x1F)
    put(rig, 24, 79, b"\xdb", attr=0x4E)
    loc = 3 * 80 + 7
    rig.crtc(0x0E, loc >> 8)
    rig.crtc(0x0F, loc & 0xFF)
    cells = rig.vga.screen.cells()
    assert (cells.cols, cells.rows) == (80, 25)
    assert cells.chars[0][:4] == b"GNU\x00" and cells.attrs[0][:3] == b"\x1f\x1f\x1f"
    assert cells.chars[24][79] == 0xDB and cells.attrs[24][79] == 0x4E
    assert cells.cursor == (3, 7) and cells.blink     # MODE3's attribute mode control 0x0C: blink on
    assert [nearest_ansi(c) for c in cells.colours] == [0, 4, 2, 6, 1, 5, 3, 7, 8, 12, 10, 14, 9, 13, 11, 15]
    rig.crtc(0x0C, 0)
    rig.crtc(0x0D, 80)                              # start one row down: the text scrolls up
    assert rig.vga.screen.cells().chars[23][79] == 0xDB
    rig.crtc(0x0A, 0x20 | 0x0D)                     # cursor off
    assert rig.vga.screen.cells().cursor is None


@pytest.mark.parametrize("start", [0, 80, 0x7FE0])
def test_screen_cells_agree_with_the_text(start):
    """Wherever the start address puts the screen, also where a row wraps around the planes
    (word mode takes MA15 into bit 0), the cells hold what ``text()`` reads."""
    rig = Rig()
    rig.set_mode(MODE3)
    # A different character at every plane 0 offset, so any misplaced cell shows.
    rig.vga.vram[0:4 * 0x10000:4] = bytes(0x21 + m % 94 for m in range(0x10000))
    rig.crtc(0x0C, start >> 8)
    rig.crtc(0x0D, start & 0xFF)
    cells = rig.vga.screen.cells()
    lines = ["".join(CP437[b] for b in c).rstrip() for c in cells.chars]
    assert lines == rig.vga.screen.text().split("\n") and any(lines)


def test_screen_cells_is_none_in_graphics_modes():
    from test_vga import MODE13
    rig = Rig()
    rig.set_mode(MODE13)
    assert rig.vga.screen.cells() is None


# -- the whole display on a pseudo-terminal ------------------------------------------------------
def _read(fd: int, until: bytes, timeout: float = 10) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while until not in buf and time.monotonic() < end:
        if select.select([fd], [], [], 0.1)[0]:
            try:
                buf += os.read(fd, 65536)
            except OSError:
                break
    return buf


def test_display_on_a_pty_types_on_the_i8042_and_restores_the_terminal():
    rig = Rig()
    rig.set_mode(MODE3)
    rig.ega_palette()
    put(rig, 2, 0, "hello from the guest")
    i8042 = I8042(RecordingIrqLine(1), lambda why: None)
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    quit_called = threading.Event()
    display = TextDisplay(rig.vga.screen, Keyboard(i8042), on_quit=quit_called.set, stdin_fd=slave, stdout_fd=slave)
    try:
        display.start()
        out = _read(master, b"hello from the guest")
        assert out.startswith(ENTER_SCREEN.encode()) and b"\x1b[3;1H" in out
        assert termios.tcgetattr(slave)[3] != before[3]     # raw while it runs
        os.write(master, b"a")
        deadline = time.monotonic() + 5
        codes = []
        while len(codes) < 2 and time.monotonic() < deadline:
            if i8042.room() < 16:
                codes.append(i8042.read(0, 1))
            time.sleep(0.01)
        assert codes == [0x1E, 0x9E]       # 'a' down and up in scan code set 1 (translated)
        os.write(master, b"\x01x")
        assert quit_called.wait(5) and display.quit_requested
        display.close()
        assert LEAVE_SCREEN.encode() in _read(master, LEAVE_SCREEN.encode(), 5)
        assert termios.tcgetattr(slave) == before
    finally:
        display.close()
        os.close(master)
        os.close(slave)
