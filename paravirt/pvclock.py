"""Xen's time for a PV guest: system time (nanoseconds since the domain was built) and the
vcpu_time_info that lets the guest compute it from its own TSC, plus the wall clock at system
time 0 in shared_info (xen.h struct vcpu_time_info, shared_info wc_*; xen/arch/x86/time.c).

Under the unicorn engine RDTSC reads the host's TSC (measured: unicorn 2.1.4 returns the host
counter), so the guest's TSC is the host's: hvm reads it through a three-instruction function
on an executable page and measures its frequency against CLOCK_MONOTONIC once.
"""
from __future__ import annotations

import ctypes
import mmap
import struct
import time

NS_PER_S = 1_000_000_000
# rdtsc; shl $32, %rdx; or %rdx, %rax; ret
_RDTSC = bytes.fromhex("0f31" "48c1e220" "4809d0" "c3")
CALIBRATION_S = 0.05
# vcpu_time_info inside vcpu_info (arch-x86/xen-x86_64.h: arch_vcpu_info is 16 bytes at 16).
TIME_INFO = 32
TIME_INFO_LAYOUT = struct.Struct("<I4xQQIbB2x")   # version, tsc_timestamp, system_time, mul, shift, flags
TSC_STABLE_BIT = 1 << 0
# shared_info (xen.h): wc_version, wc_sec, wc_nsec at 3072; wc_sec_hi (x86_64) at 3084.
WALLCLOCK, WC_SEC_HI = 3072, 3084


class HostTsc:
    """The host's time-stamp counter, read from Python."""

    def __init__(self) -> None:
        self._page = mmap.mmap(-1, mmap.PAGESIZE, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
        self._page.write(_RDTSC)
        address = ctypes.addressof(ctypes.c_char.from_buffer(self._page))
        self.read = ctypes.CFUNCTYPE(ctypes.c_uint64)(address)
        t0, c0 = time.monotonic_ns(), self.read()
        time.sleep(CALIBRATION_S)
        t1, c1 = time.monotonic_ns(), self.read()
        self.hz = (c1 - c0) * NS_PER_S // (t1 - t0)


def scale(hz: int) -> tuple[int, int]:
    """(tsc_to_system_mul, tsc_shift) for a TSC of ``hz``: ns = ((tsc << shift) * mul) >> 32, with
    a negative shift a right shift (Xen's set_time_scale)."""
    t, shift = hz, 0
    while t > 2 * NS_PER_S:
        t >>= 1
        shift -= 1
    while t <= NS_PER_S:
        t <<= 1
        shift += 1
    return (NS_PER_S << 32) // t, shift


class PvClock:
    """One domain's system time."""

    def __init__(self, tsc: HostTsc | None = None):
        self.tsc = tsc or HostTsc()
        self.mul, self.shift = scale(self.tsc.hz)
        self.boot_ns = time.monotonic_ns()
        self.boot_wall_ns = time.time_ns()

    def system_time(self) -> int:
        return time.monotonic_ns() - self.boot_ns

    def deadline_monotonic(self, system_time: int) -> int:
        """The CLOCK_MONOTONIC reading when system time reaches ``system_time``."""
        return self.boot_ns + system_time

    def update(self, memory, vcpu_info: int) -> None:
        """Write a fresh vcpu_time_info with Xen's version protocol: odd while changing."""
        at = vcpu_info + TIME_INFO
        version = struct.unpack("<I", memory.read(at, 4))[0]
        memory.write(at, struct.pack("<I", (version + 1) | 1))
        stamp, now = self.tsc.read(), self.system_time()
        memory.write(at, TIME_INFO_LAYOUT.pack((version + 1) | 1, stamp, now, self.mul, self.shift,
                                               TSC_STABLE_BIT))
        memory.write(at, struct.pack("<I", ((version + 1) | 1) + 1))

    def write_wallclock(self, memory, shared_info: int) -> None:
        """Wall-clock time at system time 0, with the same version protocol."""
        version = struct.unpack("<I", memory.read(shared_info + WALLCLOCK, 4))[0]
        odd = (version + 1) | 1
        memory.write(shared_info + WALLCLOCK, struct.pack("<I", odd))
        sec, nsec = divmod(self.boot_wall_ns, NS_PER_S)
        memory.write(shared_info + WALLCLOCK + 4, struct.pack("<II", sec & 0xFFFFFFFF, nsec))
        memory.write(shared_info + WC_SEC_HI, struct.pack("<I", sec >> 32))
        memory.write(shared_info + WALLCLOCK, struct.pack("<I", odd + 1))


class PvTimer:
    """A vCPU's Xen timers: the single-shot one (set_timer_op, VCPUOP_set_singleshot_timer) and
    the periodic one, both raising ``fire`` (VIRQ_TIMER) when system time passes them. The engine
    ticks it between slices and sleeps until ``next_deadline_ns``: no polling thread."""

    def __init__(self, clock: PvClock, fire):
        self.clock, self._fire = clock, fire
        self.singleshot: int | None = None      # system time
        self.period: int | None = None
        self.next_periodic: int | None = None
        # The end of a SCHEDOP_poll (Xen's poll_timer): it wakes the vCPU, raises nothing.
        self.poll_deadline: int | None = None

    def set_singleshot(self, deadline: int | None) -> None:
        self.singleshot = deadline

    def set_periodic(self, period: int | None) -> None:
        self.period = period
        self.next_periodic = None if period is None else self.clock.system_time() + period

    def tick(self) -> None:
        now = self.clock.system_time()
        fired = False
        if self.singleshot is not None and now >= self.singleshot:
            self.singleshot, fired = None, True
        if self.period is not None and now >= self.next_periodic:
            # Missed periods are not made up for one by one (Xen's periodic timer neither).
            self.next_periodic = now + self.period
            fired = True
        if fired:
            self._fire()

    def next_deadline_ns(self) -> int | None:
        due = [t for t in (self.singleshot, self.next_periodic, self.poll_deadline) if t is not None]
        return self.clock.deadline_monotonic(min(due)) if due else None
