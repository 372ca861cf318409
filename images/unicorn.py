"""Recipe ``unicorn``: the unicorn release hvm pins, rebuilt from its PyPI source with hvm's
store-path change (``hvm.engine.uc_lib`` says what and why), x86 only.

``python3 -m images unicorn`` fetches the source archive with pip (checked against the SHA256
below), applies the edits, builds ``libunicorn.so.2`` with CMake (~35 s on 2 cores) and prints
the directory; hvm's software engine loads the library from there from then on. Without it hvm
runs on PyPI's library, correctly and more slowly.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

from hvm.engine import uc_lib

from . import NotBuilt, Recipe, RecipeError, ToolMissing, VerificationError, cache_root, locked
from .apt import sha256_of

# The source archive on PyPI of the release setup.py pins (its "unicorn-2.1.4.tar.gz").
SDIST = {"2.1.4": "00567a70e323f749b419cd86bee4f9115beab7ebba32194581c090cbb7c59cff"}


class SourceUnavailable(RecipeError):
    """pip could not fetch the source archive."""

    exit_code = 69


def recipe_dir(cache: Path | None = None) -> Path:
    return cache_root(cache) / "unicorn"


def built_path(cache: Path | None = None) -> Path:
    """The library's directory if built for the installed unicorn; raises NotBuilt otherwise."""
    directory = uc_lib.patched_dir(cache)
    if directory is None:
        raise NotBuilt(f"the rebuilt unicorn is not built yet; run `python3 -m images unicorn` "
                       f"(would be at {uc_lib.lib_dir(cache)})")
    return directory


def _run(cmd: list[str], cwd: Path, log: Path) -> None:
    with open(log, "ab") as out:
        r = subprocess.run(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    if r.returncode:
        tail = log.read_text(errors="replace").splitlines()[-8:]
        raise RecipeError(f"{' '.join(cmd[:2])} failed (exit {r.returncode}); the end of {log}:\n"
                          + "\n".join(tail))


def _fetch(release: str, workdir: Path) -> Path:
    archive = workdir / f"unicorn-{release}.tar.gz"
    if not archive.is_file():
        r = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                            f"unicorn=={release}", "-d", str(workdir)],
                           capture_output=True, text=True)
        if r.returncode or not archive.is_file():
            raise SourceUnavailable(f"pip could not fetch unicorn {release}'s source archive: "
                                    f"{(r.stderr or r.stdout).strip().splitlines()[-1:]}")
    if sha256_of(archive) != SDIST[release]:
        archive.unlink()
        raise VerificationError(f"{archive}: SHA256 differs from unicorn {release}'s archive on PyPI")
    return archive


def _build_tools(workdir: Path) -> tuple[str, str | None]:
    """CMake (and Ninja when there is one): the host's, else PyPI's wheels unpacked into the
    recipe's own directory (nothing is installed in the system or the Python environment)."""
    cmake = shutil.which("cmake")
    if cmake is not None:
        return cmake, shutil.which("ninja")
    if shutil.which("cc") is None and shutil.which("gcc") is None:
        raise ToolMissing("no C compiler (cc or gcc) to build unicorn with")
    tools = workdir / "tools"
    cmake, ninja = tools / "cmake" / "data" / "bin" / "cmake", tools / "bin" / "ninja"
    if not cmake.is_file():
        r = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--target", str(tools),
                            "cmake", "ninja"], capture_output=True, text=True)
        if r.returncode or not cmake.is_file():
            raise ToolMissing("cmake is not installed and pip could not fetch it "
                              f"({(r.stderr or r.stdout).strip().splitlines()[-1:]}); apt-get install cmake")
    return str(cmake), str(ninja) if ninja.is_file() else None


def patch(tree: Path) -> None:
    """Apply hvm's edits to an unpacked unicorn source tree (the archive's ``src/``)."""
    for name, old, new in uc_lib.EDITS:
        path = tree / name
        text = path.read_text()
        if text.count(old) != 1:
            raise VerificationError(f"{path}: the text hvm's change replaces is not there once "
                                    f"(found {text.count(old)} times); not unicorn {uc_lib.RELEASE}?")
        path.write_text(text.replace(old, new))


def build(cache: Path | None = None) -> Path:
    """Fetch, patch and build; returns the directory holding ``libunicorn.so.2``."""
    release = uc_lib.installed_release()
    if release not in SDIST:
        raise RecipeError(f"hvm's change is written against unicorn {', '.join(SDIST)}; "
                          f"the installed release is {release}")
    done = uc_lib.patched_dir(cache)
    if done is not None:
        return done
    workdir = recipe_dir(cache)
    with locked(workdir):
        cmake, ninja = _build_tools(workdir)
        archive = _fetch(release, workdir)
        src, out = workdir / "src", workdir / "build"
        for d in (src, out):
            shutil.rmtree(d, ignore_errors=True)
        with tarfile.open(archive) as tar:
            tar.extractall(src, filter="data")
        tree = src / f"unicorn-{release}" / "src"
        patch(tree)
        log = workdir / "build.log"
        log.write_text("")
        generator = ["-G", "Ninja", f"-DCMAKE_MAKE_PROGRAM={ninja}"] if ninja else []
        _run([cmake, "-S", str(tree), "-B", str(out), *generator, "-DUNICORN_ARCH=x86",
              "-DCMAKE_BUILD_TYPE=Release", "-DUNICORN_BUILD_TESTS=off"], workdir, log)
        _run([cmake, "--build", str(out), "-j", str(os.cpu_count() or 2), "--target", "unicorn"], workdir, log)
        lib = uc_lib.lib_dir(cache)
        shutil.rmtree(lib, ignore_errors=True)
        lib.mkdir(parents=True)
        shutil.copy2(out / uc_lib.LIBRARY, lib / uc_lib.LIBRARY)
        (lib / "stamp").write_text(uc_lib.stamp(release) + "\n")
        shutil.rmtree(src, ignore_errors=True)
        shutil.rmtree(out, ignore_errors=True)
    return lib


RECIPE = Recipe(
    name="unicorn",
    summary="unicorn rebuilt with hvm's store-path change: the software engine's guest stores ~10x faster",
    build=build,
    path=built_path,
)

__all__ = ["RECIPE", "build", "built_path", "patch"]
