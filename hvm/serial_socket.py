"""The unix:PATH serial backend: a listening Unix socket the guest's console is served on.

Kept apart from hvm.serial so that a VMM without a socket console never imports ``socket``.
"""
from __future__ import annotations

import errno
import os
import select
import socket
import stat
import threading

from .serial import _READ_CHUNK, SerialBackend, Sink
from .threads import Failure, start_thread

UNIX_BACKLOG_LIMIT = 64 * 1024
_SUN_PATH_MAX = 107  # sizeof(sockaddr_un.sun_path) minus the terminating NUL


class UnixSocketBackend(SerialBackend):
    """Listens on a Unix socket; one client at a time talks to the guest (``socat - UNIX:path``)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        if len(os.fsencode(path)) > _SUN_PATH_MAX:
            raise ValueError(f"serial socket path {path!r} is longer than {_SUN_PATH_MAX} bytes")
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            pass
        else:
            if not stat.S_ISSOCK(st.st_mode):
                raise FileExistsError(
                    errno.EEXIST, "exists and is not a socket; refusing to replace it", path)
            os.unlink(path)  # a leftover from an earlier run that did not clean up
        self._listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            self._listener.bind(path)
            self._listener.listen(1)
        except OSError:
            self._listener.close()
            raise
        self._inode = os.lstat(path).st_ino
        self._lock = threading.Lock()
        self._client: socket.socket | None = None
        self._backlog = bytearray()
        self._closed = False
        self._wake_r, self._wake_w = os.pipe()
        self._thread: threading.Thread | None = None

    @property
    def connected(self) -> bool:
        """Whether a client is currently attached."""
        with self._lock:
            return self._client is not None

    def start(self, sink: Sink, on_failure: Failure | None = None) -> None:
        """Start accepting clients; their bytes go to ``sink``."""
        self._sink = sink
        if self._thread is None and not self._closed:
            self._thread = start_thread(self._serve, f"serial-unix:{self.path}", on_failure)

    def write(self, data: bytes) -> None:
        """Send to the client, or keep the newest 64 KiB until one connects."""
        with self._lock:
            if self._closed:
                return
            if self._client is not None:
                try:
                    # Blocking on a slow reader is deliberate: it throttles the guest like a real line.
                    self._client.sendall(data, socket.MSG_NOSIGNAL)
                    return
                except OSError:
                    self._drop_client_locked()
            self._append_backlog_locked(data)

    def close(self) -> None:
        """Stop serving, disconnect the client and remove the socket file."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            self._drop_client_locked()
        os.write(self._wake_w, b"x")
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        self._listener.close()
        os.close(self._wake_r)
        os.close(self._wake_w)
        try:
            # Only remove the file if it is still ours; another hvm may have taken the path over.
            if os.lstat(self.path).st_ino == self._inode:
                os.unlink(self.path)
        except FileNotFoundError:
            pass

    def _append_backlog_locked(self, data: bytes) -> None:
        self._backlog += data
        excess = len(self._backlog) - UNIX_BACKLOG_LIMIT
        if excess > 0:
            del self._backlog[:excess]  # keep the newest output: it is what a late client wants to see

    def _drop_client_locked(self) -> None:
        if self._client is not None:
            try:
                self._client.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            # The serving thread owns the close(); shutdown wakes its select and recv.
            self._client = None

    def _wait_readable(self, sock: socket.socket) -> bool:
        try:
            ready, _, _ = select.select([sock, self._wake_r], [], [])
        except (OSError, ValueError):
            return False  # torn down underneath us by close()
        return self._wake_r not in ready

    def _serve(self) -> None:
        while not self._closed:
            if not self._wait_readable(self._listener):
                return
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            with self._lock:
                if self._closed:
                    conn.close()
                    return
                try:
                    if self._backlog:
                        conn.sendall(bytes(self._backlog), socket.MSG_NOSIGNAL)
                        self._backlog.clear()
                except OSError:
                    conn.close()
                    continue
                self._client = conn
            try:
                self._pump(conn)
            finally:
                with self._lock:
                    if self._client is conn:
                        self._client = None
                conn.close()

    def _pump(self, conn: socket.socket) -> None:
        while self._wait_readable(conn):
            try:
                data = conn.recv(_READ_CHUNK)
            except OSError:
                return
            if not data:
                return
            sink = self._sink
            if sink is not None:
                sink(data)
