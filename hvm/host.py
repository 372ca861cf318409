"""What the host's KVM can do, detected once and expressed as policy (DESIGN rule 5).

On a nested, paravirtual KVM (kvm_pvm) guest code at CPL0 runs in KVM's instruction emulator: slow,
and some instructions are refused or mis-executed. Every other module asks ``HostInfo`` instead of
testing for that itself.
"""
from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from functools import lru_cache

import kvmffi

from .errors import HostError

_PVM_MODULE = "/sys/module/kvm_pvm"


@dataclass(frozen=True)
class HostInfo:
    """Facts about /dev/kvm that change how hvm runs guests."""

    kvm_path: str
    emulation_only: bool
    reason: str

    def banner(self) -> str | None:
        """The one line hvm prints on stderr about this host, or None when there is nothing to say."""
        if not self.emulation_only:
            return None
        return (f"hvm: host KVM runs guest kernel code in its instruction emulator ({self.reason}): "
                "CPL0 code is slow and some instructions are refused")


def _emulation_only() -> tuple[bool, str]:
    forced = os.environ.get("HVM_HOST_EMULATION_ONLY")
    if forced in ("0", "1"):
        return forced == "1", "HVM_HOST_EMULATION_ONLY set"
    if os.path.isdir(_PVM_MODULE):
        return True, "kvm_pvm loaded"
    return False, ""


def open_kvm(path: str = "/dev/kvm") -> kvmffi.Kvm:
    """Open /dev/kvm, turning every way it can fail into a HostError that says why."""
    try:
        return kvmffi.Kvm(path)
    except FileNotFoundError:
        raise HostError(f"{path} does not exist: KVM is not available on this host "
                        "(no hardware virtualization, or the kvm module is not loaded)") from None
    except PermissionError:
        raise HostError(f"{path}: permission denied (add yourself to the 'kvm' group or run as root)") from None
    except kvmffi.KvmError as exc:
        if exc.errno == errno.EPROTO:
            raise HostError(f"{path}: incompatible KVM ({exc})") from None
        raise HostError(f"{path}: unusable ({exc})") from None
    except OSError as exc:
        raise HostError(f"{path}: cannot open ({exc.strerror})") from None


@lru_cache(maxsize=None)
def host_info(kvm_path: str = "/dev/kvm") -> HostInfo:
    """Detect the host's KVM properties once per process."""
    emul, reason = _emulation_only()
    return HostInfo(kvm_path, emul, reason)


def choose_accel(requested: str, kvm_path: str, host: HostInfo, machine: str = "direct") -> tuple[str, str]:
    """The engine to use for ``--accel requested`` on board ``machine`` and why: "kvm" or
    "unicorn". For "auto" the KVM device is trusted only once it has opened and created a VM: a
    node that exists but is no KVM (or a KVM that refuses VMs) falls back too."""
    if requested != "auto":
        return requested, f"--accel {requested}"
    problem = kvm_problem(kvm_path)
    if problem is not None:
        return "unicorn", problem
    # A Xen PV guest's kernel would run well enough on such a KVM (ring 3, run natively; a
    # hypercall measured 208-235 us there against 295-427 us under unicorn), but its user space
    # cannot: SYSCALL from a process never reaches hvm's ring 0 there, and Debian's kernel stops at
    # "Run /init". So auto takes unicorn for PV guests too; --accel kvm still runs them on KVM.
    if host.emulation_only:
        return "unicorn", f"the host's KVM runs guest kernel code in its instruction emulator ({host.reason})"
    return "kvm", "hardware virtualization is available"


def kvm_problem(kvm_path: str) -> str | None:
    """Why ``kvm_path`` cannot run a VM, or None once it has created one."""
    try:
        kvm = open_kvm(kvm_path)
    except HostError as exc:
        return str(exc)
    try:
        kvm.create_vm().close()
    except OSError as exc:
        return f"{kvm_path}: cannot create a VM ({exc})"
    finally:
        kvm.close()
    return None
