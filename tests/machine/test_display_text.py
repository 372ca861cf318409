"""hvmrun -M pc --display text on a real pseudo-terminal: Debian's GRUB rescue CD shows its menu
on the terminal, keys typed on the terminal reach GRUB through the PS/2 keyboard, Ctrl-A x quits
and the terminal comes back as it was (the alternate screen left, cooked mode restored)."""
from __future__ import annotations

import fcntl
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time

import pytest

from conftest import hvmrun, hvmrun_cmd, hvmrun_env, recipe_image

ROWS, COLS = 30, 100            # room for the 80x25 screen and the note line under it


class Terminal:
    """Just enough of an xterm to read what hvm draws: cursor addressing (CUP), erase in
    display/line (ED, EL); colours and modes are ignored (ECMA-48 8.3.21, 8.3.39, 8.3.41)."""

    CSI = re.compile(r"\x1b\[([0-9;?]*)([@-~])")

    def __init__(self) -> None:
        self.lines = [[" "] * COLS for _ in range(ROWS)]
        self.row = self.col = 0
        self.raw = b""
        self._pending = b""

    def feed(self, data: bytes) -> None:
        self.raw += data
        data, self._pending = self._pending + data, b""
        text = data.decode("utf-8", errors="ignore")
        # Keep an unfinished escape sequence for the next read.
        cut = text.rfind("\x1b")
        if cut >= 0 and not self.CSI.match(text, cut):
            text, self._pending = text[:cut], text[cut:].encode()
        pos = 0
        for m in self.CSI.finditer(text):
            self._put(text[pos:m.start()])
            self._control(m.group(1), m.group(2))
            pos = m.end()
        self._put(text[pos:])

    def _put(self, text: str) -> None:
        for ch in text:
            if ch == "\r":
                self.col = 0
            elif ch == "\n":
                self.row = min(self.row + 1, ROWS - 1)
            elif ch >= " " and self.col < COLS:
                self.lines[self.row][self.col] = ch
                self.col += 1

    def _control(self, params: str, final: str) -> None:
        if params.startswith("?"):
            return
        args = [int(p) if p else 0 for p in params.split(";")] if params else []
        if final == "H":
            row, col = (args + [1, 1])[:2]
            self.row, self.col = max(row, 1) - 1, max(col, 1) - 1
        elif final == "J" and args[:1] == [2]:
            self.lines = [[" "] * COLS for _ in range(ROWS)]
        elif final == "K":
            self.lines[self.row][self.col:] = [" "] * (COLS - self.col)

    @property
    def text(self) -> str:
        return "\n".join("".join(line).rstrip() for line in self.lines)


def _pump(fd: int, term: Terminal, until, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if until(term):
            return True
        if select.select([fd], [], [], 0.1)[0]:
            try:
                term.feed(os.read(fd, 65536))
            except OSError:
                break
    return until(term)


def test_grub_on_the_terminal(tmp_path):
    bios = recipe_image("seabios", "SeaBIOS") / "bios-256k.bin"
    iso = recipe_image("grub-rescue", "GRUB's rescue CD")
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([*hvmrun_cmd(), "-M", "pc", "--bios", str(bios), "--accel", "unicorn", "-m", "256M",
                             "--display", "text", "--cdrom", str(iso), "--boot", "d", "--timeout", "120"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=hvmrun_env())
    term = Terminal()
    try:
        assert _pump(master, term, lambda t: "GNU GRUB  version 2.06" in t.text, 90), term.text
        assert term.raw.count(b"\x1b[?1049h") == 1
        # The menu's first line, where the VGA put it: row 2 of the screen (as the picture shows).
        assert any(line.lstrip().startswith("GNU GRUB  version 2.06") for line in term.text.splitlines()[:3])
        os.write(master, b"c")
        assert _pump(master, term, lambda t: "grub>" in t.text, 30), term.text
        os.write(master, b"ls\r")
        assert _pump(master, term, lambda t: "(cd) (cd,msdos1)" in t.text, 30), term.text
        os.write(master, b"\x01x")
        assert proc.wait(timeout=30) == 0
        _pump(master, term, lambda t: b"Ctrl-A x" in t.raw, 5)
        tail = term.raw[term.raw.rindex(b"\x1b[?1049l"):]
        assert b"hvm: terminated by Ctrl-A x" in tail       # said on the user's screen, after leaving
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_gives_the_terminal_back(sig):
    """SIGTERM ends the run as a power-off does, SIGINT (no Ctrl-C from the raw terminal: it is
    the guest's) as an interrupt; either way the user's screen and terminal modes come back."""
    bios = recipe_image("seabios", "SeaBIOS") / "bios-256k.bin"
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([*hvmrun_cmd(), "-M", "pc", "--bios", str(bios), "--accel", "unicorn",
                             "--display", "text", "--timeout", "60"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=hvmrun_env())
    term = Terminal()
    try:
        assert _pump(master, term, lambda t: "SeaBIOS (version" in t.text, 60), term.text
        proc.send_signal(sig)
        assert proc.wait(timeout=30) == 128 + sig
        _pump(master, term, lambda t: False, 1)
        assert b"\x1b[?1049l" in term.raw[term.raw.rindex(b"SeaBIOS"):]
        assert termios.tcgetattr(slave) == before
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
        os.close(slave)


@pytest.mark.parametrize("args, says", [
    (["--vga", "none"], "--display text needs a screen: -M pc with --vga std"),
    (["--serial", "stdio"], "--display text takes the terminal"),
])
def test_display_text_refuses_what_cannot_work(args, says):
    r = hvmrun("-M", "pc", "--accel", "unicorn", "--display", "text", *args, "--timeout", "5")
    assert r.returncode == 64 and says in r.stderr.decode(), r.stderr


def test_display_text_needs_a_terminal(guests):
    r = hvmrun("-M", "pc", "--accel", "unicorn", "--display", "text", "--timeout", "5")   # pipes, not a tty
    assert r.returncode == 64 and "stdin is not a terminal" in r.stderr.decode(), r.stderr
    r = hvmrun("--kernel", str(guests("hello16")), "--display", "text")
    assert r.returncode == 64 and "needs a screen" in r.stderr.decode(), r.stderr
