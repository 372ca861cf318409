"""Host ends of a serial port: where guest output goes and where guest input comes from.

A backend is handed a ``sink`` (normally ``Uart16550.receive``) by ``start`` and pushes host input into
it, possibly from its own daemon thread.  ``write`` is called with guest output from the vCPU thread,
possibly while the UART holds its lock, so backends must never call back into the UART from ``write``.
"""
from __future__ import annotations

import atexit
import io
import os
import select
import sys
import termios
import threading
from typing import IO, Any, Callable

from .threads import Failure, start_thread

Sink = Callable[[bytes], None]

_READ_CHUNK = 4096
# Guest output to the terminal goes out a line at a time: guests write their console a byte at a
# time, and on a nested host each write(2) to a pipe costs several microseconds and wakes its
# reader (23 000 of them in a Xen + dom0 boot). A line is written when it ends (or reaches
# _FLUSH_AT bytes); the start of one (a prompt, an echoed key) waits at most FLUSH_DELAY.
_FLUSH_AT = 4096
FLUSH_DELAY = 0.005

_PROCESS_STREAM: Any = object()  # "use sys.stdin/stdout/stderr as they are when the backend is made"

ESCAPE_CHAR = 0x01  # Ctrl-A, as in QEMU's mux console
ESCAPE_HELP = (
    "\n"
    "hvm console escape keys:\n"
    "  Ctrl-A h       print this help\n"
    "  Ctrl-A x       terminate the virtual machine\n"
    "  Ctrl-A s       ask the guest to shut down (a Xen PV guest: control/shutdown)\n"
    "  Ctrl-A Ctrl-A  send Ctrl-A to the guest\n"
)


class SerialBackend:
    """Base backend: no output, no input; subclasses override what they support."""

    def __init__(self) -> None:
        self._sink: Sink | None = None

    def start(self, sink: Sink, on_failure: Failure | None = None) -> None:
        """Begin delivering host input to ``sink``; a failure of the backend's own thread is
        handed to ``on_failure`` (the machine ends the run with it)."""
        self._sink = sink

    def write(self, data: bytes) -> None:
        """Accept guest output."""

    def flush(self) -> None:
        """Write out any guest output the backend still holds back."""

    def close(self) -> None:
        """Release host resources; further writes are dropped."""

    def __enter__(self) -> "SerialBackend":
        """Use as a context manager that closes the backend on exit."""
        return self

    def __exit__(self, *exc: object) -> None:
        """Close the backend."""
        self.close()


class NullBackend(SerialBackend):
    """Drops output and never produces input (``-serial none``)."""


class BufferBackend(SerialBackend):
    """Collects output in memory and injects scripted input: for tests and the Python API."""

    def __init__(self, limit: int | None = None) -> None:
        super().__init__()
        # With a limit only the newest ``limit`` bytes are kept: a transcript beside a real
        # console must not grow without bound in a long-running VM.
        self._limit = limit
        self._dropped = 0
        self._out = bytearray()
        self._out_cond = threading.Condition()
        # Serialises sink calls so input queued before start() cannot be overtaken by later feeds.
        self._in_lock = threading.Lock()
        self._queued_input = bytearray()

    @property
    def data(self) -> bytes:
        """Everything the guest has written so far."""
        with self._out_cond:
            return bytes(self._out)

    @property
    def text(self) -> str:
        """Guest output decoded as UTF-8, undecodable bytes replaced."""
        return self.data.decode("utf-8", errors="replace")

    def start(self, sink: Sink, on_failure: Failure | None = None) -> None:
        """Attach the sink and hand it any input fed before now."""
        with self._in_lock:
            self._sink = sink
            queued = bytes(self._queued_input)
            self._queued_input.clear()
            if queued:
                sink(queued)

    def feed(self, data: bytes | str) -> None:
        """Send input towards the guest (held back until ``start`` provides a sink)."""
        if isinstance(data, str):
            data = data.encode("utf-8")
        if not data:
            return
        with self._in_lock:
            if self._sink is None:
                self._queued_input += data
            else:
                self._sink(bytes(data))

    def write(self, data: bytes) -> None:
        """Record guest output and wake any ``wait_for`` callers."""
        with self._out_cond:
            self._out += data
            if self._limit is not None and len(self._out) > self._limit:
                drop = len(self._out) - self._limit
                del self._out[:drop]
                self._dropped += drop
            self._out_cond.notify_all()

    def clear(self) -> None:
        """Forget the output collected so far, so a later ``wait_for`` only sees new output."""
        with self._out_cond:
            self._out.clear()

    def wait_for(self, pattern: bytes | str, timeout: float) -> bool:
        """Block until ``pattern`` appears in the output; False if ``timeout`` seconds pass first."""
        if isinstance(pattern, str):
            pattern = pattern.encode("utf-8")
        scanned = 0
        with self._out_cond:

            def found() -> bool:
                nonlocal scanned
                # Rescan only the tail that could hold a new match, so long outputs stay cheap;
                # ``scanned`` counts from the first byte ever written, trimmed or not.
                start = max(0, scanned - self._dropped - len(pattern) + 1)
                hit = self._out.find(pattern, start) >= 0
                scanned = self._dropped + len(self._out)
                return hit

            return self._out_cond.wait_for(found, timeout)


