"""hvm's change to unicorn (hvm/engine/uc_lib.py) against the real source archive of the pinned
release, and the choice of library, without building or running anything."""
from __future__ import annotations

import sys
import tarfile
from pathlib import Path

import pytest

from conftest import REPO, unavailable
from hvm.engine import uc_lib

sys.path.insert(0, str(REPO))  # images sits at the repository root, outside the package
from images import VerificationError  # noqa: E402
from images.unicorn import SDIST, patch  # noqa: E402


@pytest.fixture(scope="module")
def sdist() -> Path:
    """unicorn's source archive as the ``unicorn`` recipe keeps it (the README's test command builds
    the recipe first)."""
    archive = uc_lib.lib_dir().parent / f"unicorn-{uc_lib.RELEASE}.tar.gz"
    if not archive.is_file():
        unavailable(f"{archive} is missing: run `python3 -m images unicorn`")
    return archive


def _source_tree(archive: Path, into: Path) -> Path:
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if any(m.name.endswith("/src/" + name) for name, _, _ in uc_lib.EDITS)]
        tar.extractall(into, members=members, filter="data")
    return into / f"unicorn-{uc_lib.RELEASE}" / "src"


def test_the_edits_apply_once_each_to_the_pinned_release(sdist, tmp_path):
    assert uc_lib.RELEASE in SDIST
    tree = _source_tree(sdist, tmp_path)
    before = {name: (tree / name).read_text() for name, _, _ in uc_lib.EDITS}
    patch(tree)
    for name, old, new in uc_lib.EDITS:
        text = (tree / name).read_text()
        assert new in text and (old not in text or old in new)
    # The notdirty shortcut no longer depends on the TLB entry being non-executable.
    cputlb = (tree / "qemu/accel/tcg/cputlb.c").read_text()
    assert "!(tlbe->addr_code != -1)" in before["qemu/accel/tcg/cputlb.c"]
    assert "!(tlbe->addr_code != -1)" not in cputlb and "!tb_page_has_code(" in cputlb


def test_a_source_the_edits_do_not_fit_is_refused(sdist, tmp_path):
    tree = _source_tree(sdist, tmp_path)
    path = tree / "qemu/accel/tcg/cputlb.c"
    path.write_text(path.read_text().replace("void tlb_protect_code(", "void tlb_protect_code_(", 1))
    with pytest.raises(VerificationError, match="cputlb.c"):
        patch(tree)


def test_the_rebuilt_library_is_taken_only_when_its_stamp_fits(tmp_path, monkeypatch):
    monkeypatch.setenv("HVM_CACHE", str(tmp_path))
    lib = uc_lib.lib_dir()
    lib.mkdir(parents=True)
    (lib / uc_lib.LIBRARY).write_bytes(b"\x7fELF")
    assert uc_lib.patched_dir() is None                      # no stamp
    (lib / "stamp").write_text(uc_lib.stamp("2.0.0") + "\n")
    assert uc_lib.patched_dir() is None                      # built for another release
    (lib / "stamp").write_text(uc_lib.stamp(uc_lib.installed_release()) + "\n")
    assert uc_lib.patched_dir() == lib
