"""``--disk PATH[,ro][,bootindex=N]`` and ``--cdrom ISO[,bootindex=N]`` as MachineConfig reads them,
and the firmware paths the PC board writes into fw_cfg's "bootorder" (QEMU's format)."""
from __future__ import annotations

import pytest

from hvm.boards.pc import ide_boot_path
from hvm.config import DiskSpec, MachineConfig
from hvm.errors import ConfigError


@pytest.mark.parametrize("spec,expected", [
    ("a.img", DiskSpec("a.img")),
    ("a.img,ro", DiskSpec("a.img", readonly=True)),
    ("a.img,rw", DiskSpec("a.img")),
    ("a.img,bootindex=2", DiskSpec("a.img", bootindex=2)),
    ("a.img,ro,bootindex=0", DiskSpec("a.img", readonly=True, bootindex=0)),
    ("a.img,bootindex=1,ro", DiskSpec("a.img", readonly=True, bootindex=1)),
    ("my,disk.img,ro", DiskSpec("my,disk.img", readonly=True)),       # commas stay in the name
    ("ro", DiskSpec("ro")),                                             # a file called ro
])
def test_disk_options_are_taken_off_the_end(spec, expected):
    assert DiskSpec.parse(spec) == expected


def test_a_cdrom_takes_only_a_bootindex():
    assert DiskSpec.parse("x.iso,bootindex=3", "--cdrom") == DiskSpec("x.iso", bootindex=3)
    with pytest.raises(ConfigError, match="read-only"):
        DiskSpec.parse("x.iso,rw", "--cdrom")


def test_one_bootindex_per_drive(tmp_path):
    a, b = tmp_path / "a.img", tmp_path / "b.iso"
    a.write_bytes(bytes(512))
    b.write_bytes(bytes(512))
    with pytest.raises(ConfigError, match="bootindex 1 is given to two drives"):
        MachineConfig(machine="pc", disks=[f"{a},bootindex=1"], cdrom=f"{b},bootindex=1").validate()
    config = MachineConfig(machine="pc", disks=[f"{a},bootindex=1"], cdrom=f"{b},bootindex=0").validate()
    assert config.cdrom == DiskSpec(str(b), bootindex=0)


def test_ide_places_have_qemus_firmware_paths():
    # QEMU's bootorder for ide.0 unit 0 ... ide.1 unit 1 on the PIIX3 IDE function at 00:01.1;
    # SeaBIOS's build_ata_path matches "/pci@i0cf8/*@1,1/drive@CHANNEL/disk@UNIT".
    assert [ide_boot_path(i) for i in range(4)] == [
        "/pci@i0cf8/ide@1,1/drive@0/disk@0", "/pci@i0cf8/ide@1,1/drive@0/disk@1",
        "/pci@i0cf8/ide@1,1/drive@1/disk@0", "/pci@i0cf8/ide@1,1/drive@1/disk@1"]
