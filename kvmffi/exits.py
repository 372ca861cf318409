"""One small class per KVM exit reason, so callers match on types instead of picking at kvm_run.

Data-carrying exits hold zero-copy views into the mmapped kvm_run page: they are valid until the
next KVM_RUN on the same vCPU, which is exactly when KVM reads back what the VMM wrote into them.
"""
from __future__ import annotations


class VcpuExit:
    """Base of every exit returned by ``Vcpu.run``."""

    __slots__ = ()

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={getattr(self, k)!r}" for k in self.__slots__ if k != "data")
        return f"{type(self).__name__}({fields})"


class _PortIo(VcpuExit, tuple):
    """Port I/O: ``(port, size, count, buffer, offset)``; the bytes are ``buffer[offset:offset+size*count]``.

    A tuple so that the hottest exit costs one allocation; ``data`` is the zero-copy view.
    """

    __slots__ = ()
    port = property(lambda self: self[0], doc="I/O port")
    size = property(lambda self: self[1], doc="bytes per access: 1, 2 or 4")
    count = property(lambda self: self[2], doc="number of accesses (> 1 for rep ins/outs)")

    @property
    def data(self) -> memoryview:
        """The count * size bytes exchanged with the guest."""
        port, size, count, buffer, offset = self
        return memoryview(buffer)[offset:offset + size * count]

    def __new__(cls, port: int, size: int, count: int, buffer, offset: int = 0):
        return tuple.__new__(cls, (port, size, count, buffer, offset))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(port={self[0]:#x}, size={self[1]}, count={self[2]})"


class IoIn(_PortIo):
    """IN/INS: fill ``data`` (count * size bytes) before the next run."""

    __slots__ = ()


class IoOut(_PortIo):
    """OUT/OUTS: ``data`` holds count * size bytes the guest wrote."""

    __slots__ = ()


class MmioRead(VcpuExit):
    """A read of unbacked guest-physical memory: fill ``data`` (``size`` bytes)."""

    __slots__ = ("address", "size", "data")

    def __init__(self, address: int, size: int, data: memoryview):
        self.address, self.size, self.data = address, size, data


class MmioWrite(VcpuExit):
    """A write to unbacked guest-physical memory."""

    __slots__ = ("address", "size", "data")

    def __init__(self, address: int, size: int, data: memoryview):
        self.address, self.size, self.data = address, size, data


class Hlt(VcpuExit):
    """HLT without an in-kernel local APIC."""

    __slots__ = ()


class Shutdown(VcpuExit):
    """The guest triple-faulted (or otherwise asked the CPU to shut down)."""

    __slots__ = ()


class FailEntry(VcpuExit):
    """VM entry failed: the guest state was invalid for the hardware."""

    __slots__ = ("reason", "cpu")

    def __init__(self, reason: int, cpu: int):
        self.reason, self.cpu = reason, cpu


class InternalError(VcpuExit):
    """KVM could not continue the guest; ``suberror`` says why."""

    __slots__ = ("suberror", "data")

    def __init__(self, suberror: int, data: tuple[int, ...]):
        self.suberror, self.data = suberror, data


class EmulationFailure(InternalError):
    """KVM's instruction emulator gave up; ``insn`` holds the bytes at RIP when KVM supplied them."""

    __slots__ = ("insn",)

    def __init__(self, suberror: int, data: tuple[int, ...], insn: bytes):
        super().__init__(suberror, data)
        self.insn = insn


class SystemEvent(VcpuExit):
    """A platform event (shutdown, reset, crash) raised by KVM on the guest's behalf."""

    __slots__ = ("type", "data")

    def __init__(self, type: int, data: tuple[int, ...]):
        self.type, self.data = type, data


class Debug(VcpuExit):
    """A guest-debug event (breakpoint, single step)."""

    __slots__ = ("exception", "pc", "dr6", "dr7")

    def __init__(self, exception: int, pc: int, dr6: int, dr7: int):
        self.exception, self.pc, self.dr6, self.dr7 = exception, pc, dr6, dr7


class RdMsr(VcpuExit):
    """RDMSR forwarded to userspace: call ``reply`` with the value, or ``error=True`` for #GP."""

    __slots__ = ("index", "reason", "_view")

    def __init__(self, index: int, reason: int, view):
        self.index, self.reason, self._view = index, reason, view

    def reply(self, value: int = 0, error: bool = False) -> None:
        """Set what the guest's RDMSR returns (or that it faults)."""
        self._view.data = value & 0xFFFFFFFFFFFFFFFF
        self._view.error = 1 if error else 0


class WrMsr(VcpuExit):
    """WRMSR forwarded to userspace: call ``reply(error=True)`` to make it #GP."""

    __slots__ = ("index", "reason", "value", "_view")

    def __init__(self, index: int, reason: int, value: int, view):
        self.index, self.reason, self.value, self._view = index, reason, value, view

    def reply(self, error: bool = False) -> None:
        """Accept the write, or make it fault."""
        self._view.error = 1 if error else 0


class Interrupted(VcpuExit):
    """KVM_RUN returned early because of a signal or ``immediate_exit``; nothing to emulate."""

    __slots__ = ()


class IrqWindowOpen(VcpuExit):
    """The guest can take an interrupt injected with KVM_INTERRUPT (userspace irqchip only)."""

    __slots__ = ()


class Unknown(VcpuExit):
    """An exit reason hvm does not handle; ``reason`` is KVM's number."""

    __slots__ = ("reason", "hardware_reason")

    def __init__(self, reason: int, hardware_reason: int = 0):
        self.reason, self.hardware_reason = reason, hardware_reason
