"""fw_cfg as QEMU's docs/specs/fw_cfg.rst describes it, driven through the port bus; the directory
and DMA descriptors are packed here with struct from the spec's C declarations, not with hvm's
construct declarations."""
from __future__ import annotations

import struct

import pytest

from hvm.bus import PortIOBus
from hvm.devices.fw_cfg import BASE_PORT, DMA_LENGTH, DMA_PORT, FwCfg
from hvm.memory import GuestMemory

SEL, DATA, DMA_HI, DMA_LO = 0x510, 0x511, 0x514, 0x518
ERROR, READ, SKIP, SELECT, WRITE = 1, 2, 4, 8, 16
DESC = 0x1000      # where the tests put their DMA descriptors
BUF = 0x2000


@pytest.fixture
def rig():
    mem = GuestMemory(1 << 20)
    cfg = FwCfg(mem)
    bus = PortIOBus()
    bus.register(BASE_PORT, 2, cfg.ports)
    bus.register(DMA_PORT, DMA_LENGTH, cfg.dma)
    yield cfg, bus, mem
    mem.close()


def read_item(bus, key, n):
    bus.write(SEL, 2, key)
    return bytes(bus.read(DATA, 1) for _ in range(n))


def dma(bus, mem, control, length, address, at=DESC):
    mem.write(at, struct.pack(">IIQ", control, length, address))
    bus.write(DMA_HI, 4, int.from_bytes((at >> 32).to_bytes(4, "big"), "little"))
    bus.write(DMA_LO, 4, int.from_bytes((at & 0xFFFFFFFF).to_bytes(4, "big"), "little"))
    return struct.unpack(">I", mem.read(at, 4))[0]


def test_signature_and_features(rig):
    cfg, bus, mem = rig
    assert read_item(bus, 0x0000, 4) == b"QEMU"
    assert struct.unpack("<I", read_item(bus, 0x0001, 4))[0] == 3   # traditional + DMA


def test_reads_past_the_end_and_of_unknown_items_are_zero(rig):
    cfg, bus, mem = rig
    assert read_item(bus, 0x0000, 6) == b"QEMU\0\0"
    assert read_item(bus, 0x1234, 3) == b"\0\0\0"


def test_selecting_rewinds_and_either_port_selects(rig):
    cfg, bus, mem = rig
    assert read_item(bus, 0, 2) == b"QE"
    bus.write(DATA, 2, 0)          # a 16-bit write to the data port selects too (QEMU's comb ops)
    assert bus.read(DATA, 1) == ord("Q")
    assert bus.read(SEL, 1) == ord("E")   # and either port reads data bytes
    bus.write(SEL, 2, 0x4000)      # the write-channel bit selects the same item
    assert bus.read(DATA, 1) == ord("Q")


def test_data_writes_and_wide_reads_do_nothing(rig):
    cfg, bus, mem = rig
    bus.write(SEL, 2, 0)
    bus.write(DATA, 1, 0x41)
    assert bus.read(DATA, 4) == 0
    assert read_item(bus, 0, 4) == b"QEMU"


def test_numbered_and_arch_items(rig):
    cfg, bus, mem = rig
    cfg.add_u16(0x05, 3)
    cfg.add_u32(0x8002, 1)
    assert read_item(bus, 0x05, 2) == b"\x03\x00"
    assert read_item(bus, 0x8002, 4) == b"\x01\0\0\0"
    with pytest.raises(ValueError):
        cfg.add_item(0x20, b"x")   # file keys come from add_file


def test_file_directory_lists_files_in_name_order(rig):
    cfg, bus, mem = rig
    cfg.add_file("etc/zeta", b"z" * 5)
    cfg.add_file("bootorder", b"/x\n")
    (count,) = struct.unpack(">I", read_item(bus, 0x19, 4))
    assert count == 2
    bus.write(SEL, 2, 0x19)
    raw = bytes(bus.read(DATA, 1) for _ in range(4 + 64 * count))[4:]
    entries = [struct.unpack(">IHH56s", raw[i:i + 64]) for i in range(0, len(raw), 64)]
    assert [(size, sel, name.rstrip(b"\0")) for size, sel, _r, name in entries] == [
        (3, 0x20, b"bootorder"), (5, 0x21, b"etc/zeta")]
    assert read_item(bus, 0x21, 5) == b"zzzzz"
    assert cfg.key_of("bootorder") == 0x20


