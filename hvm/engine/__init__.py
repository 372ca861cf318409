"""How guest code executes. Everything above this package talks to ``Engine`` only."""
from . import uc_lib

uc_lib.choose()  # before anything imports unicorn: the binding loads its library on import

from .base import Engine, EngineCrash, EmulationFailure
from .state import Regs, Segment, SRegs, DTable

__all__ = ["Engine", "EngineCrash", "EmulationFailure", "Regs", "Segment", "SRegs", "DTable"]
