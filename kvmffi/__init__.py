"""cffi bindings to the Linux KVM API, built from the system's <linux/kvm.h>."""
from . import exits
from .kvm import CpuidEntry, Kvm, KvmError, MissingCapability, Vcpu, Vm, ffi, install_kick_handler, lib

__all__ = ["Kvm", "Vm", "Vcpu", "KvmError", "MissingCapability", "CpuidEntry", "exits", "ffi", "lib",
           "install_kick_handler"]