class FileBackend(SerialBackend):
    """Writes guest output to a file (truncated on open, unbuffered); no input."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self._lock = threading.Lock()
        self._fd: int | None = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)

    def write(self, data: bytes) -> None:
        """Append guest output to the file immediately."""
        with self._lock:
            if self._fd is None:
                return
            view = memoryview(data)
            try:
                while view:
                    view = view[os.write(self._fd, view):]
            except OSError as exc:
                # A full disk must not take the guest down; report once and stop logging.
                print(f"hvm: serial file {self.path}: {exc.strerror}; further output dropped",
                      file=sys.stderr)
                os.close(self._fd)
                self._fd = None

    def close(self) -> None:
        """Close the file."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _write_all(fd: int, data: bytes) -> None:
    """Write every byte to ``fd``. A descriptor left non-blocking by another program sharing the
    terminal answers EAGAIN when its buffer is full: wait until it drains, as a UART waits for its
    line, instead of losing the output."""
    view = memoryview(data)
    while view:
        try:
            view = view[os.write(fd, view):]
        except BlockingIOError:
            select.select([], [fd], [], 1.0)


class StdioBackend(SerialBackend):
    """The terminal: raw mode and Ctrl-A escapes on a TTY, plain byte forwarding from a pipe."""

    def __init__(self, on_quit: Callable[[], None], stdin: Any = _PROCESS_STREAM,
                 stdout: Any = _PROCESS_STREAM, stderr: Any = _PROCESS_STREAM) -> None:
        super().__init__()
        self.on_quit = on_quit
        self.on_shutdown: Callable[[], None] | None = None   # Ctrl-A s, where the machine has one
        # Resolved per instance, not at import: test harnesses and embedders swap sys.std* around.
        self._stdin: IO[Any] | None = sys.stdin if stdin is _PROCESS_STREAM else stdin
        self._stdout: IO[Any] | None = sys.stdout if stdout is _PROCESS_STREAM else stdout
        self._stderr: IO[Any] | None = stderr if stderr is not _PROCESS_STREAM else None
        self._out_lock = threading.Lock()
        self._out_broken = False
        self._pending = bytearray()   # guest output not written yet (the current line)
        self._flush_due = threading.Condition(self._out_lock)
        self._flusher: threading.Thread | None = None
        self._in_fd = self._fileno(self._stdin)
        self.is_tty = self._in_fd is not None and os.isatty(self._in_fd)
        self._saved_termios: list[Any] | None = None
        self._escape_pending = False
        self._thread: threading.Thread | None = None
        self._wake_r: int | None = None
        self._wake_w: int | None = None
        self._closed = False

    @staticmethod
    def _fileno(stream: IO[Any] | None) -> int | None:
        if stream is None or getattr(stream, "closed", False):
            return None
        try:
            return stream.fileno()
        except (OSError, ValueError):
            return None

    def start(self, sink: Sink, on_failure: Failure | None = None) -> None:
        """Enter raw mode on a TTY and start forwarding stdin to ``sink``."""
        self._sink = sink
        if self._thread is not None or self._closed or self._in_fd is None:
            return
        if self.is_tty:
            self._enter_raw_mode()
        self._wake_r, self._wake_w = os.pipe()
        self._thread = start_thread(self._read_loop, "serial-stdio", on_failure)

    def write(self, data: bytes) -> None:
        """Send guest output to stdout: a line as it ends, the start of one within FLUSH_DELAY
        (``flush`` and ``close`` write what is left); waits while stdout would block."""
        with self._out_lock:
            if self._out_broken or self._stdout is None:
                return
            pending = self._pending
            pending += data
            if b"\n" in data or len(pending) >= _FLUSH_AT or self._closed:
                self._flush_locked()
                return
            if self._flusher is None:
                self._flusher = start_thread(self._flush_loop, "serial-stdio-flush")
            if len(pending) == len(data):
                # A line begins: wake the flusher, which then waits FLUSH_DELAY. Woken again by
                # each byte after, it would write the line a byte or two at a time.
                self._flush_due.notify()

    def flush(self) -> None:
        """Write the guest output still held back."""
        with self._out_lock:
            self._flush_locked()

    def _flush_loop(self) -> None:
        with self._out_lock:
            while not self._closed:
                if not self._pending:
                    self._flush_due.wait()
                    continue
                self._flush_due.wait(FLUSH_DELAY)  # more of the line may come meanwhile
                self._flush_locked()

    def _flush_locked(self) -> None:
        data, pending = bytes(self._pending), self._pending
        pending.clear()
        if not data or self._out_broken or self._stdout is None:
            return
        try:
            fd = self._fileno(self._stdout)
            if fd is None:
                self._write_stream(data)
            else:
                self._stdout.flush()  # anything hvm printed through the stream goes first
                _write_all(fd, data)
        except (OSError, ValueError) as exc:
            # stdout went away (e.g. piped into `head`): say so once; the guest keeps running.
            self._out_broken = True
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            self._message(f"\nhvm: console output failed ({why}); further guest output is dropped\n")

    def _write_stream(self, data: bytes) -> None:
        out = getattr(self._stdout, "buffer", None)
        if out is None and isinstance(self._stdout, io.TextIOBase):
            self._stdout.write(data.decode("utf-8", errors="replace"))
            self._stdout.flush()
        else:
            target = out if out is not None else self._stdout
            target.write(data)
            target.flush()

    def close(self) -> None:
        """Write what guest output is held back, stop reading stdin and restore the terminal."""
        with self._out_lock:
            if self._closed:
                return
            self._closed = True
            self._flush_locked()
            self._flush_due.notify()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join(timeout=2)
        if self._wake_w is not None:
            os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self.restore_terminal()
        for fd in (self._wake_r, self._wake_w):
            if fd is not None:
                os.close(fd)
        self._wake_r = self._wake_w = None

    def restore_terminal(self) -> None:
        """Put the TTY back in the mode it had before ``start``; safe to call repeatedly."""
        saved, self._saved_termios = self._saved_termios, None
        if saved is None or self._in_fd is None:
            return
        atexit.unregister(self.restore_terminal)
        try:
            termios.tcsetattr(self._in_fd, termios.TCSADRAIN, saved)
        except (termios.error, OSError):
            pass

    def _enter_raw_mode(self) -> None:
        fd = self._in_fd
        assert fd is not None
        try:
            saved = termios.tcgetattr(fd)
        except termios.error:
            return
        mode = termios.tcgetattr(fd)
        iflag, cflag, lflag, cc = 0, 2, 3, 6  # tcgetattr order; oflag (1) stays as it is
        mode[iflag] &= ~(termios.IGNBRK | termios.BRKINT | termios.PARMRK | termios.ISTRIP
                         | termios.INLCR | termios.IGNCR | termios.ICRNL | termios.IXON)
        # Output post-processing stays on (as QEMU does): the terminal is shared with hvm's own
        # messages on stderr, which would otherwise staircase without CR.
        mode[cflag] = (mode[cflag] & ~(termios.CSIZE | termios.PARENB)) | termios.CS8
        # ISIG off sends Ctrl-C/Ctrl-Z to the guest; Ctrl-A x is the way out.
        mode[lflag] &= ~(termios.ECHO | termios.ECHONL | termios.ICANON | termios.ISIG | termios.IEXTEN)
        mode[cc][termios.VMIN] = 1
        mode[cc][termios.VTIME] = 0
        try:
            termios.tcsetattr(fd, termios.TCSADRAIN, mode)
        except termios.error:
            return
        self._saved_termios = saved
        atexit.register(self.restore_terminal)

    def _message(self, text: str) -> None:
        err = self._stderr if self._stderr is not None else sys.stderr
        try:
            err.write(text)
            err.flush()
        except (OSError, ValueError):
            pass

    def _read_loop(self) -> None:
        fd = self._in_fd
        wake = self._wake_r
        assert fd is not None and wake is not None
        while True:
            try:
                ready, _, _ = select.select([fd, wake], [], [])
            except (OSError, ValueError):
                return
            if wake in ready:
                return
            try:
                data = os.read(fd, _READ_CHUNK)
            except OSError:
                return  # e.g. EIO when the pty's other side hangs up
            if not data:
                return
            if self.is_tty:
                data, keep_going = self._filter_escapes(data)
            else:
                keep_going = True
            if data and self._sink is not None:
                self._sink(data)
            if not keep_going:
                return

    def _filter_escapes(self, data: bytes) -> tuple[bytes, bool]:
        """Strip Ctrl-A sequences, acting on them; returns (bytes for the guest, keep reading)."""
        out = bytearray()
        for byte in data:
            if self._escape_pending:
                self._escape_pending = False
                if byte == ESCAPE_CHAR:
                    out.append(ESCAPE_CHAR)
                elif byte == ord("x"):
                    # Deliver what preceded the escape, then stop: the VM is going away.
                    if out and self._sink is not None:
                        self._sink(bytes(out))
                    self._message("\nhvm: terminated by Ctrl-A x\n")
                    self.on_quit()
                    return b"", False
                elif byte == ord("h"):
                    self._message(ESCAPE_HELP)
                elif byte == ord("s") and self.on_shutdown is not None:
                    self._message("\nhvm: asking the guest to shut down (Ctrl-A s)\n")
                    self.on_shutdown()
                # Anything else after Ctrl-A is swallowed, as QEMU does.
            elif byte == ESCAPE_CHAR:
                self._escape_pending = True
            else:
                out.append(byte)
        return bytes(out), True


def backend_from_spec(spec: str, on_quit: Callable[[], None]) -> SerialBackend:
    """Build a backend from a command-line spec: stdio, none, file:PATH or unix:PATH."""
    kind, sep, arg = spec.partition(":")
    if not sep:
        if spec == "stdio":
            return StdioBackend(on_quit)
        if spec == "none":
            return NullBackend()
    elif kind in ("file", "unix"):
        if not arg:
            raise ValueError(f"invalid serial backend {spec!r}: {kind}: needs a path")
        if kind == "file":
            return FileBackend(arg)
        from .serial_socket import UnixSocketBackend  # socket costs a third of a MiB; only unix: needs it

        return UnixSocketBackend(arg)
    raise ValueError(
        f"invalid serial backend {spec!r}: expected 'stdio', 'none', 'file:PATH' or 'unix:PATH'")
