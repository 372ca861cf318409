"""hvm: a hardware-assisted x86 hypervisor in Python.

The embedding API::

    from hvm import Machine, MachineConfig
    with Machine(MachineConfig(kernel="guest.elf", append="hello", memory="64M")) as m:
        outcome = m.run(timeout=10)
        print(m.serial.text, outcome.exit_code)
"""
__version__ = "0.1.0"

# Before anything else: construct and dataclasses import these eagerly but need them only on rare
# paths (construct's debugger and its tracebacks, checksums and pickling; dataclasses' docstring
# for an undocumented class), and loading them would cost every hvm process several MiB of resident memory.
from .deferred import defer  # noqa: E402

defer("pdb", "pickle", "hashlib", "inspect", "traceback")

from .config import DiskSpec, FwCfgFile, MachineConfig, ModuleSpec  # noqa: E402
from .devices.base import Device  # noqa: E402
from .errors import ConfigError, HostError, HvmError, ImageError, MissingFileError  # noqa: E402
from .outcome import End, GuestCrash, Outcome  # noqa: E402


def __getattr__(name: str):
    # Machine pulls in the KVM bindings and the loaders; importing it lazily keeps `import hvm` cheap.
    if name == "Machine":
        from .machine import Machine
        return Machine
    raise AttributeError(name)


__all__ = ["Machine", "MachineConfig", "ModuleSpec", "FwCfgFile", "DiskSpec", "Device", "Outcome", "End", "GuestCrash",
           "HvmError", "ConfigError", "ImageError", "MissingFileError", "HostError", "__version__"]
