"""Device fuzzing, the way QEMU's generic fuzzer drives devices: random sequences of port and MMIO
accesses of every size, aligned or not and straddling each range's edges, repeated in bursts,
mixed with interrupt lines, host input, interrupt acknowledges and clock jumps, against every
entry of ``fuzz_harness.DEVICES`` (with its dictionary of access sequences).

Properties, checked after every step: nothing raises; a device answers a read with a non-negative
int and the bus hands the guest a value that fits the access; the entry's invariants hold; no list,
queue or buffer of a model grows past its bound; and running the timers the way the unicorn
engine does (tick at the earliest deadline, again and again) always moves time forward and never
interrupts more often than once per MIN_PERIOD_NS per timer, whatever the guest programmed.

HVM_FUZZ_EXAMPLES sets the examples per device (default 200); CI derandomizes.
"""
from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, given, settings, strategies as st

from fuzz_harness import DEVICES, FakeClock, Rig, Window

from hvm.bus import Bus
from hvm.config import MachineConfig
from hvm.devices.irq.lapic import MIN_PERIOD_NS as LAPIC_FLOOR
from hvm.devices.irq.pit8254 import MIN_PERIOD_NS as PIT_FLOOR

EXAMPLES = int(os.environ.get("HVM_FUZZ_EXAMPLES", "200"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# KVM reports port I/O of 1, 2 or 4 bytes and MMIO of 1 to 8; unicorn's vector moves reach 16.
SIZES = {"pio": (1, 2, 4), "mmio": (1, 2, 3, 4, 5, 6, 7, 8, 16)}
REPEATS = (1, 1, 1, 1, 2, 3, 32, 300)
FLOOR = min(LAPIC_FLOOR, PIT_FLOOR)
ADVANCES = st.one_of(st.integers(0, 2_000), st.integers(0, 20_000_000), st.integers(0, 10**12))


def small_or_any(bits: int) -> st.SearchStrategy[int]:
    # Small fields are what make timers fast and queues fill: drawn as often as any value.
    top = (1 << bits) - 1
    return st.one_of(st.integers(0, min(top, 0xFF)), st.integers(0, top))


def accesses(window: Window) -> st.SearchStrategy[tuple]:
    """("read"|"write", bus, address, size, value, repeat) aimed at ``window``: mostly inside it,
    now and then just before or past it, so wide accesses straddle its edges."""
    inside = st.integers(window.base, window.base + window.length - 1)
    edges = st.integers(max(window.base - 7, 0), window.base + window.length + 7)
    size = st.sampled_from(SIZES[window.bus])
    return st.tuples(st.sampled_from(("read", "write")), st.just(window.bus),
                     st.one_of(inside, inside, inside, edges), size,
                     st.integers(0, (1 << 128) - 1), st.sampled_from(REPEATS))


def steps_for(name: str) -> st.SearchStrategy[list[tuple]]:
    """Random guest, host and clock steps for the entry ``name`` (its windows and inputs are
    the same every time it is built)."""
    rig = DEVICES[name](FakeClock())
    kinds = [accesses(w) for w in rig.windows]
    if rig.inputs:
        kinds.append(st.tuples(st.just("input"), st.integers(0, len(rig.inputs) - 1),
                               st.integers(0, 1 << 32)))
    for i, sequence in enumerate(rig.sequences):
        fields = st.tuples(*(small_or_any(bits) for bits in sequence.bits))
        kinds += [st.tuples(st.just("sequence"), st.just(i), fields)] * 2
    kinds.append(st.tuples(st.just("advance"), ADVANCES))
    if rig.timers:
        kinds.append(st.tuples(st.just("timers"), st.integers(0, 50).map(lambda n: n * 100_000)))
    return st.lists(st.one_of(kinds), min_size=4, max_size=40)


STEP_STRATEGIES = {name: steps_for(name) for name in DEVICES}


def check_raw_replies(bus: Bus) -> None:
    """Wrap each device's read so its raw reply is checked before the bus masks it."""
    for mapping in bus.mappings():
        def read(offset, size, _original=mapping.device.read, _name=mapping.name):
            value = _original(offset, size)
            assert isinstance(value, int) and value >= 0, \
                f"{_name} answered {value!r} to a {size}-byte read at +{offset:#x}"
            return value
        mapping.device.read = read


def check(rig: Rig, after: str) -> None:
    for description, holds in rig.invariants:
        assert holds(), f"after {after}: {description}"
    grown = rig.oversized_containers()
    assert not grown, f"after {after}: {grown}"


def run_timers(rig: Rig, span: int) -> None:
    """Tick at each earliest deadline up to ``span`` ns ahead, as the engine's slices do."""
    clock, end, ticks = rig.clock, rig.clock.ns + span, 0
    allowed = len(rig.timers) * (2 + span // FLOOR)
    while True:
        deadlines = [d for d in (t.next_deadline_ns() for t in rig.timers) if d is not None]
        if not deadlines or min(deadlines) > end:
            break
        clock.ns = max(clock.ns, min(deadlines))
        for timer in rig.timers:
            timer.tick()
        ticks += 1
        after = [d for d in (t.next_deadline_ns() for t in rig.timers) if d is not None]
        assert all(d > clock.ns for d in after), \
            f"a deadline at or before now ({clock.ns}) after a tick: the engine would spin"
        assert ticks <= allowed, f"{ticks} timer events in {span} ns: no floor"
    clock.ns = end


@pytest.mark.parametrize("name", sorted(DEVICES))
@FUZZ
@given(data=st.data())
def test_device_survives_random_guests(name: str, data) -> None:
    rig = DEVICES[name](FakeClock())
    buses = {"pio": rig.pio, "mmio": rig.mmio}
    for bus in buses.values():
        check_raw_replies(bus)
    check(rig, "building")
    for i, step in enumerate(data.draw(STEP_STRATEGIES[name], label="steps")):
        kind = step[0]
        if kind in ("read", "write"):
            _, where, addr, size, value, repeat = step
            bus, value = buses[where], value & ((1 << (8 * size)) - 1)
            for _ in range(repeat):
                if kind == "write":
                    bus.write(addr, size, value)
                    continue
                reply = bus.read(addr, size)
                assert 0 <= reply < 1 << (8 * size), f"{reply:#x} does not fit {size} bytes"
        elif kind == "sequence":
            for where, addr, size, value in rig.sequences[step[1]].build(*step[2]):
                buses[where].write(addr, size, value)
        elif kind == "input":
            rig.inputs[step[1]][1](step[2])
        elif kind == "advance":
            rig.clock.ns += step[1]
            for timer in rig.timers:
                timer.tick()
        else:
            run_timers(rig, step[1])
        check(rig, f"step {i}: {step}")


def _device_types(buses) -> set[type]:
    types = set()
    for bus in buses:
        for mapping in bus.mappings():
            device = mapping.device
            # A port of a multi-port controller, or the per-CPU LAPIC page: what stands behind it.
            inner = getattr(device, "controller", None) or getattr(device, "_pit", None) \
                or getattr(device, "_pair", None) or (getattr(device, "devices", None) or [None])[0]
            types.add(type(device) if inner is None else type(inner))
    return types


def test_every_device_of_the_machine_is_in_the_harness(tmp_path) -> None:
    # The unicorn machine has every device model hvm has (KVM keeps its irqchip in the kernel);
    # a device added to it without an entry in fuzz_harness.DEVICES fails here.
    from hvm.machine import Machine

    boot = tmp_path / "idle.img"
    boot.write_bytes(b"\xf4" + bytes(509) + b"\x55\xaa")
    with Machine(MachineConfig(kernel=str(boot), memory="16M", accel="unicorn")) as machine:
        in_machine = _device_types([machine.pio, machine.mmio])
    fuzzed = set()
    for build in DEVICES.values():
        rig = build(FakeClock())
        fuzzed |= _device_types([rig.pio, rig.mmio])
    missing = sorted(t.__name__ for t in in_machine - fuzzed)
    assert not missing, f"devices of the machine the fuzzer never drives: {missing}"
    assert len(in_machine) >= 12
