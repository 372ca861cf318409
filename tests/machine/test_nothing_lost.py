"""Nothing the guest wrote is lost on the way out: every line of a known stream reaches the file
and socket backends when the guest powers off, and a gap-free prefix of it when hvmrun is stopped
by SIGTERM or SIGHUP (exit 128+n); a crash on an application processor is reported with that
processor's registers and the console's last lines."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time

import pytest

from conftest import hvmrun, hvmrun_cmd, hvmrun_env

LINES = 5000
EXPECTED = "".join(f"{i}\n" for i in range(1, LINES + 1)).encode()


def _gap_free_prefix(data: bytes) -> int:
    """How many whole lines "1\\n2\\n..." ``data`` holds; fails on any gap or stray byte."""
    *whole, tail = data.split(b"\n")
    for i, line in enumerate(whole, 1):
        assert line == str(i).encode(), f"line {i} is {line!r}"
    assert str(len(whole) + 1).encode().startswith(tail), tail   # a line cut short by the stop
    return len(whole)


def _wait_for(predicate, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < end, "timed out"
        time.sleep(0.02)


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_every_line_reaches_file_and_stdout(guests, tmp_path, accel):
    out = tmp_path / "com1.log"
    r = hvmrun("--accel", accel, "--kernel", str(guests("stream", COUNT=LINES)), "--serial", f"file:{out}",
               "--timeout", "300", timeout=400)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == EXPECTED
    r = hvmrun("--accel", accel, "--kernel", str(guests("stream", COUNT=LINES)), "--timeout", "300", timeout=400)
    assert r.returncode == 0 and r.stdout == EXPECTED, r.stderr


def _connect(path: str, proc: subprocess.Popen) -> socket.socket:
    _wait_for(lambda: os.path.exists(path) or proc.poll() is not None)
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect(path)
    return client


def _read_all(client: socket.socket) -> bytes:
    data = bytearray()
    client.settimeout(120)
    while chunk := client.recv(65536):
        data += chunk
    return bytes(data)


def test_every_line_reaches_the_socket(guests, tmp_path):
    path = str(tmp_path / "com1.sock")
    # The guest waits halfway for a byte from the client: it may otherwise be done (and the
    # socket gone) before the client connects.
    guest = guests("stream", COUNT=LINES, WAIT_AT=LINES // 2)
    proc = subprocess.Popen([*hvmrun_cmd(), "--accel", "unicorn", "--kernel", str(guest),
                             "--serial", f"unix:{path}", "--timeout", "300"], env=hvmrun_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        # Output made before the client connects waits in the backlog (64 KiB, more than the stream).
        with _connect(path, proc) as client:
            client.sendall(b"g")
            data = _read_all(client)
        assert proc.wait(timeout=120) == 0, proc.stderr.read()
        assert data == EXPECTED
        assert not os.path.exists(path)   # the socket file goes with the machine
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGHUP])
@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_a_stop_signal_loses_no_byte_of_the_file(guests, tmp_path, accel, sig):
    out = tmp_path / "com1.log"
    proc = subprocess.Popen([*hvmrun_cmd(), "--accel", accel, "--kernel", str(guests("stream")),
                             "--serial", f"file:{out}", "--timeout", "300"], env=hvmrun_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: out.exists() and out.stat().st_size > 4000)
        proc.send_signal(sig)
        assert proc.wait(timeout=60) == 128 + sig
        err = proc.stderr.read().decode()
        assert f"terminated by {sig.name}" in err and "Traceback" not in err
        assert _gap_free_prefix(out.read_bytes()) > 900
    finally:
        proc.kill()
        proc.wait()


def test_a_stop_signal_loses_no_byte_of_the_socket(guests, tmp_path):
    path = str(tmp_path / "com1.sock")
    proc = subprocess.Popen([*hvmrun_cmd(), "--accel", "unicorn", "--kernel", str(guests("stream")),
                             "--serial", f"unix:{path}", "--timeout", "300"], env=hvmrun_env(),
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with _connect(path, proc) as client:
            first = b""
            while len(first) < 4000:
                first += client.recv(65536)
            proc.send_signal(signal.SIGTERM)
            data = first + _read_all(client)   # up to the EOF hvm sends when it closes the socket
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
        assert _gap_free_prefix(data) > 900
    finally:
        proc.kill()
        proc.wait()


@pytest.mark.parametrize("accel", ["kvm", "unicorn"])
def test_crash_on_an_application_processor_reports_that_processor(guests, accel):
    import subprocess as sp

    elf = guests("smp")
    symbols = dict((name, int(addr, 16)) for addr, _, name in
                   (line.split() for line in sp.run(["nm", str(elf)], capture_output=True, text=True,
                                                    check=True).stdout.splitlines() if line.count(" ") == 2))
    # The AP runs the trampoline copied to 0x8000: its ud2 sits at the same offset there.
    ud2_at = 0x8000 + symbols["ap_pm"] - symbols["ap_start"]
    r = hvmrun("--accel", accel, "-c", "2", "--kernel", str(elf), "--append", "want=2 crash", "--timeout", "60")
    err = r.stderr.decode(errors="replace")
    assert r.returncode == 2, err
    assert "guest crashed on vCPU 1: triple fault" in err
    assert re.search(r"instruction: 0f 0b\s+->\s+ud2\s+\[32-bit code\]", err), err
    assert re.search(rf"rip=0*{ud2_at:x} ", err), err
    assert "last console lines:\n    | smp: each AP will now fault" in err
