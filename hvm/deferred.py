"""Stand-ins for standard modules that a dependency imports eagerly but uses only on demand.

``construct`` imports ``pdb`` (for its ``Probe`` debugger), ``pickle``, ``hashlib`` and ``inspect``
at import time; together they cost a VMM that never calls them about 6 MiB of resident memory
(measured with Python 3.11: ``import construct`` adds 9.7 MiB, 3.3 MiB with these deferred), which
is most of the gap between hvm's and QEMU's peak RSS.  A deferred module sits in ``sys.modules``
under the real module's name and spec; the first attribute anybody reads from it imports the real
module, replaces itself in ``sys.modules`` and from then on forwards nothing, because it has
copied the real module's namespace.  Code that never touches the module never pays for it.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types


class DeferredModule(types.ModuleType):
    def __getattr__(self, attr: str):
        # Only reached for names not yet in our namespace, i.e. before the real import.
        name = self.__name__
        if sys.modules.get(name) is self:
            del sys.modules[name]
        real = importlib.import_module(name)
        self.__dict__.update(real.__dict__)
        return getattr(real, attr)


def defer(*names: str) -> None:
    """Put a stand-in for each module not imported yet; a module already loaded is left alone."""
    for name in names:
        if name in sys.modules:
            continue
        spec = importlib.util.find_spec(name)
        if spec is None:
            continue
        stand_in = DeferredModule(name)
        # The real spec, so `import name` treats the stand-in as a finished import and
        # importlib.util.find_spec(name) keeps answering; neither reads a missing attribute.
        stand_in.__spec__ = spec
        sys.modules[name] = stand_in
