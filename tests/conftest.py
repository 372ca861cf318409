"""Shared fixtures: test guests assembled from tests/guests/ with GNU as/ld at test time."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

import pytest

GUESTS = Path(__file__).parent / "guests"
REPO = Path(__file__).parent.parent


@dataclass(frozen=True)
class GuestRecipe:
    """How one test guest is built: 32/64-bit, flat (load address) or multiboot ELF."""

    source: str
    bits: int
    load: int | None = None  # flat binary linked at this address; None = multiboot ELF


RECIPES = {
    "hello16": GuestRecipe("hello16.S", 16, 0x7C00),
    "post16": GuestRecipe("post16.S", 16, 0x7C00),
    "repio": GuestRecipe("repio.S", 16, 0x7C00),
    "echo16": GuestRecipe("echo16.S", 16, 0x7C00),
    "long64": GuestRecipe("long64.S", 64, 0x100000),
    "events64": GuestRecipe("events64.S", 64, 0x100000),
    "isa64": GuestRecipe("isa64.S", 64, 0x100000),
    "cr4x64": GuestRecipe("cr4x64.S", 64, 0x100000),
    "pkeys64": GuestRecipe("pkeys64.S", 64, 0x100000),
    "sysenter32": GuestRecipe("sysenter32.S", 32, 0x100000),
    "apic64": GuestRecipe("apic64.S", 64, 0x100000),
    "busytimer64": GuestRecipe("busytimer64.S", 64, 0x100000),
    "multiboot": GuestRecipe("multiboot.S", 32),
    "outloop": GuestRecipe("outloop.S", 32),
    "smp": GuestRecipe("smp.S", 32),
    "hostile": GuestRecipe("hostile32.S", 32),
    "stream": GuestRecipe("stream32.S", 32),
    "modes32": GuestRecipe("modes.S", 32),
    "modes16": GuestRecipe("modes16.S", 16, 0x7C00),
    "rmflags16": GuestRecipe("rmflags16.S", 16, 0x7C00),
    "bios16": GuestRecipe("bios16.S", 16, 0x7C00),
    "smap64": GuestRecipe("smap64.S", 64, 0x100000),
    "testdev32": GuestRecipe("testdev32.S", 32),
    "iopl64": GuestRecipe("iopl64.S", 64, 0x100000),
    "disk16": GuestRecipe("disk16.S", 16, 0x7C00),
    "rom16": GuestRecipe("rom16.S", 16, 0x7C00),
    "smc64": GuestRecipe("smc64.S", 64, 0x100000),
    "name16": GuestRecipe("name16.S", 16, 0x7C00),
    "pv64": GuestRecipe("pv64.S", 64),
    "pvfuzz64": GuestRecipe("pvfuzz64.S", 64),
    "pvecho64": GuestRecipe("pvecho64.S", 64),
    "pvlinux64": GuestRecipe("pvlinux64.S", 64),
    "pvsmp64": GuestRecipe("pvsmp64.S", 64),
    "pvabi64": GuestRecipe("pvabi64.S", 64),
    "stringio16": GuestRecipe("stringio16.S", 16, 0x7C00),
    "stringio32": GuestRecipe("stringio32.S", 32, 0x100000),
    "stringio64": GuestRecipe("stringio64.S", 64, 0x100000),
    "pvbench64": GuestRecipe("pvbench64.S", 64),
}


def build_guest(name: str, outdir: Path, defines: dict[str, int] | None = None) -> Path:
    """Assemble and link one guest; returns the path of the bootable image."""
    r = RECIPES[name]
    tag = name + "".join(f"-{k}{v}" for k, v in sorted((defines or {}).items()))
    obj, elf = outdir / f"{tag}.o", outdir / f"{tag}.elf"
    as_flags = ["--64"] if r.bits == 64 else ["--32"]
    for k, v in (defines or {}).items():
        as_flags += ["--defsym", f"{k}={v}"]
    ld_flags = [] if r.bits == 64 else ["-m", "elf_i386"]
    subprocess.run(["as", *as_flags, "-I", str(GUESTS), "-o", str(obj), str(GUESTS / r.source)], check=True)
    if r.load is None:
        subprocess.run(["ld", *ld_flags, "--no-warn-rwx-segments", "-T", str(GUESTS / "multiboot.ld"),
                        "-o", str(elf), str(obj)], check=True)
        return elf
    subprocess.run(["ld", *ld_flags, "--no-warn-rwx-segments", "--defsym", f"LOAD={r.load:#x}",
                    "-T", str(GUESTS / "flat.ld"), "-o", str(elf), str(obj)], check=True)
    binary = outdir / f"{tag}.bin"
    subprocess.run(["objcopy", "-O", "binary", str(elf), str(binary)], check=True)
    return binary


@pytest.fixture(scope="session")
def guests(tmp_path_factory):
    """``guests("name")`` → path of the built guest (built once per session)."""
    outdir = tmp_path_factory.mktemp("guests")
    cache: dict = {}

    def get(name: str, **defines: int) -> Path:
        key = (name, tuple(sorted(defines.items())))
        if key not in cache:
            cache[key] = build_guest(name, outdir, defines)
        return cache[key]

    return get


def hvmrun_cmd() -> list[str]:
    """The hvmrun command of this checkout (never whichever ``hvmrun`` is first on PATH)."""
    return [sys.executable, "-m", "hvm.cli"]


def hvmrun_env() -> dict[str, str]:
    """The environment hvmrun runs in: this checkout's packages first on the path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def hvmrun(*args: str, input: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run hvmrun with ``args``; output captured as bytes."""
    return subprocess.run([*hvmrun_cmd(), *args], input=input, capture_output=True, timeout=timeout,
                          env=hvmrun_env(), stdin=None if input is not None else subprocess.DEVNULL)


def recipe_image(name: str, what: str) -> Path:
    """Build (or reuse from the user's cache) the ``images`` recipe ``name``. Only a host without
    a usable apt index or network gets a skip, and never CI; any other failure of the recipe
    (checksum, build step) is a real failure."""
    if str(REPO) not in sys.path:
        sys.path.insert(0, str(REPO))  # images sits at the repository root, outside the package
    import images

    try:
        return images.build(name)
    except images.AptUnavailable as exc:
        unavailable(f"cannot fetch {what} from Debian: {exc}")


def unavailable(reason: str) -> NoReturn:
    """Something a test needs is missing from this host: a skip here, a failure in CI (.ci/run
    installs everything, so there it is a broken set-up, never a reason to skip)."""
    if os.environ.get("CI"):
        pytest.fail(reason)
    pytest.skip(reason)


def require_tool(command: str, package: str) -> str:
    """The path of ``command``, which Debian's ``package`` provides (see ``unavailable``)."""
    path = shutil.which(command)
    if path is None:
        unavailable(f"{command} is not installed (apt-get install {package})")
    return path


@pytest.fixture(scope="session")
def linux_image() -> Path:
    """The linux recipe's directory (vmlinuz, initramfs.cpio)."""
    return recipe_image("linux", "the kernel")


@pytest.fixture
def mem():
    """64 MiB of real guest RAM from address 0, no KVM (tests needing another size define their own)."""
    from hvm.memory import GuestMemory

    m = GuestMemory(64 << 20)
    yield m
    m.close()
