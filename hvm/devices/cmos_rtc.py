"""The PC's CMOS RAM and MC146818 real-time clock at ports 0x70 (index; bit 7 masks NMI) and 0x71
(data), as the Motorola MC146818A datasheet and the IBM PC/AT BIOS conventions lay them out.

The clock reads the host's wall clock (UTC, as QEMU's default ``-rtc base=utc``; its seconds
start when the machine is made, as QEMU's do: ``started_clock``), in BCD or binary
and 12- or 24-hour form as register B asks; a guest that sets the time (SET bit, then the time
registers) moves an offset, never the host's clock. Register A's UIP bit follows the datasheet's
update cycle: set from 244 us before each second boundary until the update ends 1984 us after it
(Xen's get_cmos_time waits for it to rise, for up to a second, before it reads the time). The status flags of register C (update-ended, periodic, alarm) are computed when it is
read; no IRQ 8 is raised, so a guest waiting for an RTC interrupt waits in vain (Linux's rtc-cmos
only needs the interrupt for alarms and the periodic tick). The CMOS memory bytes follow the BIOS
convention QEMU and SeaBIOS share: base memory, extended memory in KiB and 64 KiB units, memory above
4 GiB, the CPU count and the century.
"""
from __future__ import annotations

import threading
import time
from typing import Callable

from .base import Device

PORT = 0x70
SECONDS, SECONDS_ALARM, MINUTES, MINUTES_ALARM, HOURS, HOURS_ALARM = 0, 1, 2, 3, 4, 5
WEEKDAY, DAY, MONTH, YEAR = 6, 7, 8, 9
REG_A, REG_B, REG_C, REG_D = 0x0A, 0x0B, 0x0C, 0x0D
CENTURY = 0x32
CMOS_SIZE = 128
NMI_DISABLE = 0x80

REG_A_DIVIDER_32K = 0x20     # DV2-0 = 010: the 32.768 kHz time base, clock running
REG_A_DIVIDER_MASK = 0x70
REG_A_UIP = 0x80
UIP_BEFORE, UPDATE_CYCLE = 244e-6, 1984e-6   # seconds (MC146818A datasheet, 32.768 kHz time base)
REG_A_RATE_1024HZ = 0x06
REG_B_SET = 0x80
REG_B_DM_BINARY = 0x04
REG_B_24H = 0x02
REG_C_PF, REG_C_UF = 0x40, 0x10
REG_D_VRT = 0x80             # "valid RAM and time": the battery is good

# BIOS memory-size bytes (IBM PC/AT and the extensions QEMU and SeaBIOS use).
BASE_MEM_KB_LO, BASE_MEM_KB_HI = 0x15, 0x16
EXT_MEM_KB_LO, EXT_MEM_KB_HI = 0x17, 0x18          # and again at 0x30/0x31
EXT_MEM2_KB_LO, EXT_MEM2_KB_HI = 0x30, 0x31
MEM_ABOVE_16M_LO, MEM_ABOVE_16M_HI = 0x34, 0x35    # 64 KiB units, up to 4 GiB
MEM_ABOVE_4G = 0x5B                                # 3 bytes, 64 KiB units
CPU_COUNT = 0x5F                                   # number of CPUs minus one (SeaBIOS)
MiB = 1 << 20


