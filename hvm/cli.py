"""hvmrun: parse → MachineConfig → Machine → run → exit code. A thin layer over the API."""
from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from typing import Callable, NoReturn, Sequence

from . import __version__
from .boot.entry import Mode
from .boards import BOARD_NAMES
from .config import FwCfgFile, MachineConfig, ModuleSpec, parse_size
from .errors import ConfigError, HostError, ImageError, MissingFileError
from .outcome import (EX_DATAERR, EX_NOINPUT, EX_SOFTWARE, EX_UNAVAILABLE, EX_USAGE, End, Outcome)

# The one table mapping errors (raised before the guest runs) to exit codes.
EXIT_CODES: dict[type, int] = {
    ConfigError: EX_USAGE,
    ImageError: EX_DATAERR,
    MissingFileError: EX_NOINPUT,
    HostError: EX_UNAVAILABLE,
}


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(EX_USAGE, f"hvmrun: {message}\n")


def _int(text: str) -> int:
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None


def _size(text: str) -> int:
    try:
        return parse_size(text)
    except ConfigError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def build_parser() -> argparse.ArgumentParser:
    """The hvmrun argument parser (the CLI contract)."""
    p = _Parser(prog="hvmrun", description="Run a virtual machine on KVM.",
                epilog="Exit status: 0 guest powered off; (v<<1)|1 isa-debug-exit with value v; "
                       "2 guest crashed; 124 timeout; 64 usage error; 65 unusable image; "
                       "66 missing file; 69 no usable /dev/kvm, or the guest needs what this host's KVM cannot do; "
                       "70 internal error.")
    p.add_argument("-M", "--machine", choices=BOARD_NAMES, default="direct",
                   help="the board: direct (hvm loads --kernel and stands in for the firmware; the default) "
                        "or pc (QEMU's pc machine: i440FX/PIIX, booted by firmware, see --bios)")
    p.add_argument("--bios", metavar="PATH",
                   help="-M pc: the firmware image (default: SeaBIOS's bios-256k.bin from `python3 -m images "
                        "seabios`, else the host's /usr/share/seabios)")
    p.add_argument("--vga", choices=["std", "none"], default="std",
                   help="-M pc: the display adapter, as QEMU's -vga (std: standard VGA with the Bochs VBE "
                        "extension and SeaBIOS's VGA BIOS; the default)")
    p.add_argument("--display", choices=["none", "text"], default="none",
                   help="-M pc: where the screen shows, as QEMU's -display: none (the default; serial on "
                        "stdio) or text (the VGA text screen drawn on this terminal and stdin typed on the "
                        "PS/2 keyboard, like QEMU's -display curses; Ctrl-A x quits; needs --vga std and a "
                        "terminal; COM1 then defaults to none, --serial file:PATH keeps its output)")
    p.add_argument("--xen", choices=["pv"],
                   help="pv: --kernel is a Xen PV kernel (an ELF with Xen notes), run deprivileged with hvm "
                        "as its hypervisor: hypercalls, direct paging, the PV console on COM1 (-M xenpv)")
    p.add_argument("--cdrom", metavar="ISO[,bootindex=N]",
                   help="-M pc: a CD-ROM image on the IDE secondary master, as QEMU's -cdrom")
    p.add_argument("--disk", action="append", default=[], metavar="PATH[,ro][,bootindex=N]",
                   help="-M pc: a raw disk image on IDE (repeatable: primary master, primary slave, then "
                        "the secondary channel); ro opens it read-only. bootindex=N, as QEMU's device "
                        "property, puts the drive in the firmware's boot order before --boot's "
                        "(lowest first)")
    p.add_argument("--boot", default="cad", metavar="ORDER",
                   help="-M pc: boot order by drive letter as QEMU's -boot: c hard disk, d CD-ROM, a floppy, "
                        "n network (default cad)")
    p.add_argument("--screenshot", metavar="PATH",
                   help="-M pc: write the screen as a PNG picture to PATH when the guest stops")
    p.add_argument("-m", "--memory", type=_size, default=128 << 20, metavar="SIZE",
                   help="guest RAM, e.g. 64M, 1G (default 128M; a bare number means MiB)")
    p.add_argument("-c", "--cpus", type=int, default=1, metavar="N", help="number of vCPUs (default 1)")
    p.add_argument("--kernel", metavar="PATH",
                   help="kernel to boot: multiboot v1, Linux bzImage (64-bit boot protocol), an ELF vmlinux "
                        "(PVH entry note, else the 64-bit boot protocol) or a flat binary")
    p.add_argument("--initrd", metavar="PATH", help="initial ramdisk (Linux: the initrd; multiboot: the first module)")
    p.add_argument("--append", default="", metavar="CMDLINE", help="kernel command line")
    p.add_argument("--module", action="append", default=[], metavar="PATH[,ARGS]",
                   help="multiboot module with its argument string (repeatable)")
    p.add_argument("--device", action="append", default=[], metavar="NAME",
                   help="add a device by QEMU's -device name: pc-testdev (kvm-unit-tests' test device; "
                        "replaces the debug console at 0xe9). isa-debug-exit is always present at 0xf4")
    p.add_argument("--fw-cfg", action="append", default=[], metavar="NAME,file=PATH|NAME,string=TEXT",
                   help="a named fw_cfg file for the guest, as QEMU's -fw_cfg (repeatable; names should "
                        "start with opt/)")
    p.add_argument("--flat-mode", choices=[m.value for m in Mode if m is not Mode.RESET],
                   help="run an image hvm does not recognise as a raw binary entered in this mode (without "
                        "it only a boot sector, 55 AA at byte 510, runs raw: in real mode at 0x7c00)")
    p.add_argument("--load-addr", type=_int, metavar="ADDR",
                   help="load (and entry) address of a flat binary (default 0x7c00 real, 0x100000 otherwise)")
    p.add_argument("--serial", action="append", metavar="DEV",
                   help="stdio | none | file:PATH | unix:PATH; repeat for COM2-COM4 (default stdio; none "
                        "under --display text, which has the terminal)")
    p.add_argument("--debugcon", default="none", metavar="DEV",
                   help="where port 0xE9 output goes: none | stdio | file:PATH | unix:PATH")
    p.add_argument("--accel", choices=["kvm", "unicorn", "auto"], default="kvm",
                   help="how guest code runs: kvm (default), unicorn (software CPU, see --unicorn-threads; "
                        "PIC, PIT, IOAPIC and LAPICs in Python), auto (unicorn where KVM is missing or only emulates)")
    p.add_argument("--decompress", choices=["auto", "host", "guest"], default="auto",
                   help="who decompresses a bzImage: host (hvm, cached; the vmlinux inside is entered "
                        "directly), guest (the kernel's decompressor), auto (host where guest code is "
                        "emulated: unicorn, or a KVM that only emulates)")
    p.add_argument("--no-reboot", action="store_true",
                   help="when the guest resets the machine, exit (status 0) instead of booting again")
    p.add_argument("--timeout", type=float, metavar="SECONDS", help="stop the guest after this long (exit 124)")
    p.add_argument("--stall-timeout", type=float, default=300.0, metavar="SECONDS",
                   help="on a host whose KVM only emulates guest kernel code, stop a Linux boot that writes "
                        "nothing to its console for this long, naming the host limitation (default 300)")
    p.add_argument("--no-fallback", action="store_true",
                   help="under KVM, end the run with a crash report when KVM's instruction emulator refuses an "
                        "instruction, instead of executing it in unicorn")
    p.add_argument("--no-mem-readahead", action="store_true",
                   help="never populate guest RAM ahead of a guest sweeping through it (on another host CPU; "
                        "16 MiB ahead of each sweep): host memory strictly as the guest touches it")
    p.add_argument("--unicorn-threads", choices=["auto", "single", "multi"], default="auto",
                   help="under unicorn with several vCPUs: multi runs each on an instance of its own, all at "
                        "once (as QEMU's -accel tcg,thread=multi), single has them take turns on one host CPU; "
                        "auto (default) is multi where the host has a CPU to spare")
    p.add_argument("--stats", action="store_true", help="print exit counts, CPU time and peak RSS at the end")
    p.add_argument("-v", "--verbose", action="count", default=0, help="say more on stderr")
    p.add_argument("--version", action="version", version=f"hvm {__version__}")
    return p


