"""What a user asks for, as dataclasses: validated once in ``validate()``, then trusted."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass, field

from .boards import BOARD_NAMES
from .boot.entry import Mode
from .errors import ConfigError, MissingFileError
from .memory import MiB

MAX_SERIAL_PORTS = 4
ACCELS = ("kvm", "unicorn", "auto")
_SIZE_RE = re.compile(r"^\s*(\d+)\s*([kKmMgGtT]?)(i?[bB])?\s*$")
_UNITS = {"": MiB, "k": 1 << 10, "m": MiB, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """Parse a memory size the way QEMU's -m does: a bare number means MiB; K/M/G/T suffixes."""
    if isinstance(text, int):
        return text
    m = _SIZE_RE.match(text)
    if not m:
        raise ConfigError(f"invalid size {text!r} (examples: 64M, 1G, 512)")
    return int(m.group(1)) * _UNITS[m.group(2).lower()]


@dataclass
class ModuleSpec:
    """A multiboot module: a file and the argument string the kernel sees after its path."""

    path: str
    args: str = ""

    @classmethod
    def parse(cls, spec: str) -> "ModuleSpec":
        """``PATH[,ARGS]`` as given to ``--module``."""
        path, _, args = spec.partition(",")
        if not path:
            raise ConfigError(f"--module {spec!r}: missing file name")
        return cls(path, args)


@dataclass
class FwCfgFile:
    """A named fw_cfg file the user adds (QEMU's ``-fw_cfg``): its contents from a file or a string."""

    name: str
    path: str | None = None
    string: str | None = None

    @classmethod
    def parse(cls, spec: str) -> "FwCfgFile":
        """``[name=]NAME,file=PATH`` or ``[name=]NAME,string=TEXT``, as QEMU's -fw_cfg takes them."""
        name, _, rest = spec.partition(",")
        name = name.removeprefix("name=")
        key, _, value = rest.partition("=")
        if not name or key not in ("file", "string") or (key == "file" and not value):
            raise ConfigError(f"--fw-cfg {spec!r}: expected NAME,file=PATH or NAME,string=TEXT")
        return cls(name, path=value) if key == "file" else cls(name, string=value)

    def data(self) -> bytes:
        """The file's contents (read when the machine is built)."""
        if self.path is None:
            return (self.string or "").encode()
        with open(self.path, "rb") as f:
            return f.read(FW_CFG_FILE_LIMIT + 1)


# fw_cfg files are copied into hvm's memory: a bound keeps a mistaken path (a disk image) from
# costing the host gigabytes. QEMU has no such limit; 16 MiB holds any firmware blob it is given.
FW_CFG_FILE_LIMIT = 16 << 20
FW_CFG_NAME_LIMIT = 55

# Devices a user may add with --device (QEMU's -device names). isa-debug-exit is always present, at
# QEMU's usual place; naming it (as kvm-unit-tests' scripts do) is accepted when that place is asked for.
OPTIONAL_DEVICES = ("pc-testdev",)
ALWAYS_PRESENT = {"isa-debug-exit": {"iobase": 0xF4, "iosize": 0x4}}


def parse_device(spec: str) -> str:
    """``NAME[,key=value...]`` as given to ``--device``: the name of an optional device to add, or
    "" for one that every machine has; raises ConfigError for anything else."""
    name, *options = spec.split(",")
    if name in OPTIONAL_DEVICES:
        if options:
            raise ConfigError(f"--device {spec!r}: {name} takes no options")
        return name
    if name in ALWAYS_PRESENT:
        fixed = ALWAYS_PRESENT[name]
        for option in options:
            key, _, value = option.partition("=")
            try:
                ok = key in fixed and int(value, 0) == fixed[key]
            except ValueError:
                ok = False
            if not ok:
                wanted = ",".join(f"{k}={v:#x}" for k, v in fixed.items())
                raise ConfigError(f"--device {spec!r}: hvm's {name} is always present, at {wanted}")
        return ""
    raise ConfigError(f"--device {spec!r}: unknown device (hvm offers {', '.join(OPTIONAL_DEVICES)}; "
                      f"{', '.join(ALWAYS_PRESENT)} is always present)")


_DRIVE_OPTION = re.compile(r"ro|rw|bootindex=\d+")


