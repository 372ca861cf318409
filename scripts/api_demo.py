"""The README's API example, runnable: a user-defined device, a 16-bit guest, the serial text."""
import random
import tempfile
from pathlib import Path

from hvm import Device, Machine, MachineConfig


class Dice(Device):
    """A device of your own on an I/O port: every read rolls a die."""

    name = "dice"

    def read(self, offset: int, size: int) -> int:
        return random.randint(1, 6)


# A real-mode guest (a flat binary loaded at 0x7C00):
#   mov $0x510,%dx; in %dx,%al; add $'0',%al; mov $0x3f8,%dx; out %al,%dx   # roll, print on COM1
#   mov $0x604,%dx; mov $0x2000,%ax; out %ax,%dx; hlt                      # ACPI power-off
GUEST = bytes.fromhex("ba1005ec0430baf803eeba0406b80020eff4")

with tempfile.TemporaryDirectory() as tmp:
    image = Path(tmp, "dice.bin")
    image.write_bytes(GUEST)
    with Machine(MachineConfig(kernel=str(image), memory="16M")) as machine:
        machine.add_port_device(0x510, 1, Dice())  # ranges may not overlap: refused at registration
        outcome = machine.run(timeout=30)          # or start() / serial.wait_for() / send() / wait()
        print("the guest rolled:", machine.serial.text)
        print(outcome.end.value, outcome.exit_code)  # poweroff 0
        print(machine.stats().format())
