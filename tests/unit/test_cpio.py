"""The newc writer of images.cpio: headers, padding and entry kinds as the kernel's buffer format
describes them, checked by reading the archive back field by field."""
from __future__ import annotations

import stat
import sys

from conftest import REPO

if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from images import cpio  # noqa: E402


def test_round_trip_of_every_entry_kind():
    entries = [cpio.directory("bin"), cpio.file("bin/x", b"12345", 0o755), cpio.symlink("bin/sh", "x"),
               cpio.char_device("dev/console", 5, 1), cpio.file("empty", b"")]
    data = cpio.archive(entries)
    assert len(data) % 4 == 0
    back = cpio.entries_of(data)
    assert [(n, m) for n, m, _ in back] == [(e.name, e.mode) for e in entries]
    assert back[1][2] == b"12345" and back[2][2] == b"x" and back[4][2] == b""
    assert stat.S_ISCHR(back[3][1]) and stat.S_ISLNK(back[2][1]) and stat.S_ISDIR(back[0][1])


def test_header_layout_and_alignment():
    data = cpio.archive([cpio.file("abc", b"xyz")])
    assert data[:6] == b"070701"
    header = cpio.NEWC_HEADER.parse(data[:110])
    assert header.namesize == 4 and header.filesize == 3 and header.nlink == 1
    # 110-byte header + "abc\0" = 114, padded to 116; data "xyz" padded to 120.
    assert data[110:116] == b"abc\0\0\0" and data[116:120] == b"xyz\0"
    assert data[120:126] == b"070701" and b"TRAILER!!!\0" in data[120:]
    dev = cpio.NEWC_HEADER.parse(cpio.archive([cpio.char_device("c", 5, 1)])[:110])
    assert (dev.rdevmajor, dev.rdevminor) == (5, 1)