def config_from_args(args: argparse.Namespace) -> MachineConfig:
    """Turn parsed arguments into a MachineConfig (validated later by the Machine)."""
    return MachineConfig(
        machine=args.machine, xen=args.xen, bios=args.bios, vga=args.vga, display=args.display, cdrom=args.cdrom,
        disks=args.disk, boot=args.boot, memory=args.memory, cpus=args.cpus, kernel=args.kernel, initrd=args.initrd, append=args.append,
        modules=[ModuleSpec.parse(m) for m in args.module],
        fw_cfg=[FwCfgFile.parse(f) for f in args.fw_cfg], devices=args.device,
        flat_mode=Mode(args.flat_mode) if args.flat_mode else None,
        load_addr=args.load_addr, serial=args.serial or [_default_serial(args.display)], debugcon=args.debugcon,
        timeout=args.timeout, accel=args.accel, decompress=args.decompress, fallback=not args.no_fallback,
        mem_readahead=not args.no_mem_readahead, unicorn_threads=args.unicorn_threads,
        stall_timeout=args.stall_timeout, verbose=args.verbose)


def _default_serial(display: str) -> str:
    """COM1 on the terminal, unless the screen is drawn there: then guest output would scribble
    over it, and stdin belongs to the keyboard."""
    return "none" if display == "text" else "stdio"


