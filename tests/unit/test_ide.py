"""PIIX3 IDE, ATA disk and ATAPI CD-ROM models, driven through their ports the way a guest driver
does: task-file writes, status polls, Data register reads, PRD tables in guest RAM. Expected
values come from ATA/ATAPI-6, SFF-8038i, SPC-3 and MMC-3."""
from __future__ import annotations

import os
import struct
import threading

import pytest

from hvm.bus import PortIOBus
from hvm.devices.ide import AtaDisk, AtapiCdrom, DiskImage, PiixIde
from hvm.devices.ide.atapi import CD_MAX_BLOCKS, msf
from hvm.devices.pci.config import BAR0, CMD_IO, CMD_MASTER, COMMAND
from hvm.errors import ImageError, MissingFileError
from hvm.irq import RecordingIrqLine
from hvm.memory import GuestMemory

P_CMD, P_CTL, S_CMD, S_CTL = 0x1F0, 0x3F6, 0x170, 0x376
BM = 0xC000
DATA, ERROR, FEATURE, COUNT, LBAL, LBAM, LBAH, DEVICE, STATUS, COMMAND_REG = 0, 1, 1, 2, 3, 4, 5, 6, 7, 7
BSY, DRDY, DSC, DRQ, ERR = 0x80, 0x40, 0x10, 0x08, 0x01
ABRT, IDNF = 0x04, 0x10
NIEN, SRST, HOB = 0x02, 0x04, 0x80
BM_START, BM_TO_MEMORY = 0x01, 0x08
BM_ACTIVE, BM_ERROR, BM_INTERRUPT = 0x01, 0x02, 0x04
MIB = 1 << 20


def pattern(n: int, seed: int = 0) -> bytes:
    return bytes((i * 7 + seed + (i >> 9)) & 0xFF for i in range(n))


def image_file(tmp_path, name: str, data: bytes = b"", size: int | None = None):
    path = tmp_path / name
    path.write_bytes(data)
    if size is not None:
        os.truncate(path, size)
    return path


