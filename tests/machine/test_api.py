"""The embedding API on a real /dev/kvm: Machine, serial text, user devices, hooks, stop."""
from __future__ import annotations

import threading

import pytest

from hvm import Device, End, Machine, MachineConfig
from hvm.boot.entry import Mode


class Counter(Device):
    """A user device: each read returns the next byte of a pattern."""

    name = "counter"

    def __init__(self, pattern: bytes):
        self.pattern, self.reads, self.writes = pattern, 0, []

    def read(self, offset: int, size: int) -> int:
        value = self.pattern[self.reads % len(self.pattern)]
        self.reads += 1
        return value

    def write(self, offset: int, size: int, value: int) -> None:
        self.writes.append(value)


def test_user_device_and_string_io(guests):
    dev = Counter(b"0123456789abcdef")
    with Machine(MachineConfig(kernel=str(guests("repio")), memory="16M")) as m:
        m.add_port_device(0x700, 1, dev)
        outcome = m.run(timeout=60)
        assert outcome.end == End.POWEROFF
        assert outcome.exit_code == 0
        # one `rep insb` of 16 bytes from the device, one `rep outsb` of them to COM1
        assert dev.reads == 16
        assert m.serial.text == "0123456789abcdef\n"
        stats = m.stats()
        assert stats.pio_by_device["counter"] == 16
        assert stats.exits_by_reason["IoIn"] <= 2  # string I/O arrives in few exits, not 16


def test_serial_interaction_through_the_api(guests):
    with Machine(MachineConfig(kernel=str(guests("echo16")), memory="16M")) as m:
        m.start()
        assert m.serial.wait_for("ready\n", timeout=30)
        m.serial.send("abc")
        assert m.serial.wait_for("ABC", timeout=30)
        m.serial.send("xyz.")
        outcome = m.wait(timeout=30)
        assert outcome.end == End.POWEROFF
        assert m.serial.text == "ready\nABCXYZ"


def test_stop_from_another_thread(guests):
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="hang", memory="16M")) as m:
        timer = threading.Timer(0.5, m.stop)
        timer.start()
        outcome = m.run(timeout=30)
        timer.join()
        assert outcome.end == End.QUIT
        assert "cmdline=[" in m.serial.text


def test_timeout_outcome(guests):
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="hang", memory="16M")) as m:
        outcome = m.run(timeout=0.5)
        assert outcome.end == End.TIMEOUT and outcome.exit_code == 124


def test_emulation_fallback_hook_can_handle_the_instruction(guests):
    seen = []

    def fallback(event):
        seen.append(event.decoded.mnemonic)
        regs = event.vcpu.engine.get_regs()
        regs.rip += event.decoded.size   # "execute" it: popcnt of the MMIO word, which reads all ones
        regs.rax = 32
        event.vcpu.engine.set_regs(regs)
        return True

    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="popcnt", memory="16M")) as m:
        m.emulation_fallbacks.append(fallback)
        outcome = m.run(timeout=60)
    assert seen == ["popcnt"]
    assert outcome.end == End.POWEROFF


def test_unhandled_emulation_failure_is_a_crash_value(guests):
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="popcnt", memory="16M",
                               fallback=False)) as m:
        m.emulation_fallbacks.append(lambda event: False)
        outcome = m.run(timeout=60)
    assert outcome.end == End.CRASH and outcome.exit_code == 2
    crash = outcome.crash
    assert crash.insn == bytes.fromhex("f30fb805000000d0")
    assert str(crash.decoded) == "popcnt eax, dword ptr [0xd0000000]"
    assert 0x100000 <= crash.regs.rip < 0x101000 and crash.sregs.code_bits == 32
    assert "popcnt eax, dword ptr [0xd0000000]" in crash.report()


def test_msr_served_from_python(guests):
    class Msr:
        def __init__(self):
            self.value = None

        def read(self, vcpu, index):
            return self.value + 1

        def write(self, vcpu, index, value):
            self.value = value
            return True

    handler = Msr()
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="msr", memory="16M")) as m:
        m.add_msr_handler(0x40000200, handler)
        outcome = m.run(timeout=60)
        assert outcome.end == End.POWEROFF, outcome
        assert handler.value == 0x1234
        assert "msr=00001235" in m.serial.text


