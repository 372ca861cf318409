"""An ATAPI CD/DVD-ROM drive (the PACKET command feature set of ATA/ATAPI-6: the PACKET
command and its PIO and DMA protocols) over an ISO image of 2048-byte blocks, or empty.

The PACKET command takes a 12-byte CDB by PIO. Its data comes back by DMA when Features bit 0
asked for it, else by PIO in DRQ blocks no larger than the byte count limit the host put in
LBA Mid/High, each block's size reported there and the interrupt reason (Sector Count: CoD bit
0, IO bit 1) telling data from status. A failed command ends with CHECK CONDITION: ERR in
Status, the sense key in the Error register's high nibble, the details for REQUEST SENSE.

Images over an 80-minute CD's capacity are presented as DVD-ROM media, smaller ones as CD-ROM.
"""
from __future__ import annotations

import struct
import threading
from typing import Callable

from ...formats.ata import build_identify
from ...formats.scsi import (CapabilitiesPage, DiscInformation, ErrorRecoveryPage, EventHeader,
                             FeatureDescriptor, FeatureHeader, FixedSense, MechanismStatus,
                             MediaEvent, ModeHeader6, ModeHeader10, ProfileDescriptor,
                             ReadCapacity, StandardInquiry, TocDescriptor, TocHeader, VpdHeader)
from .ata import FIRMWARE, DiskImage, default_serial, dma_mode_words, valid_transfer_mode
from .channel import ABRT, READY, Drive

BLOCK = 2048
CD_MAX_BLOCKS = 80 * 60 * 75
CDB_SIZE = 12
# Interrupt reason (ATA/ATAPI-6, PACKET): Sector Count bit 0 CoD, bit 1 IO.
REASON_COMMAND, REASON_DATA_IN, REASON_STATUS = 0x01, 0x02, 0x03

# Sense keys (SPC-3, "Sense key and sense code definitions").
NO_SENSE, NOT_READY, MEDIUM_ERROR, ILLEGAL_REQUEST, UNIT_ATTENTION, ABORTED_COMMAND = 0, 2, 3, 5, 6, 0xB
# (key, ASC, ASCQ) of the conditions this drive reports (SPC-3 Annex D, MMC-3 Annex F).
INVALID_OPCODE = (ILLEGAL_REQUEST, 0x20, 0x00)
LBA_OUT_OF_RANGE = (ILLEGAL_REQUEST, 0x21, 0x00)
INVALID_FIELD = (ILLEGAL_REQUEST, 0x24, 0x00)
SAVING_NOT_SUPPORTED = (ILLEGAL_REQUEST, 0x39, 0x00)
REMOVAL_PREVENTED = (ILLEGAL_REQUEST, 0x53, 0x02)
MEDIUM_NOT_PRESENT = (NOT_READY, 0x3A, 0x00)
MEDIUM_CHANGED = (UNIT_ATTENTION, 0x28, 0x00)
READ_ERROR = (MEDIUM_ERROR, 0x11, 0x00)
DMA_FAULT = (ABORTED_COMMAND, 0x00, 0x00)

# Operation codes (SPC-3, MMC-3).
TEST_UNIT_READY, REQUEST_SENSE, INQUIRY, MODE_SENSE_6, START_STOP_UNIT = 0x00, 0x03, 0x12, 0x1A, 0x1B
PREVENT_ALLOW, READ_CAPACITY, READ_10, SEEK_10, READ_TOC = 0x1E, 0x25, 0x28, 0x2B, 0x43
GET_CONFIGURATION, GET_EVENT_STATUS, READ_DISC_INFORMATION, MODE_SENSE_10 = 0x46, 0x4A, 0x51, 0x5A
READ_12, SET_CD_SPEED, MECHANISM_STATUS = 0xA8, 0xBB, 0xBD
# Commands a unit attention condition does not stop (SPC-3 unit attention rules; MMC-3 adds
# GET CONFIGURATION and GET EVENT STATUS NOTIFICATION).
UNIT_ATTENTION_EXEMPT = {INQUIRY, REQUEST_SENSE, GET_CONFIGURATION, GET_EVENT_STATUS}
NEEDS_MEDIUM = {TEST_UNIT_READY, READ_CAPACITY, READ_10, READ_12, SEEK_10, READ_TOC, READ_DISC_INFORMATION}

