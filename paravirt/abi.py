"""The Xen PV ABI for 64-bit guests, as numbers: hypercalls, errno values, MMU commands, selectors,
the hypervisor's virtual area, ELF note types and page-table bits.

Every value comes from Xen's public headers (xen/include/public/: xen.h, elfnote.h, errno.h,
features.h, version.h, sched.h, callback.h, vcpu.h, memory.h, arch-x86/xen.h,
arch-x86/xen-x86_64.h), which are the ABI's authority; the header is named beside each group.
"""
from __future__ import annotations

# -- hypercall numbers (xen.h) ------------------------------------------------------------------
HYPERCALLS = {
    0: "set_trap_table", 1: "mmu_update", 2: "set_gdt", 3: "stack_switch", 4: "set_callbacks",
    5: "fpu_taskswitch", 6: "sched_op_compat", 7: "platform_op", 8: "set_debugreg",
    9: "get_debugreg", 10: "update_descriptor", 12: "memory_op", 13: "multicall",
    14: "update_va_mapping", 15: "set_timer_op", 16: "event_channel_op_compat", 17: "xen_version",
    18: "console_io", 19: "physdev_op_compat", 20: "grant_table_op", 21: "vm_assist",
    22: "update_va_mapping_otherdomain", 23: "iret", 24: "vcpu_op", 25: "set_segment_base",
    26: "mmuext_op", 27: "xsm_op", 28: "nmi_op", 29: "sched_op", 30: "callback_op",
    31: "xenoprof_op", 32: "event_channel_op", 33: "physdev_op", 34: "hvm_op", 35: "sysctl",
    36: "domctl", 37: "kexec_op", 38: "tmem_op", 39: "argo_op", 40: "xenpmu_op", 41: "dm_op",
    42: "hypfs_op",
}
HYPERCALL_NUMBERS = {name: nr for nr, name in HYPERCALLS.items()}
HYPERCALL_PAGE_SLOTS = 128        # 32-byte stubs in the hypercall page
HYPERCALL_SLOT_SIZE = 32

# -- errno values (errno.h; equal to Linux x86's). Hypercalls return them negated. ----------------
EPERM, ENOENT, ESRCH, EINTR, EIO, ENXIO, E2BIG = 1, 2, 3, 4, 5, 6, 7
EBADF, EAGAIN, ENOMEM, EACCES, EFAULT, EBUSY, EEXIST = 9, 11, 12, 13, 14, 16, 17
EXDEV, ENODEV, EINVAL, ENOSPC, ERANGE, ENOSYS, ENOTEMPTY = 18, 19, 22, 28, 34, 38, 39
EOPNOTSUPP, ETIMEDOUT = 95, 110

# -- PV MMU (xen.h) -------------------------------------------------------------------------------
MMU_NORMAL_PT_UPDATE, MMU_MACHPHYS_UPDATE, MMU_PT_UPDATE_PRESERVE_AD, MMU_PT_UPDATE_NO_TRANSLATE = 0, 1, 2, 3
MMUEXT_PIN_L1_TABLE, MMUEXT_PIN_L2_TABLE, MMUEXT_PIN_L3_TABLE, MMUEXT_PIN_L4_TABLE = 0, 1, 2, 3
MMUEXT_UNPIN_TABLE, MMUEXT_NEW_BASEPTR = 4, 5
MMUEXT_TLB_FLUSH_LOCAL, MMUEXT_INVLPG_LOCAL, MMUEXT_TLB_FLUSH_MULTI, MMUEXT_INVLPG_MULTI = 6, 7, 8, 9
MMUEXT_TLB_FLUSH_ALL, MMUEXT_INVLPG_ALL, MMUEXT_FLUSH_CACHE, MMUEXT_SET_LDT = 10, 11, 12, 13
MMUEXT_NEW_USER_BASEPTR, MMUEXT_CLEAR_PAGE, MMUEXT_COPY_PAGE = 15, 16, 17
MMUEXT_FLUSH_CACHE_GLOBAL, MMUEXT_MARK_SUPER, MMUEXT_UNMARK_SUPER = 18, 19, 20
UVMF_NONE, UVMF_TLB_FLUSH, UVMF_INVLPG, UVMF_FLUSHTYPE_MASK = 0, 1, 2, 3
UVMF_ALL = 1 << 2                 # flush on every vCPU (else the local or listed ones)
DOMID_SELF = 0x7FF0

