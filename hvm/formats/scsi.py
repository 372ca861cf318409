"""The SCSI replies an ATAPI CD/DVD drive sends (big-endian throughout): fixed-format sense
data, standard INQUIRY data and vital product data pages (SPC-3), and the MMC-3 structures for
READ CAPACITY, READ TOC/PMA/ATIP, MODE SENSE pages 0x01 and 0x2A (in the MMC-2 layout drivers
parse), GET CONFIGURATION, GET EVENT STATUS NOTIFICATION, READ DISC INFORMATION and MECHANISM
STATUS."""
from __future__ import annotations

from construct import Bytes, Default, ExprAdapter, Int8ub, Int16ub, Int32ub, Padding, Struct


def SpaceString(length: int):
    """A fixed-width ASCII field padded with spaces (SPC-3)."""
    return Default(ExprAdapter(Bytes(length), lambda obj, ctx: obj.decode("ascii").rstrip(" "),
                               lambda obj, ctx: obj.encode("ascii")[:length].ljust(length, b" ")), "")


B, H, L = Default(Int8ub, 0), Default(Int16ub, 0), Default(Int32ub, 0)

FixedSense = Struct(
    "response_code" / Default(Int8ub, 0x70),    # current error, fixed format
    Padding(1),
    "sense_key" / B,
    "information" / L,
    "additional_length" / Default(Int8ub, 10),
    "command_specific" / L,
    "asc" / B,
    "ascq" / B,
    Padding(4),
)
assert FixedSense.sizeof() == 18

StandardInquiry = Struct(
    "peripheral" / B,             # qualifier and device type (5: CD/DVD)
    "removable" / B,              # bit 7 RMB
    "version" / B,
    "response_format" / B,
    "additional_length" / B,      # bytes after this one
    Padding(3),
    "vendor" / SpaceString(8),
    "product" / SpaceString(16),
    "revision" / SpaceString(4),
)
assert StandardInquiry.sizeof() == 36

VpdHeader = Struct("peripheral" / B, "page_code" / B, "page_length" / H)   # SPC-3 VPD page header

ReadCapacity = Struct("last_lba" / L, "block_length" / L)

TocHeader = Struct("data_length" / H, "first" / B, "last" / B)
TocDescriptor = Struct(
    Padding(1),
    "adr_control" / B,            # ADR (high nibble) and Control (low nibble)
    "track" / B,
    Padding(1),
    "address" / L,                # an LBA, or 0 M S F
)

ModeHeader6 = Struct("data_length" / B, "medium_type" / B, "device_specific" / B,
                     "block_descriptor_length" / B)
ModeHeader10 = Struct("data_length" / H, "medium_type" / B, "device_specific" / B, Padding(2),
                      "block_descriptor_length" / H)

ErrorRecoveryPage = Struct(
    "page_code" / Default(Int8ub, 0x01),
    "page_length" / Default(Int8ub, 0x0A),
    "flags" / B,
    "read_retry_count" / B,
    Padding(4),
    "write_retry_count" / B,
    Padding(3),
)
assert ErrorRecoveryPage.sizeof() == 12

CapabilitiesPage = Struct(
    "page_code" / Default(Int8ub, 0x2A),
    "page_length" / Default(Int8ub, 0x14),
    "read_media" / B,             # CD-R, CD-RW, method 2, DVD-ROM ...
    "write_media" / B,
    "features1" / B,              # audio play, mode 2 form 1/2, multi-session
    "features2" / B,              # CD-DA commands, accurate stream
    "mechanism" / B,              # lock, lock state, eject, loading mechanism type
    "features3" / B,
    "max_read_speed" / H,         # kB/s
    "volume_levels" / H,
    "buffer_size" / H,            # KiB
    "current_read_speed" / H,
    Padding(1),
    "digital_output" / B,
    "max_write_speed" / H,
    "current_write_speed" / H,
)
assert CapabilitiesPage.sizeof() == 22

FeatureHeader = Struct("data_length" / L, Padding(2), "current_profile" / H)
# flags: version (bits 5:2), persistent (bit 1), current (bit 0)
FeatureDescriptor = Struct("code" / H, "flags" / B, "additional_length" / B)
ProfileDescriptor = Struct("profile" / H, "current" / B, Padding(1))

EventHeader = Struct("data_length" / H, "notification_class" / B, "supported_classes" / B)
MediaEvent = Struct("event_code" / B, "media_status" / B, "start_slot" / B, "end_slot" / B)

DiscInformation = Struct(
    "data_length" / H,            # bytes after this field
    "status" / B,                 # erasable, last session state, disc status
    "first_track" / B,
    "sessions_lsb" / B,
    "first_track_last_session_lsb" / B,
    "last_track_last_session_lsb" / B,
    "flags" / B,                  # DID_V, DBC_V, URU
    "disc_type" / B,
    "sessions_msb" / B,
    "first_track_last_session_msb" / B,
    "last_track_last_session_msb" / B,
    "disc_id" / L,
    "last_session_leadin" / L,
    "last_leadout" / L,
    Padding(10),                  # disc bar code, application code, OPC table count
)
assert DiscInformation.sizeof() == 34

MechanismStatus = Struct(
    "changer" / B,                # fault, changer state, current slot
    "mechanism" / B,              # mechanism state, door open
    "current_lba" / Default(ExprAdapter(Bytes(3), lambda obj, ctx: int.from_bytes(obj, "big"),
                                        lambda obj, ctx: obj.to_bytes(3, "big")), 0),
    "slots" / B,
    "slot_table_length" / H,
)
assert MechanismStatus.sizeof() == 8

__all__ = ["CapabilitiesPage", "DiscInformation", "ErrorRecoveryPage", "EventHeader",
           "FeatureDescriptor", "FeatureHeader", "FixedSense", "MechanismStatus", "MediaEvent",
           "ModeHeader10", "ModeHeader6", "ProfileDescriptor", "ReadCapacity", "SpaceString",
           "StandardInquiry", "TocDescriptor", "TocHeader", "VpdHeader"]
