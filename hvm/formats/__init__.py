"""Binary formats hvm reads or writes, each declared once with ``construct``."""
