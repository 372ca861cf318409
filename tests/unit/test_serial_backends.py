"""Host-side serial backends: buffers, files, Unix sockets, the terminal, and spec parsing."""
from __future__ import annotations

import io
import os
import socket
import tempfile
import termios
import threading
import time
from pathlib import Path

import pytest

from hvm.devices import uart16550 as u
from hvm.devices.uart16550 import Uart16550
from hvm.irq import RecordingIrqLine
from hvm.serial import BufferBackend, FileBackend, NullBackend, StdioBackend, backend_from_spec
from hvm.serial_socket import UNIX_BACKLOG_LIMIT, UnixSocketBackend


class Collector:
    """A sink that records input and lets a test wait for it."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.cond = threading.Condition()

    def __call__(self, data: bytes) -> None:
        with self.cond:
            self.data += data
            self.cond.notify_all()

    def wait_len(self, n: int, timeout: float = 2.0) -> bytes:
        with self.cond:
            self.cond.wait_for(lambda: len(self.data) >= n, timeout)
            return bytes(self.data)


def wait_until(predicate, timeout: float = 2.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.005)
    return predicate()


def recv_exactly(sock: socket.socket, n: int) -> bytes:
    sock.settimeout(2)
    out = bytearray()
    while len(out) < n:
        chunk = sock.recv(n - len(out))
        if not chunk:
            break
        out += chunk
    return bytes(out)


@pytest.fixture
def short_tmp():
    # AF_UNIX paths are limited to 107 bytes, which pytest's tmp_path can exceed.
    with tempfile.TemporaryDirectory(prefix="hvm-ser-") as d:
        yield Path(d)


# -- BufferBackend -----------------------------------------------------------------------------

def test_buffer_backend_output_and_text() -> None:
    b = BufferBackend()
    b.write(b"caf\xc3\xa9 ")
    b.write(b"\xff")
    assert b.data == b"caf\xc3\xa9 \xff"
    assert b.text == "café \ufffd"
    b.clear()
    assert b.data == b""


def test_buffer_backend_feed_before_and_after_start() -> None:
    b = BufferBackend()
    sink = Collector()
    b.feed("ab")
    b.feed(b"c")
    assert sink.data == b""
    b.start(sink)
    assert sink.data == b"abc"
    b.feed("d")
    assert sink.data == b"abcd"


def test_buffer_backend_wait_for() -> None:
    b = BufferBackend()
    assert b.wait_for("login:", 0.01) is False

    def later() -> None:
        time.sleep(0.05)
        b.write(b"...log")
        time.sleep(0.02)
        b.write(b"in: ")

    t = threading.Thread(target=later)
    t.start()
    start = time.monotonic()
    assert b.wait_for("login:", 2.0) is True  # pattern split across two writes
    assert time.monotonic() - start < 1.0
    t.join()
    assert b.wait_for(b"absent", 0.02) is False


def test_buffer_backend_drives_uart_end_to_end() -> None:
    irq = RecordingIrqLine(4)
    b = BufferBackend()
    uart = Uart16550(irq, b)
    b.start(uart.receive)
    uart.write(u.IER, 1, u.IER_ERBFI)
    b.feed("hi")
    assert irq.level
    assert bytes([uart.read(u.RBR, 1)]) == b"h"
    for ch in b"ok":
        uart.write(u.THR, 1, ch)
    assert b.wait_for("ok", 0.1)


# -- Null / File -------------------------------------------------------------------------------

def test_null_backend_is_inert() -> None:
    b = NullBackend()
    b.start(lambda data: pytest.fail("NullBackend produced input"))
    b.write(b"ignored")
    b.close()


def test_file_backend_truncates_and_writes_unbuffered(tmp_path: Path) -> None:
    path = tmp_path / "serial.log"
    path.write_bytes(b"old contents")
    b = FileBackend(str(path))
    assert path.read_bytes() == b""
    b.write(b"boot ")
    assert path.read_bytes() == b"boot "  # visible before close: no buffering
    b.write(b"done\n")
    b.close()
    b.write(b"after close")
    assert path.read_bytes() == b"boot done\n"


# -- UnixSocketBackend -------------------------------------------------------------------------

def test_unix_socket_roundtrip_with_backlog(short_tmp: Path) -> None:
    path = short_tmp / "com1.sock"
    b = UnixSocketBackend(str(path))
    sink = Collector()
    try:
        b.write(b"early output\n")  # nobody connected yet: kept for the first client
        b.start(sink)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        assert recv_exactly(client, 13) == b"early output\n"
        assert wait_until(lambda: b.connected)
        b.write(b"live")
        assert recv_exactly(client, 4) == b"live"
        client.sendall(b"typed")
        assert sink.wait_len(5) == b"typed"
        client.close()
        assert wait_until(lambda: not b.connected)
        b.write(b"while away")
        # A second client is served after the first leaves, and gets what it missed.
        client2 = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client2.connect(str(path))
        assert recv_exactly(client2, 10) == b"while away"
        client2.sendall(b"!")
        assert sink.wait_len(6) == b"typed!"
        client2.close()
    finally:
        b.close()
    assert not path.exists()


def test_unix_socket_backlog_is_bounded_to_newest(short_tmp: Path) -> None:
    path = short_tmp / "s"
    b = UnixSocketBackend(str(path))
    try:
        b.write(b"A" * 1000)
        b.write(b"B" * UNIX_BACKLOG_LIMIT)
        b.start(lambda data: None)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        got = recv_exactly(client, UNIX_BACKLOG_LIMIT)
        assert got == b"B" * UNIX_BACKLOG_LIMIT
        client.close()
    finally:
        b.close()


def test_unix_socket_replaces_stale_socket(short_tmp: Path) -> None:
    path = short_tmp / "stale.sock"
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))
    stale.close()  # the file stays behind, as after a crash
    b = UnixSocketBackend(str(path))
    b.close()
    assert not path.exists()


def test_unix_socket_refuses_regular_file(short_tmp: Path) -> None:
    path = short_tmp / "precious.txt"
    path.write_text("keep me")
    with pytest.raises(FileExistsError, match="not a socket"):
        UnixSocketBackend(str(path))
    assert path.read_text() == "keep me"


def test_unix_socket_client_disconnect_during_write(short_tmp: Path) -> None:
    path = short_tmp / "d.sock"
    b = UnixSocketBackend(str(path))
    try:
        b.start(lambda data: None)
        client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        client.connect(str(path))
        assert wait_until(lambda: b.connected)
        client.close()
        for _ in range(50):  # must never raise into the vCPU thread
            b.write(b"x" * 1024)
    finally:
        b.close()


# -- backend_from_spec -------------------------------------------------------------------------

def test_backend_from_spec_valid(tmp_path: Path, short_tmp: Path) -> None:
    assert isinstance(backend_from_spec("none", lambda: None), NullBackend)
    stdio = backend_from_spec("stdio", lambda: None)
    assert isinstance(stdio, StdioBackend)
    stdio.close()
    f = backend_from_spec(f"file:{tmp_path / 'out.log'}", lambda: None)
    assert isinstance(f, FileBackend)
    f.close()
    s = backend_from_spec(f"unix:{short_tmp / 'x.sock'}", lambda: None)
    assert isinstance(s, UnixSocketBackend)
    s.close()


@pytest.mark.parametrize("spec", ["", "tcp:1234", "stdio:", "file:", "unix:", "None", "pty", "file"])
def test_backend_from_spec_errors(spec: str) -> None:
    with pytest.raises(ValueError) as excinfo:
        backend_from_spec(spec, lambda: None)
    assert repr(spec) in str(excinfo.value)


def test_unix_path_too_long() -> None:
    with pytest.raises(ValueError, match="longer than"):
        UnixSocketBackend("/tmp/" + "x" * 200)


# -- StdioBackend ------------------------------------------------------------------------------

def test_stdio_output_goes_to_binary_buffer() -> None:
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="ascii")
    b = StdioBackend(lambda: None, stdin=None, stdout=out)
    b.start(lambda data: pytest.fail("no stdin, no input"))
    b.write(b"\xc3\xa9\r\n")
    assert raw.getvalue() == b"\xc3\xa9\r\n"  # bytes pass through untouched, and were flushed
    b.close()


def test_stdio_pipe_forwards_verbatim_until_eof() -> None:
    r, w = os.pipe()
    quits: list[int] = []
    with os.fdopen(r, "rb", buffering=0) as stdin:
        b = StdioBackend(lambda: quits.append(1), stdin=stdin, stdout=io.BytesIO())
        assert not b.is_tty
        sink = Collector()
        b.start(sink)
        os.write(w, b"echo hi\n\x01x\x01\x01")
        os.close(w)
        assert sink.wait_len(12) == b"echo hi\n\x01x\x01\x01"  # no escape processing on a pipe
        assert wait_until(lambda: not b._thread.is_alive())  # EOF ends the reader
        b.close()
    assert quits == []


def test_stdio_closed_stdin_gives_no_input() -> None:
    stdin = io.BytesIO()
    stdin.close()
    b = StdioBackend(lambda: None, stdin=stdin, stdout=io.BytesIO())
    b.start(lambda data: pytest.fail("closed stdin produced input"))
    b.close()


@pytest.fixture
def pty_stdio():
    master, slave = os.openpty()
    stdin = os.fdopen(slave, "rb", buffering=0)
    err = io.StringIO()
    quits: list[int] = []
    backend = StdioBackend(lambda: quits.append(1), stdin=stdin, stdout=io.BytesIO(), stderr=err)
    sink = Collector()
    yield master, slave, backend, sink, quits, err
    backend.close()
    stdin.close()
    os.close(master)


def test_stdio_tty_raw_mode_and_restore(pty_stdio) -> None:
    master, slave, backend, sink, _, _ = pty_stdio
    before = termios.tcgetattr(slave)
    assert before[3] & termios.ICANON
    backend.start(sink)
    raw = termios.tcgetattr(slave)
    assert not raw[3] & (termios.ICANON | termios.ECHO | termios.ISIG)
    os.write(master, b"no newline\x03")  # arrives without Enter; Ctrl-C is data, not a signal
    assert sink.wait_len(11) == b"no newline\x03"
    backend.close()
    assert termios.tcgetattr(slave) == before


def test_stdio_tty_ctrl_a_x_quits(pty_stdio) -> None:
    master, _, backend, sink, quits, err = pty_stdio
    backend.start(sink)
    os.write(master, b"ls\x01xafter")
    assert wait_until(lambda: quits == [1])
    assert sink.wait_len(2) == b"ls"
    time.sleep(0.02)
    assert bytes(sink.data) == b"ls"  # nothing after the escape reaches the guest
    assert "terminated" in err.getvalue()


def test_stdio_tty_escape_sequences(pty_stdio) -> None:
    master, _, backend, sink, quits, err = pty_stdio
    backend.start(sink)
    # Ctrl-A Ctrl-A -> one 0x01; Ctrl-A h -> help; Ctrl-A z -> swallowed; split escape across reads.
    os.write(master, b"a\x01\x01b\x01hc\x01zd\x01")
    assert sink.wait_len(5) == b"a\x01bcd"
    os.write(master, b"\x01e")  # completes the Ctrl-A Ctrl-A left pending by the previous read
    assert sink.wait_len(7) == b"a\x01bcd\x01e"
    assert "Ctrl-A x" in err.getvalue() and "terminate the virtual machine" in err.getvalue()
    assert quits == []


def test_buffer_with_limit_keeps_the_newest_bytes_and_still_finds_patterns() -> None:
    from hvm.serial import BufferBackend
    b = BufferBackend(limit=8)
    b.write(b"0123456789")
    assert b.data == b"23456789"
    b.write(b"ab")
    assert b.data == b"456789ab"
    assert b.wait_for(b"9ab", timeout=0.1)
    assert not b.wait_for(b"0123", timeout=0.1)


def test_stdio_output_waits_out_a_full_nonblocking_pipe() -> None:
    # Another program sharing the terminal may leave stdout non-blocking: a full pipe then answers
    # EAGAIN, and the bytes must wait for the reader, not vanish.
    r, w = os.pipe()
    os.set_blocking(w, False)
    out = os.fdopen(w, "wb", buffering=0)
    backend = StdioBackend(lambda: None, stdin=None, stdout=out, stderr=io.StringIO())
    payload = bytes(range(256)) * 4096  # 1 MiB, many times a pipe's buffer
    writer = threading.Thread(target=backend.write, args=(payload,))
    writer.start()
    got = bytearray()
    while len(got) < len(payload):
        got += os.read(r, 65536)
    writer.join(10)
    assert bytes(got) == payload and not writer.is_alive()
    out.close()
    os.close(r)


def test_stdio_output_failure_is_said_once_and_the_guest_goes_on() -> None:
    r, w = os.pipe()
    os.close(r)  # nobody reads: EPIPE (SIGPIPE is ignored by Python)
    out = os.fdopen(w, "wb", buffering=0)
    err = io.StringIO()
    backend = StdioBackend(lambda: None, stdin=None, stdout=out, stderr=err)
    backend.write(b"lost\n")
    backend.write(b"also lost\n")
    backend.write(b"and this")
    backend.flush()
    assert err.getvalue().count("console output failed") == 1, err.getvalue()
    out.close()


def test_stdio_writes_a_line_when_it_ends_and_the_start_of_one_soon_after(monkeypatch) -> None:
    # One write(2) per line rather than per byte; a prompt or an echoed key waits at most
    # FLUSH_DELAY (lengthened here so that a slow host cannot split the line), and close()
    # writes whatever is left.
    import hvm.serial as serial

    writes: list[bytes] = []
    real = serial._write_all
    monkeypatch.setattr(serial, "_write_all", lambda fd, data: (writes.append(data), real(fd, data)))
    monkeypatch.setattr(serial, "FLUSH_DELAY", 0.5)
    r, w = os.pipe()
    out = os.fdopen(w, "wb", buffering=0)
    backend = StdioBackend(lambda: None, stdin=None, stdout=out, stderr=io.StringIO())
    for byte in b"Linux version 6.1\r\n":
        backend.write(bytes([byte]))
    assert writes == [b"Linux version 6.1\r\n"]             # one write, at the line's end
    backend.write(b"~")
    time.sleep(0.05)                                         # the flusher is waiting its delay
    for byte in b" # ":
        backend.write(bytes([byte]))                         # and the rest must not cut it short
        time.sleep(0.02)
    assert len(writes) == 1                                  # the prompt is held back...
    deadline = time.monotonic() + 5
    while len(writes) == 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert writes[1:] == [b"~ # "]                           # ...and then written in one piece
    backend.write(b"ls")
    backend.close()
    assert writes[2:] == [b"ls"]
    assert os.read(r, 100) == b"Linux version 6.1\r\n~ # ls"
    out.close()
    os.close(r)
