"""Fetch Debian packages with the host's own apt (download only), verify them, unpack them.

Nothing is installed on the host: ``apt-get download`` only drops the .deb into a directory, and
``dpkg-deb -x`` unpacks it into the cache.  apt-get checks the archive's signatures itself; we
additionally compare every file with the ``SHA256:`` field of the version ``apt-cache show``
reports, and record that hash so that later runs can re-verify the cached file without apt.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from . import AptUnavailable, RecipeError, ToolMissing, VerificationError

MANIFEST = "manifest.json"
_HINT = "apt or the network is unusable here; try `apt-get update` (as root) and run this again"


@dataclass(frozen=True)
class Deb:
    """One package version as apt's index describes it, and where its file is in the cache."""

    package: str
    version: str
    architecture: str
    sha256: str
    size: int
    filename: str          # the .deb's name in the cache directory

    def path(self, directory: Path) -> Path:
        """The cached .deb inside ``directory``."""
        return directory / self.filename


def _tool(name: str) -> str:
    exe = shutil.which(name)
    if exe is None:
        raise ToolMissing(f"`{name}` is not installed; this recipe needs Debian's apt and dpkg tools")
    return exe


def _tail(text: str, lines: int = 6) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def sha256_of(path: Path) -> str:
    """Hex SHA256 of a file."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def parse_records(text: str) -> list[dict[str, str]]:
    """Split ``apt-cache show`` output into records of their single-line fields."""
    records, current = [], {}
    for line in text.splitlines():
        if not line.strip():
            if current:
                records.append(current)
            current = {}
        elif not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            current[key] = value.strip()
        # continuation lines (long descriptions) carry nothing we need
    if current:
        records.append(current)
    return records


APT_LISTS = Path("/var/lib/apt/lists")


def _lists_missing() -> bool:
    return not any(APT_LISTS.glob("*_Packages*"))


def _update_lists() -> None:
    # A fresh Debian machine (or container) ships without package lists: as root, fetch them once
    # rather than fail a newcomer's first command; anyone else gets the hint.
    _log("apt has no package lists yet; running `apt-get update` once")
    r = subprocess.run([_tool("apt-get"), "update", "-qq"], capture_output=True, text=True)
    if r.returncode != 0:
        raise AptUnavailable(f"`apt-get update` failed ({_tail(r.stderr)}); {_HINT}")


def record(package: str) -> dict[str, str]:
    """apt's index record of the version it would pick for ``package``
    (``apt-cache show --no-all-versions``)."""
    if _lists_missing() and os.geteuid() == 0:
        _update_lists()
    r = subprocess.run([_tool("apt-cache"), "show", "--no-all-versions", package],
                       capture_output=True, text=True)
    records = [rec for rec in parse_records(r.stdout) if rec.get("Package") == package]
    if r.returncode != 0 or not records:
        raise AptUnavailable(f"apt-cache knows no package {package!r} ({_tail(r.stderr) or 'no record'}); "
                             f"{_HINT}")
    return records[0]


def candidate(package: str) -> Deb:
    """The version apt would pick for ``package``, as a Deb to fetch."""
    rec = record(package)
    missing = [k for k in ("Version", "Architecture", "SHA256", "Size") if k not in rec]
    if missing:
        raise VerificationError(f"apt-cache show {package}: record lacks {', '.join(missing)}")
    # apt-get download names the file <package>_<version>_<arch>.deb, writing an epoch's ':' as %3a.
    filename = f"{package}_{rec['Version'].replace(':', '%3a')}_{rec['Architecture']}.deb"
    return Deb(package, rec["Version"], rec["Architecture"], rec["SHA256"].lower(), int(rec["Size"]), filename)


def _load_manifest(directory: Path) -> dict[str, Deb]:
    try:
        data = json.loads((directory / MANIFEST).read_text())
        return {name: Deb(**fields) for name, fields in data.items()}
    except (OSError, ValueError, TypeError):
        return {}


def _save_manifest(directory: Path, debs: dict[str, Deb]) -> None:
    tmp = directory / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps({k: asdict(v) for k, v in sorted(debs.items())}, indent=2) + "\n")
    tmp.replace(directory / MANIFEST)


def _log(msg: str) -> None:
    print(f"images: {msg}", file=sys.stderr, flush=True)


def fetch(packages: list[str], directory: Path) -> dict[str, Deb]:
    """Download (or reuse) each package's .deb into ``directory``, verified by SHA256."""
    directory.mkdir(parents=True, exist_ok=True)
    known = _load_manifest(directory)
    result: dict[str, Deb] = {}
    for package in packages:
        deb = known.get(package)
        # A file fetched and verified earlier is re-checked against the hash recorded then; this
        # keeps reruns offline and fast while still catching a damaged cache.
        if deb is not None and deb.path(directory).is_file() and sha256_of(deb.path(directory)) == deb.sha256:
            result[package] = deb
            continue
        deb = candidate(package)
        target = deb.path(directory)
        if not (target.is_file() and sha256_of(target) == deb.sha256):
            _log(f"apt-get download {package}={deb.version}")
            r = subprocess.run([_tool("apt-get"), "download", "-q", f"{package}={deb.version}"],
                               cwd=directory, capture_output=True, text=True)
            if r.returncode != 0:
                raise AptUnavailable(f"`apt-get download {package}={deb.version}` failed "
                                     f"(exit {r.returncode}): {_tail(r.stderr)}\n{_HINT}")
            if not target.is_file():
                raise AptUnavailable(f"apt-get download {package} left no {target.name} in {directory}; {_HINT}")
            actual = sha256_of(target)
            if actual != deb.sha256:
                target.unlink()
                raise VerificationError(f"{target.name}: SHA256 {actual} does not match apt-cache show "
                                        f"{package}={deb.version} ({deb.sha256}); the file was deleted")
        result[package] = deb
        known[package] = deb
        _save_manifest(directory, known)
    return result


def extract(debs: list[Deb], directory: Path, into: Path) -> Path:
    """Unpack ``debs`` (from ``directory``) with ``dpkg-deb -x`` into ``into``; reused when unchanged."""
    stamp = "\n".join(sorted(f"{d.package} {d.version} {d.sha256}" for d in debs)) + "\n"
    marker = into / ".hvm-extracted"
    if marker.is_file() and marker.read_text() == stamp:
        return into
    # Unpack into a fresh sibling and swap it in, so an interrupted run never leaves a half tree
    # that a later run would take for complete.
    tmp = into.with_name(into.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    dpkg_deb = _tool("dpkg-deb")
    for d in debs:
        _log(f"dpkg-deb -x {d.filename}")
        r = subprocess.run([dpkg_deb, "-x", str(d.path(directory)), str(tmp)], capture_output=True, text=True)
        if r.returncode != 0:
            raise RecipeError(f"dpkg-deb -x {d.filename} failed: {_tail(r.stderr)}")
    (tmp / ".hvm-extracted").write_text(stamp)
    shutil.rmtree(into, ignore_errors=True)
    tmp.rename(into)
    return into