def test_dma_register_reads_its_signature(rig):
    cfg, bus, mem = rig
    assert bus.read(DMA_HI, 4).to_bytes(4, "little") + bus.read(DMA_LO, 4).to_bytes(4, "little") == b"QEMU CFG"
    assert bus.read(DMA_PORT + 2, 2).to_bytes(2, "little") == b"MU"


def test_dma_select_read_skip(rig):
    cfg, bus, mem = rig
    cfg.add_file("opt/data", bytes(range(100)))
    key = cfg.key_of("opt/data")
    assert dma(bus, mem, key << 16 | SELECT | READ, 10, BUF) == 0
    assert mem.read(BUF, 10) == bytes(range(10))
    assert dma(bus, mem, SKIP, 50, 0) == 0
    assert dma(bus, mem, READ, 5, BUF) == 0          # continues at offset 60
    assert mem.read(BUF, 5) == bytes(range(60, 65))
    assert bus.read(DATA, 1) == 65                   # the data port shares the offset


def test_dma_read_past_the_end_fills_zeros(rig):
    cfg, bus, mem = rig
    mem.write(BUF, b"\xff" * 8)
    assert dma(bus, mem, 0 << 16 | SELECT | READ, 8, BUF) == 0
    assert mem.read(BUF, 8) == b"QEMU\0\0\0\0"


def test_dma_writes_are_refused(rig):
    cfg, bus, mem = rig
    assert dma(bus, mem, 0 << 16 | SELECT | WRITE, 4, BUF) == ERROR
    assert read_item(bus, 0, 4) == b"QEMU"


def test_dma_with_no_operation_only_selects(rig):
    cfg, bus, mem = rig
    assert dma(bus, mem, 1 << 16 | SELECT, 4, BUF) == 0
    assert bus.read(DATA, 1) == 3


@pytest.mark.parametrize("target, length", [
    (0xFFFFE, 4),                # runs off the end of RAM
    (0x40000000, 4),             # not RAM at all
    (BUF, 0xFFFFFFFF),           # 4 GiB of zero fill into a 1 MiB guest
])
def test_dma_outside_guest_memory_sets_the_error_bit(rig, target, length):
    cfg, bus, mem = rig
    mem.write(0xFFFF0, b"\xaa" * 16)
    assert dma(bus, mem, 0 << 16 | SELECT | READ, length, target) == ERROR
    assert mem.read(0xFFFF0, 16) == b"\xaa" * 16


def test_descriptor_outside_guest_memory_touches_nothing(rig):
    cfg, bus, mem = rig
    before = mem.read(0, 1 << 20)
    bus.write(DMA_HI, 4, int.from_bytes((1).to_bytes(4, "big"), "little"))   # 4 GiB + ...
    bus.write(DMA_LO, 4, 0)
    assert mem.read(0, 1 << 20) == before


def test_address_register_clears_after_a_transfer(rig):
    cfg, bus, mem = rig
    bus.write(DMA_HI, 4, int.from_bytes((1).to_bytes(4, "big"), "little"))
    bus.write(DMA_LO, 4, int.from_bytes(DESC.to_bytes(4, "big"), "little"))   # at 4 GiB + DESC: no RAM
    # the next low-half write alone starts a transfer at a 32-bit address
    mem.write(DESC, struct.pack(">IIQ", SELECT | READ, 4, BUF))
    bus.write(DMA_LO, 4, int.from_bytes(DESC.to_bytes(4, "big"), "little"))
    assert mem.read(BUF, 4) == b"QEMU" and mem.read(DESC, 4) == bytes(4)


def test_a_generated_file_is_made_when_selected(rig):
    cfg, bus, mem = rig
    state = {"value": b"A"}
    cfg.add_generated_file("etc/state", lambda: state["value"] * 4)
    key = cfg.key_of("etc/state")
    assert read_item(bus, key, 4) == b"AAAA"
    state["value"] = b"B"          # what the generator describes changed since: a new select sees it
    assert read_item(bus, key, 4) == b"BBBB"
    assert dma(bus, mem, key << 16 | SELECT | READ, 4, BUF) == 0 and mem.read(BUF, 4) == b"BBBB"
    state["value"] = b"CC"         # the directory said 4 bytes: a different size is hvm's bug, said so
    with pytest.raises(RuntimeError, match="etc/state changed size"):
        bus.write(SEL, 2, key)
