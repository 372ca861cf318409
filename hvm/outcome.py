"""How a run ended, and the crash report a person reads when the guest dies."""
from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum

from .disasm import Instruction
from .engine.state import Regs, SRegs
from .errors import HvmError


class End(str, Enum):
    """Why the machine stopped."""

    POWEROFF = "poweroff"        # ACPI S5 or a shutdown system event
    DEBUG_EXIT = "debug-exit"    # isa-debug-exit written
    CRASH = "crash"              # triple fault, unhandled emulation failure, engine failure
    RESET = "reset"              # the guest asked for a reset (reboot is a later feature)
    HOST_LIMIT = "host-limit"    # the guest needs what this host cannot give (e.g. user space on kvm_pvm)
    TIMEOUT = "timeout"          # --timeout expired
    QUIT = "quit"                # the user quit (Ctrl-A x) or the API called stop()
    SIGNAL = "signal"            # hvmrun was told to stop by SIGTERM or SIGHUP (value: the signal)
    ERROR = "error"              # hvm itself failed while serving the guest


# Exit statuses (sysexits.h where one fits). They live here, below the CLI, because an Outcome
# knows its own status and the CLI maps errors raised before the guest runs through the same table.
EX_OK = 0
EX_CRASH = 2
EX_USAGE = 64
EX_DATAERR = 65      # unusable image
EX_NOINPUT = 66      # missing file
EX_UNAVAILABLE = 69  # no usable /dev/kvm, or a host that cannot run what the guest needs
EX_SOFTWARE = 70     # hvm itself failed
EX_TIMEOUT = 124     # like timeout(1)
EX_SIGNAL_BASE = 128  # + the signal number, as a shell reports a process a signal ended

_EXIT_BY_END = {End.POWEROFF: EX_OK, End.QUIT: EX_OK, End.RESET: EX_OK, End.CRASH: EX_CRASH,
                End.TIMEOUT: EX_TIMEOUT, End.ERROR: EX_SOFTWARE, End.HOST_LIMIT: EX_UNAVAILABLE}


def exit_code_for(outcome: "Outcome") -> int:
    """The process exit status for how a run ended."""
    if outcome.end == End.DEBUG_EXIT:
        return ((outcome.value << 1) | 1) & 0xFF  # QEMU's isa-debug-exit rule; the OS keeps 8 bits
    if outcome.end == End.SIGNAL:
        return EX_SIGNAL_BASE + (outcome.value or 0)
    return _EXIT_BY_END[outcome.end]


@dataclass
class GuestCrash(HvmError):
    """The guest died; ``report()`` has its registers and the failing instruction."""

    reason: str
    vcpu: int = 0
    regs: Regs | None = None
    sregs: SRegs | None = None
    insn: bytes = b""
    decoded: Instruction | None = None
    notes: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)  # the guest console's last lines
    symbol: str | None = None  # RIP as function+offset, from the kernel's kallsyms

    def __str__(self) -> str:
        return f"guest crashed on vCPU {self.vcpu}: {self.reason}"

    def report(self) -> str:
        """A multi-line report: reason, registers, the instruction bytes and their disassembly."""
        lines = [str(self)]
        if self.insn:
            text = str(self.decoded) if self.decoded else "(bytes do not decode)"
            bits = self.sregs.code_bits if self.sregs else "?"
            lines.append(f"  instruction: {self.insn.hex(' ')}  ->  {text}   [{bits}-bit code]")
        if self.regs is not None:
            r = self.regs
            names = ["rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rsp", "rbp",
                     "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15"]
            for i in range(0, 16, 4):
                lines.append("  " + " ".join(f"{n:>3}={getattr(r, n):016x}" for n in names[i:i + 4]))
            where = f"  ({self.symbol})" if self.symbol else ""
            lines.append(f"  rip={r.rip:016x} rflags={r.rflags:08x}{where}")
        if self.sregs is not None:
            s = self.sregs
            lines.append("  " + " ".join(f"{n}={getattr(s, n).selector:04x}" for n in SRegs.SEGMENTS[:6])
                         + f" cs.base={s.cs.base:x}")
            lines.append(f"  cr0={s.cr0:08x} cr2={s.cr2:016x} cr3={s.cr3:016x} cr4={s.cr4:08x} efer={s.efer:x}")
            lines.append(f"  gdt={s.gdt.base:x}/{s.gdt.limit:x} idt={s.idt.base:x}/{s.idt.limit:x}")
        lines += [f"  {n}" for n in self.notes]
        if self.console:
            lines.append("  last console lines:")
            lines += [f"    | {line}" for line in self.console]
        return "\n".join(lines)


@dataclass
class Outcome:
    """The end of a run: what happened, plus the debug-exit value or the crash when relevant."""

    end: End
    value: int | None = None
    crash: GuestCrash | None = None
    message: str = ""
    detail: str = ""  # for End.ERROR: the traceback, which hvmrun shows only with -v

    @property
    def exit_code(self) -> int:
        """The process exit status hvmrun uses for this outcome."""
        return exit_code_for(self)
