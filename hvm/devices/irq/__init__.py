"""Interrupt controllers and timers modelled in Python for the software engine (KVM keeps its own in the kernel)."""