def _say(msg: str) -> None:
    sys.stderr.write(f"hvm: {msg}\n")
    sys.stderr.flush()


BUG_REPORT = ("this is a bug in hvm: please report it with this message and the command line "
              "(-v shows the traceback)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hvmrun``; returns the process exit status."""
    args = build_parser().parse_args(argv)
    try:
        code = _run(args)
    except tuple(EXIT_CODES) as exc:
        _say(str(exc))
        code = next(c for t, c in EXIT_CODES.items() if isinstance(exc, t))
    except KeyboardInterrupt:
        _say("interrupted")
        code = 130
    except Exception as exc:  # the last resort: one line and exit 70, never a bare traceback
        if args.verbose:
            import traceback  # only here: it costs every run ~0.4 MiB of peak RSS

            traceback.print_exc()
        _say(f"internal error: {type(exc).__name__}: {exc}; {BUG_REPORT}")
        code = EX_SOFTWARE
    try:
        sys.stdout.flush()
    except OSError:
        pass
    return code


def _run(args: argparse.Namespace) -> int:
    from .host import host_info

    cfg = config_from_args(args)
    cfg.validate()
    if args.screenshot and (cfg.machine != "pc" or cfg.vga == "none"):
        raise ConfigError("--screenshot needs a screen: -M pc with --vga std")
    if cfg.display == "text":
        for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout)):
            if not _is_terminal(stream):
                raise ConfigError(f"--display text draws on a terminal and reads its keys: {name} is not "
                                  f"a terminal (use --display none with --screenshot or the serial port)")
    banner = host_info(cfg.kvm_path).banner()
    first = True
    # --timeout bounds the whole run, reboots included.
    deadline = time.monotonic() + cfg.timeout if cfg.timeout is not None else None
    while True:
        code = _boot(cfg, args, banner, first, deadline)
        if code is not None:
            return code
        _say("the guest reset the machine: booting again (--no-reboot exits instead)")
        first = False


def _is_terminal(stream) -> bool:
    try:
        return stream is not None and os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def _screenshot(machine, path: str) -> None:
    """The screen as the guest left it, as a PNG; a file that cannot be written is reported."""
    try:
        with open(path, "wb") as f:
            f.write(machine.screen.png())
    except OSError as exc:
        _say(f"--screenshot {path}: {exc.strerror}")


