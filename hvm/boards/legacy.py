"""The ISA devices every PC-like board has at their usual ports: QEMU's debug console, POST
code port and isa-debug-exit, the reset control register, the CMOS clock and the keyboard
controller with its keyboard (IRQ 1) and PS/2 mouse (IRQ 12). The power-off register is the
board's (PIIX4's ACPI function on the PC board)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ..devices.cmos_rtc import PORT as RTC_PORT, CmosRtc
from ..devices.debug_exit import DEFAULT_PORT as DEBUG_EXIT_PORT, PORT_COUNT as DEBUG_EXIT_LEN, DebugExit
from ..devices.debugcon import DEFAULT_PORT as DEBUGCON_PORT, DebugCon
from ..devices.i8042 import COMMAND_PORT as I8042_COMMAND, DATA_PORT as I8042_DATA, I8042
from ..devices.post import DEFAULT_PORT as POST_PORT, PostCode
from ..devices.reset_control import RESET_PORT, ResetControl
from ..serial import BufferBackend

if TYPE_CHECKING:
    from ..machine import Machine


@dataclass
class LegacyDevices:
    """What ``add_legacy_devices`` attached, for the board (and the API user) to reach."""

    debugcon: DebugCon
    debugcon_output: BufferBackend
    post: PostCode
    rtc: CmosRtc
    i8042: I8042


def add_legacy_devices(machine: "Machine", debugcon_port: bool = True) -> LegacyDevices:
    """Attach the devices every PC has, wired to ``machine``'s interrupt lines and lifecycle;
    ``debugcon_port`` False leaves port 0xE9 to another device (pc-testdev's byte port, as in QEMU)."""
    cfg = machine.config
    output = BufferBackend()
    debugcon = DebugCon(machine.output_backend("--debugcon", cfg.debugcon, output))
    post = PostCode()
    if debugcon_port:
        machine.add_port_device(DEBUGCON_PORT, 1, debugcon)
    machine.add_port_device(POST_PORT, 1, post)
    machine.add_port_device(DEBUG_EXIT_PORT, DEBUG_EXIT_LEN, DebugExit(machine.debug_exit))
    machine.add_port_device(RESET_PORT, 1, ResetControl(machine.guest_reset))
    rtc = CmosRtc(machine.memory.below_4g, machine.memory.above_4g, cfg.cpus)
    machine.add_port_device(RTC_PORT, 2, rtc, "rtc")
    i8042 = I8042(machine.irq(1), machine.guest_reset, aux_irq=machine.irq(12))
    machine.add_port_device(I8042_DATA, 1, i8042.data_port, "i8042")
    machine.add_port_device(I8042_COMMAND, 1, i8042.command_port, "i8042")
    return LegacyDevices(debugcon, output, post, rtc, i8042)