class Guest:
    """A guest's view of a PIIX3 IDE: port I/O, 1 MiB of RAM, IRQ 14/15."""

    def __init__(self, primary=(None, None), secondary=(None, None)):
        self.mem = GuestMemory(MIB)
        self.irq14, self.irq15 = RecordingIrqLine(14), RecordingIrqLine(15)
        self.ide = PiixIde(self.mem, self.irq14, self.irq15, primary, secondary)
        self.bus = PortIOBus()
        self.mapped: list[tuple[int, int, str]] = []

        def map_port(base, length, device, name):
            self.mapped.append((base, length, name))
            self.bus.register(base, length, device, name)
        self.ide.attach(map_port)
        self.bus.register(BM, 16, self.ide.busmaster)
        self.ide.config_write(COMMAND, 2, CMD_IO | CMD_MASTER)

    def inb(self, port: int) -> int:
        return self.bus.read(port, 1)

    def inw(self, port: int) -> int:
        return self.bus.read(port, 2)

    def inl(self, port: int) -> int:
        return self.bus.read(port, 4)

    def outb(self, port: int, value: int) -> None:
        self.bus.write(port, 1, value)

    def outw(self, port: int, value: int) -> None:
        self.bus.write(port, 2, value)

    def outl(self, port: int, value: int) -> None:
        self.bus.write(port, 4, value)

    # -- ATA helpers -------------------------------------------------------------------------
    def command(self, command: int, base: int = P_CMD, count: int = 0, lba: int = 0, dev: int = 0,
                feature: int = 0, lba48: bool = False, lba_mode: bool = True) -> None:
        """Load the task file (both halves for 48-bit) and write the command."""
        if lba48:
            for reg, value in ((FEATURE, feature >> 8), (COUNT, count >> 8), (LBAL, lba >> 24),
                               (LBAM, lba >> 32), (LBAH, lba >> 40)):
                self.outb(base + reg, value & 0xFF)
            device = 0x40 | dev << 4
        else:
            device = (0x40 if lba_mode else 0) | dev << 4 | (lba >> 24 & 0x0F)
        self.outb(base + DEVICE, device | 0xA0 if not lba48 else device)
        for reg, value in ((FEATURE, feature), (COUNT, count), (LBAL, lba), (LBAM, lba >> 8),
                           (LBAH, lba >> 16)):
            self.outb(base + reg, value & 0xFF)
        self.outb(base + COMMAND_REG, command)

    def read_block(self, n: int, base: int = P_CMD, width: int = 2) -> bytes:
        read = self.inw if width == 2 else self.inl
        return b"".join(read(base).to_bytes(width, "little") for _ in range(n // width))

    def write_block(self, data: bytes, base: int = P_CMD, width: int = 2) -> None:
        write = self.outw if width == 2 else self.outl
        for i in range(0, len(data), width):
            write(base, int.from_bytes(data[i:i + width], "little"))

    def identify(self, base: int = P_CMD, dev: int = 0, command: int = 0xEC) -> list[int]:
        self.command(command, base, dev=dev)
        assert self.inb(base + STATUS) == DRDY | DSC | DRQ
        data = self.read_block(512, base)
        return list(struct.unpack("<256H", data))

    # -- ATAPI helpers -----------------------------------------------------------------------
    def packet(self, cdb: bytes, base: int = S_CMD, limit: int = 0xFFFE, dma: bool = False, dev: int = 0) -> None:
        self.outb(base + DEVICE, 0xA0 | dev << 4)
        self.outb(base + FEATURE, 1 if dma else 0)
        self.outb(base + LBAM, limit & 0xFF)
        self.outb(base + LBAH, limit >> 8)
        self.outb(base + COMMAND_REG, 0xA0)
        assert self.inb(base + 0x206) == DRDY | DSC | DRQ      # alternate status
        assert self.inb(base + COUNT) == 0x01                   # CoD: waiting for the CDB
        self.write_block(cdb.ljust(12, b"\0"), base)

    def packet_in(self, cdb: bytes, base: int = S_CMD, limit: int = 0xFFFE) -> tuple[bytes, list[int]]:
        """Run a PIO data-in packet command; returns (data, DRQ block sizes)."""
        self.packet(cdb, base, limit)
        data, sizes = b"", []
        while True:
            status = self.inb(base + STATUS)
            if not status & DRQ:
                assert status & BSY == 0
                return data, sizes
            assert self.inb(base + COUNT) == 0x02                # IO: data to the host
            n = self.inb(base + LBAM) | self.inb(base + LBAH) << 8
            sizes.append(n)
            data += self.read_block(n + (n & 1), base)[:n]

    def sense(self, base: int = S_CMD) -> tuple[int, int, int]:
        data, _ = self.packet_in(bytes([0x03, 0, 0, 0, 18]), base)
        assert data[0] == 0x70 and data[7] == 10
        return data[2] & 0x0F, data[12], data[13]

    # -- bus master --------------------------------------------------------------------------
    def prd_table(self, at: int, entries: list[tuple[int, int]], end: bool = True) -> None:
        for i, (address, count) in enumerate(entries):
            last = end and i == len(entries) - 1
            self.mem.write(at + 8 * i, struct.pack("<II", address, (count & 0xFFFF) | (1 << 31 if last else 0)))

    def bm_setup(self, table: int, to_memory: bool, channel: int = 0) -> None:
        base = BM + 8 * channel
        self.outl(base + 4, table)
        self.outb(base, BM_TO_MEMORY if to_memory else 0)
        self.outb(base + 2, BM_ERROR | BM_INTERRUPT)          # clear both (write one to clear)

    def bm_start(self, to_memory: bool, channel: int = 0) -> None:
        self.outb(BM + 8 * channel, BM_START | (BM_TO_MEMORY if to_memory else 0))

    def bm_status(self, channel: int = 0) -> int:
        return self.inb(BM + 8 * channel + 2)


@pytest.fixture
def disk_path(tmp_path):
    return image_file(tmp_path, "disk.img", pattern(64 * 512))


@pytest.fixture
def iso_path(tmp_path):
    return image_file(tmp_path, "cd.iso", pattern(40 * 2048, seed=3))


def disk_guest(path, readonly: bool = False, **kw) -> tuple[Guest, AtaDisk]:
    disk = AtaDisk(DiskImage.open(path, readonly=readonly), **kw)
    return Guest(primary=(disk, None)), disk


def cd_guest(path=None) -> tuple[Guest, AtapiCdrom]:
    cd = AtapiCdrom(DiskImage.open(path, readonly=True) if path else None)
    return Guest(secondary=(cd, None)), cd


# -- signatures, reset, identify ------------------------------------------------------------

def test_power_on_signatures_and_status(disk_path, iso_path) -> None:
    disk = AtaDisk(DiskImage.open(disk_path))
    cd = AtapiCdrom(DiskImage.open(iso_path, readonly=True))
    g = Guest(primary=(disk, None), secondary=(cd, None))
    assert [g.inb(P_CMD + r) for r in (COUNT, LBAL, LBAM, LBAH)] == [1, 1, 0, 0]
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert [g.inb(S_CMD + r) for r in (COUNT, LBAL, LBAM, LBAH)] == [1, 1, 0x14, 0xEB]
    assert g.inb(S_CMD + STATUS) == 0x00          # packet devices leave DRDY clear after reset
    assert g.inb(P_CMD + ERROR) == 0x01            # diagnostic code: passed


def test_srst_restores_signature_and_selects_device_0(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0x20, count=1, lba=5)
    assert g.inb(P_CMD + STATUS) & DRQ
    g.outb(P_CTL, SRST)
    assert g.inb(P_CTL) == BSY
    assert g.inb(P_CMD + STATUS) == BSY
    g.outb(P_CMD + COMMAND_REG, 0xEC)               # ignored while in reset
    g.outb(P_CTL, 0)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC     # the transfer is gone
    assert [g.inb(P_CMD + r) for r in (ERROR, COUNT, LBAL, LBAM, LBAH)] == [1, 1, 1, 0, 0]
    assert g.inb(P_CMD + DEVICE) & 0x10 == 0
    assert g.inw(P_CMD) == 0


def test_srst_on_a_cdrom_gives_the_packet_signature(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.outb(S_CMD + LBAM, 0x12)
    g.outb(S_CTL, SRST)
    g.outb(S_CTL, 0)
    assert [g.inb(S_CMD + r) for r in (COUNT, LBAL, LBAM, LBAH)] == [1, 1, 0x14, 0xEB]
    assert g.inb(S_CMD + STATUS) == 0


def test_identify_device(disk_path) -> None:
    g, disk = disk_guest(disk_path, serial="SN123")
    assert not g.irq14.level
    g.command(0xEC)
    assert g.irq14.level                           # data ready: interrupt
    words = g.identify()
    assert g.inb(P_CMD + STATUS) == DRDY | DSC     # all 256 words read
    sectors = 64
    assert words[0] == 0x0040
    assert (words[1], words[3], words[6]) == (0, 16, 63)     # 64 sectors < one 16x63 cylinder
    assert words[60] | words[61] << 16 == sectors
    assert words[100] | words[101] << 16 | words[102] << 32 | words[103] << 48 == sectors

    def text(first: int, count: int) -> str:
        return b"".join(w.to_bytes(2, "big") for w in words[first:first + count]).decode().rstrip()
    assert text(27, 20) == "hvm HARDDISK"
    assert text(10, 10) == "SN123"
    assert text(23, 4) == "0.1.0"
    assert words[47] == 0x8010                     # READ/WRITE MULTIPLE up to 16 sectors
    assert words[49] & 0x0300 == 0x0300            # LBA and DMA
    assert words[53] & 0x0006 == 0x0006
    assert words[63] & 0x07 == 0x07 and words[63] >> 8 == 0x04   # MWDMA 0-2, mode 2 selected
    assert words[88] & 0x3F == 0x3F                # UDMA 0-5 supported
    assert words[83] & 0xC000 == 0x4000 and words[83] & 0x3400 == 0x3400   # FLUSH (EXT), LBA48
    assert words[86] & 0x3400 == 0x3400
    assert words[82] & 0x20 and words[85] & 0x20   # write cache supported and on
    assert words[84] & 0xC000 == 0x4000 and words[87] & 0xC000 == 0x4000
    assert words[93] & 0x4001 == 0x4001
    raw = struct.pack("<256H", *words)
    assert raw[510] == 0xA5 and sum(raw) % 256 == 0


def test_identify_with_32_bit_reads_matches_16_bit(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    words16 = g.identify()
    g.command(0xEC)
    assert g.read_block(512, width=4) == struct.pack("<256H", *words16)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC


def test_identify_large_disk_chs_and_lba28_saturate(tmp_path) -> None:
    path = image_file(tmp_path, "big.img", size=(1 << 29) * 512 + 512)    # sparse, 256 GiB + 1
    g, disk = disk_guest(path)
    words = g.identify()
    assert (words[1], words[3], words[6]) == (16383, 16, 63)
    assert words[60] | words[61] << 16 == 0x0FFFFFFF
    assert words[100] | words[101] << 16 | words[102] << 32 == (1 << 29) + 1


def test_read_only_image_is_reported_by_disk_image(disk_path) -> None:
    assert DiskImage.open(disk_path, readonly=True).readonly
    fd = os.open(disk_path, os.O_RDONLY)
    try:
        assert DiskImage(fd).readonly               # an fd opened read-only is read-only
    finally:
        os.close(fd)


# -- PIO reads and writes --------------------------------------------------------------------

def test_pio_read_lba28_multi_sector(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.command(0x20, count=3, lba=7)
    data = b""
    for block in range(3):
        assert g.irq14.level                         # an interrupt before each data block
        assert g.inb(P_CMD + STATUS) == DRDY | DSC | DRQ
        assert not g.irq14.level                     # reading Status clears it
        data += g.read_block(512)
    assert data == image[7 * 512:10 * 512]
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert g.irq14.history.count(True) == 3


def test_pio_write_lba28_reaches_the_file(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    new = pattern(2 * 512, seed=99)
    g.command(0x30, count=2, lba=10)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC | DRQ
    assert not g.irq14.level                         # PIO out: the first block needs no interrupt
    g.write_block(new[:512], width=4)
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC | DRQ
    g.write_block(new[512:])
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert disk_path.read_bytes()[10 * 512:12 * 512] == new


def test_lba48_read_and_write_beyond_28_bits(tmp_path) -> None:
    lba = (1 << 28) + 5
    path = image_file(tmp_path, "big.img", size=(lba + 16) * 512)
    g, _ = disk_guest(path)
    new = pattern(512, seed=5)
    g.command(0x34, count=1, lba=lba, lba48=True)
    g.write_block(new)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    with open(path, "rb") as f:
        f.seek(lba * 512)
        assert f.read(512) == new
    g.command(0x24, count=1, lba=lba, lba48=True)
    assert g.read_block(512) == new
    g.command(0x24, count=17, lba=lba, lba48=True)        # one sector too many
    assert g.inb(P_CMD + ERROR) == IDNF


def test_hob_reads_previous_register_values(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.outb(P_CMD + LBAL, 0x11)
    g.outb(P_CMD + LBAL, 0x22)
    g.outb(P_CTL, HOB)
    assert g.inb(P_CMD + LBAL) == 0x11
    g.outb(P_CMD + COUNT, 3)                         # any command block write clears HOB
    assert g.inb(P_CMD + LBAL) == 0x22


def test_chs_addressing(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    # Cylinder 0, head 0, sector 9 is LBA 8 (sectors count from 1).
    g.command(0x20, count=1, lba=9, lba_mode=False)
    assert g.read_block(512) == image[8 * 512:9 * 512]
    g.command(0x20, count=1, lba=0, lba_mode=False)  # sector 0 does not exist
    assert g.inb(P_CMD + STATUS) & ERR and g.inb(P_CMD + ERROR) == IDNF


def test_initialize_device_parameters_changes_translation(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.command(0x91, count=8, dev=0, lba=0x03 << 24, lba_mode=False)  # 4 heads, 8 sectors/track
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    words = g.identify()
    assert (words[55], words[56]) == (4, 8)
    g.command(0x20, count=1, lba=(1 << 24) | 2, lba_mode=False)      # head 1, sector 2: LBA 9
    assert g.read_block(512) == image[9 * 512:10 * 512]
    g.command(0x91, count=0, lba_mode=False)                          # no sectors: invalid
    g.command(0x20, count=1, lba=1, lba_mode=False)
    assert g.inb(P_CMD + ERROR) == IDNF
    g.command(0x20, count=1, lba=1)                                   # LBA still works
    assert g.inb(P_CMD + STATUS) & DRQ


def test_read_write_multiple(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.command(0xC6, count=4)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    g.command(0xC4, count=10, lba=1)
    data, blocks = b"", 0
    while g.inb(P_CMD + STATUS) & DRQ:
        blocks += 1
        data += g.read_block(min(4, 10 - (blocks - 1) * 4) * 512)
    assert blocks == 3 and data == image[512:11 * 512]
    new = pattern(5 * 512, seed=1)
    g.command(0xC5, count=5, lba=20)
    g.write_block(new[:4 * 512])
    assert g.inb(P_CMD + STATUS) & DRQ
    g.write_block(new[4 * 512:])
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert disk_path.read_bytes()[20 * 512:25 * 512] == new
    g.command(0xC6, count=3)                         # not a power of two
    assert g.inb(P_CMD + STATUS) & ERR and g.inb(P_CMD + ERROR) == ABRT
    g.command(0xC6, count=0)                         # multiple mode off: READ MULTIPLE aborts
    g.command(0xC4, count=1)
    assert g.inb(P_CMD + ERROR) == ABRT


def test_request_beyond_the_end_sets_idnf(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0x20, count=2, lba=63)
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC | ERR
    assert g.inb(P_CMD + ERROR) == IDNF
    g.command(0x40, count=1, lba=64)                 # READ VERIFY too
    assert g.inb(P_CMD + ERROR) == IDNF
    g.command(0x40, count=1, lba=63)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC


def test_unknown_command_aborts(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    for command in (0x00, 0xA0, 0xA1, 0x08, 0xB0, 0xFF):
        g.command(command)
        assert g.inb(P_CMD + STATUS) == DRDY | DSC | ERR
        assert g.inb(P_CMD + ERROR) == ABRT


def test_command_while_drq_is_ignored(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.command(0x20, count=1, lba=3)
    g.outb(P_CMD + COMMAND_REG, 0xEC)
    assert g.read_block(512) == image[3 * 512:4 * 512]


def test_read_only_disk_refuses_writes(disk_path) -> None:
    g, _ = disk_guest(disk_path, readonly=True)
    before = disk_path.read_bytes()
    for command in (0x30, 0x34, 0xC5, 0xCA, 0x35):
        g.command(command, count=1, lba=1, lba48=command in (0x34, 0x35))
        assert g.inb(P_CMD + STATUS) == DRDY | DSC | ERR
        assert g.inb(P_CMD + ERROR) == ABRT
    g.command(0x20, count=1, lba=1)
    assert g.read_block(512) == before[512:1024]
    assert disk_path.read_bytes() == before


def test_partial_last_sector(tmp_path) -> None:
    path = image_file(tmp_path, "odd.img", pattern(3 * 512 + 100))
    g, disk = disk_guest(path)
    assert disk.sectors == 4
    g.command(0x20, count=1, lba=3)
    assert g.read_block(512) == pattern(3 * 512 + 100)[3 * 512:] + bytes(412)
    g.command(0x30, count=1, lba=3)
    g.write_block(b"\xAB" * 512)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert path.stat().st_size == 3 * 512 + 100      # the image never grows
    assert path.read_bytes()[3 * 512:] == b"\xAB" * 100


def test_flush_cache_calls_fsync(disk_path, monkeypatch) -> None:
    g, disk = disk_guest(disk_path)
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    for command in (0xE7, 0xEA):
        g.command(command)
        assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert synced == [disk.image.fd] * 2


def test_write_cache_off_makes_writes_durable(disk_path, monkeypatch) -> None:
    g, disk = disk_guest(disk_path)
    synced = []
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd))
    g.command(0xEF, feature=0x82)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert not g.identify()[85] & 0x20
    g.command(0x30, count=1, lba=2)
    g.write_block(bytes(512))
    assert synced == [disk.image.fd]
    g.command(0xEF, feature=0x02)
    assert g.identify()[85] & 0x20


def test_set_features_transfer_mode(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0xEF, feature=0x03, count=0x45)        # UDMA 5
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    words = g.identify()
    assert words[88] >> 8 == 0x20 and words[63] >> 8 == 0
    g.command(0xEF, feature=0x03, count=0x21)        # MWDMA 1
    words = g.identify()
    assert words[63] >> 8 == 0x02 and words[88] >> 8 == 0
    g.command(0xEF, feature=0x03, count=0x23)        # MWDMA 3 does not exist
    assert g.inb(P_CMD + ERROR) == ABRT
    g.command(0xEF, feature=0x77)                    # unknown subcommand
    assert g.inb(P_CMD + ERROR) == ABRT


def test_power_commands(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0xE0)
    g.command(0xE5)
    assert g.inb(P_CMD + STATUS) == DRDY | DSC and g.inb(P_CMD + COUNT) == 0x00   # standby
    g.command(0xE1)
    g.command(0xE5)
    assert g.inb(P_CMD + COUNT) == 0xFF                                          # active/idle
    for command in (0x10, 0x70, 0xE2, 0xE3):
        g.command(command)
        assert g.inb(P_CMD + STATUS) == DRDY | DSC


def test_execute_device_diagnostic(disk_path, iso_path) -> None:
    disk = AtaDisk(DiskImage.open(disk_path))
    cd = AtapiCdrom(DiskImage.open(iso_path, readonly=True))
    g = Guest(primary=(disk, cd))
    g.outb(P_CMD + LBAM, 0x55)
    g.outb(P_CMD + DEVICE, 0xA0)
    g.outb(P_CMD + COMMAND_REG, 0x90)
    assert g.irq14.level
    assert g.inb(P_CMD + ERROR) == 0x01
    assert [g.inb(P_CMD + r) for r in (COUNT, LBAL, LBAM, LBAH)] == [1, 1, 0, 0]
    g.outb(P_CMD + DEVICE, 0xB0)
    assert [g.inb(P_CMD + r) for r in (LBAM, LBAH)] == [0x14, 0xEB]


# -- interrupts and device selection ---------------------------------------------------------

def test_interrupt_level_follows_nien_and_status_reads(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.outb(P_CTL, NIEN)
    g.command(0xE7)
    assert not g.irq14.level                         # pending, but INTRQ is disabled
    g.outb(P_CTL, 0)
    assert g.irq14.level                             # still pending: asserted now
    assert g.inb(P_CTL) == DRDY | DSC                # Alternate Status does not clear it
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert not g.irq14.level
    assert g.irq14.history == [True, False]
    assert not g.irq15.history


def test_absent_slave(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.outb(P_CMD + DEVICE, 0xB0)
    assert g.inb(P_CMD + DEVICE) == 0xB0             # read back as written (SeaBIOS checks)
    g.outb(P_CMD + COUNT, 0x55)
    g.outb(P_CMD + LBAL, 0xAA)
    assert (g.inb(P_CMD + COUNT), g.inb(P_CMD + LBAL)) == (0x55, 0xAA)
    assert g.inb(P_CMD + STATUS) == 0 and g.inb(P_CTL) == 0 and g.inb(P_CMD + ERROR) == 0
    g.outb(P_CMD + COMMAND_REG, 0xEC)                # nobody answers
    assert g.inb(P_CMD + STATUS) == 0 and not g.irq14.history
    # Device 1's interrupt line is its own: device 0's pending interrupt does not show.
    g.outb(P_CMD + DEVICE, 0xA0)
    g.outb(P_CMD + COMMAND_REG, 0xE7)
    assert g.irq14.level
    g.outb(P_CMD + DEVICE, 0xB0)
    assert not g.irq14.level
    # After a reset the absent position shows count/LBA low 1, as SeaBIOS waits for.
    g.outb(P_CTL, SRST)
    g.outb(P_CTL, 0)
    g.outb(P_CMD + DEVICE, 0xB0)
    assert (g.inb(P_CMD + COUNT), g.inb(P_CMD + LBAL)) == (1, 1)


def test_empty_channel_floats(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    assert g.inb(S_CMD + STATUS) == 0x7F             # BSY clear: DD7 is pulled down
    assert g.inb(S_CTL) == 0x7F
    g.outb(S_CMD + COUNT, 0x55)
    assert g.inb(S_CMD + COUNT) == 0x7F
    assert g.inw(S_CMD) == 0xFF7F and g.inl(S_CMD) == 0xFF7FFF7F
    g.outb(S_CMD + COMMAND_REG, 0xEC)
    assert not g.irq15.history


def test_wide_register_accesses(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    assert g.inb(P_CMD) == 0xFF                       # the Data register is 16 bits wide
    g.bus.write(P_CMD + LBAL, 2, 0x3412)             # a word at LBA Low writes LBA Mid too
    assert g.inb(P_CMD + LBAL) == 0x12 and g.inb(P_CMD + LBAM) == 0x34
    assert g.bus.read(P_CTL, 2) == 0xFF00 | (DRDY | DSC)


# -- bus-master DMA --------------------------------------------------------------------------

def test_dma_read_into_guest_memory(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.prd_table(0x1000, [(0x10000, 1024), (0x20000, 2048)])
    g.bm_setup(0x1000, to_memory=True)
    g.command(0xC8, count=6, lba=4)
    assert g.inb(P_CTL) == DRDY | DSC | DRQ         # waiting for the engine
    assert not g.irq14.level
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_INTERRUPT             # done: Interrupt set, Active clear
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert g.mem.read(0x10000, 1024) == image[4 * 512:6 * 512]
    assert g.mem.read(0x20000, 2048) == image[6 * 512:10 * 512]
    g.outb(BM, 0)                                    # the driver stops the engine ...
    g.outb(BM + 2, BM_INTERRUPT)                     # ... and acknowledges
    assert g.bm_status() == 0


def test_dma_started_before_the_command(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    image = disk_path.read_bytes()
    g.prd_table(0x1000, [(0x10000, 0)])             # 0 means 64 KiB
    g.bm_setup(0x1000, to_memory=True)
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_ACTIVE
    g.command(0x25, count=64, lba=0, lba48=True)    # READ DMA EXT: 32 KiB of a 64 KiB entry
    assert g.bm_status() == BM_ACTIVE | BM_INTERRUPT  # table longer than the transfer
    assert g.mem.read(0x10000, 64 * 512) == image


def test_dma_write_reaches_the_file(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    new = pattern(3 * 512, seed=42)
    g.mem.write(0x30000, new[:512])
    g.mem.write(0x40000, new[512:])
    g.prd_table(0x2000, [(0x30000, 512), (0x40000, 1024)])
    g.bm_setup(0x2000, to_memory=False)
    g.command(0x35, count=3, lba=30, lba48=True)
    g.bm_start(to_memory=False)
    assert g.bm_status() == BM_INTERRUPT
    assert g.inb(P_CMD + STATUS) == DRDY | DSC
    assert disk_path.read_bytes()[30 * 512:33 * 512] == new


def test_prd_table_outside_ram_sets_error(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.bm_setup(0xFFFFF000, to_memory=True)
    g.command(0xC8, count=1, lba=0)
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_ERROR | BM_INTERRUPT
    assert g.irq14.level
    assert g.inb(P_CMD + STATUS) & ERR and g.inb(P_CMD + ERROR) & ABRT


def test_prd_buffer_outside_ram_sets_error(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.prd_table(0x1000, [(0x100000 - 256, 512)])    # runs past the end of RAM
    g.bm_setup(0x1000, to_memory=False)
    g.command(0xCA, count=1, lba=0)
    g.bm_start(to_memory=False)
    assert g.bm_status() == BM_ERROR | BM_INTERRUPT
    assert g.inb(P_CMD + STATUS) & ERR


def test_prd_table_shorter_than_the_transfer(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.prd_table(0x1000, [(0x10000, 512)])
    g.bm_setup(0x1000, to_memory=True)
    g.command(0xC8, count=2, lba=0)
    g.bm_start(to_memory=True)
    assert g.bm_status() == 0                        # SFF-8038i: neither Interrupt nor Active
    assert not g.irq14.level
    assert g.inb(P_CMD + STATUS) == DRDY | DSC


def test_prd_walk_is_bounded_by_the_64k_table_limit(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    # 512 two-byte entries without an end mark fill the table up to the 64 KiB boundary.
    g.prd_table(0xF000, [(0x20000 + 2 * i, 2) for i in range(512)], end=False)
    g.mem.write(0x10000, struct.pack("<II", 0x30000, 0x8000_0000))   # past the boundary: unused
    g.bm_setup(0xF000, to_memory=True)
    g.command(0xC8, count=4, lba=0)
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_ERROR | BM_INTERRUPT
    assert g.mem.read(0x30000, 16) == bytes(16)


def test_dma_waits_for_bus_mastering(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.ide.config_write(COMMAND, 2, CMD_IO)
    g.prd_table(0x1000, [(0x10000, 512)])
    g.bm_setup(0x1000, to_memory=True)
    g.command(0xC8, count=1, lba=1)
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_ACTIVE and not g.irq14.level
    g.ide.config_write(COMMAND, 2, CMD_IO | CMD_MASTER)
    assert g.bm_status() == BM_INTERRUPT
    assert g.mem.read(0x10000, 512) == disk_path.read_bytes()[512:1024]


def test_bus_master_registers(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.outl(BM + 4, 0x12345677)
    assert g.inl(BM + 4) == 0x12345674              # dword aligned
    g.outb(BM + 2, 0x60)                             # drive DMA-capable bits are R/W
    assert g.bm_status() == 0x60
    g.outb(BM + 8 + 2, 0x20)
    assert g.bm_status(1) == 0x20 and g.bm_status(0) == 0x60
    g.outb(BM, 0xFF)
    assert g.inb(BM) == BM_START | BM_TO_MEMORY
    assert g.bm_status() == 0x60 | BM_ACTIVE
    g.outb(BM, 0)
    assert g.bm_status() == 0x60


# -- ATAPI -----------------------------------------------------------------------------------

def test_atapi_identify(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.command(0xEC, S_CMD)                           # IDENTIFY DEVICE: abort, show signature
    assert g.inb(S_CMD + STATUS) & ERR and g.inb(S_CMD + ERROR) == ABRT
    assert (g.inb(S_CMD + LBAM), g.inb(S_CMD + LBAH)) == (0x14, 0xEB)
    words = g.identify(S_CMD, command=0xA1)
    assert words[0] >> 14 == 2 and words[0] >> 8 & 0x1F == 5 and words[0] & 0x80
    assert words[0] & 0x03 == 0                      # 12-byte packets
    text = b"".join(w.to_bytes(2, "big") for w in words[27:47]).decode().rstrip()
    assert text == "hvm DVD-ROM"
    assert words[49] & 0x0300 == 0x0300
    assert g.inb(S_CMD + STATUS) == DRDY | DSC


def test_atapi_inquiry_by_pio(iso_path) -> None:
    g = Guest(secondary=(AtapiCdrom(DiskImage.open(iso_path, readonly=True), serial="CDSERIAL"), None))
    g.packet(bytes([0x12, 0, 0, 0, 36]))
    assert g.irq15.level
    assert g.inb(S_CMD + STATUS) == DRDY | DSC | DRQ
    assert g.inb(S_CMD + COUNT) == 0x02
    assert g.inb(S_CMD + LBAM) | g.inb(S_CMD + LBAH) << 8 == 36
    data = g.read_block(36, S_CMD)
    assert g.irq15.level                             # status phase interrupt
    assert g.inb(S_CMD + STATUS) == DRDY | DSC
    assert g.inb(S_CMD + COUNT) == 0x03              # CoD and IO: command complete
    assert data[0] == 0x05 and data[1] == 0x80       # CD/DVD, removable
    assert data[8:16] == b"HVM     " and data[16:32].rstrip() == b"DVD-ROM"
    data, _ = g.packet_in(bytes([0x12, 1, 0x00, 0, 36]))    # vital product data: page list
    assert data == bytes([0x05, 0x00, 0x00, 0x02, 0x00, 0x80])
    data, _ = g.packet_in(bytes([0x12, 1, 0x80, 0, 36]))    # unit serial number
    assert data[1] == 0x80 and data[4:] == b"CDSERIAL"
    g.packet(bytes([0x12, 1, 0x83, 0, 36]))
    assert g.sense() == (0x05, 0x24, 0x00)


def test_atapi_read_capacity_and_read10_by_pio(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    iso = iso_path.read_bytes()
    data, _ = g.packet_in(bytes([0x25]))
    assert struct.unpack(">II", data) == (39, 2048)
    data, sizes = g.packet_in(bytes([0x28, 0, 0, 0, 0, 5, 0, 0, 3]), limit=2048)
    assert sizes == [2048, 2048, 2048]
    assert data == iso[5 * 2048:8 * 2048]
    data, sizes = g.packet_in(bytes([0x28, 0, 0, 0, 0, 5, 0, 0, 3]), limit=0xFFFF)
    assert sizes == [6144] and data == iso[5 * 2048:8 * 2048]
    data, sizes = g.packet_in(bytes([0x28, 0, 0, 0, 0, 0, 0, 0, 1]), limit=1001)   # odd limit
    assert sizes == [1000, 1000, 48] and data == iso[:2048]


def test_atapi_read12_by_dma(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    iso = iso_path.read_bytes()
    g.prd_table(0x1000, [(0x10000, 4096), (0x20000, 4096)])
    g.bm_setup(0x1000, to_memory=True, channel=1)
    g.packet(bytes([0xA8, 0, 0, 0, 0, 10, 0, 0, 0, 4]), dma=True)
    assert g.inb(S_CTL) == DRDY | DSC | DRQ
    g.bm_start(to_memory=True, channel=1)
    assert g.bm_status(1) == BM_INTERRUPT
    assert g.irq15.level
    assert g.inb(S_CMD + STATUS) == DRDY | DSC and g.inb(S_CMD + COUNT) == 0x03
    assert g.mem.read(0x10000, 4096) + g.mem.read(0x20000, 4096) == iso[10 * 2048:14 * 2048]


def test_atapi_read_beyond_capacity_and_request_sense(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.packet(bytes([0x28, 0, 0, 0, 0, 39, 0, 0, 2]))
    assert g.irq15.level
    assert g.inb(S_CMD + STATUS) == DRDY | DSC | ERR     # CHECK CONDITION
    assert g.inb(S_CMD + ERROR) == 0x50 | ABRT           # ILLEGAL REQUEST in bits 7:4
    assert g.inb(S_CMD + COUNT) == 0x03
    assert g.sense() == (0x05, 0x21, 0x00)               # LOGICAL BLOCK ADDRESS OUT OF RANGE
    assert g.sense() == (0x00, 0x00, 0x00)               # reported once


def test_atapi_unknown_opcode(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.packet(bytes([0xEE]))
    assert g.inb(S_CMD + STATUS) & ERR
    assert g.sense() == (0x05, 0x20, 0x00)               # INVALID COMMAND OPERATION CODE


def test_atapi_empty_drive(tmp_path) -> None:
    g, cd = cd_guest(None)
    g.packet(bytes([0x00]))                              # TEST UNIT READY
    assert g.inb(S_CMD + STATUS) & ERR
    assert g.inb(S_CMD + ERROR) >> 4 == 0x02             # NOT READY
    assert g.sense() == (0x02, 0x3A, 0x00)               # MEDIUM NOT PRESENT
    data, _ = g.packet_in(bytes([0x12, 0, 0, 0, 36]))
    assert data[0] == 0x05                               # INQUIRY needs no medium
    data, _ = g.packet_in(bytes([0x25]))
    assert data == b"" and g.sense()[0] == 0x02
    data, _ = g.packet_in(bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8]))
    assert data[2] == 4 and data[4] == 0 and data[5] & 0x02 == 0   # media class, no medium
    data, _ = g.packet_in(bytes([0x46, 0, 0, 0, 0, 0, 0, 0, 8]))
    assert data[6:8] == b"\0\0"                          # current profile: none
    # A disc goes in: the first command is told, then the drive is ready.
    cd.insert(DiskImage.open(image_file(tmp_path, "late.iso", pattern(8 * 2048)), readonly=True))
    g.packet(bytes([0x00]))
    assert g.sense() == (0x06, 0x28, 0x00)               # NOT READY TO READY CHANGE
    g.packet(bytes([0x00]))
    assert g.inb(S_CMD + STATUS) == DRDY | DSC
    data, _ = g.packet_in(bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8]))
    assert data[4] == 2 and data[5] & 0x02              # new media, present
    data, _ = g.packet_in(bytes([0x4A, 1, 0, 0, 0x10, 0, 0, 0, 8]))
    assert data[4] == 0                                  # reported once


def test_atapi_read_toc(iso_path) -> None:
    g, cd = cd_guest(iso_path)
    data, _ = g.packet_in(bytes([0x43, 0, 0, 0, 0, 0, 0, 0, 100]))
    assert struct.unpack(">HBB", data[:4]) == (18, 1, 1)
    assert data[4:12] == bytes([0, 0x14, 1, 0, 0, 0, 0, 0])
    assert data[12:20] == bytes([0, 0x14, 0xAA, 0]) + (40).to_bytes(4, "big")
    data, _ = g.packet_in(bytes([0x43, 2, 0, 0, 0, 0, 0, 0, 100]))        # MSF
    assert data[8:12] == bytes([0, 0, 2, 0])                               # 00:02:00
    assert data[16:20] == msf(40).to_bytes(4, "big") == bytes([0, 0, 2, 40])
    data, _ = g.packet_in(bytes([0x43, 0, 0, 0, 0, 0, 0xAA, 0, 100]))      # lead-out only
    assert len(data) == 12 and data[6] == 0xAA
    data, _ = g.packet_in(bytes([0x43, 0, 1, 0, 0, 0, 0, 0, 100]))         # session info
    assert data[:4] == bytes([0, 10, 1, 1]) and data[6] == 1
    data, _ = g.packet_in(bytes([0x43, 0, 0, 0, 0, 0, 0, 0, 4]))           # allocation length
    assert len(data) == 4
    g.packet(bytes([0x43, 0, 0, 0, 0, 0, 5, 0, 100]))                     # no track 5
    assert g.sense() == (0x05, 0x24, 0x00)


def test_atapi_mode_sense(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    data, _ = g.packet_in(bytes([0x5A, 0, 0x2A, 0, 0, 0, 0, 0, 100]))
    assert int.from_bytes(data[:2], "big") == len(data) - 2
    page = data[8:]
    assert page[0] == 0x2A and page[1] == len(page) - 2
    assert page[6] & 0x09 == 0x09                        # lock and eject supported
    data, _ = g.packet_in(bytes([0x5A, 0, 0x3F, 0, 0, 0, 0, 0, 200]))
    assert data[8] == 0x01 and data[8 + 12] == 0x2A      # every page: 01h then 2Ah
    data, _ = g.packet_in(bytes([0x1A, 0, 0x01, 0, 100]))                 # MODE SENSE(6)
    assert data[0] == len(data) - 1 and data[4] == 0x01
    g.packet(bytes([0x5A, 0, 0x05, 0, 0, 0, 0, 0, 100]))
    assert g.sense() == (0x05, 0x24, 0x00)
    g.packet(bytes([0x5A, 0, 0xEA, 0, 0, 0, 0, 0, 100]))                  # saved values
    assert g.sense() == (0x05, 0x39, 0x00)


def test_atapi_get_configuration_profiles(tmp_path, iso_path) -> None:
    g, _ = cd_guest(iso_path)
    data, _ = g.packet_in(bytes([0x46, 0, 0, 0, 0, 0, 0, 0, 200]))
    assert int.from_bytes(data[:4], "big") == len(data) - 4
    assert int.from_bytes(data[6:8], "big") == 0x0008                     # CD-ROM
    assert data[8:10] == b"\0\0" and data[10] & 0x03 == 0x03              # profile list first
    dvd = image_file(tmp_path, "dvd.iso", size=(CD_MAX_BLOCKS + 1) * 2048)
    g, _ = cd_guest(dvd)
    data, _ = g.packet_in(bytes([0x46, 2, 0, 0x1F, 0, 0, 0, 0, 200]))     # only the DVD Read feature
    assert int.from_bytes(data[6:8], "big") == 0x0010                     # DVD-ROM
    assert data[8:10] == b"\x00\x1F" and len(data) == 12


def test_atapi_other_commands(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    data, _ = g.packet_in(bytes([0x51, 0, 0, 0, 0, 0, 0, 0, 34]))
    assert len(data) == 34 and data[1] == 32 and data[2] & 0x03 == 0x02   # finalized disc
    data, _ = g.packet_in(bytes([0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8]))
    assert len(data) == 8
    for cdb in (bytes([0xBB, 0, 0xFF, 0xFF]), bytes([0x2B, 0, 0, 0, 0, 3]), bytes([0x1E, 0, 0, 0, 0])):
        g.packet(cdb)
        assert g.inb(S_CMD + STATUS) == DRDY | DSC


def test_atapi_eject_honours_the_lock(iso_path) -> None:
    g, cd = cd_guest(iso_path)
    g.packet(bytes([0x1E, 0, 0, 0, 1]))                  # PREVENT MEDIUM REMOVAL
    g.packet(bytes([0x1B, 0, 0, 0, 0x02]))               # eject
    assert g.sense() == (0x05, 0x53, 0x02)
    g.packet(bytes([0x1E, 0, 0, 0, 0]))
    g.packet(bytes([0x1B, 0, 0, 0, 0x02]))
    assert g.inb(S_CMD + STATUS) == DRDY | DSC
    g.packet(bytes([0x00]))
    assert g.sense() == (0x02, 0x3A, 0x00)
    data, _ = g.packet_in(bytes([0xBD, 0, 0, 0, 0, 0, 0, 0, 0, 8]))
    assert data[1] & 0x10                                # door open
    g.packet(bytes([0x1B, 0, 0, 0, 0x03]))               # load
    g.packet(bytes([0x00]))
    assert g.sense() == (0x06, 0x28, 0x00)
    g.packet(bytes([0x00]))
    assert g.inb(S_CMD + STATUS) == DRDY | DSC


def test_atapi_device_reset_during_packet(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.outb(S_CMD + DEVICE, 0xA0)
    g.outb(S_CMD + COMMAND_REG, 0xA0)
    assert g.inb(S_CMD + STATUS) & DRQ
    g.outb(S_CMD + COMMAND_REG, 0x08)                    # DEVICE RESET is allowed now
    assert not g.irq15.level
    assert g.inb(S_CMD + STATUS) == 0
    assert [g.inb(S_CMD + r) for r in (ERROR, COUNT, LBAL, LBAM, LBAH)] == [1, 1, 1, 0x14, 0xEB]


def test_atapi_with_nothing_to_transfer_by_dma(iso_path) -> None:
    g, _ = cd_guest(iso_path)
    g.packet(bytes([0x00]), dma=True)
    assert g.irq15.level
    assert g.inb(S_CMD + STATUS) == DRDY | DSC


# -- PCI function and wiring -----------------------------------------------------------------

def test_pci_identity_bar_and_timing_registers(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    ide = g.ide
    assert ide.config_read(0x00, 4) == 0x7010_8086
    assert ide.config_read(0x08, 4) >> 8 == 0x010180
    assert ide.config_read(0x0E, 1) == 0x00
    bar4 = BAR0 + 16
    ide.config_write(bar4, 4, 0xFFFFFFFF)
    assert ide.config_read(bar4, 4) == 0xFFFFFFF1    # 16 I/O ports
    ide.config_write(0x40, 4, 0xFFFFFFFF)
    assert ide.config_read(0x40, 4) == 0xF3FFF3FF    # IDETIM, bits 11:10 reserved
    ide.config_write(0x44, 1, 0xA5)
    assert ide.config_read(0x44, 1) == 0xA5
    remapped = []
    ide.on_remap = remapped.append
    ide.enable_like_firmware(0xC040)
    assert ide.config_read(0x40, 2) == 0x8000 and ide.config_read(0x42, 2) == 0x8000
    assert ide.mapping()[0] == ((4, 0xC040),)
    assert remapped


def test_attach_registers_the_legacy_ranges(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    assert g.mapped == [(0x1F0, 8, "ide0"), (0x3F6, 1, "ide0-control"),
                        (0x170, 8, "ide1"), (0x376, 1, "ide1-control")]


def test_channels_serve_threads_concurrently(tmp_path) -> None:
    paths = [image_file(tmp_path, f"d{i}.img", pattern(64 * 512, seed=i)) for i in range(2)]
    disks = [AtaDisk(DiskImage.open(p)) for p in paths]
    g = Guest(primary=(disks[0], None), secondary=(disks[1], None))
    errors = []

    def worker(base: int, path) -> None:
        image = path.read_bytes()
        for i in range(40):
            lba = i % 60
            g.command(0x20, base, count=2, lba=lba)
            data = g.read_block(512, base)
            data += g.read_block(512, base)
            if data != image[lba * 512:(lba + 2) * 512]:
                errors.append((base, lba))
    threads = [threading.Thread(target=worker, args=(b, p)) for b, p in zip((P_CMD, S_CMD), paths)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_image_errors(tmp_path) -> None:
    with pytest.raises(MissingFileError):
        DiskImage.open(tmp_path / "nope.img")
    with pytest.raises(ImageError):
        DiskImage.open(tmp_path)
    with pytest.raises(ImageError):
        AtaDisk(DiskImage.open(image_file(tmp_path, "empty.img")))


def test_host_read_error_becomes_a_device_error(disk_path) -> None:
    g, disk = disk_guest(disk_path)

    def failing_read(offset, length):
        raise OSError(5, "Input/output error")
    disk.image.read = failing_read
    g.command(0x20, count=1, lba=0)
    assert g.inb(P_CMD + STATUS) & ERR and g.inb(P_CMD + ERROR) & 0x40    # UNC
    g.prd_table(0x1000, [(0x10000, 512)])
    g.bm_setup(0x1000, to_memory=True)
    g.command(0xC8, count=1, lba=0)
    g.bm_start(to_memory=True)
    assert g.bm_status() == BM_INTERRUPT             # not a host memory error
    assert g.inb(P_CMD + ERROR) & 0x40


# -- string I/O: a run of Data register accesses at once (REP INSW/INSD/OUTSW/OUTSD) -------------
# The bulk path must be indistinguishable from the guest doing the same accesses one at a time:
# same bytes, same register file, same interrupts, same state of the transfer in progress.

def _channel_state(g: Guest) -> list:
    state = [g.irq14.history[:], g.irq15.history[:]]
    for channel in g.ide.channels:
        state.append((channel.selected, channel.control, channel._line))
        for d in channel.drives:
            state.append((d.status, d.error, d.intrq, d.count, d.lba_low, d.lba_mid, d.lba_high, d.device,
                          d._pio, d._pos, bytes(d._data), d._expect, d._then is None))
    return state


def _bulk_read(g: Guest, port: int, size: int, count: int, ask: int) -> bytes:
    """``count`` reads of ``size`` bytes done as runs of at most ``ask`` through the bus."""
    data = b""
    while len(data) < count * size:
        data += g.bus.read_string(port, size, min(ask, count - len(data) // size))
    return data


def _bulk_write(g: Guest, port: int, size: int, data: bytes, ask: int) -> None:
    pos = 0
    while pos < len(data):
        pos += g.bus.write_string(port, size, data[pos:pos + ask * size]) * size


def _single_read(g: Guest, port: int, size: int, count: int) -> bytes:
    return b"".join(g.bus.read(port, size).to_bytes(size, "little") for _ in range(count))


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("ask", [1, 3, 256, 1000, 10000])
def test_string_reads_of_ata_sectors_match_single_reads(disk_path, size, ask) -> None:
    image = disk_path.read_bytes()
    single, _ = disk_guest(disk_path)
    bulk, _ = disk_guest(disk_path)
    for g in (single, bulk):
        g.command(0x20, count=3, lba=7)                      # READ SECTORS: three DRQ blocks
    # One run longer than the three blocks: past the command's end the Data register reads 0.
    count = (3 * 512 + 64) // size
    a = _single_read(single, P_CMD, size, count)
    b = _bulk_read(bulk, P_CMD, size, count, ask)
    assert a == b == image[7 * 512:10 * 512] + bytes(64)
    assert _channel_state(single) == _channel_state(bulk)


def test_string_read_stops_at_the_end_of_the_drq_block(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0x20, count=2, lba=1)
    first = g.bus.read_string(P_CMD, 2, 1000)
    assert len(first) == 512                                 # the first sector, not into the second
    assert g.inb(P_CMD + STATUS) == DRDY | DSC | DRQ          # the next block is offered
    assert g.bus.read_string(P_CMD, 4, 10) == disk_path.read_bytes()[1024:1064]


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("ask", [1, 7, 512, 4096])
def test_string_reads_of_atapi_blocks_match_single_reads(iso_path, size, ask) -> None:
    iso = iso_path.read_bytes()
    single, _ = cd_guest(iso_path)
    bulk, _ = cd_guest(iso_path)
    # READ(10) of 3 blocks with a byte count limit of 1001: DRQ blocks of 1000 bytes and a short
    # last one (48), where a 32-bit read straddles the end of the data.
    for g in (single, bulk):
        g.packet(bytes([0x28, 0, 0, 0, 0, 5, 0, 0, 3]), limit=1001)
    count = -(-3 * 2048 // size) + 8
    a = _single_read(single, S_CMD, size, count)
    b = _bulk_read(bulk, S_CMD, size, count, ask)
    assert a == b
    assert _channel_state(single) == _channel_state(bulk)
    assert single.inb(S_CMD + STATUS) == bulk.inb(S_CMD + STATUS) == DRDY | DSC


@pytest.mark.parametrize("size", [2, 4])
@pytest.mark.parametrize("ask", [1, 5, 256, 2000])
def test_string_writes_of_ata_sectors_match_single_writes(tmp_path, size, ask) -> None:
    new = pattern(3 * 512, seed=42)
    paths = [image_file(tmp_path, f"{n}.img", pattern(64 * 512)) for n in ("single", "bulk")]
    (single, _), (bulk, _) = (disk_guest(p) for p in paths)
    for g in (single, bulk):
        g.command(0x30, count=3, lba=10)                     # WRITE SECTORS: three DRQ blocks
    extra = bytes(range(32))                                 # written after the command ended: ignored
    single.write_block(new + extra, width=size)
    _bulk_write(bulk, P_CMD, size, new + extra, ask)
    assert _channel_state(single) == _channel_state(bulk)
    assert paths[0].read_bytes() == paths[1].read_bytes()
    assert paths[1].read_bytes()[10 * 512:13 * 512] == new


def test_string_write_stops_at_the_end_of_the_drq_block(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    g.command(0x30, count=2, lba=4)
    assert g.bus.write_string(P_CMD, 2, bytes(2000)) == 256  # one sector's worth taken
    assert g.inb(P_CMD + STATUS) == DRDY | DSC | DRQ          # the second block is asked for


def test_string_io_outside_a_transfer_and_on_empty_positions(disk_path) -> None:
    g, _ = disk_guest(disk_path)
    before = _channel_state(g)
    assert g.bus.read_string(P_CMD, 2, 5) == bytes(10)       # no DRQ: the Data register reads 0
    assert g.bus.write_string(P_CMD, 4, bytes(12)) == 3      # and writes go nowhere
    assert _channel_state(g) == before
    assert g.bus.read_string(S_CMD, 2, 3) == b"\x7f\xff" * 3            # empty channel: floating bus
    assert g.bus.read_string(S_CMD, 4, 2) == b"\x7f\xff\x7f\xff" * 2
    g.outb(P_CMD + DEVICE, 0xB0)                             # the absent slave
    assert g.bus.read_string(P_CMD, 2, 4) == bytes(8)
    assert g.bus.read_string(P_CMD + STATUS, 1, 2) == bytes(2)         # other registers: one by one


def test_string_read_when_the_next_sector_cannot_be_read(disk_path) -> None:
    # The disk's own read failure: the block just read is whole, the command ends with UNC.
    image = disk_path.read_bytes()
    results = []
    for bulk in (False, True):
        g, disk = disk_guest(disk_path)
        g.command(0x20, count=2, lba=0)
        disk.image.read = lambda offset, length: (_ for _ in ()).throw(OSError(5, "Input/output error"))
        data = _bulk_read(g, P_CMD, 2, 256, 1000) if bulk else _single_read(g, P_CMD, 2, 256)
        assert data == image[:512]
        assert g.inb(P_CMD + STATUS) == DRDY | DSC | ERR and g.inb(P_CMD + ERROR) == 0x40 | ABRT
        results.append(_channel_state(g))
    assert results[0] == results[1]


def test_string_read_when_the_end_of_a_block_fails_unexpectedly(disk_path) -> None:
    # A host error the model does not catch: the read that ended the block reads 0 and the
    # command aborts, as with single reads; the reads before it keep their data.
    image = disk_path.read_bytes()
    results = []

    def failing() -> None:
        raise OSError(5, "Input/output error")
    for bulk in (False, True):
        g, _ = disk_guest(disk_path)
        g.command(0x20, count=2, lba=0)
        g.ide.channels[0].drives[0]._then = failing
        data = _bulk_read(g, P_CMD, 2, 256, 1000) if bulk else _single_read(g, P_CMD, 2, 256)
        assert data == image[:510] + bytes(2)
        assert g.inb(P_CMD + STATUS) == DRDY | DSC | ERR and g.inb(P_CMD + ERROR) == ABRT
        results.append(_channel_state(g))
    assert results[0] == results[1]