PROFILE_NONE, PROFILE_CD_ROM, PROFILE_DVD_ROM = 0x0000, 0x0008, 0x0010
EVENT_NONE, EVENT_NEW_MEDIA, EVENT_MEDIA_REMOVAL = 0, 2, 3
MEDIA_CLASS = 0x10          # GET EVENT STATUS NOTIFICATION class bit 4
MECHANISM_TRAY = 0x20       # loading mechanism type 001b: tray
LOCK_SUPPORTED, LOCKED, EJECT_SUPPORTED = 0x01, 0x02, 0x08
READ_SPEED = 24 * 176       # kB/s of a 24x CD drive
DATA_TRACK = 0x14           # ADR 1 (Q mode 1), control 4 (data track)
LEAD_OUT = 0xAA

# ATA commands a packet device takes.
PACKET, IDENTIFY_PACKET_DEVICE, DEVICE_RESET, SET_FEATURES, CHECK_POWER_MODE = 0xA0, 0xA1, 0x08, 0xEF, 0xE5
POWER_COMMANDS = (0xE0, 0xE1, 0xE2, 0xE3)          # STANDBY/IDLE (IMMEDIATE)
SIGNATURE_COMMANDS = (0xEC, 0x20, 0x21)            # IDENTIFY DEVICE, READ SECTORS

_READ_10 = struct.Struct(">2xIxH")
_READ_12 = struct.Struct(">2xII")


class SenseError(Exception):
    """A command ending in CHECK CONDITION with this sense."""

    def __init__(self, sense: tuple[int, int, int]):
        super().__init__(f"sense {sense[0]:X}/{sense[1]:02X}/{sense[2]:02X}")
        self.sense = sense


Reply = tuple[int, Callable[[int, int], bytes]]   # (length, read(offset, count))


def _bytes(data: bytes, allocation: int) -> Reply:
    data = data[:allocation]
    return len(data), lambda offset, n: data[offset:offset + n].ljust(n, b"\0")


