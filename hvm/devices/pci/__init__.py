"""PCI: one configuration-space model (``config``) every PCI function reuses, the host bridge's
configuration mechanism #1 (``host``), and the chipset functions of the PC board."""
