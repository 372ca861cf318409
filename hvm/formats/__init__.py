"""Binary formats hvm reads or writes, each declared once with ``construct``.

``hvm/__init__`` has deferred the standard modules construct imports eagerly (see hvm.deferred).
"""
from construct import ConstructError

__all__ = ["ConstructError"]
