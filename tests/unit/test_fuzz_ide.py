"""The PIIX3 IDE controller in the device fuzzer (``fuzz_harness``, run by the same test body as
``test_fuzz_devices``): random port accesses to both channels and the bus-master registers,
with dictionaries for ATA commands, ATAPI packets and DMA starts, PRD tables the "guest" writes
anywhere (inside RAM or not), media changes and bus-master enable flips. Disk and CD images
are memfds, so nothing touches the file system."""
from __future__ import annotations

import os
import struct

import pytest
from hypothesis import given, strategies as st

import test_fuzz_devices as fuzz
from fuzz_harness import FakeClock, Rig, counting_line, device

from hvm.devices.ide import AtaDisk, AtapiCdrom, DiskImage, PiixIde
from hvm.devices.ide.channel import DRQ, ERR, NIEN
from hvm.devices.pci.config import CMD_IO, CMD_MASTER, COMMAND
from hvm.memory import GuestMemory

BM_PORT = 0xC000
RAM = 64 << 10
ATA_COMMANDS = (0x20, 0x24, 0x29, 0x30, 0x34, 0x39, 0xC4, 0xC5, 0xC6, 0xC8, 0x25, 0xCA, 0x35,
                0x40, 0x42, 0xE7, 0xEA, 0xEF, 0x91, 0x10, 0x70, 0xE0, 0xE1, 0xE5, 0x90, 0xEC,
                0xA0, 0xA1, 0x08, 0x00, 0xFF)
CDB_OPCODES = (0x00, 0x03, 0x12, 0x1A, 0x1B, 0x1E, 0x25, 0x28, 0x2B, 0x43, 0x46, 0x4A, 0x51, 0x5A,
               0xA8, 0xBB, 0xBD, 0xEE)


