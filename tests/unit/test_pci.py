"""The PCI configuration-space model and configuration mechanism #1, against the PCI Local Bus
Specification 3.0 (BAR sizing §6.2.5.1, CONFIG_ADDRESS §3.2.2.3.2), with no VM."""
from __future__ import annotations

from hvm.bus import MmioBus, PortIOBus
from hvm.devices.base import Device
from hvm.devices.pci.chipset import I440fxHostBridge, Piix3Isa, Piix4Pm
from hvm.devices.pci.config import PciFunction
from hvm.devices.pci.host import BusOps, PciHost, devfn


class Recorder(Device):
    def __init__(self):
        self.writes = []

    def read(self, offset, size):
        return 0x1234

    def write(self, offset, size, value):
        self.writes.append((offset, size, value))


def _machine():
    pio, mmio = PortIOBus(), MmioBus()
    host = PciHost(BusOps(pio.register, pio.unregister, mmio.register, mmio.unregister))
    host.attach(pio.register)
    return pio, mmio, host


def cfg_read(pio, slot, reg, size=4):
    pio.write(0xCF8, 4, 0x80000000 | slot << 8 | reg & 0xFC)
    return pio.read(0xCFC + (reg & 3), size)


def cfg_write(pio, slot, reg, size, value):
    pio.write(0xCF8, 4, 0x80000000 | slot << 8 | reg & 0xFC)
    pio.write(0xCFC + (reg & 3), size, value)


def test_ids_and_absent_functions():
    pio, _, host = _machine()
    host.add(devfn(0), I440fxHostBridge(lambda pam: None))
    assert cfg_read(pio, devfn(0), 0) == 0x12378086
    assert cfg_read(pio, devfn(0), 0x2C) == 0x11001AF4          # QEMU's subsystem, as SeaBIOS checks
    assert cfg_read(pio, devfn(0), 0x0A, 2) == 0x0600           # host bridge class
    assert cfg_read(pio, devfn(5), 0) == 0xFFFFFFFF             # nothing there
    pio.write(0xCF8, 4, 0x00000000)                             # enable bit clear: no cycle
    assert pio.read(0xCFC, 4) == 0xFFFFFFFF
    pio.write(0xCF8, 4, 0x80010000)                             # bus 1 does not exist
    assert pio.read(0xCFC, 4) == 0xFFFFFFFF


def test_config_address_takes_only_dwords():
    pio, _, host = _machine()
    pio.write(0xCF8, 4, 0x80000804)
    pio.write(0xCF8, 1, 0x00)            # a byte write is not CONFIG_ADDRESS
    assert pio.read(0xCF8, 4) == 0x80000804
    assert pio.read(0xCF8, 2) == 0xFFFF


def test_read_only_fields_stay():
    pio, _, host = _machine()
    host.add(devfn(1), Piix3Isa())
    cfg_write(pio, devfn(1), 0, 4, 0)
    assert cfg_read(pio, devfn(1), 0) == 0x70008086
    assert cfg_read(pio, devfn(1), 0x0E, 1) == 0x80             # multi-function header


def test_io_bar_sizing_placement_and_command_bit():
    pio, _, host = _machine()
    f = PciFunction(0x1234, 0x5678, 0x010180)
    dev = Recorder()
    f.add_bar(4, 16, "io", dev, name="bm")
    host.add(devfn(3), f)
    cfg_write(pio, devfn(3), 0x20, 4, 0xFFFFFFFF)
    assert cfg_read(pio, devfn(3), 0x20) == 0xFFFFFFF1          # size 16, I/O space indicator
    cfg_write(pio, devfn(3), 0x20, 4, 0xC040)
    assert pio.read(0xC040, 1) == 0xFF                          # I/O decode off in Command
    cfg_write(pio, devfn(3), 0x04, 2, 0x0001)
    assert pio.read(0xC042, 2) == 0x1234
    pio.write(0xC043, 1, 7)
    assert dev.writes == [(3, 1, 7)]
    cfg_write(pio, devfn(3), 0x20, 4, 0xC080)                   # moved
    assert pio.read(0xC040, 1) == 0xFF and pio.read(0xC080, 2) == 0x1234
    cfg_write(pio, devfn(3), 0x04, 2, 0)
    assert pio.read(0xC080, 2) == 0xFFFF