@dataclass
class DiskSpec:
    """A drive image for the IDE controller: ``PATH[,ro][,bootindex=N]`` as given to ``--disk``
    (``--cdrom`` takes ``PATH[,bootindex=N]``). ``bootindex`` is QEMU's device property: drives
    that have one are tried first, lowest first, before the ``--boot`` order."""

    path: str
    readonly: bool = False
    bootindex: int | None = None

    @classmethod
    def parse(cls, spec: str, option: str = "--disk") -> "DiskSpec":
        """Options are taken off the end while they are options (``,rw`` is the default, accepted
        too), so a file name may hold commas."""
        parts, flags = spec.split(","), []
        while len(parts) > 1 and _DRIVE_OPTION.fullmatch(parts[-1]):
            flags.insert(0, parts.pop())
        path = ",".join(parts)
        if not path:
            raise ConfigError(f"{option} {spec!r}: missing file name")
        disk = cls(path)
        for flag in flags:
            if flag.startswith("bootindex="):
                disk.bootindex = int(flag.partition("=")[2])
            elif option == "--cdrom":
                raise ConfigError(f"--cdrom {spec!r}: a CD-ROM is read-only; only bootindex=N is an option")
            else:
                disk.readonly = flag == "ro"
        return disk


# -boot's drive letters, as QEMU and the PC BIOS CMOS boot flags know them.
BOOT_DEVICES = {"a": "floppy", "c": "hard disk", "d": "CD-ROM", "n": "network"}
IDE_DRIVES = 4


def parse_boot(spec: str) -> str:
    """``--boot`` as QEMU's -boot: drive letters in order (``d``, ``cd``, ``order=dc``)."""
    order = spec.removeprefix("order=")
    if not order or any(c not in BOOT_DEVICES for c in order) or len(set(order)) != len(order):
        raise ConfigError(f"--boot {spec!r}: expected drive letters in boot order, each once: "
                          + ", ".join(f"{k} {v}" for k, v in BOOT_DEVICES.items()))
    return order


DECOMPRESS_CHOICES = ("auto", "host", "guest")
VGA_CHOICES = ("std", "none")
DISPLAY_CHOICES = ("none", "text")