def msf(lba: int) -> int:
    """An address as 0/minute/second/frame, counting the 2-second pregap (MMC-3 MSF addressing)."""
    frames = lba + 150
    return min(frames // 4500, 0xFF) << 16 | frames // 75 % 60 << 8 | frames % 75


class AtapiCdrom:
    """A CD/DVD-ROM drive; ``image`` is the medium in it, or None for an empty drive."""

    packet = True

    def __init__(self, image: DiskImage | None = None, serial: str | None = None,
                 model: str = "hvm DVD-ROM", firmware: str = FIRMWARE):
        self.lock = threading.RLock()    # replaced by the channel's when plugged in
        self.image: DiskImage | None = image
        self.serial = serial or (default_serial(image) if image else "HVM00000000")
        self.model, self.firmware = model, firmware
        self.sense = (NO_SENSE, 0, 0)
        self.unit_attention = False
        self.media_event = EVENT_NONE
        self.locked = False
        self.tray_open = False
        self.transfer_mode = 0x22
        self._handlers: dict[int, Callable[[bytes], Reply | None]] = {
            TEST_UNIT_READY: lambda cdb: None, REQUEST_SENSE: self._request_sense,
            INQUIRY: self._inquiry, MODE_SENSE_6: self._mode_sense, MODE_SENSE_10: self._mode_sense,
            START_STOP_UNIT: self._start_stop, PREVENT_ALLOW: self._prevent_allow,
            READ_CAPACITY: self._read_capacity, READ_10: self._read, READ_12: self._read,
            SEEK_10: self._seek, READ_TOC: self._read_toc, GET_CONFIGURATION: self._get_configuration,
            GET_EVENT_STATUS: self._event_status, READ_DISC_INFORMATION: self._disc_information,
            SET_CD_SPEED: lambda cdb: None, MECHANISM_STATUS: self._mechanism_status,
        }

    # -- the medium ----------------------------------------------------------------------------
    @property
    def medium(self) -> bool:
        """A disc is in and the tray closed."""
        return self.image is not None and not self.tray_open

    @property
    def blocks(self) -> int:
        """The medium's capacity in 2048-byte blocks (0 without one)."""
        return -(-self.image.size // BLOCK) if self.image is not None else 0

    @property
    def profile(self) -> int:
        """The MMC profile of the medium: DVD-ROM, CD-ROM or none."""
        if not self.medium:
            return PROFILE_NONE
        return PROFILE_DVD_ROM if self.blocks > CD_MAX_BLOCKS else PROFILE_CD_ROM

    def insert(self, image: DiskImage) -> None:
        """Load a medium, as a user closing the tray on a disc: the next command that cares is
        told with UNIT ATTENTION (medium may have changed)."""
        with self.lock:
            self.image, self.tray_open = image, False
            self.unit_attention = True
            self.media_event = EVENT_NEW_MEDIA

    def eject(self) -> DiskImage | None:
        """Take the medium out (whatever the guest's lock says: the host wants it) and hand it
        back to the caller, who closes it; a transfer already under way keeps reading it."""
        with self.lock:
            image, self.image = self.image, None
            if image is not None:
                self.media_event = EVENT_MEDIA_REMOVAL
            return image

    # -- the DeviceModel protocol --------------------------------------------------------------
    def reset(self, drive: Drive) -> None:
        drive.set_signature(packet=True)
        drive.error = 0x01
        drive.status = 0x00      # a packet device leaves DRDY clear after reset

    def execute(self, drive: Drive, command: int) -> None:
        if command == PACKET:
            self._packet(drive)
        elif command == IDENTIFY_PACKET_DEVICE:
            drive.pio_in(self.identify(drive))
        elif command in SIGNATURE_COMMANDS:
            # ATA/ATAPI-6 IDENTIFY DEVICE, READ SECTORS: a packet device aborts these and shows
            # its signature, which is how a driver that knows no better finds out what it talks to.
            drive.set_signature(packet=True)
            drive.abort(ABRT)
        elif command == DEVICE_RESET:         # no interrupt
            drive.cancel()
            self.reset(drive)
        elif command == SET_FEATURES and drive.feature == 0x03 and valid_transfer_mode(drive.count):
            self.transfer_mode = drive.count
            drive.complete()
        elif command == SET_FEATURES and drive.feature in (0x66, 0xCC):   # reverting to defaults
            drive.complete()
        elif command in POWER_COMMANDS:
            drive.complete()
        elif command == CHECK_POWER_MODE:
            drive.count = 0xFF                # active or idle
            drive.complete()
        else:
            drive.abort(ABRT)

    def identify(self, drive: Drive) -> bytes:
        """The IDENTIFY PACKET DEVICE data."""
        mwdma, udma = dma_mode_words(self.transfer_mode)
        return build_identify(
            # ATAPI, CD-ROM device type, removable, DRQ within 50 us of PACKET, 12-byte CDBs.
            general=0x8000 | 0x0500 | 0x0080 | 0x0040,
            serial=self.serial, firmware=self.firmware, model=self.model,
            capabilities=0x0800 | 0x0200 | 0x0100,      # IORDY, LBA, DMA
            capabilities2=0x4000,
            valid=0x0006, mwdma=mwdma, pio_modes=0x0003,
            mwdma_min_cycle=120, mwdma_cycle=120, pio_min_cycle=120, pio_min_cycle_iordy=120,
            major_version=0x007E,
            supported1=0x0200 | 0x0010,                 # DEVICE RESET, PACKET
            supported2=0x4000, supported_ext=0x4000,
            enabled1=0x0200 | 0x0010, enabled_default=0x4000,
            udma=udma, reset_result=drive.hardware_reset_result(),
        )

    # -- the PACKET command --------------------------------------------------------------------
    def _packet(self, drive: Drive) -> None:
        if drive.feature & 0x02:              # overlapped commands are not supported
            drive.abort(ABRT)
            return
        dma = bool(drive.feature & 0x01)
        drive.count = REASON_COMMAND
        drive.pio_out(CDB_SIZE, lambda cdb: self._run(drive, cdb, dma))

    def _run(self, drive: Drive, cdb: bytes, dma: bool) -> None:
        try:
            reply = self.command(cdb)
        except SenseError as error:
            self._fail(drive, error.sense)
            return
        except OSError:
            self._fail(drive, READ_ERROR)
            return
        if reply is None or reply[0] == 0:
            self._succeed(drive)
        elif dma:
            # Last: the engine may run the transfer (and complete the command) right away.
            drive.dma(True, reply[0], read=reply[1], done=lambda: self._succeed(drive),
                      failed=lambda exc: self._fail(drive, READ_ERROR if exc else DMA_FAULT))
        else:
            self._pio(drive, *reply)

    def command(self, cdb: bytes) -> Reply | None:
        """Run one CDB: its data as (length, reader), None for none; raises SenseError."""
        opcode = cdb[0]
        if self.unit_attention and opcode not in UNIT_ATTENTION_EXEMPT:
            self.unit_attention = False
            raise SenseError(MEDIUM_CHANGED)
        handler = self._handlers.get(opcode)
        if handler is None:
            raise SenseError(INVALID_OPCODE)
        if opcode in NEEDS_MEDIUM and not self.medium:
            raise SenseError(MEDIUM_NOT_PRESENT)
        return handler(cdb)

    def _pio(self, drive: Drive, length: int, read: Callable[[int, int], bytes]) -> None:
        limit = drive.lba_high << 8 | drive.lba_mid
        # PACKET: 0 is not a valid byte count limit; an odd one is rounded down unless it ends the data.
        limit = limit or 0xFFFE
        even = limit & ~1 or 0xFFFE
        offset = 0

        def next_block() -> None:
            nonlocal offset
            left = length - offset
            n = left if left <= limit else even
            try:
                data = read(offset, n)
            except OSError:
                self._fail(drive, READ_ERROR)
                return
            offset += n
            drive.lba_mid, drive.lba_high = n & 0xFF, n >> 8
            drive.count = REASON_DATA_IN
            drive.pio_in(data, next_block if offset < length else (lambda: self._succeed(drive)))
        next_block()

    def _succeed(self, drive: Drive) -> None:
        self.sense = (NO_SENSE, 0, 0)
        drive.count = REASON_STATUS
        drive.complete(READY)

    def _fail(self, drive: Drive, sense: tuple[int, int, int]) -> None:
        self.sense = sense
        drive.count = REASON_STATUS
        # PACKET error outputs: the sense key in Error bits 7:4; ABRT when the command itself was invalid.
        drive.abort(sense[0] << 4 | (ABRT if sense[0] == ILLEGAL_REQUEST else 0))

    # -- SPC-3 commands ------------------------------------------------------------------------
    def _request_sense(self, cdb: bytes) -> Reply:
        sense = self.sense
        if self.unit_attention:
            sense, self.unit_attention = MEDIUM_CHANGED, False
        data = FixedSense.build(dict(sense_key=sense[0], asc=sense[1], ascq=sense[2]))
        return _bytes(data, cdb[4])

    def _inquiry(self, cdb: bytes) -> Reply:
        allocation = cdb[3] << 8 | cdb[4]
        if cdb[1] & 0x01:
            return _bytes(self._vpd_page(cdb[2]), allocation)
        if cdb[2]:                            # a page code without EVPD (SPC-3 INQUIRY)
            raise SenseError(INVALID_FIELD)
        data = StandardInquiry.build(dict(
            peripheral=0x05, removable=0x80,
            version=0x00,                     # no SPC version claimed, as ATAPI drives report
            response_format=0x02, additional_length=31,
            vendor="HVM", product=self.model.removeprefix("hvm ").strip(), revision=self.firmware[:4]))
        return _bytes(data, allocation)

    def _vpd_page(self, page: int) -> bytes:
        """Supported pages (00h) and the unit serial number (80h), (SPC-3 vital product data parameters)."""
        if page == 0x00:
            body = bytes([0x00, 0x80])
        elif page == 0x80:
            body = self.serial.encode("ascii")
        else:
            raise SenseError(INVALID_FIELD)
        return VpdHeader.build(dict(peripheral=0x05, page_code=page, page_length=len(body))) + body

    def _mode_sense(self, cdb: bytes) -> Reply:
        ten = cdb[0] == MODE_SENSE_10
        control, page = cdb[2] >> 6, cdb[2] & 0x3F
        allocation = cdb[7] << 8 | cdb[8] if ten else cdb[4]
        if control == 3:
            raise SenseError(SAVING_NOT_SUPPORTED)
        pages = {0x01: ErrorRecoveryPage.build(dict(read_retry_count=5, write_retry_count=5)),
                 0x2A: self._capabilities_page()}
        if page == 0x3F:
            chosen = list(pages.values())
        elif page in pages:
            chosen = [pages[page]]
        else:
            raise SenseError(INVALID_FIELD)
        if control == 1:                      # changeable values: nothing is
            chosen = [p[:2] + bytes(len(p) - 2) for p in chosen]
        body = b"".join(chosen)
        medium_type = 0x70 if not self.medium else 0x00   # 70h: no disc present (MMC-2)
        if ten:
            header = ModeHeader10.build(dict(data_length=len(body) + 6, medium_type=medium_type))
        else:
            header = ModeHeader6.build(dict(data_length=len(body) + 3, medium_type=medium_type))
        return _bytes(header + body, allocation)

    def _capabilities_page(self) -> bytes:
        return CapabilitiesPage.build(dict(
            read_media=0x0B,                  # CD-R, CD-RW, DVD-ROM
            mechanism=MECHANISM_TRAY | EJECT_SUPPORTED | LOCK_SUPPORTED | (LOCKED if self.locked else 0),
            max_read_speed=READ_SPEED, volume_levels=256, buffer_size=512,
            current_read_speed=READ_SPEED))

    def _start_stop(self, cdb: bytes) -> None:
        load_eject, start = cdb[4] & 0x02, cdb[4] & 0x01
        if not load_eject:
            return None
        if not start:
            if self.locked:
                raise SenseError(REMOVAL_PREVENTED)
            if not self.tray_open and self.image is not None:
                self.media_event = EVENT_MEDIA_REMOVAL
            self.tray_open = True
        elif self.tray_open:
            self.tray_open = False
            if self.image is not None:
                self.unit_attention = True
                self.media_event = EVENT_NEW_MEDIA
        return None

    def _prevent_allow(self, cdb: bytes) -> None:
        self.locked = bool(cdb[4] & 0x01)
        return None

    # -- block commands ------------------------------------------------------------------------
    def _read_capacity(self, cdb: bytes) -> Reply:
        return _bytes(ReadCapacity.build(dict(last_lba=self.blocks - 1, block_length=BLOCK)), 8)

    def _read(self, cdb: bytes) -> Reply | None:
        lba, count = (_READ_10 if cdb[0] == READ_10 else _READ_12).unpack_from(cdb)
        if lba + count > self.blocks:
            raise SenseError(LBA_OUT_OF_RANGE)
        image, base = self.image, lba * BLOCK
        return count * BLOCK, lambda offset, n: image.read(base + offset, n)

    def _seek(self, cdb: bytes) -> None:
        if int.from_bytes(cdb[2:6], "big") >= self.blocks:
            raise SenseError(LBA_OUT_OF_RANGE)
        return None

    # -- MMC-3 disc and drive information ------------------------------------------------------
    def _read_toc(self, cdb: bytes) -> Reply:
        as_msf = cdb[1] & 0x02
        fmt = cdb[2] & 0x0F or cdb[9] >> 6    # the format once sat in the control byte (SFF-8020i)
        track, allocation = cdb[6], cdb[7] << 8 | cdb[8]

        def address(lba: int) -> int:
            return msf(lba) if as_msf else lba

        if fmt == 0:
            if track > 1 and track != LEAD_OUT:
                raise SenseError(INVALID_FIELD)
            tracks = ([(1, 0)] if track <= 1 else []) + [(LEAD_OUT, self.blocks)]
            body = b"".join(TocDescriptor.build(dict(adr_control=DATA_TRACK, track=t, address=address(a)))
                            for t, a in tracks)
        elif fmt == 1:                        # session information: one session, track 1 at 0
            body = TocDescriptor.build(dict(adr_control=DATA_TRACK, track=1, address=address(0)))
        else:
            raise SenseError(INVALID_FIELD)
        header = TocHeader.build(dict(data_length=len(body) + 2, first=1, last=1))
        return _bytes(header + body, allocation)

    def _get_configuration(self, cdb: bytes) -> Reply:
        requested, start, allocation = cdb[1] & 0x03, cdb[2] << 8 | cdb[3], cdb[7] << 8 | cdb[8]
        if requested == 3:
            raise SenseError(INVALID_FIELD)
        profile = self.profile
        medium = profile != PROFILE_NONE
        removable = MECHANISM_TRAY | EJECT_SUPPORTED | LOCK_SUPPORTED | (LOCKED if self.locked else 0)
        features = [   # (code, persistent, current, body): MMC-3 features
            (0x0000, True, True, b"".join(ProfileDescriptor.build(dict(profile=p, current=int(p == profile)))
                                          for p in (PROFILE_DVD_ROM, PROFILE_CD_ROM))),
            (0x0001, True, True, (2).to_bytes(4, "big")),          # core: physical interface ATAPI
            (0x0003, True, True, bytes([removable, 0, 0, 0])),     # removable medium
            (0x0010, False, medium, BLOCK.to_bytes(4, "big") + (16 if profile == PROFILE_DVD_ROM else 1)
             .to_bytes(2, "big") + bytes(2)),                       # random readable
            (0x001E, False, profile == PROFILE_CD_ROM, bytes(4)),  # CD read
            (0x001F, False, profile == PROFILE_DVD_ROM, b""),      # DVD read
        ]
        body = b""
        for code, persistent, current, data in features:
            if code < start or (requested == 1 and not current) or (requested == 2 and code != start):
                continue
            flags = (0x02 if persistent else 0) | (0x01 if current else 0)
            body += FeatureDescriptor.build(dict(code=code, flags=flags, additional_length=len(data))) + data
        header = FeatureHeader.build(dict(data_length=len(body) + 4, current_profile=profile))
        return _bytes(header + body, allocation)

    def _event_status(self, cdb: bytes) -> Reply:
        if not cdb[1] & 0x01:                 # only polled operation (MMC-3)
            raise SenseError(INVALID_FIELD)
        allocation = cdb[7] << 8 | cdb[8]
        if not cdb[4] & MEDIA_CLASS:
            header = EventHeader.build(dict(data_length=2, notification_class=0x80,   # NEA
                                            supported_classes=MEDIA_CLASS))
            return _bytes(header, allocation)
        event, self.media_event = self.media_event, EVENT_NONE
        status = (0x02 if self.medium else 0) | (0x01 if self.tray_open else 0)
        data = (EventHeader.build(dict(data_length=6, notification_class=4, supported_classes=MEDIA_CLASS))
                + MediaEvent.build(dict(event_code=event, media_status=status)))
        return _bytes(data, allocation)

    def _disc_information(self, cdb: bytes) -> Reply:
        if cdb[1] & 0x07:                     # only the standard disc information block
            raise SenseError(INVALID_FIELD)
        data = DiscInformation.build(dict(
            data_length=32,
            status=0x0E,                      # last session complete, disc finalized
            first_track=1, sessions_lsb=1, first_track_last_session_lsb=1, last_track_last_session_lsb=1,
            flags=0x20,                       # unrestricted use
            last_session_leadin=0xFFFFFFFF, last_leadout=0xFFFFFFFF))
        return _bytes(data, cdb[7] << 8 | cdb[8])

    def _mechanism_status(self, cdb: bytes) -> Reply:
        data = MechanismStatus.build(dict(mechanism=0x10 if self.tray_open else 0))
        return _bytes(data, cdb[8] << 8 | cdb[9])


__all__ = ["AtapiCdrom", "BLOCK", "SenseError", "msf"]
