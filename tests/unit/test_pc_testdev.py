"""pc-testdev's register and interrupt lines as QEMU's hw/misc/pc-testdev.c and its memory core
define them (a wide write to a byte-wide region becomes byte writes at consecutive offsets)."""
from __future__ import annotations

from hvm.bus import MmioBus, PortIOBus
from hvm.devices.pc_testdev import IOMEM_BASE, IOMEM_SIZE, PcTestdev


def _rig():
    lines = {}
    dev = PcTestdev(lambda gsi, level: lines.__setitem__(gsi, level))
    pio, mmio = PortIOBus(), MmioBus()
    dev.attach(lambda b, n, d, name: pio.register(b, n, d, name), lambda b, n, d, name: mmio.register(b, n, d, name))
    return dev, pio, mmio, lines


def test_scratch_register_at_every_width_and_offset():
    dev, pio, _, _ = _rig()
    pio.write(0xE0, 4, 0x12345678)
    pio.write(0xE1, 1, 0xAB)
    assert pio.read(0xE0, 4) == 0x1234AB78
    assert pio.read(0xE2, 2) == 0x1234
    pio.write(0xE2, 4, 0xFFFFFFFF)          # what would land above bit 31 is lost
    assert pio.read(0xE0, 4) == 0xFFFFAB78
    assert pio.read(0xE9, 1) == 0xAB         # the byte-wide twin shows the same register


def test_a_wide_write_drives_consecutive_lines():
    _, pio, _, lines = _rig()
    pio.write(0x200B, 4, 1)                  # kvm-unit-tests' realmode: outl $1 to line 11
    assert lines == {11: True, 12: False, 13: False, 14: False}
    pio.write(0x2016, 2, 0x0101)             # lines 22 and 23; nothing past the last
    assert lines[22] and lines[23] and 24 not in lines


def test_io_memory_keeps_what_is_written():
    _, _, mmio, _ = _rig()
    mmio.write(IOMEM_BASE + 0x10, 2, 0x1122)
    assert mmio.read(IOMEM_BASE + 0xE, 4) == 0x11220000
    mmio.write(IOMEM_BASE + IOMEM_SIZE - 1, 4, 0xAABBCCDD)   # runs off the end: the first byte stays
    assert mmio.read(IOMEM_BASE + IOMEM_SIZE - 1, 1) == 0xDD
