"""How guest code executes. Everything above this package talks to ``Engine`` only."""
from .base import Engine, EngineCrash, EmulationFailure
from .state import Regs, Segment, SRegs, DTable

__all__ = ["Engine", "EngineCrash", "EmulationFailure", "Regs", "Segment", "SRegs", "DTable"]
