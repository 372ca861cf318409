"""Xen's 2-level event channels for a 64-bit PV domain (xen/include/public/event_channel.h,
xen/common/event_channel.c, xen/common/event_2l.c): ports bound to VIRQs, IPIs, or hvm's own
backends (console, xenstore) as the remote end; the pending and mask bitmaps in shared_info; the
per-vCPU pending selector and upcall flag in vcpu_info; and the upcall itself, which the vCPU's
engine takes like an interrupt (``UpcallController``) and the domain bounces to the guest's event
callback.

Bits the guest shares with hvm are changed only on the vCPU's own thread (where the guest is not
running at the same time); other threads (a backend answering) ask with ``request`` and poke the
vCPU, which applies the request before it next runs the guest.
"""
from __future__ import annotations

import collections
import struct
import threading
from dataclasses import dataclass
from typing import Callable

from . import abi as x

PORTS = 64 * 64                 # 2-level ABI, 64-bit: 64 words of 64 bits
PENDING, MASK = 2048, 2560      # shared_info offsets (xen.h)
UPCALL_PENDING, PENDING_SEL = 0, 8   # vcpu_info offsets
MASK64 = (1 << 64) - 1
UPCALL_VECTOR = 0xF3            # the vector the engine reports an upcall with (counters only)
UNBOUND, INTERDOMAIN, VIRQ, IPI = "unbound", "interdomain", "virq", "ipi"
STATUS = {UNBOUND: 1, INTERDOMAIN: 2, VIRQ: 4, IPI: 5}   # EVTCHNSTAT_*; closed is 0
PER_VCPU_VIRQS = {0, 1, 6, 7}   # TIMER, DEBUG, DEBUGGER, XENOPROF are per vCPU (xen.h)
NR_VIRQS = 24


@dataclass
class Port:
    kind: str
    vcpu: int = 0
    virq: int = 0
    remote_dom: int = 0
    remote_port: int = 0