@dataclass
class MachineConfig:
    """Everything a Machine is built from."""

    # The board: "direct" (hvm loads the kernel and stands in for the firmware), "pc" (firmware
    # boots the machine as on QEMU's pc machine) or "xenpv" (a Xen PV kernel, hvm its hypervisor).
    machine: str = "direct"
    # "pv": the kernel is a Xen PV guest, run deprivileged with hvm as its hypervisor (the
    # xenpv board; ``--xen pv`` is ``-M xenpv``).
    xen: str | None = None
    # The pc board's firmware image (None: SeaBIOS from the seabios recipe or the host).
    bios: str | None = None
    # The pc board's display adapter, as QEMU's -vga: "std" (standard VGA with VBE) or "none".
    vga: str = "std"
    # Where hvmrun shows the pc board's screen, as QEMU's -display: "none", or "text" (the VGA
    # text screen drawn on hvmrun's terminal, which types on the PS/2 keyboard). The Machine
    # itself has no use for it: hvm.text_display does the drawing.
    display: str = "none"
    # The pc board's IDE drives: a CD-ROM image (secondary master, as QEMU's -cdrom) and disks
    # (primary master, primary slave, then the secondary channel's free places).
    cdrom: str | DiskSpec | None = None
    disks: list[DiskSpec] = field(default_factory=list)
    # Boot order by drive letter (QEMU's -boot): "cad" (hard disk, floppy, CD) is QEMU's default.
    boot: str = "cad"
    memory: int = 128 * MiB
    cpus: int = 1
    kernel: str | None = None
    initrd: str | None = None
    append: str = ""
    modules: list[ModuleSpec] = field(default_factory=list)
    # Optional devices by QEMU's -device name (OPTIONAL_DEVICES), e.g. "pc-testdev".
    devices: list[str] = field(default_factory=list)
    # Named fw_cfg files for the guest (QEMU's -fw_cfg); names should start with "opt/".
    fw_cfg: list[FwCfgFile] = field(default_factory=list)
    # A raw binary's entry mode and load address (ignored for ELF/multiboot/bzImage images). None:
    # only a boot sector (55 AA at byte 510) runs raw, in real mode at 0x7C00; anything else
    # unrecognised is refused. A mode given here runs any unrecognised image as a raw binary.
    flat_mode: Mode | None = None
    load_addr: int | None = None
    # Serial ports COM1..COM4, each a backend spec: "buffer" (in memory, the API default),
    # "stdio", "none", "file:PATH", "unix:PATH".
    serial: list[str] = field(default_factory=lambda: ["buffer"])
    debugcon: str = "none"
    timeout: float | None = None
    # On a host whose KVM only emulates guest kernel code, a Linux boot that writes nothing to its
    # console for this many seconds is stopped with a message naming the limitation.
    stall_timeout: float = 300.0
    # "kvm" (hardware), "unicorn" (software CPU, one vCPU for now) or "auto" (unicorn where
    # /dev/kvm is missing, unusable or emulation-only).
    accel: str = "kvm"
    # Under KVM, execute the instructions KVM's emulator refuses in unicorn (hvm.engine.fallback)
    # instead of ending the run with a crash report.
    fallback: bool = True
    # Who decompresses a bzImage's payload: "host" (hvm, then the vmlinux inside is entered
    # directly), "guest" (the kernel's own decompressor) or "auto" (host where guest code is
    # emulated: the unicorn engine, or KVM on a host whose KVM only emulates).
    decompress: str = "auto"
    # Populate guest RAM ahead of a guest sweeping through it, on another host CPU (hvm.readahead).
    mem_readahead: bool = True
    # Under unicorn with several vCPUs: "multi" gives each vCPU an instance of its own, all running
    # at once (QEMU's -accel tcg,thread=multi), "single" has them take turns on one, "auto" is multi
    # where the host has a CPU to spare and hvm's rebuilt library can (hvm.engine.uc_core).
    unicorn_threads: str = "auto"
    # HVM_KVM_DEVICE lets tests and odd hosts point hvm at another KVM device node.
    kvm_path: str = field(default_factory=lambda: os.environ.get("HVM_KVM_DEVICE", "/dev/kvm"))
    verbose: int = 0

    def validate(self) -> "MachineConfig":
        """Check every field; raises ConfigError (usage) or MissingFileError (a named file is absent)."""
        self.memory = parse_size(self.memory)
        if self.memory < 1 * MiB:
            raise ConfigError(f"memory size {self.memory} bytes is too small (at least 1M)")
        if self.memory % 4096:
            raise ConfigError("memory size must be a multiple of 4 KiB")
        if self.unicorn_threads not in ("auto", "single", "multi"):
            raise ConfigError(f"unknown --unicorn-threads {self.unicorn_threads!r} (choose from auto, single, multi)")
        if not 1 <= self.cpus <= 255:
            raise ConfigError(f"-c {self.cpus}: the number of vCPUs must be between 1 and 255")
        if self.xen is not None:
            if self.xen != "pv":
                raise ConfigError(f"unknown --xen {self.xen!r} (choose from pv)")
            if self.machine not in ("direct", "xenpv"):
                raise ConfigError(f"--xen pv is its own machine: it cannot run on -M {self.machine}")
            self.machine = "xenpv"
        if self.accel not in ACCELS:
            raise ConfigError(f"unknown accelerator {self.accel!r} (choose from {', '.join(ACCELS)})")
        if self.decompress not in DECOMPRESS_CHOICES:
            raise ConfigError(f"unknown --decompress {self.decompress!r} (choose from "
                              f"{', '.join(DECOMPRESS_CHOICES)})")
        if self.machine not in BOARD_NAMES:
            raise ConfigError(f"unknown machine {self.machine!r} (choose from {', '.join(BOARD_NAMES)})")
        if self.vga not in VGA_CHOICES:
            raise ConfigError(f"unknown --vga {self.vga!r} (choose from {', '.join(VGA_CHOICES)})")
        if self.display not in DISPLAY_CHOICES:
            raise ConfigError(f"unknown --display {self.display!r} (choose from {', '.join(DISPLAY_CHOICES)})")
        if self.display == "text" and (self.machine != "pc" or self.vga == "none"):
            raise ConfigError("--display text needs a screen: -M pc with --vga std")
        self.disks = [DiskSpec.parse(d) if isinstance(d, str) else d for d in self.disks]
        if isinstance(self.cdrom, str):
            self.cdrom = DiskSpec.parse(self.cdrom, "--cdrom")
        indexes = [d.bootindex for d in [*self.disks, self.cdrom] if d is not None and d.bootindex is not None]
        if len(set(indexes)) != len(indexes):
            raise ConfigError(f"bootindex {next(i for i in indexes if indexes.count(i) > 1)} is given to two drives")
        self.boot = parse_boot(self.boot)
        if self.machine == "pc":
            if self.kernel is not None:
                raise ConfigError("-M pc boots through its firmware; --kernel is for -M direct (the default)")
            if len(self.disks) + (self.cdrom is not None) > IDE_DRIVES:
                raise ConfigError(f"the IDE controller has {IDE_DRIVES} places: --cdrom and --disk "
                                  f"take one each")
            for path in [*(d.path for d in self.disks), *([self.cdrom.path] if self.cdrom else [])]:
                if not os.path.exists(path):
                    raise MissingFileError(path)
        elif self.kernel is None:
            raise ConfigError("nothing to boot: give a kernel (--kernel PATH)")
        elif self.bios is not None or self.cdrom is not None or self.disks:
            raise ConfigError("--bios, --cdrom and --disk are for -M pc: the direct board runs no "
                              "firmware and has no IDE controller")
        if self.initrd is not None and self.modules:
            raise ConfigError("--initrd and --module cannot be combined")
        if self.machine == "xenpv" and (self.modules or self.devices or self.fw_cfg):
            raise ConfigError("--xen pv takes --kernel, --initrd and --append: a PV guest has no multiboot "
                              "modules, ISA test devices or fw_cfg")
        self.devices = [d for d in (parse_device(spec) for spec in self.devices) if d]
        if len(set(self.devices)) != len(self.devices):
            raise ConfigError("--device: each optional device can be added once")
        if "pc-testdev" in self.devices and self.debugcon != "none":
            raise ConfigError("--device pc-testdev claims ports 0xe8-0xeb, where --debugcon's port 0xe9 is")
        names = [f.name for f in self.fw_cfg]
        for f in self.fw_cfg:
            if not f.name.isascii() or len(f.name) > FW_CFG_NAME_LIMIT or names.count(f.name) > 1:
                raise ConfigError(f"--fw-cfg {f.name!r}: names are unique, ASCII, at most "
                                  f"{FW_CFG_NAME_LIMIT} characters")
            if f.path is not None and os.path.isfile(f.path) and os.path.getsize(f.path) > FW_CFG_FILE_LIMIT:
                raise ConfigError(f"--fw-cfg {f.name}: {f.path} is larger than {FW_CFG_FILE_LIMIT >> 20} MiB")
        if self.bios is not None and not os.path.exists(self.bios):
            raise MissingFileError(self.bios)   # the board says what is wrong with one that exists
        for path in [self.kernel, self.initrd, *(m.path for m in self.modules),
                     *(f.path for f in self.fw_cfg if f.path is not None)]:
            if path is not None and not os.path.isfile(path):
                raise MissingFileError(path)
        if self.flat_mode is not None and not isinstance(self.flat_mode, Mode):
            try:
                self.flat_mode = Mode(self.flat_mode)
            except ValueError:
                raise ConfigError(f"unknown entry mode {self.flat_mode!r} (real, protected, long)") from None
        if isinstance(self.serial, str):
            self.serial = [self.serial]
        if len(self.serial) > MAX_SERIAL_PORTS:
            raise ConfigError(f"at most {MAX_SERIAL_PORTS} serial ports (COM1-COM4)")
        for spec in [*self.serial, self.debugcon]:
            _check_backend_spec(spec)
        if self.display == "text" and "stdio" in (*self.serial, self.debugcon):
            raise ConfigError("--display text takes the terminal: --serial and --debugcon cannot use "
                              "stdio beside it (file:PATH, unix:PATH or none)")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError("--timeout must be positive")
        if self.stall_timeout <= 0:
            raise ConfigError("--stall-timeout must be positive")
        return self


def _check_backend_spec(spec: str) -> None:
    kind, _, arg = spec.partition(":")
    if kind in ("stdio", "none", "buffer") and not arg:
        return
    if kind in ("file", "unix") and arg:
        return
    raise ConfigError(f"invalid character device {spec!r} (stdio, none, file:PATH, unix:PATH)")
