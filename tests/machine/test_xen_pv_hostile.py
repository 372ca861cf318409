"""A hostile PV guest (tests/guests/pvfuzz64.S) makes hypothesis-chosen hypercalls with
hypothesis-chosen arguments - pointers into its own image, into hvm's area, unmapped, huge,
negative - and hvm survives every sequence: the run ends as the guest's calls make it end
(poweroff, a reboot request, a crash report for a domain Xen would crash, or the time limit for
a guest sent spinning), never with hvm's own error, and the validator's audit of the page tables
finds nothing wrong afterwards. HVM_FUZZ_EXAMPLES sets the number of sequences (default 100)."""
from __future__ import annotations

import os
import struct

from elftools.elf.elffile import ELFFile
from hypothesis import HealthCheck, given, settings, strategies as st

from hvm.config import MachineConfig
from hvm.machine import Machine
from paravirt.abi import HYPERCALLS, HYPERVISOR_VIRT_START

EXAMPLES = int(os.environ.get("HVM_FUZZ_EXAMPLES", "100"))
MAX_CALLS = 64
IMAGE = 0x100000          # where pvfuzz64 is linked (VIRT_BASE 0)

numbers = st.one_of(st.sampled_from(sorted(HYPERCALLS)), st.integers(0, 64), st.integers(0, (1 << 64) - 1))
arguments = st.one_of(
    st.integers(0, 32),                                            # commands, counts, small values
    st.integers(IMAGE, IMAGE + 0x8000),                            # the guest's own image
    st.integers(HYPERVISOR_VIRT_START, HYPERVISOR_VIRT_START + 0x10000000),   # hvm's area
    st.integers(0, (1 << 64) - 1),                                 # anything, non-canonical included
    st.sampled_from([0x7FF0, 0xFFFFFFFF, (1 << 63), (1 << 64) - 1, 0x1000, 0x107000]),
)
calls = st.lists(st.tuples(numbers, arguments, arguments, arguments, arguments, arguments),
                 min_size=1, max_size=MAX_CALLS)


def _symbol(path, name: str) -> int:
    with open(path, "rb") as f:
        symbols = ELFFile(f).get_section_by_name(".symtab")
        return symbols.get_symbol_by_name(name)[0]["st_value"]


def test_a_hostile_pv_guest_never_breaks_hvm(guests):
    kernel = guests("pvfuzz64")
    table = _symbol(kernel, "calls")

    @settings(max_examples=EXAMPLES, deadline=None, derandomize=bool(os.environ.get("CI")),
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(calls)
    def run(sequence):
        config = MachineConfig(machine="xenpv", accel="unicorn", memory="16M", kernel=str(kernel),
                               serial=["buffer"])
        with Machine(config) as machine:
            raw = struct.pack("<Q", len(sequence)) + b"".join(struct.pack("<6Q", *c) for c in sequence)
            machine.memory.write(table, raw)      # VIRT_BASE 0, identity P2M: address == machine address
            outcome = machine.run(timeout=5)
            problems = machine.board.mm.check()
        assert outcome.end.value in ("poweroff", "reset", "crash", "timeout"), outcome
        if outcome.end.value == "crash":
            assert outcome.crash is not None and outcome.exit_code == 2, outcome
        assert problems == [], problems

    run()