def _boot(cfg: MachineConfig, args: argparse.Namespace, banner: str, first: bool,
          deadline: float | None) -> int | None:
    """One boot of the machine: its exit status, or None when the guest reset it and it is to
    boot again (a reset under direct kernel boot is a new boot of the same kernel: the machine is
    built afresh, as a PC's reset line returns every device to its power-on state)."""
    from .machine import KVM_USERSPACE_LIMIT, Machine

    machine = Machine(cfg)
    restore = _guard(machine)
    display = None
    try:
        if first and cfg.accel == "auto":
            _say(f"--accel auto chose {machine.accel}: {machine.accel_reason}")
        elif first and banner and machine.accel == "kvm":
            _say(banner.removeprefix("hvm: "))
        if first and machine.boots_linux:
            for arg, why in machine.cmdline_additions:
                _say(f"added {arg!r} to the kernel command line: {why}")
            if machine.kvm_emulates:
                _say(f"warning: {KVM_USERSPACE_LIMIT}")
        if args.verbose:
            _say(f"booting {cfg.kernel or machine.board.name}: {machine.entry.description or machine.entry.mode.value} "
                 f"entry {machine.entry.entry:#x}, {cfg.memory >> 20} MiB, {cfg.cpus} vCPU(s)")
        if cfg.display == "text":
            from .text_display import TextDisplay

            # After the messages above, so they stay on the user's screen when it comes back.
            display = TextDisplay(machine.screen, machine.keyboard, on_quit=machine.stop,
                                  on_failure=machine.internal_error,
                                  stdin_fd=sys.stdin.fileno(), stdout_fd=sys.stdout.fileno())
            display.start()
        left = None if deadline is None else max(deadline - time.monotonic(), 0.001)
        outcome = machine.run(timeout=None if left is None else left)
        if display is not None:
            display.close()     # the report below goes to the user's own screen
        if outcome.end == End.RESET and not args.no_reboot:
            return None
        if outcome.end == End.TIMEOUT and cfg.timeout is not None:
            outcome.message = f"timed out after {cfg.timeout:g} s"   # counted across reboots
        _report(outcome, args.verbose)
        if args.screenshot:
            _screenshot(machine, args.screenshot)
        if args.stats:
            sys.stderr.write(machine.stats().format() + "\n")
        return outcome.exit_code
    finally:
        if display is not None:
            display.close()
        machine.close()
        restore()


# SIGTERM and SIGHUP (a closed terminal) end the run through the same path as a guest's power-off:
# the terminal leaves raw mode, serial files and sockets get every byte and are closed.
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


def _guard(machine) -> Callable[[], None]:
    """Route stop signals and failures of any thread to ``machine``; returns the undo."""

    def on_signal(signum: int, frame: object) -> None:
        # A handler runs between two bytecodes of the main thread, which may hold the very locks
        # finish() takes (the outcome's, the done event's): finish on a thread of its own.
        outcome = Outcome(End.SIGNAL, value=signum, message=f"terminated by {signal.Signals(signum).name}")
        threading.Thread(target=machine.finish, args=(outcome,), name="hvm-signal").start()

    def on_thread_failure(hook: threading.ExceptHookArgs) -> None:
        if hook.exc_type is SystemExit:
            return
        where = hook.thread.name if hook.thread is not None else "a thread"
        machine.internal_error(where, hook.exc_value)

    saved = [(sig, signal.signal(sig, on_signal)) for sig in _STOP_SIGNALS]
    saved_hook, threading.excepthook = threading.excepthook, on_thread_failure

    def restore() -> None:
        threading.excepthook = saved_hook
        for sig, handler in saved:
            signal.signal(sig, handler)

    return restore


def _report(outcome: Outcome, verbose: int) -> None:
    if outcome.end == End.CRASH and outcome.crash is not None:
        sys.stdout.flush()
        sys.stderr.write("\n" + outcome.crash.report() + "\n")
    elif outcome.end == End.ERROR:
        if verbose and outcome.detail:
            sys.stderr.write(outcome.detail)
        _say(f"{outcome.message}; {BUG_REPORT}")
    elif outcome.end in (End.TIMEOUT, End.RESET, End.HOST_LIMIT, End.SIGNAL):
        _say(outcome.message)
    elif verbose:
        _say(outcome.message or outcome.end.value)


if __name__ == "__main__":
    sys.exit(main())