def _bcd(value: int) -> int:
    return (value // 10) << 4 | value % 10


def _from_bcd(value: int) -> int:
    return (value >> 4) * 10 + (value & 0xF)


def started_clock(wall: Callable[[], float] = time.time,
                  elapsed: Callable[[], float] = time.monotonic) -> Callable[[], float]:
    """UTC seconds that start at the host's current whole second and run with the monotonic
    clock, as QEMU's RTC (mc146818rtc.c, base_rtc and last_update): the update cycles then fall
    at whole seconds after the machine was made, not at the host's second boundaries, so what a
    guest waits for one (Xen: up to a second at boot and again at power-off) is the same from
    run to run instead of anywhere between 0 and 1 s."""
    base, start = int(wall()), elapsed()
    return lambda: base + (elapsed() - start)


class CmosRtc(Device):
    """Ports 0x70-0x71; ``clock`` gives UTC seconds (by default ``started_clock``: the host's
    time when the machine was made, counted on from there)."""

    name = "cmos-rtc"

    def __init__(self, below_4g: int, above_4g: int = 0, cpus: int = 1,
                 clock: Callable[[], float] | None = None):
        self._clock = clock if clock is not None else started_clock()
        self._offset = 0.0          # guest time minus host time, set when the guest sets the clock
        self._lock = threading.Lock()
        self.index = 0
        self.nmi_masked = False
        self.ram = bytearray(CMOS_SIZE)
        self.ram[REG_A] = REG_A_DIVIDER_32K | REG_A_RATE_1024HZ
        self.ram[REG_B] = REG_B_24H
        self.ram[REG_D] = REG_D_VRT
        self._held: list[int] | None = None   # the time being set while REG_B_SET is on
        self._last_read = self._clock()
        self._fill_memory_bytes(below_4g, above_4g, cpus)

    def _fill_memory_bytes(self, below_4g: int, above_4g: int, cpus: int) -> None:
        ram = self.ram
        ram[BASE_MEM_KB_LO:BASE_MEM_KB_HI + 1] = (640).to_bytes(2, "little")
        ext_kb = min(max(below_4g - MiB, 0) // 1024, 0xFFFF)
        ram[EXT_MEM_KB_LO:EXT_MEM_KB_HI + 1] = ext_kb.to_bytes(2, "little")
        ram[EXT_MEM2_KB_LO:EXT_MEM2_KB_HI + 1] = ext_kb.to_bytes(2, "little")
        above_16m = min(max(below_4g - 16 * MiB, 0) >> 16, 0xFFFF)
        ram[MEM_ABOVE_16M_LO:MEM_ABOVE_16M_HI + 1] = above_16m.to_bytes(2, "little")
        ram[MEM_ABOVE_4G:MEM_ABOVE_4G + 3] = min(above_4g >> 16, 0xFFFFFF).to_bytes(3, "little")
        ram[CPU_COUNT] = max(cpus - 1, 0) & 0xFF

    # -- the clock ------------------------------------------------------------------------------
    def _encode(self, value: int) -> int:
        return value if self.ram[REG_B] & REG_B_DM_BINARY else _bcd(value)

    def _decode(self, value: int) -> int:
        return value if self.ram[REG_B] & REG_B_DM_BINARY else _from_bcd(value)

    def _time_registers(self) -> list[int]:
        t = time.gmtime(int(self._clock() + self._offset))
        hour = t.tm_hour
        if self.ram[REG_B] & REG_B_24H:
            hour_reg = self._encode(hour)
        else:  # 12-hour mode: 1-12, bit 7 for PM
            hour_reg = self._encode(hour % 12 or 12) | (0x80 if hour >= 12 else 0)
        weekday = (t.tm_wday + 1) % 7 + 1  # the RTC counts Sunday as 1; Python, Monday as 0
        return [self._encode(t.tm_sec), self._encode(t.tm_min), hour_reg, self._encode(weekday),
                self._encode(t.tm_mday), self._encode(t.tm_mon), self._encode(t.tm_year % 100),
                self._encode(t.tm_year // 100)]

    def _set_time(self, regs: list[int]) -> None:
        sec, minute, hour_reg, _wday, mday, mon, year, century = regs
        if self.ram[REG_B] & REG_B_24H:
            hour = self._decode(hour_reg)
        else:
            hour = self._decode(hour_reg & 0x7F) % 12 + (12 if hour_reg & 0x80 else 0)
        import calendar  # here: guests rarely set the clock, and datetime with it costs RSS

        try:
            guest = calendar.timegm((self._decode(century) * 100 + self._decode(year), self._decode(mon),
                                     self._decode(mday), hour, self._decode(minute), self._decode(sec)))
        except (ValueError, OverflowError):
            return  # a nonsense date is not taken; the clock keeps running as it was
        self._offset = guest - self._clock()

    # -- ports ----------------------------------------------------------------------------------
    def read(self, offset: int, size: int) -> int:
        if offset == 0:
            return 0xFF  # the index register is write-only on the PC
        with self._lock:
            return self._read_data()

    def write(self, offset: int, size: int, value: int) -> None:
        value &= 0xFF
        with self._lock:
            if offset == 0:
                self.index = value & 0x7F
                self.nmi_masked = bool(value & NMI_DISABLE)
            else:
                self._write_data(value)

    _TIME_INDEX = {SECONDS: 0, MINUTES: 1, HOURS: 2, WEEKDAY: 3, DAY: 4, MONTH: 5, YEAR: 6, CENTURY: 7}

    def _read_data(self) -> int:
        i = self.index
        if i in self._TIME_INDEX:
            regs = self._held if self._held is not None else self._time_registers()
            return regs[self._TIME_INDEX[i]]
        if i == REG_C:
            # Read-to-clear flags, computed now: an update ended if a second boundary passed since
            # the last read; with a nonzero rate the periodic flag is always due by then.
            now = self._clock()
            value = REG_C_PF if self.ram[REG_A] & 0x0F else 0
            if int(now) != int(self._last_read):
                value |= REG_C_UF
            self._last_read = now
            return value
        if i == REG_A:
            return self.ram[REG_A] | (REG_A_UIP if self._updating() else 0)
        return self.ram[i]

    def _updating(self) -> bool:
        """An update cycle is near or under way: the clock runs (32.768 kHz divider, SET clear)
        and the guest's time is within UIP_BEFORE of a second boundary or UPDATE_CYCLE past one."""
        if self.ram[REG_A] & REG_A_DIVIDER_MASK != REG_A_DIVIDER_32K or self.ram[REG_B] & REG_B_SET:
            return False
        t = self._clock() + self._offset
        frac = t - int(t)
        return frac >= 1 - UIP_BEFORE or frac < UPDATE_CYCLE

    def _write_data(self, value: int) -> None:
        i = self.index
        if i in self._TIME_INDEX:
            if self._held is None:
                self._held = self._time_registers()
            self._held[self._TIME_INDEX[i]] = value
            if not self.ram[REG_B] & REG_B_SET:
                self._set_time(self._held)
                self._held = None
            return
        if i == REG_B:
            was_set = self.ram[REG_B] & REG_B_SET
            self.ram[REG_B] = value
            if was_set and not value & REG_B_SET and self._held is not None:
                self._set_time(self._held)
                self._held = None
            elif value & REG_B_SET and self._held is None:
                self._held = self._time_registers()
            return
        if i in (REG_C, REG_D):
            return  # read-only status registers
        if i == REG_A:
            self.ram[REG_A] = value & 0x7F  # UIP is read-only
            return
        self.ram[i] = value
