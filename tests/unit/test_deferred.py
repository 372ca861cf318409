"""Deferred standard modules: invisible to their users, never loaded by a VMM that does not use them."""
from __future__ import annotations

import subprocess
import sys
import textwrap

from hvm.deferred import DeferredModule, defer


def run_python(code: str) -> str:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          check=True).stdout


def test_first_attribute_loads_the_real_module(monkeypatch) -> None:
    # `wave` is a stdlib module nothing in the test process imports.
    monkeypatch.delitem(sys.modules, "wave", raising=False)
    defer("wave")
    stand_in = sys.modules["wave"]
    assert isinstance(stand_in, DeferredModule)
    import wave

    assert wave is stand_in
    assert wave.Error.__module__ == "wave"  # an attribute: the real import happens here
    assert type(sys.modules["wave"]) is not DeferredModule
    assert wave.open is sys.modules["wave"].open  # the stand-in now holds the real namespace


def test_loaded_modules_are_left_alone() -> None:
    before = sys.modules["os"]
    defer("os")
    assert sys.modules["os"] is before


def test_vmm_import_path_leaves_them_unloaded() -> None:
    out = run_python("""
        import sys, types
        import hvm.cli, hvm.machine, hvm.boot.loader, hvm.boot.multiboot, hvm.formats.e820
        real = [m for m in ("pdb", "pickle", "hashlib", "inspect", "elftools", "psutil", "socket")
                if isinstance(sys.modules.get(m), types.ModuleType)
                and type(sys.modules[m]).__name__ != "DeferredModule"]
        print(",".join(real))
    """)
    assert out.strip() == ""


def test_deferred_modules_still_work_for_other_code() -> None:
    out = run_python("""
        import hvm.machine
        import pickle, hashlib, inspect
        print(pickle.loads(pickle.dumps([1, 2])), hashlib.sha256(b"").hexdigest()[:8],
              inspect.isfunction(run) if (run := lambda: 0) else None)
    """)
    assert out.split() == ["[1,", "2]", "e3b0c442", "True"]