# -- vm_assist (xen.h) ----------------------------------------------------------------------------
VMASST_CMD_ENABLE, VMASST_CMD_DISABLE = 0, 1
VMASST_TYPE_4GB_SEGMENTS, VMASST_TYPE_4GB_SEGMENTS_NOTIFY, VMASST_TYPE_WRITABLE_PAGETABLES = 0, 1, 2
VMASST_TYPE_PAE_EXTENDED_CR3, VMASST_TYPE_ARCHITECTURAL_IOPL, VMASST_TYPE_RUNSTATE_UPDATE_FLAG = 3, 4, 5
VMASST_TYPE_M2P_STRICT = 32

# -- console_io, sched_op, shutdown reasons (xen.h, sched.h) --------------------------------------
CONSOLEIO_WRITE, CONSOLEIO_READ = 0, 1
SCHEDOP_YIELD, SCHEDOP_BLOCK, SCHEDOP_SHUTDOWN, SCHEDOP_POLL = 0, 1, 2, 3
SCHEDOP_REMOTE_SHUTDOWN, SCHEDOP_SHUTDOWN_CODE, SCHEDOP_WATCHDOG = 4, 5, 6
SHUTDOWN_POWEROFF, SHUTDOWN_REBOOT, SHUTDOWN_SUSPEND, SHUTDOWN_CRASH = 0, 1, 2, 3
SHUTDOWN_WATCHDOG, SHUTDOWN_SOFT_RESET = 4, 5

# -- xen_version (version.h) and the feature bits (features.h) -----------------------------------
XENVER_VERSION, XENVER_EXTRAVERSION, XENVER_COMPILE_INFO, XENVER_CAPABILITIES = 0, 1, 2, 3
XENVER_CHANGESET, XENVER_PLATFORM_PARAMETERS, XENVER_GET_FEATURES, XENVER_PAGESIZE = 4, 5, 6, 7
XENVER_GUEST_HANDLE, XENVER_COMMANDLINE, XENVER_BUILD_ID = 8, 9, 10
XENFEAT_WRITABLE_PAGE_TABLES, XENFEAT_WRITABLE_DESCRIPTOR_TABLES = 0, 1
XENFEAT_AUTO_TRANSLATED_PHYSMAP, XENFEAT_SUPERVISOR_MODE_KERNEL = 2, 3
XENFEAT_PAE_PGDIR_ABOVE_4GB, XENFEAT_MMU_PT_UPDATE_PRESERVE_AD = 4, 5
XENFEAT_GNTTAB_MAP_AVAIL_BITS = 7
XENFEAT_HVM_CALLBACK_VECTOR, XENFEAT_DOM0 = 8, 11
XENFEAT_NR_SUBMAPS = 1            # 32-bit submaps of feature bits (get_features submap_idx)
XENFEAT_NAMES = {
    "writable_page_tables": 0, "writable_descriptor_tables": 1, "auto_translated_physmap": 2,
    "supervisor_mode_kernel": 3, "pae_pgdir_above_4gb": 4, "mmu_pt_update_preserve_ad": 5,
    "highmem_assist": 6, "gnttab_map_avail_bits": 7, "hvm_callback_vector": 8,
    "hvm_safe_pvclock": 9, "hvm_pirqs": 10, "dom0": 11,
}

# -- callbacks (callback.h) and traps (arch-x86/xen.h) ------------------------------------------
CALLBACKTYPE_EVENT, CALLBACKTYPE_FAILSAFE, CALLBACKTYPE_SYSCALL = 0, 1, 2
CALLBACKTYPE_SYSCALL32, CALLBACKTYPE_SYSENTER, CALLBACKTYPE_NMI = 7, 5, 4
CALLBACKF_MASK_EVENTS = 1 << 0
CALLBACKOP_REGISTER, CALLBACKOP_UNREGISTER = 0, 1
# trap_info.flags: bits 0-1 the privilege level allowed to raise it with INT n, bit 2 "mask
# events on delivery" (the PV form of an interrupt gate).
TI_DPL_MASK, TI_MASK_EVENTS = 3, 1 << 2
TRAP_INFO_SIZE = 16                # {u8 vector, u8 flags, u16 cs, (4 bytes padding), u64 address}
SEGBASE_FS, SEGBASE_GS_USER, SEGBASE_GS_KERNEL, SEGBASE_GS_USER_SEL = 0, 1, 2, 3
VGCF_IN_SYSCALL = 1 << 8           # iret: return with SYSRET semantics (RCX and R11 not restored)

