"""Boards: what a machine is made of (its devices, what runs first, its memory layout).

``Machine`` owns what every board needs (guest memory, the buses, the interrupt controllers, the
vCPUs, the COM ports, the run's lifecycle); a board adds the rest. Adding a board (the PC with
real firmware, the Xen PV machine) adds a module here and touches no other board.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ConfigError

if TYPE_CHECKING:
    from ..boot.entry import EntryState
    from ..config import MachineConfig
    from ..machine import Machine
    from ..memory import GuestMemory
    from ..physmap import PhysMap


class Board:
    """A kind of machine; ``attach`` runs before the vCPUs exist, ``boot`` after the devices."""

    name = "board"

    def guest_memory(self, config: "MachineConfig") -> "GuestMemory":
        """The machine's RAM: ``-m`` bytes laid out as a PC lays them out, unless the board
        keeps memory of its own beside the guest's."""
        from ..memory import GuestMemory

        return GuestMemory(config.memory)

    def memory_map(self, memory: "GuestMemory", config: "MachineConfig") -> "PhysMap":
        """What the CPUs see of guest-physical space (before any engine maps it): all of RAM,
        unless the board has ROMs or holes."""
        from ..physmap import PhysMap

        return PhysMap(memory)

    def attach(self, machine: "Machine") -> None:
        """Add the board's devices to ``machine``'s buses."""

    def boot(self, machine: "Machine") -> "EntryState":
        """Put what runs first into guest memory; returns the boot vCPU's entry state."""
        raise NotImplementedError

    can_request_shutdown = False   # Ctrl-A s is offered only where request_shutdown can ask

    def request_shutdown(self, machine: "Machine") -> bool:
        """Ask the guest to shut down (``machine.stop(graceful=True)``); False where the board
        has no way to, and the machine is stopped outright."""
        return False

    def vcpus_created(self, machine: "Machine") -> None:
        """The vCPUs exist and the boot vCPU has its entry state: set up the others if the
        board starts them itself."""

    def edit_cpuid(self, table: dict) -> None:
        """Change, in place, what a vCPU's CPUID answers after hvm's policy made it:
        (leaf, subleaf) -> (EAX, EBX, ECX, EDX), the same shape under both engines."""

    def counters(self) -> list[str]:
        """What ``--stats`` shows of the board beyond exits and devices."""
        return []


# name -> (module, class). Only the board asked for is imported: the PC board's device models
# (VGA, IDE, PCI) cost start-up time and memory that a direct boot does not need.
_BOARDS = {"direct": (".direct", "DirectBoard"), "pc": (".pc", "PcBoard"), "xenpv": (".xenpv", "XenPvBoard")}
BOARD_NAMES = tuple(_BOARDS)


def _board_class(name: str) -> type[Board]:
    import importlib

    module, cls = _BOARDS[name]
    return getattr(importlib.import_module(module, __name__), cls)


def _boards() -> dict[str, type[Board]]:
    """Every board class by name (imports them all)."""
    return {name: _board_class(name) for name in _BOARDS}


def board_for(name: str) -> Board:
    """A fresh board of the kind ``name`` (as given to ``--machine``)."""
    if name not in BOARD_NAMES:
        raise ConfigError(f"unknown machine {name!r} (choose from {', '.join(BOARD_NAMES)})")
    return _board_class(name)()
