"""An ATA hard disk (a non-packet device, ATA/ATAPI-6) over a raw image file.

Sectors are 512 bytes. An image whose size is not a multiple of 512 ends in a partial sector:
it reads padded with zeros, and writes to it keep only the bytes inside the file, so the image
never grows. Addressing is LBA28, LBA48 (the EXT commands) or CHS through the current
translation (16 heads, 63 sectors per track until INITIALIZE DEVICE PARAMETERS changes it).
"""
from __future__ import annotations

import fcntl
import os
import stat
import threading
import weakref
import zlib

from ...errors import ImageError, MissingFileError
from ...formats.ata import build_identify
from .channel import ABRT, IDNF, LBA, READY, UNC, Drive

SECTOR = 512
MAX_MULTIPLE = 16                    # the largest DRQ block READ/WRITE MULTIPLE may use
DEFAULT_HEADS, DEFAULT_SECTORS = 16, 63
MAX_DEFAULT_CYLINDERS = 16383        # IDENTIFY DEVICE: disks over 8.4 GB report 16383/16/63
FIRMWARE = "0.1.0"

# SET FEATURES subcommands and transfer modes (ATA/ATAPI-6, SET FEATURES).
SF_TRANSFER_MODE, SF_WCACHE_ON, SF_WCACHE_OFF = 0x03, 0x02, 0x82
SF_ACCEPTED = {0x55, 0xAA, 0x66, 0xCC}   # look-ahead off/on, reverting to defaults off/on
MODE_PIO, MODE_MWDMA, MODE_UDMA = 0x08, 0x20, 0x40


def valid_transfer_mode(mode: int) -> bool:
    """PIO default/0-4, multiword DMA 0-2 or Ultra DMA 0-5: what IDENTIFY advertises."""
    kind, n = mode & 0xF8, mode & 7
    return mode in (0, 1) or (kind == MODE_PIO and n <= 4) or (kind == MODE_MWDMA and n <= 2) \
        or (kind == MODE_UDMA and n <= 5)


def dma_mode_words(mode: int) -> tuple[int, int]:
    """IDENTIFY words 63 and 88: supported modes, and the selected one in the high byte."""
    mwdma, udma = 0x0007, 0x003F
    if mode & 0xF8 == MODE_MWDMA:
        mwdma |= 0x100 << (mode & 7)
    elif mode & 0xF8 == MODE_UDMA:
        udma |= 0x100 << (mode & 7)
    return mwdma, udma


class DiskImage:
    """A raw image read and written with pread/pwrite at byte offsets (a regular file or a
    block device). Reads past the end return zeros; writes past it are dropped."""

    def __init__(self, fd: int, readonly: bool = False, path: str = "", owns_fd: bool = False):
        self.fd, self.path = fd, path or f"<fd {fd}>"
        self.readonly = readonly or fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_ACCMODE == os.O_RDONLY
        self.size = os.lseek(fd, 0, os.SEEK_END)
        self._closer = weakref.finalize(self, os.close, fd) if owns_fd else None

    @classmethod
    def open(cls, path: str | os.PathLike, readonly: bool = False) -> "DiskImage":
        """Open ``path`` (read-only when asked); the image closes its descriptor when dropped."""
        flags = (os.O_RDONLY if readonly else os.O_RDWR) | os.O_CLOEXEC
        try:
            fd = os.open(path, flags)
        except FileNotFoundError:
            raise MissingFileError(path, "disk image") from None
        except IsADirectoryError:
            raise ImageError(path, "is a directory, not a disk image") from None
        except OSError as exc:
            raise ImageError(path, exc.strerror or str(exc)) from None
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISREG(mode) or stat.S_ISBLK(mode)):
            os.close(fd)
            raise ImageError(path, "is a directory, not a disk image" if stat.S_ISDIR(mode)
                             else "not a regular file or block device")
        return cls(fd, readonly, os.fspath(path), owns_fd=True)

    def read(self, offset: int, length: int) -> bytes:
        """``length`` bytes from ``offset``, zeros past the end of the image."""
        out = bytearray()
        while len(out) < length and offset + len(out) < self.size:
            chunk = os.pread(self.fd, min(length - len(out), self.size - offset - len(out)), offset + len(out))
            if not chunk:
                break
            out += chunk
        return bytes(out.ljust(length, b"\0"))

    def write(self, offset: int, data: bytes) -> None:
        """Store ``data`` at ``offset``; bytes past the end of the image are dropped."""
        if self.readonly:
            raise PermissionError(f"{self.path} is read-only")
        view = memoryview(data)[:max(0, self.size - offset)]
        while len(view):
            done = os.pwrite(self.fd, view, offset)
            view, offset = view[done:], offset + done

    def flush(self) -> None:
        """Make every write so far durable."""
        os.fsync(self.fd)

    def close(self) -> None:
        """Close the descriptor if this image opened it."""
        if self._closer is not None:
            self._closer()