def memfd_image(size: int, readonly: bool = False, seed: int = 0) -> DiskImage:
    """An image of ``size`` patterned bytes in anonymous memory."""
    fd = os.memfd_create("hvm-fuzz-image", os.MFD_CLOEXEC)
    seed &= 0xFF
    data = memoryview((bytes(range(seed, 256)) + bytes(range(seed))) * (size // 256) + bytes(size % 256))
    while data:
        data = data[os.write(fd, data):]
    return DiskImage(fd, readonly=readonly, path="memfd", owns_fd=True)


def _ide_rig(clock: FakeClock, primary, secondary, images) -> Rig:
    rig = Rig(clock)
    mem = GuestMemory(RAM)
    ide = PiixIde(mem, counting_line(14), counting_line(15), primary, secondary)
    ide.config_write(COMMAND, 2, CMD_IO | CMD_MASTER)
    ide.attach(lambda base, length, dev, _name: rig.port(base, length, dev, dev.channel))
    rig.port(BM_PORT, 16, ide.busmaster)
    for channel in ide.channels:
        for drive in channel.drives:
            rig._model(drive)
            if drive.model is not None:
                rig._model(drive.model)
    for engine in ide.busmaster.channels:
        rig._model(engine)
    # A PIO block is at most 16 sectors (READ MULTIPLE) or one 64 KiB ATAPI DRQ block.
    rig.container_limits["_data"] = 0x10000
    sizes = [(image, image.size) for image in images]

    def prd_table(n: int) -> None:
        # Entries at one of a few table pages, buffers inside RAM or just past its end.
        table = (n & 0x7) * 0x1000 + (n >> 3 & 0x7) * 8
        address = (n >> 6 & 0x1F) * 0x800 + (RAM - 0x400 if n >> 11 & 1 else 0)
        count, end = n >> 12 & 0xFFFF, n >> 28 & 1
        mem.write(table, struct.pack("<II", address, count | end << 31))
    rig.inputs.append(("guest writes a PRD entry", prd_table))

    def bus_mastering(n: int) -> None:
        ide.config_write(COMMAND, 2, CMD_IO | (CMD_MASTER if n & 1 else 0))
    rig.inputs.append(("firmware flips bus mastering", bus_mastering))

    def media(n: int) -> None:
        for model in (d.model for c in ide.channels for d in c.drives):
            if isinstance(model, AtapiCdrom):
                if n & 1:
                    model.eject()
                else:
                    model.insert(memfd_image(2048 * (1 + n % 5), readonly=True, seed=n))
    rig.inputs.append(("host changes the CD", media))

    def port(chan: int) -> int:
        return 0x1F0 if chan == 0 else 0x170

    @rig.sequence("ATA command", 1, 1, 8, 6, 8, 1, 1, 5)
    def _ata(chan: int, dev: int, feature: int, count: int, lba: int, lba_mode: int, ext: int, which: int):
        # Small counts and LBAs: most commands address the disk, the rest are out of range.
        base = port(chan)
        return [("pio", base + 6, 1, 0xA0 | dev << 4 | lba_mode << 6), ("pio", base + 1, 1, 0),
                ("pio", base + 2, 1, 0), ("pio", base + 3, 1, 0), ("pio", base + 4, 1, 0),
                ("pio", base + 5, 1, ext), ("pio", base + 1, 1, feature), ("pio", base + 2, 1, count),
                ("pio", base + 3, 1, lba), ("pio", base + 4, 1, 0), ("pio", base + 5, 1, 0),
                ("pio", base + 7, 1, ATA_COMMANDS[which % len(ATA_COMMANDS)])]

    @rig.sequence("ATAPI packet", 1, 1, 1, 16, 5, 5, 5, 16)
    def _packet(chan: int, dev: int, dma: int, limit: int, which: int, lba: int, length: int, alloc: int):
        base = port(chan)
        cdb = bytes([CDB_OPCODES[which % len(CDB_OPCODES)], length & 0x03, *lba.to_bytes(4, "big"),
                     *length.to_bytes(4, "big"), *alloc.to_bytes(2, "big")])
        return ([("pio", base + 6, 1, 0xA0 | dev << 4), ("pio", base + 1, 1, dma),
                 ("pio", base + 4, 1, limit & 0xFF), ("pio", base + 5, 1, limit >> 8),
                 ("pio", base + 7, 1, 0xA0)]
                + [("pio", base, 2, int.from_bytes(cdb[i:i + 2], "little")) for i in range(0, 12, 2)])

    def drain(n: int) -> None:
        # What a driver does after a data-in command: read words while DRQ stays set.
        base = port(n & 1)
        for _ in range(4096):
            if not rig.pio.read(base + 0x206, 1) & DRQ:
                break
            rig.pio.read(base, 4 if n & 2 else 2)
    rig.inputs.append(("guest reads the Data register while DRQ is set", drain))

    @rig.sequence("bus-master start", 1, 3, 1, 1)
    def _dma(chan: int, page: int, to_memory: int, clear: int):
        bm = BM_PORT + 8 * chan
        return [("pio", bm, 1, 0), ("pio", bm + 4, 4, page * 0x1000),
                ("pio", bm + 2, 1, 0x06 if clear else 0), ("pio", bm, 1, 1 | to_memory << 3)]

    @rig.sequence("DMA command with the engine started", 1, 1, 3, 2, 8, 8)
    def _dma_command(chan: int, dev: int, page: int, which: int, count: int, lba: int):
        # READ DMA, WRITE DMA, READ DMA EXT, or an ATAPI READ(10) by DMA.
        base, bm = port(chan), BM_PORT + 8 * chan
        start = [("pio", bm, 1, 0), ("pio", bm + 4, 4, page * 0x1000), ("pio", bm + 2, 1, 0x06),
                 ("pio", bm, 1, 1 | (0 if which == 1 else 8)), ("pio", base + 6, 1, 0xE0 | dev << 4)]
        if which == 3:
            cdb = bytes([0x28, 0, 0, 0, 0, lba & 0x1F, 0, 0, count & 0x1F, 0, 0, 0])
            return start + [("pio", base + 1, 1, 1), ("pio", base + 7, 1, 0xA0)] + [
                ("pio", base, 2, int.from_bytes(cdb[i:i + 2], "little")) for i in range(0, 12, 2)]
        return start + [("pio", base + 2, 1, 0), ("pio", base + 3, 1, 0), ("pio", base + 4, 1, 0),
                        ("pio", base + 5, 1, 0), ("pio", base + 2, 1, count), ("pio", base + 3, 1, lba),
                        ("pio", base + 7, 1, (0xC8, 0xCA, 0x25)[which])]

    @rig.sequence("software reset pulse", 1, 1)
    def _srst(chan: int, nien: int):
        return [("pio", port(chan) + 0x206, 1, 0x04 | nien << 1), ("pio", port(chan) + 0x206, 1, nien << 1)]

    for channel in ide.channels:
        rig.must(f"{channel.name}: one device selected", lambda c=channel: c.selected in (0, 1))
        rig.must(f"{channel.name}: the line follows the selected device's INTRQ and nIEN",
                 lambda c=channel: c.irq.level == (c.current.present and c.current.intrq
                                                   and not c.control & NIEN))
        rig.must(f"{channel.name}: a waiting DMA belongs to a device showing DRQ",
                 lambda c=channel: c.pending is None or (c.pending.drive.status & DRQ and c.pending.length > 0))
        for drive in channel.drives:
            rig.must(f"{channel.name}.{drive.unit}: registers are bytes",
                     lambda d=drive: all(0 <= getattr(d, r) <= 0xFF for r in
                                         ("feature", "count", "lba_low", "lba_mid", "lba_high", "device",
                                          "status", "error", "hob_count", "hob_lba_low")))
            rig.must(f"{channel.name}.{drive.unit}: a PIO transfer stays inside its block",
                     lambda d=drive: d._pio is None or (d._pos <= len(d._data) if d._pio == "in"
                                                        else len(d._data) < d._expect))
            rig.must(f"{channel.name}.{drive.unit}: DRQ only with a transfer",
                     lambda d=drive, c=channel: not d.status & DRQ or d._pio is not None
                     or (c.pending is not None and c.pending.drive is d))
    for engine in ide.busmaster.channels:
        rig.must("bus-master registers keep their reserved bits clear",
                 lambda e=engine: not e.status & 0x98 and not e.command & ~0x09 and not e.prd & 3)
    rig.must("images never grow", lambda: all(os.fstat(i.fd).st_size == s for i, s in sizes))
    rig.must("no device shows ERR and DRQ together",
             lambda: all(d.status & (DRQ | ERR) != DRQ | ERR for c in ide.channels for d in c.drives))
    return rig


@device("piix-ide")
def _piix_ide(clock: FakeClock) -> Rig:
    """A disk alone on the primary channel; a CD and a read-only disk on the secondary."""
    # 512 sectors: every count (0 is 256) at every 8-bit LBA the ATA sequence draws fits.
    disk, cd_image, ro = memfd_image(256 << 10), memfd_image(16 << 11, True, 3), memfd_image(8 << 10, True, 5)
    return _ide_rig(clock, (AtaDisk(disk), None), (AtapiCdrom(cd_image), AtaDisk(ro)), [disk, ro])


@device("piix-ide-sparse")
def _piix_ide_sparse(clock: FakeClock) -> Rig:
    """No device on the primary channel; an empty CD drive alone as device 1 on the secondary."""
    return _ide_rig(clock, (None, None), (None, AtapiCdrom()), [])


NAMES = ["piix-ide", "piix-ide-sparse"]
for _name in NAMES:
    fuzz.STEP_STRATEGIES.setdefault(_name, fuzz.steps_for(_name))


@pytest.mark.parametrize("name", NAMES)
@fuzz.FUZZ
@given(data=st.data())
def test_ide_survives_random_guests(name: str, data) -> None:
    fuzz.test_device_survives_random_guests.hypothesis.inner_test(name, data)