def test_memory_bars_rom_and_collisions():
    pio, mmio, host = _machine()
    f = PciFunction(0x1234, 0x1111, 0x030000)
    f.add_bar(0, 16 << 20, "mem", Recorder(), prefetch=True)
    f.add_bar(2, 4096, "mem64", Recorder())
    f.set_rom(b"\x55\xaa" + bytes(3000))
    host.add(devfn(2), f)
    cfg_write(pio, devfn(2), 0x10, 4, 0xFFFFFFFF)
    assert cfg_read(pio, devfn(2), 0x10) == 0xFF000008          # 16 MiB, prefetchable, 32-bit
    cfg_write(pio, devfn(2), 0x18, 4, 0xFFFFFFFF)
    assert cfg_read(pio, devfn(2), 0x18) == 0xFFFFF004          # 4 KiB, 64-bit type
    cfg_write(pio, devfn(2), 0x30, 4, 0xFFFFFFFF)
    assert cfg_read(pio, devfn(2), 0x30) == 0xFFFFF001          # 4 KiB ROM (3002 bytes rounded up)
    cfg_write(pio, devfn(2), 0x10, 4, 0xFD000000)
    cfg_write(pio, devfn(2), 0x18, 4, 0xFEBF0000)
    cfg_write(pio, devfn(2), 0x1C, 4, 0)
    cfg_write(pio, devfn(2), 0x30, 4, 0xFEBE0001)
    cfg_write(pio, devfn(2), 0x04, 2, 0x0002)
    assert mmio.read(0xFD000010, 4) == 0x1234 and mmio.read(0xFEBF0000, 2) == 0x1234
    assert mmio.read(0xFEBE0000, 2) == 0xAA55
    # A BAR placed over another one decodes nothing, and the VMM carries on.
    cfg_write(pio, devfn(2), 0x18, 4, 0xFD000000)
    assert mmio.read(0xFD000000, 4) == 0x1234 and mmio.lookup(0xFEBF0000) is None


def test_pam_registers_reach_the_board():
    seen = []
    bridge = I440fxHostBridge(seen.append)
    bridge.config_write(0x58, 4, 0x33333000)        # PAM0 is byte 1 of this dword
    bridge.config_write(0x5C, 4, 0x33333333)
    assert seen[-1] == bytes([0x30, 0x33, 0x33, 0x33, 0x33, 0x33, 0x33])
    bridge.config_write(0x59, 1, 0xFF)              # reserved PAM bits stay clear
    assert bridge.pam()[0] == 0x30


def test_piix4_pm_block_follows_pmba_and_enable():
    pio, _, host = _machine()
    block = Recorder()
    pm = Piix4Pm(block, 0x40, pio.register, pio.unregister)
    host.add(devfn(1, 3), pm)
    assert cfg_read(pio, devfn(1, 3), 0x58) & 1 << 25               # SMM reported set up
    cfg_write(pio, devfn(1, 3), 0x40, 4, 0x601)
    assert pio.read(0x608, 4) == 0xFFFFFFFF                         # not enabled yet
    cfg_write(pio, devfn(1, 3), 0x80, 1, 1)
    assert pio.read(0x608, 4) == 0x1234
    cfg_write(pio, devfn(1, 3), 0x40, 4, 0xB001)
    assert pio.read(0x608, 4) == 0xFFFFFFFF and pio.read(0xB008, 4) == 0x1234


def test_apm_port_enters_and_leaves_acpi_mode():
    """ACPI 3.0 4.7.2.5: the OS writes the FADT's ACPI_ENABLE (0xF1, as SeaBIOS's FADT says) to
    SMI_CMD and waits for SCI_EN in PM1a_CNT; ACPI_DISABLE (0xF0) clears it."""
    from hvm.devices.acpi_pm import AcpiPm, PM1_CNT, SCI_EN
    from hvm.devices.pci.chipset import ApmControl

    pm = AcpiPm(lambda: None)
    apm = ApmControl(pm.set_sci_enabled)
    apm.write(0, 1, 0xF1)
    assert pm.read(PM1_CNT, 2) & SCI_EN
    apm.write(1, 1, 0x5A)
    assert apm.read(0, 2) == 0x5AF1
    apm.write(0, 1, 0xF0)
    assert not pm.read(PM1_CNT, 2) & SCI_EN


def test_piix3_steers_pci_interrupts_by_its_pirq_registers():
    from hvm.irq import RecordingIrqLine
    lines = {}
    bridge = Piix3Isa(lambda irq: lines.setdefault(irq, RecordingIrqLine(irq)))
    vga_inta, slot3_intb = bridge.interrupt(2, 0), bridge.interrupt(3, 1)
    assert (vga_inta.pirq, slot3_intb.pirq) == (1, 3)          # PIRQB, PIRQD: the PIIX rotation
    vga_inta.set_level(True)
    assert lines == {}                                          # reset value 0x80: not routed
    bridge.config_write(0x60, 4, 0x0B0A0B0A)                    # A->10, B->11, C->10, D->11 (as a BIOS might)
    assert lines[11].level
    slot3_intb.set_level(True)                                  # shares IRQ 11: wired-OR
    vga_inta.set_level(False)
    assert lines[11].level
    slot3_intb.set_level(False)
    assert not lines[11].level
    slot3_intb.set_level(True)
    bridge.config_write(0x63, 1, 0x05)                          # PIRQD moves to IRQ 5 while asserted
    assert lines[5].level and not lines[11].level
    bridge.config_write(0x63, 1, 0x80)                          # disabled: the line is let go
    assert not lines[5].level
    bridge.config_write(0x63, 1, 0x08)                          # IRQ 8 is reserved (the RTC's)
    assert 8 not in lines and bridge.pirq_irq(3) is None