def default_serial(image: DiskImage) -> str:
    """A serial number stable for one image path (guests name disks by it)."""
    return f"HVM{zlib.crc32(image.path.encode()):08X}"


class AtaDisk:
    """An ATA disk over ``image``; a read-only image aborts every write command."""

    packet = False

    def __init__(self, image: DiskImage, serial: str | None = None, model: str = "hvm HARDDISK",
                 firmware: str = FIRMWARE):
        if image.size == 0:
            raise ImageError(image.path, "empty disk image")
        self.image = image
        self.lock = threading.RLock()    # replaced by the channel's when plugged in
        self.sectors = -(-image.size // SECTOR)
        self.serial, self.model, self.firmware = serial or default_serial(image), model, firmware
        self.heads, self.sectors_per_track = DEFAULT_HEADS, DEFAULT_SECTORS
        self.multiple = MAX_MULTIPLE
        self.write_cache = True
        self.transfer_mode = MODE_MWDMA | 2
        self.standby = False
        self._commands = {
            0xEC: self._identify,
            0x20: self._read_pio, 0x21: self._read_pio, 0x24: self._read_pio,
            0xC4: self._read_pio, 0x29: self._read_pio,
            0x30: self._write_pio, 0x31: self._write_pio, 0x34: self._write_pio,
            0xC5: self._write_pio, 0x39: self._write_pio,
            0xC8: self._read_dma, 0xC9: self._read_dma, 0x25: self._read_dma,
            0xCA: self._write_dma, 0xCB: self._write_dma, 0x35: self._write_dma,
            0x40: self._verify, 0x41: self._verify, 0x42: self._verify,
            0xC6: self._set_multiple,
            0xE7: self._flush, 0xEA: self._flush,
            0xEF: self._set_features,
            0x91: self._initialize_parameters,
            0xE0: self._power, 0xE1: self._power, 0xE2: self._power, 0xE3: self._power,
            0xE5: self._check_power,
        }
        for command in range(0x10, 0x20):       # RECALIBRATE and its obsolete aliases
            self._commands[command] = self._no_data
        for command in range(0x70, 0x80):       # SEEK
            self._commands[command] = self._no_data

    @property
    def default_cylinders(self) -> int:
        """Cylinders of the default 16-head, 63-sector translation (IDENTIFY word 1)."""
        return min(self.sectors // (DEFAULT_HEADS * DEFAULT_SECTORS), MAX_DEFAULT_CYLINDERS)

    @property
    def current_cylinders(self) -> int:
        """Cylinders of the current translation (IDENTIFY word 54)."""
        track = self.heads * self.sectors_per_track
        return min(self.sectors // track, 0xFFFF) if track else 0

    # -- the DeviceModel protocol --------------------------------------------------------------
    def reset(self, drive: Drive) -> None:
        drive.set_signature(packet=False)
        drive.error = 0x01
        drive.status = READY

    def execute(self, drive: Drive, command: int) -> None:
        handler = self._commands.get(command)
        if handler is None:
            drive.abort(ABRT)
        else:
            handler(drive, command)

    # -- IDENTIFY DEVICE -----------------------------------------------------------------------
    def identify(self, drive: Drive) -> bytes:
        """The 512-byte IDENTIFY DEVICE data for this disk at ``drive``'s position."""
        mwdma, udma = dma_mode_words(self.transfer_mode)
        cylinders = self.current_cylinders
        return build_identify(
            general=0x0040,                                 # fixed, not removable
            cylinders=self.default_cylinders, heads=DEFAULT_HEADS,
            sectors_per_track=DEFAULT_SECTORS,
            serial=self.serial, firmware=self.firmware, model=self.model,
            max_multiple=0x8000 | MAX_MULTIPLE,
            dword_io=1,
            capabilities=0x0800 | 0x0200 | 0x0100,          # IORDY, LBA, DMA
            capabilities2=0x4000,
            pio_timing=0x0200, dma_timing=0x0200,
            valid=0x0007,
            current_cylinders=cylinders, current_heads=self.heads,
            current_sectors=self.sectors_per_track,
            current_capacity=min(cylinders * self.heads * self.sectors_per_track, 0xFFFFFFFF),
            multiple=0x0100 | self.multiple if self.multiple else 0,
            lba28_sectors=min(self.sectors, 0x0FFFFFFF),
            mwdma=mwdma, pio_modes=0x0003,                  # PIO 3 and 4
            mwdma_min_cycle=120, mwdma_cycle=120, pio_min_cycle=120, pio_min_cycle_iordy=120,
            major_version=0x007E,                           # ATA-1 to ATA/ATAPI-6
            supported1=0x4000 | 0x0040 | 0x0020,            # NOP, look-ahead, write cache
            supported2=0x4000 | 0x2000 | 0x1000 | 0x0400,   # FLUSH CACHE EXT, FLUSH CACHE, 48-bit
            supported_ext=0x4000,
            enabled1=0x4000 | 0x0040 | (0x0020 if self.write_cache else 0),
            enabled2=0x2000 | 0x1000 | 0x0400,
            enabled_default=0x4000,
            udma=udma,
            reset_result=drive.hardware_reset_result(),
            lba48_sectors=self.sectors,
            sector_size=0x4000,                             # one logical sector per physical
        )

    def _identify(self, drive: Drive, _command: int) -> None:
        drive.pio_in(self.identify(drive))

    # -- addressing ----------------------------------------------------------------------------
    def _span(self, drive: Drive, command: int) -> tuple[int, int] | None:
        """(LBA, sector count) of a media access, or None after aborting it with IDNF."""
        if command in (0x24, 0x29, 0x34, 0x39, 0x25, 0x35, 0x42):
            lba, count = drive.lba48(), drive.count48() or 0x10000
        else:
            lba, count = self._lba(drive), drive.count or 0x100
        if lba is None or lba + count > self.sectors:
            drive.abort(IDNF)
            return None
        self.standby = False
        return lba, count

    def _lba(self, drive: Drive) -> int | None:
        if drive.device & LBA:
            return drive.lba28()
        cylinder = drive.lba_high << 8 | drive.lba_mid
        head, sector = drive.device & 0x0F, drive.lba_low
        if not 1 <= sector <= self.sectors_per_track or head >= self.heads:
            return None     # also every CHS access while the translation is invalid
        return (cylinder * self.heads + head) * self.sectors_per_track + sector - 1

    # -- PIO data-in / data-out protocols ------------------------------------------------------
    def _block(self, drive: Drive, command: int) -> int | None:
        if command in (0xC4, 0xC5, 0x29, 0x39):
            if not self.multiple:
                drive.abort(ABRT)
                return None
            return self.multiple
        return 1

    def _read_pio(self, drive: Drive, command: int) -> None:
        block = self._block(drive, command)
        span = block and self._span(drive, command)
        if not span:
            return
        lba, count = span

        def next_block() -> None:
            nonlocal lba, count
            n = min(block, count)
            try:
                data = self.image.read(lba * SECTOR, n * SECTOR)
            except OSError:
                drive.abort(UNC | ABRT)
                return
            lba, count = lba + n, count - n
            drive.pio_in(data, next_block if count else None)
        next_block()

    def _write_pio(self, drive: Drive, command: int) -> None:
        if self.image.readonly:
            drive.abort(ABRT)
            return
        block = self._block(drive, command)
        span = block and self._span(drive, command)
        if not span:
            return
        lba, count = span

        def received(data: bytes) -> None:
            nonlocal lba, count
            try:
                self.image.write(lba * SECTOR, data)
            except OSError:
                drive.abort(ABRT)
                return
            n = len(data) // SECTOR
            lba, count = lba + n, count - n
            if count:
                drive.pio_out(min(block, count) * SECTOR, received, irq=True)
            else:
                self._written(drive)
        drive.pio_out(min(block, count) * SECTOR, received)

    def _written(self, drive: Drive) -> None:
        # With the write cache off, a write completes only once the data is durable.
        if not self.write_cache:
            try:
                self.image.flush()
            except OSError:
                drive.abort(ABRT)
                return
        drive.complete()

    # -- DMA data commands --------------------------------------------------------------------
    def _read_dma(self, drive: Drive, command: int) -> None:
        span = self._span(drive, command)
        if span:
            base = span[0] * SECTOR
            drive.dma(True, span[1] * SECTOR, done=drive.complete, failed=self._dma_failed(drive),
                      read=lambda offset, n: self.image.read(base + offset, n))

    def _write_dma(self, drive: Drive, command: int) -> None:
        if self.image.readonly:
            drive.abort(ABRT)
            return
        span = self._span(drive, command)
        if span:
            base = span[0] * SECTOR
            drive.dma(False, span[1] * SECTOR, done=lambda: self._written(drive),
                      failed=self._dma_failed(drive),
                      write=lambda offset, data: self.image.write(base + offset, data))

    @staticmethod
    def _dma_failed(drive: Drive):
        return lambda exc: drive.abort(ABRT | (UNC if exc is not None else 0))

    # -- commands without data -----------------------------------------------------------------
    def _verify(self, drive: Drive, command: int) -> None:
        if self._span(drive, command):
            drive.complete()

    def _set_multiple(self, drive: Drive, _command: int) -> None:
        # SET MULTIPLE MODE: a power of two up to the advertised maximum; 0 disables it.
        n = drive.count
        if n > MAX_MULTIPLE or n & (n - 1):
            drive.abort(ABRT)
            return
        self.multiple = n
        drive.complete()

    def _flush(self, drive: Drive, _command: int) -> None:
        try:
            self.image.flush()
        except OSError:
            drive.abort(ABRT)
            return
        drive.complete()

    def _set_features(self, drive: Drive, _command: int) -> None:
        sub = drive.feature
        if sub == SF_TRANSFER_MODE and valid_transfer_mode(drive.count):
            self.transfer_mode = drive.count
        elif sub in (SF_WCACHE_ON, SF_WCACHE_OFF):
            self.write_cache = sub == SF_WCACHE_ON
        elif sub not in SF_ACCEPTED:
            drive.abort(ABRT)
            return
        drive.complete()

    def _initialize_parameters(self, drive: Drive, _command: int) -> None:
        # INITIALIZE DEVICE PARAMETERS: any translation is accepted; one with no sectors per
        # track makes every CHS access fail with IDNF until a valid one is set.
        self.heads = (drive.device & 0x0F) + 1
        self.sectors_per_track = drive.count
        drive.complete()

    def _power(self, drive: Drive, command: int) -> None:
        self.standby = command in (0xE0, 0xE2)
        drive.complete()

    def _check_power(self, drive: Drive, _command: int) -> None:
        drive.count = 0x00 if self.standby else 0xFF     # standby, or active/idle (CHECK POWER MODE)
        drive.complete()

    def _no_data(self, drive: Drive, _command: int) -> None:
        drive.complete()


__all__ = ["AtaDisk", "DiskImage", "SECTOR", "valid_transfer_mode"]
