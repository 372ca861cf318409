"""IDE: the PIIX3 IDE function (``piix``) with its two channels (``channel``), the SFF-8038i
bus-master DMA engine (``busmaster``), ATA disks over raw images (``ata``) and ATAPI CD/DVD
drives over ISO images (``atapi``).

A board builds one like this::

    disk = AtaDisk(DiskImage.open("disk.img"))
    cdrom = AtapiCdrom(DiskImage.open("boot.iso", readonly=True))
    ide = PiixIde(machine.memory, machine.irq(14), machine.irq(15),
                  primary=(disk, None), secondary=(cdrom, None))
    ide.attach(machine.add_port_device)     # 0x1F0/0x3F6 and 0x170/0x376
    pci_host.add(devfn(1, 1), ide)           # BAR4: the bus-master registers
"""
from .ata import AtaDisk, DiskImage
from .atapi import AtapiCdrom
from .busmaster import BusMaster, BusMasterChannel
from .channel import Channel
from .piix import PiixIde

__all__ = ["AtaDisk", "AtapiCdrom", "BusMaster", "BusMasterChannel", "Channel", "DiskImage", "PiixIde"]