# -- selectors (arch-x86/xen-x86_64.h): the first reserved GDT page starts at 0xe000 ---------------
FIRST_RESERVED_GDT_PAGE = 14
FIRST_RESERVED_GDT_BYTE = FIRST_RESERVED_GDT_PAGE * 4096
FIRST_RESERVED_GDT_ENTRY = FIRST_RESERVED_GDT_BYTE // 8
FLAT_RING3_CS32, FLAT_RING3_DS32, FLAT_RING3_CS64 = 0xE023, 0xE02B, 0xE033
FLAT_RING3_SS32 = FLAT_RING3_SS64 = FLAT_RING3_DS32
FLAT_RING3_DS64 = 0
FLAT_KERNEL_CS, FLAT_KERNEL_SS, FLAT_USER_CS, FLAT_USER_SS = FLAT_RING3_CS64, FLAT_RING3_SS64, FLAT_RING3_CS64, FLAT_RING3_SS64
FLAT_KERNEL_DS = FLAT_RING3_DS64

# -- the hypervisor's virtual area (arch-x86/xen-x86_64.h, arch-x86/xen.h) -------------------------
HYPERVISOR_VIRT_START = 0xFFFF800000000000
HYPERVISOR_VIRT_END = 0xFFFF880000000000
MACH2PHYS_VIRT_START = 0xFFFF800000000000
MACH2PHYS_VIRT_END = 0xFFFF804000000000
# L4 slots 256-271 (HYPERVISOR_VIRT_START-END) belong to the hypervisor: a guest may not change
# them and every L4 it uses gets the hypervisor's entries there.
FIRST_XEN_L4_SLOT, LAST_XEN_L4_SLOT = 256, 271

# -- page-table entry bits (Intel SDM vol. 3A 4.5) -------------------------------------------------
PTE_P, PTE_RW, PTE_US, PTE_PWT, PTE_PCD, PTE_A, PTE_D, PTE_PSE, PTE_G = (1 << b for b in (0, 1, 2, 3, 4, 5, 6, 7, 8))
PTE_AVAIL = 0x7 << 9
PTE_PAT = 1 << 7                  # in a 4 KiB PTE the bit that is PSE in a directory entry
PTE_AVAIL_HIGH = 0x7FF << 52      # bits 52-62: ignored by the CPU, the guest's (Xen asm/page.h)
PTE_NX = 1 << 63
PTE_ADDR = 0x000FFFFFFFFFF000

# -- the start of day (xen.h start_info, elfnote.h) ----------------------------------------------
START_INFO_MAGIC = b"xen-3.0-x86_64"
SIF_PRIVILEGED, SIF_INITDOMAIN, SIF_MULTIBOOT_MOD, SIF_MOD_START_PFN = 1 << 0, 1 << 1, 1 << 2, 1 << 3
SIF_VIRT_P2M_4TOOLS = 1 << 4      # the tools understand a virtually mapped P2M list
MAX_GUEST_CMDLINE = 1024
XEN_LEGACY_MAX_VCPUS = 32
XEN_ELFNOTE_INFO, XEN_ELFNOTE_ENTRY, XEN_ELFNOTE_HYPERCALL_PAGE, XEN_ELFNOTE_VIRT_BASE = 0, 1, 2, 3
XEN_ELFNOTE_PADDR_OFFSET, XEN_ELFNOTE_XEN_VERSION, XEN_ELFNOTE_GUEST_OS = 4, 5, 6
XEN_ELFNOTE_GUEST_VERSION, XEN_ELFNOTE_LOADER, XEN_ELFNOTE_PAE_MODE, XEN_ELFNOTE_FEATURES = 7, 8, 9, 10
XEN_ELFNOTE_BSD_SYMTAB, XEN_ELFNOTE_HV_START_LOW, XEN_ELFNOTE_L1_MFN_VALID = 11, 12, 13
XEN_ELFNOTE_SUSPEND_CANCEL, XEN_ELFNOTE_INIT_P2M, XEN_ELFNOTE_MOD_START_PFN = 14, 15, 16
XEN_ELFNOTE_SUPPORTED_FEATURES, XEN_ELFNOTE_PHYS32_ENTRY, XEN_ELFNOTE_PHYS32_RELOC = 17, 18, 19
XEN_NOTE_OWNER = b"Xen"

# -- PV console ring (io/console.h): the connection byte at offset 3088 ---------------------------
XENCONSOLE_CONNECTED, XENCONSOLE_DISCONNECTED = 0, 1
