"""The engine seam: run guest code until it needs the VMM, read/write state, inject events.

Exits crossing the seam are the small classes of ``kvmffi.exits`` (plain Python values with no
KVM state) plus two engine-neutral failures defined here; an engine never leaks its own structs.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, Callable

from kvmffi.exits import (Debug, Hlt, Interrupted, IoIn, IoOut, MmioRead, MmioWrite, RdMsr,
                          Shutdown, SystemEvent, VcpuExit, WrMsr)

from .state import Fpu, Regs, SRegs

if TYPE_CHECKING:
    from ..published import PublishedTable

__all__ = ["Engine", "EmulationFailure", "EngineCrash", "Debug", "Hlt", "Interrupted", "IoIn",
           "IoOut", "MmioRead", "MmioWrite", "RdMsr", "Shutdown", "SystemEvent", "VcpuExit", "WrMsr"]


class EmulationFailure(VcpuExit):
    """The engine could not execute the instruction at RIP; ``insn`` holds its bytes if known."""

    __slots__ = ("insn", "detail")

    def __init__(self, insn: bytes, detail: str = ""):
        self.insn, self.detail = insn, detail


class EngineCrash(VcpuExit):
    """The engine cannot continue this guest (failed entry, internal error); ``reason`` says why."""

    __slots__ = ("reason",)

    def __init__(self, reason: str):
        self.reason = reason


class Engine(ABC):
    """How one vCPU's guest code executes."""

    name = "engine"

    @abstractmethod
    def run(self) -> VcpuExit:
        """Run the guest until it needs the VMM; the returned exit says why.

        For speed an engine may return exits of its own kinds; the run loop passes any exit it
        has no handler for through ``translate`` before acting on it.
        """

    def serve_port_io(self, read: Callable[[int, int], int], write: Callable[[int, int, int], None],
                      published: "PublishedTable | None" = None) -> None:
        """Let the engine call the port bus itself instead of returning IoIn/IoOut exits; an
        engine that can answers reads of ``published``'s registers without calling ``read``.

        Engines that cannot (or whose caller wants every exit) simply keep returning them.
        """

    def io_exit_counts(self) -> tuple[int, int]:
        """(IN, OUT) port-I/O exits the engine served itself through ``serve_port_io``."""
        return 0, 0

    def counters(self) -> list[str]:
        """Engine-specific lines for --stats (exits are counted by the run loop)."""
        return []

    def translate(self, exit_: VcpuExit) -> VcpuExit:
        """Turn an engine-specific exit into one of the neutral kinds (EngineCrash at worst)."""
        return EngineCrash(f"{self.name} engine: unexpected exit {exit_!r}")

    def thread_started(self) -> None:
        """Called on the vCPU thread before its first ``run`` (so ``kick`` knows whom to wake)."""

    def thread_exited(self) -> None:
        """Called on the vCPU thread after its last ``run``."""

    @abstractmethod
    def get_regs(self) -> Regs:
        """General-purpose registers, RIP, RFLAGS."""

    @abstractmethod
    def set_regs(self, regs: Regs) -> None:
        """Replace general-purpose registers, RIP, RFLAGS."""

    @abstractmethod
    def get_sregs(self) -> SRegs:
        """Segment, descriptor-table and control registers."""

    @abstractmethod
    def set_sregs(self, sregs: SRegs) -> None:
        """Replace segment, descriptor-table and control registers."""

    @abstractmethod
    def inject_interrupt(self, vector: int) -> None:
        """Deliver an external interrupt at the next instruction boundary where it can be taken."""

    @abstractmethod
    def inject_exception(self, vector: int, error_code: int | None = None) -> None:
        """Raise a CPU exception in the guest before its next instruction."""

    def inject_software_interrupt(self, vector: int, insn_length: int) -> None:
        """Deliver ``INT n`` (``insn_length`` bytes at RIP) as the instruction would."""
        raise NotImplementedError(f"{self.name} engine cannot inject software interrupts")

    def get_fpu(self) -> Fpu:
        """SSE registers, MXCSR and the x87 control/status words."""
        raise NotImplementedError(f"{self.name} engine cannot report FPU state")

    def set_fpu(self, fpu: Fpu) -> None:
        """Replace what ``get_fpu`` reports."""
        raise NotImplementedError(f"{self.name} engine cannot set FPU state")

    @abstractmethod
    def kick(self) -> None:
        """Make a concurrent or upcoming ``run`` return ``Interrupted`` soon (any thread)."""

    def acknowledge_kick(self) -> None:
        """Called by the run loop after it saw ``Interrupted``, so the next run proceeds."""

    def get_msrs(self, indices: list[int]) -> dict[int, int]:
        """Model-specific registers the engine can report (may be a subset)."""
        return {}

    def set_msrs(self, values: dict[int, int]) -> None:
        """Write model-specific registers."""
        raise NotImplementedError(f"{self.name} engine cannot set MSRs")

    def close(self) -> None:
        """Release the engine's resources."""
