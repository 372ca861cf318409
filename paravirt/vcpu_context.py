"""``struct vcpu_guest_context`` for 64-bit guests (public/arch-x86/xen.h, with cpu_user_regs and
trap_info from arch-x86/xen-x86_64.h and xen.h): what VCPUOP_initialise hands the hypervisor to
start a secondary vCPU."""
from __future__ import annotations

from construct import Array, Bytes, Int8ul, Int16ul, Int32ul, Int64ul, Padding, Struct

VGCF_I387_VALID, VGCF_IN_KERNEL = 1 << 0, 1 << 2
VGCF_FAILSAFE_DISABLES_EVENTS, VGCF_SYSCALL_DISABLES_EVENTS, VGCF_ONLINE = 1 << 3, 1 << 4, 1 << 5

CpuUserRegs = Struct(
    "r15" / Int64ul, "r14" / Int64ul, "r13" / Int64ul, "r12" / Int64ul, "rbp" / Int64ul,
    "rbx" / Int64ul, "r11" / Int64ul, "r10" / Int64ul, "r9" / Int64ul, "r8" / Int64ul,
    "rax" / Int64ul, "rcx" / Int64ul, "rdx" / Int64ul, "rsi" / Int64ul, "rdi" / Int64ul,
    "error_code" / Int32ul, "entry_vector" / Int32ul,
    "rip" / Int64ul,
    "cs" / Int16ul, Padding(2), "saved_upcall_mask" / Int8ul, Padding(3),
    "rflags" / Int64ul, "rsp" / Int64ul,
    "ss" / Int16ul, Padding(6), "es" / Int16ul, Padding(6), "ds" / Int16ul, Padding(6),
    "fs" / Int16ul, Padding(6), "gs" / Int16ul, Padding(6),
)

TrapInfo = Struct("vector" / Int8ul, "flags" / Int8ul, "cs" / Int16ul, Padding(4), "address" / Int64ul)

VcpuGuestContext = Struct(
    "fpu_ctxt" / Bytes(512),
    "flags" / Int64ul,
    "user_regs" / CpuUserRegs,
    "trap_ctxt" / Array(256, TrapInfo),
    "ldt_base" / Int64ul, "ldt_ents" / Int64ul,
    "gdt_frames" / Array(16, Int64ul), "gdt_ents" / Int64ul,
    "kernel_ss" / Int64ul, "kernel_sp" / Int64ul,
    "ctrlreg" / Array(8, Int64ul),         # CR3 the kernel L4, CR1 (x86-64) the user L4
    "debugreg" / Array(8, Int64ul),
    "event_callback_eip" / Int64ul, "failsafe_callback_eip" / Int64ul, "syscall_callback_eip" / Int64ul,
    "vm_assist" / Int64ul,
    "fs_base" / Int64ul, "gs_base_kernel" / Int64ul, "gs_base_user" / Int64ul,
)
SIZE = VcpuGuestContext.sizeof()   # 5168
