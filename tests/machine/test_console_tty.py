"""hvmrun --serial stdio on a real pseudo-terminal: raw keystrokes reach the guest, Ctrl-A h
prints help, Ctrl-A x quits, and the terminal is restored."""
from __future__ import annotations

import os
import select
import subprocess
import termios
import time

from conftest import hvmrun_cmd, hvmrun_env


def _read_until(fd: int, needle: bytes, timeout: float = 30) -> bytes:
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.1)
        if r:
            try:
                buf += os.read(fd, 4096)
            except OSError:
                break
    return buf


def test_interactive_console_on_a_tty(guests):
    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([*hvmrun_cmd(), "--kernel", str(guests("echo16")), "--timeout", "60"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=hvmrun_env())
    try:
        assert b"ready" in _read_until(master, b"ready")
        os.write(master, b"hi")              # no Enter needed: the terminal is raw
        assert b"HI" in _read_until(master, b"HI")
        os.write(master, b"\x01h")
        help_text = _read_until(master, b"Ctrl-A Ctrl-A")
        assert b"Ctrl-A x       terminate the virtual machine\r\n" in help_text  # one CR: OPOST stays on
        os.write(master, b"\x01x")
        assert proc.wait(timeout=30) == 0
        assert termios.tcgetattr(slave)[3] == before[3]   # local modes (ICANON, ECHO) restored
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)


def test_sigterm_restores_the_terminal(guests):
    import signal

    master, slave = os.openpty()
    before = termios.tcgetattr(slave)
    proc = subprocess.Popen([*hvmrun_cmd(), "--kernel", str(guests("echo16")), "--timeout", "60"],
                            stdin=slave, stdout=slave, stderr=slave, close_fds=True, env=hvmrun_env())
    try:
        assert b"ready" in _read_until(master, b"ready")
        assert termios.tcgetattr(slave)[3] != before[3]      # raw while the guest runs
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 128 + signal.SIGTERM
        assert b"terminated by SIGTERM" in _read_until(master, b"SIGTERM", 5)
        assert termios.tcgetattr(slave)[3] == before[3]      # ICANON, ECHO back as they were
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(master)
        os.close(slave)