def test_guest_virtual_read_walks_the_guest_page_tables(guests):
    image = guests("long64")
    with Machine(MachineConfig(kernel=str(image), flat_mode=Mode.LONG, memory="16M")) as m:
        outcome = m.run(timeout=60)
        assert outcome.end == End.DEBUG_EXIT and outcome.value == 0x21
        vcpu = m.vcpus[0]
        assert vcpu.paging_mode().enabled
        assert vcpu.read_virtual(0x100000, 64) == image.read_bytes()[:64]
        # 0x1_0000_0000 is past the identity map: not present
        from hvm.paging import PageFault
        with pytest.raises(PageFault):
            vcpu.read_virtual(0x1_0000_0000, 1)


@pytest.mark.parametrize("cpus", [1, 2, 3])
def test_smp_application_processors_start(guests, cpus):
    with Machine(MachineConfig(kernel=str(guests("smp")), append=f"want={cpus}", cpus=cpus, memory="16M")) as m:
        outcome = m.run(timeout=60)
        assert outcome.end == End.POWEROFF
        assert m.serial.text == f"cpus={cpus} sum={cpus * 1000}\n"


def test_overlapping_device_refused(guests):
    from hvm.bus import BusError
    with Machine(MachineConfig(kernel=str(guests("hello16")), memory="16M")) as m:
        with pytest.raises(BusError, match="overlaps com1"):
            m.add_port_device(0x3FC, 2, Counter(b"x"))
        with pytest.raises(ValueError, match="overlaps guest RAM"):
            m.add_mmio_device(0x1000, 0x1000, Counter(b"x"))


def test_memory_above_the_pc_hole(guests):
    with Machine(MachineConfig(kernel=str(guests("hello16")), memory="3200M")) as m:
        regions = [(r.gpa, r.size) for r in m.memory.regions]
        assert regions == [(0, 3 << 30), (4 << 30, 128 << 20)]
        m.memory.write(0x1_0000_0000 + 5, b"high")
        assert m.memory.read(0x1_0000_0005, 4) == b"high"
        assert m.run(timeout=60).end == End.POWEROFF


# mov $'D',%al; out %al,$0xe9; mov $'C',%al; out %al,$0xe9; mov $0x80,%al; out %al,$0x80;
# mov $0x604,%dx; mov $0x2000,%ax; out %ax,%dx; hlt
DEBUGCON_GUEST = bytes.fromhex("b044e6e9b043e6e9b080e680ba0406b80020eff4").ljust(510, b"\0") + b"\x55\xaa"


def test_debugcon_and_post_codes(tmp_path):
    image = tmp_path / "dc.bin"
    image.write_bytes(DEBUGCON_GUEST)
    with Machine(MachineConfig(kernel=str(image), memory="16M")) as m:
        assert m.run(timeout=30).end == End.POWEROFF
        assert m.debugcon_output.text == "DC"
        assert m.post.last == 0x80 and m.post.history == [0x80]
        assert m.serial.text == ""


def test_debugcon_to_a_file_from_the_cli(tmp_path):
    from conftest import hvmrun
    image = tmp_path / "dc.bin"
    image.write_bytes(DEBUGCON_GUEST)
    out = tmp_path / "debugcon.log"
    r = hvmrun("--kernel", str(image), "--debugcon", f"file:{out}", "--timeout", "30")
    assert r.returncode == 0, r.stderr
    assert out.read_bytes() == b"DC"


def test_mmio_device_served_from_python(guests):
    class Regs(Device):
        name = "regs"

        def __init__(self):
            self.writes = []

        def read(self, offset, size):
            return 0x1233 if offset == 0 else 0

        def write(self, offset, size, value):
            self.writes.append((offset, size, value))

    dev = Regs()
    with Machine(MachineConfig(kernel=str(guests("multiboot")), append="mmio", memory="16M")) as m:
        m.add_mmio_device(0xD0000000, 0x1000, dev)
        assert m.run(timeout=60).end == End.POWEROFF
        assert dev.writes == [(4, 4, 0x1234)]
        assert "mmio=00001234" in m.serial.text
        stats = m.stats()
        assert stats.mmio_by_device == {"regs": 2}
        assert stats.exits_by_reason["MmioRead"] == 1 and stats.exits_by_reason["MmioWrite"] == 1
