"""Debian's stock kernel and a busybox initramfs: ``python3 -m images linux``.

The kernel is the one ``linux-image-amd64`` points at (that metapackage only depends on the
versioned ``linux-image-<abi>-amd64``, whose ``/boot/vmlinuz-*`` is taken as is). The initramfs is
written by ``images.cpio``: ``busybox-static``'s binary, a ``/dev/console`` node (the kernel opens
it for init's standard streams before anything is mounted) and ``/init``, which mounts proc, sys
and devtmpfs, runs the command given as ``hvm.run=...`` on the kernel command line (quoted with
'...' or "...", or a single word) or else starts a shell on the console, then powers off.

The recipe's result is a directory holding ``vmlinuz``, ``vmlinux`` (the ELF kernel inside it,
decompressed by hvm's own host-side decompressor: the image a PVH boot takes) and
``initramfs.cpio``.
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from . import AptUnavailable, NotBuilt, Recipe, RecipeError, VerificationError, cache_root, locked
from hvm.boot import decompress

from . import apt, cpio

META_PACKAGE = "linux-image-amd64"
BUSYBOX_PACKAGE = "busybox-static"
KERNEL_NAME, VMLINUX_NAME, INITRAMFS_NAME = "vmlinuz", "vmlinux", "initramfs.cpio"

INIT_SCRIPT = r"""#!/bin/busybox sh
# hvm's initramfs init: mount the kernel's file systems, run hvm.run=... or a shell, power off.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
for m in ata_piix sd_mod sr_mod; do modprobe -q $m; done   # PC disks and CD-ROMs, where there are any
cmdline=$(cat /proc/cmdline)
run=
case "$cmdline" in
    *"hvm.run='"*) run=${cmdline#*hvm.run=\'}; run=${run%%\'*} ;;
    *'hvm.run="'*) run=${cmdline#*hvm.run=\"}; run=${run%%\"*} ;;
    *hvm.run=*) run=${cmdline#*hvm.run=}; run=${run%% *} ;;
esac
if [ -n "$run" ]; then
    sh -c "$run"
    status=$?
    [ $status -eq 0 ] || echo "hvm.run: exit status $status"
else
    echo "hvm initramfs: no hvm.run= on the command line; starting a shell (exit powers off)"
    setsid cttyhack sh
fi
sync
poweroff -f
"""


def recipe_dir(cache: Path | None = None) -> Path:
    """Where this recipe keeps its downloads and results."""
    return cache_root(cache) / "linux"


def built_path(cache: Path | None = None) -> Path:
    """The result directory if it has been built; raises NotBuilt otherwise."""
    path = recipe_dir(cache) / "out"
    if not all((path / name).is_file() for name in (KERNEL_NAME, VMLINUX_NAME, INITRAMFS_NAME)):
        raise NotBuilt(f"the linux image is not built yet; run `python3 -m images linux` (would be in {path})")
    return path


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def kernel_package() -> str:
    """The versioned kernel package ``linux-image-amd64`` depends on."""
    record = apt.record(META_PACKAGE)
    for alternative in record.get("Depends", "").split(","):
        name = alternative.split("|")[0].split("(")[0].strip()
        if name.startswith("linux-image-"):
            return name
    raise VerificationError(f"apt-cache show {META_PACKAGE}: no linux-image-* dependency in "
                            f"{record.get('Depends')!r}")


def members(deb: Path, prefix: str, into: Path) -> list[Path]:
    """Extract the regular files under ``prefix`` (e.g. ``./boot/``) of a .deb's file system; the
    rest (a kernel package's modules are hundreds of MiB) is streamed past, never written."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    found = []
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                if m.isfile() and m.name.startswith(prefix):
                    target = into / Path(m.name).name
                    with tar.extractfile(m) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                    found.append(target)
    except tarfile.TarError as exc:
        proc.kill()
        raise RecipeError(f"{deb}: unreadable package contents ({exc})") from None
    finally:
        proc.stdout.close()
        err = proc.stderr.read().decode(errors="replace")
        if proc.wait() != 0:
            raise RecipeError(f"dpkg-deb --fsys-tarfile {deb.name} failed: {err.strip()}")
    return found


# The PC board's disk drivers, which Debian builds as modules: IDE (PIIX), SCSI disks and CD-ROMs.
DISK_MODULES = ("ata_piix", "sd_mod", "sr_mod")
SEARCH_DIRS = ("drivers/ata", "drivers/scsi", "drivers/cdrom", "block", "lib", "crypto", "arch/x86/crypto")


def _tar_members(deb: Path, wanted) -> dict[str, bytes]:
    """The regular files of a .deb's file system for which ``wanted(name)`` is true."""
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    found: dict[str, bytes] = {}
    try:
        with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
            for m in tar:
                if m.isfile() and wanted(m.name):
                    with tar.extractfile(m) as src:
                        found[m.name] = src.read()
    except tarfile.TarError as exc:
        proc.kill()
        raise RecipeError(f"{deb}: unreadable package contents ({exc})") from None
    finally:
        proc.stdout.close()
        proc.wait()
    return found


def _depends(ko: bytes) -> list[str]:
    """The modules a .ko needs, from its .modinfo section's ``depends=`` (what depmod reads)."""
    import io

    from elftools.elf.elffile import ELFFile

    section = ELFFile(io.BytesIO(ko)).get_section_by_name(".modinfo")
    for field in (section.data().split(b"\0") if section is not None else []):
        if field.startswith(b"depends="):
            return [d for d in field[8:].decode().split(",") if d]
    return []


def disk_modules(deb: Path) -> list[tuple[str, bytes]]:
    """(path in the initramfs, contents) of DISK_MODULES, what they need (their ``depends=``),
    and a modules.dep for them (Debian's package leaves it to depmod at install time), so
    busybox's modprobe loads them in order."""
    def candidate(name: str) -> bool:
        return name.endswith(".ko") and any(f"/kernel/{d}/" in name for d in SEARCH_DIRS)

    files = {name[2:]: data for name, data in _tar_members(deb, candidate).items()}
    by_name = {Path(path).name.removesuffix(".ko").replace("-", "_"): path for path in files}
    deps: dict[str, list[str]] = {}
    todo = list(DISK_MODULES)
    while todo:
        name = todo.pop().replace("-", "_")
        path = by_name.get(name)
        if path is None:
            raise VerificationError(f"{deb.name}: no module {name} (needed for the PC's disks)")
        if path not in deps:
            needs = _depends(files[path])
            deps[path] = [by_name.get(n.replace("-", "_"), n) for n in needs]
            todo += needs
    moddir = next(iter(deps)).split("/kernel/")[0]                # lib/modules/VERSION
    order: list[str] = []                                         # each module after what it needs

    def visit(module: str) -> None:
        if module not in order:
            for need in deps[module]:
                visit(need)
            order.append(module)

    for module in sorted(deps):
        visit(module)

    def closure(module: str) -> list[str]:
        seen: set[str] = set()
        todo = list(deps[module])
        while todo:
            need = todo.pop()
            if need not in seen:
                seen.add(need)
                todo += deps[need]
        return sorted(seen, key=order.index, reverse=True)

    # As depmod writes it: every module a module needs, directly or not, the one to load first
    # last (busybox's modprobe loads the list from its end and does not recurse).
    rel = lambda path: path[len(moddir) + 1:]  # noqa: E731
    dep_text = "".join(f"{rel(m)}: {' '.join(rel(d) for d in closure(m))}\n" for m in sorted(deps))
    return [(f"{moddir}/modules.dep", dep_text.encode()), *((m, files[m]) for m in sorted(deps))]


def initramfs(busybox: bytes, modules: list[tuple[str, bytes]] = ()) -> bytes:
    """The newc archive: busybox, /init, ``modules`` (path, contents) and the directories and
    node they need."""
    dirs = sorted({str(p) for path, _ in modules for p in Path(path).parents if str(p) != "."})
    return cpio.archive([
        *(cpio.directory(d) for d in ("bin", "dev", "proc", "sys", "tmp", "root")),
        *(cpio.directory(d) for d in dirs),
        *(cpio.file(path, data) for path, data in modules),
        cpio.char_device("dev/console", 5, 1),
        cpio.file("bin/busybox", busybox, 0o755),
        cpio.symlink("bin/sh", "busybox"),
        cpio.file("init", INIT_SCRIPT.encode(), 0o755),
    ])


def extract_vmlinux(bzimage: Path) -> bytes:
    """The ELF kernel inside a bzImage, through the decompressor hvm boots with."""
    from hvm.boot.linux import bzimage_payload
    from hvm.errors import ImageError

    data = bzimage.read_bytes()
    try:
        return decompress.decompress(str(bzimage), bzimage_payload(str(bzimage), data))
    except ImageError as exc:
        raise VerificationError(str(exc)) from None


def build(cache: Path | None = None) -> Path:
    """Fetch and verify the kernel and busybox packages, write the initramfs; returns the directory."""
    workdir = recipe_dir(cache)
    with locked(workdir):
        kernel_pkg = kernel_package()
        debs = apt.fetch([kernel_pkg, BUSYBOX_PACKAGE], workdir / "debs")
        inputs = hashlib.sha256("\n".join([
            *(f"{d.package} {d.version} {d.sha256}" for d in debs.values()),
            *(Path(m.__file__).read_text() for m in (sys.modules[__name__], cpio, decompress)),
        ]).encode()).hexdigest()
        out, stamp = workdir / "out", workdir / "out.inputs"
        if all((out / name).is_file() for name in (KERNEL_NAME, VMLINUX_NAME, INITRAMFS_NAME)) \
                and stamp.is_file() and stamp.read_text().strip() == inputs:
            return out
        tmp = workdir / "out.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        kernels = [p for p in members(debs[kernel_pkg].path(workdir / "debs"), "./boot/", tmp)
                   if p.name.startswith("vmlinuz-")]
        if len(kernels) != 1:
            raise VerificationError(f"{debs[kernel_pkg].filename}: expected one /boot/vmlinuz-*, found "
                                    f"{[k.name for k in kernels]}")
        kernels[0].rename(tmp / KERNEL_NAME)
        for leftover in tmp.iterdir():
            if leftover.name != KERNEL_NAME:
                leftover.unlink()
        (tmp / VMLINUX_NAME).write_bytes(extract_vmlinux(tmp / KERNEL_NAME))
        bb_dir = workdir / "busybox"
        shutil.rmtree(bb_dir, ignore_errors=True)
        bb_dir.mkdir()
        busybox = [p for p in members(debs[BUSYBOX_PACKAGE].path(workdir / "debs"), "./bin/", bb_dir)
                   if p.name == "busybox"]
        if not busybox:
            raise VerificationError(f"{debs[BUSYBOX_PACKAGE].filename}: no /bin/busybox")
        modules = disk_modules(debs[kernel_pkg].path(workdir / "debs"))
        (tmp / INITRAMFS_NAME).write_bytes(initramfs(busybox[0].read_bytes(), modules))
        shutil.rmtree(out, ignore_errors=True)
        tmp.rename(out)
        stamp.write_text(inputs + "\n")
        _log(f"built {out}: {KERNEL_NAME} (and {VMLINUX_NAME}) from {kernel_pkg} {debs[kernel_pkg].version}, "
             f"{INITRAMFS_NAME} with busybox {debs[BUSYBOX_PACKAGE].version}")
        return out


RECIPE = Recipe(
    name="linux",
    summary="Debian's stock kernel (linux-image-amd64) and a busybox initramfs running hvm.run=...",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "build", "built_path", "initramfs", "kernel_package", "AptUnavailable"]