class EventChannels:
    """The domain's ports. ``vcpu_info(index)`` gives a vCPU's vcpu_info machine address;
    ``kick(index)`` wakes that vCPU; ``backends`` maps a remote port of hvm's to what is called
    when the guest sends on the port bound to it."""

    def __init__(self, memory, shared_info: int, vcpu_info: Callable[[int], int], kick: Callable[[int], None],
                 vcpus: int, on_pending: Callable[[int], None] = lambda port: None):
        self.memory, self.shared_info = memory, shared_info
        self._vcpu_info, self._kick, self.vcpus = vcpu_info, kick, vcpus
        self._on_pending = on_pending      # told of every port newly pending, masked or not
        self.ports: dict[int, Port] = {}
        self.backends: dict[int, Callable[[], None]] = {}
        self._requests: collections.deque[tuple[int, Callable[[], bool] | None]] = collections.deque()
        self._lock = threading.Lock()

    # -- bits in shared memory (vCPU thread only) ------------------------------------------------
    def _bit(self, base: int, port: int) -> tuple[int, int]:
        return self.shared_info + base + (port // 64) * 8, 1 << (port % 64)

    def _test_and_set(self, address: int, bit: int) -> bool:
        # Atomic: the guest's vCPUs may be clearing other bits of the word at this moment.
        return bool(self.memory.fetch_or(address, bit) & bit)

    def _test(self, address: int, bit: int) -> bool:
        return bool(struct.unpack("<Q", self.memory.read(address, 8))[0] & bit)

    def set_pending(self, port: int) -> None:
        """evtchn_2l_set_pending: mark ``port`` pending; if unmasked and new, flag its vCPU."""
        if port not in self.ports:
            return
        if self._test_and_set(*self._bit(PENDING, port)):
            return
        self._on_pending(port)
        if self._test(*self._bit(MASK, port)):
            return
        self._mark(self.ports[port].vcpu, port)

    def is_pending(self, port: int) -> bool:
        return self._test(*self._bit(PENDING, port))

    def _mark(self, vcpu: int, port: int) -> None:
        info = self._vcpu_info(vcpu)
        if not self._test_and_set(info + PENDING_SEL, 1 << (port // 64)):
            self.memory.write(info + UPCALL_PENDING, b"\x01")
            self._kick(vcpu)

    def upcall_pending(self, vcpu: int) -> bool:
        return self.memory.read_u8(self._vcpu_info(vcpu) + UPCALL_PENDING) != 0

    # -- requests from other threads ------------------------------------------------------------
    def request(self, port: int, vcpu: int = 0, action: Callable[[], bool] | None = None) -> None:
        """Raise ``port`` from any thread: applied on the vCPU's thread (``drain``), after
        ``action`` (a backend filling a ring the guest reads) if given, and only if it returns
        True."""
        with self._lock:
            self._requests.append((port, action))
        self._kick(vcpu)

    def drain(self) -> None:
        with self._lock:
            requests, self._requests = list(self._requests), collections.deque()
        for port, action in requests:
            if action is None or action():
                self.set_pending(port)

    # -- the hypercall's operations -------------------------------------------------------------
    def _alloc(self, port: Port) -> int:
        for number in range(1, PORTS):      # port 0 is never allocated: it means "none"
            if number not in self.ports:
                self.ports[number] = port
                return number
        return -x.ENOSPC

    def bind_virq(self, virq: int, vcpu: int) -> int:
        if not 0 <= virq < NR_VIRQS:
            return -x.EINVAL
        if vcpu >= self.vcpus or (virq not in PER_VCPU_VIRQS and vcpu != 0):
            return -x.ENOENT if vcpu >= self.vcpus else -x.EINVAL
        if self.virq_port(virq, vcpu):
            return -x.EEXIST
        return self._alloc(Port(VIRQ, vcpu=vcpu, virq=virq))

    def virq_port(self, virq: int, vcpu: int = 0) -> int:
        for number, port in self.ports.items():
            if port.kind == VIRQ and port.virq == virq and port.vcpu == vcpu:
                return number
        return 0

    def raise_virq(self, virq: int, vcpu: int = 0) -> None:
        port = self.virq_port(virq, vcpu)
        if port:
            self.set_pending(port)

    def bind_ipi(self, vcpu: int) -> int:
        return -x.ENOENT if vcpu >= self.vcpus else self._alloc(Port(IPI, vcpu=vcpu))

    def alloc_unbound(self, remote_dom: int) -> int:
        return self._alloc(Port(UNBOUND, remote_dom=remote_dom))

    def bind_interdomain(self, remote_dom: int, remote_port: int) -> int:
        """Connect to one of hvm's backends (its domain is 0, as dom0's would be)."""
        if remote_dom != 0 or remote_port not in self.backends:
            return -x.EINVAL
        return self._alloc(Port(INTERDOMAIN, remote_dom=0, remote_port=remote_port))

    def bind_backend(self, port: int, remote_port: int) -> None:
        """A port the domain builder connected already (the console's, xenstore's)."""
        self.ports[port] = Port(INTERDOMAIN, remote_dom=0, remote_port=remote_port)

    def close(self, port: int) -> int:
        if port not in self.ports:
            return -x.EINVAL
        del self.ports[port]
        return 0

    def send(self, port: int) -> int:
        target = self.ports.get(port)
        if target is None:
            return -x.EINVAL
        if target.kind == INTERDOMAIN:
            backend = self.backends.get(target.remote_port)
            if backend is not None:
                backend()
            return 0
        if target.kind == IPI:
            self.set_pending(port)
            return 0
        if target.kind == UNBOUND:
            return 0                        # nobody listens yet: dropped, as Xen does
        return -x.EINVAL

    def unmask(self, port: int) -> int:
        """evtchn_2l_unmask: clear the mask; a port pending meanwhile reaches its vCPU now."""
        if port not in self.ports:
            return -x.EINVAL
        address, bit = self._bit(MASK, port)
        self.memory.fetch_and(address, ~bit & MASK64)
        if self.is_pending(port):
            self._mark(self.ports[port].vcpu, port)
        return 0

    def bind_vcpu(self, port: int, vcpu: int) -> int:
        target = self.ports.get(port)
        if target is None:
            return -x.EINVAL
        if vcpu >= self.vcpus:
            return -x.ENOENT
        if target.kind == IPI or (target.kind == VIRQ and target.virq in PER_VCPU_VIRQS):
            return -x.EINVAL
        target.vcpu = vcpu
        return 0

    def status(self, port: int) -> tuple[int, Port | None]:
        target = self.ports.get(port)
        return (STATUS[target.kind], target) if target else (0, None)


class UpcallController:
    """What the vCPU's engine polls between slices, as it polls a local APIC: an upcall is
    requested while vcpu_info says one is pending and the guest's event mask allows it, or
    whenever ``attention`` says the domain has business with the vCPU (its engine then calls
    the domain as for an upcall, and the domain sees which it is)."""

    def __init__(self, channels: EventChannels, vcpu: int, mask: Callable[[], int],
                 attention: Callable[[], bool] = lambda: False):
        self.channels, self.vcpu, self._mask, self._attention = channels, vcpu, mask, attention

    def intr(self) -> bool:
        self.channels.drain()
        return self.channels.upcall_pending(self.vcpu) and not self._mask() or self._attention()

    def acknowledge(self) -> int | None:
        return UPCALL_VECTOR
