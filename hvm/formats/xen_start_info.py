"""The start_info page a Xen PV domain boots with (xen/include/public/xen.h, struct start_info),
in its x86-64 layout: ``unsigned long`` and ``xen_pfn_t`` are 64 bits there, so the 32-bit fields
(flags, the event channels) are followed by 4 bytes of padding.

The kernel finds this page through RSI at its entry point. The console member is a union: a domU
reads ``{mfn, evtchn}``, the initial domain ``{info_off, info_size}``; only the domU form is
declared, since hvm builds unprivileged domains.
"""
from __future__ import annotations

from construct import Bytes, Int32ul, Int64ul, PaddedString, Padding, Struct

MAX_GUEST_CMDLINE = 1024

XenStartInfo64 = Struct(
    "magic" / PaddedString(32, "ascii"),   # "xen-<version>-<platform>"
    "nr_pages" / Int64ul,
    "shared_info" / Int64ul,               # MACHINE address of the shared info page
    "flags" / Int32ul,                     # SIF_*
    Padding(4),
    "store_mfn" / Int64ul,
    "store_evtchn" / Int32ul,
    Padding(4),
    "console_mfn" / Int64ul,
    "console_evtchn" / Int32ul,
    Padding(4),
    # Filled on first boot only (not on resume):
    "pt_base" / Int64ul,                   # VIRTUAL address of the top-level page table
    "nr_pt_frames" / Int64ul,
    "mfn_list" / Int64ul,                  # VIRTUAL address of the P2M list
    "mod_start" / Int64ul,                 # VIRTUAL address, or a PFN with SIF_MOD_START_PFN
    "mod_len" / Int64ul,
    "cmd_line" / Bytes(MAX_GUEST_CMDLINE),
    # The frames (page tables included) of a P2M list mapped apart from the kernel (INIT_P2M).
    "first_p2m_pfn" / Int64ul,
    "nr_p2m_frames" / Int64ul,
)
assert XenStartInfo64.sizeof() == 1168

__all__ = ["MAX_GUEST_CMDLINE", "XenStartInfo64"]
