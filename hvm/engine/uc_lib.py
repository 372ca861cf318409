"""Which libunicorn the software engine runs on: PyPI's, or the same release rebuilt by the
``unicorn`` image recipe (``python3 -m images unicorn``) with the edits below.

Why a rebuilt library. (1) Stores: unicorn 2.1.4 keeps every executable RAM page on QEMU's slow
store path for good. QEMU marks a page "notdirty" only while translated code is recorded for it
(its DIRTY_MEMORY_CODE bitmap) and lets stores go straight to memory otherwise; unicorn has no such
bitmap (``cpu_physical_memory_is_clean`` is always true), so ``notdirty_write`` declines to clear
the mark on any page the TLB entry can execute (``addr_code != -1``), which without NX is every
page: a guest store costs ~60 ns with PyPI's library and ~5 ns rebuilt (measured here). Its
shortcut for NX entries is also wrong: code stored through an NX alias of a page and run through
another mapping runs stale (tests/guests/smc64.S; Xen's I/O emulation stubs). The edit:
``notdirty_write`` clears the mark once no translated code is recorded for the page
(``tb_page_has_code``), and ``tlb_protect_code``, called when a page gets its first translated
block, puts the mark back on every TLB entry that stores into the page, by host address as QEMU's
``tlb_reset_dirty_range_all`` does. (2) Events: the CPU delivers the exceptions and software
interrupts hvm asks for with QEMU's own ``do_interrupt`` instead of handing each to
``UC_HOOK_INTR`` (~0.8 us against ~250 us in Python). (3) QEMU 5's error code for a bad 64-bit
IDT entry, corrected. (4) Writing DR0-DR7 arms QEMU's instruction breakpoints, as MOV to DR7
does. (5) Slices end without a block hook: QEMU's inline stop check at each block's start, a stop
hvm asks for taken there, the interrupt window found where QEMU would take an interrupt, and no
stop checks after guest loads and stores (below). (6) A softmmu TLB of at least 1024 entries.

The rebuilt library is used when it was built for the installed unicorn release and these edits;
otherwise PyPI's is (slower, and with (1)'s stale-code case). It has to be chosen before the first
``import unicorn`` in the process (the binding loads its library then), which ``hvm.engine`` does
on import through ``LIBUNICORN_PATH``.
"""
from __future__ import annotations

import os
import sys
import zlib
from importlib.util import find_spec
from pathlib import Path

from ..cache import cache_root

RELEASE = "2.1.4"    # the release the edits below are written against (setup.py pins it)

# (file under the source tree (the archive's src/), text that must occur exactly once, replacement)
EDITS: tuple[tuple[str, str, str], ...] = (
    ("qemu/accel/tcg/translate-all.h",
     "void tb_check_watchpoint(CPUState *cpu, uintptr_t retaddr);\n",
     "void tb_check_watchpoint(CPUState *cpu, uintptr_t retaddr);\n"
     "bool tb_page_has_code(struct uc_struct *uc, tb_page_addr_t addr);\n"),
    ("qemu/accel/tcg/translate-all.c",
     "static void page_lock_pair(struct uc_struct *uc, PageDesc **ret_p1, tb_page_addr_t phys1,\n"
     "                           PageDesc **ret_p2, tb_page_addr_t phys2, int alloc);\n",
     "static void page_lock_pair(struct uc_struct *uc, PageDesc **ret_p1, tb_page_addr_t phys1,\n"
     "                           PageDesc **ret_p2, tb_page_addr_t phys2, int alloc);\n"
     "\n"
     "/* hvm: whether translated code is recorded for the page holding ram_addr `addr`; it stands\n"
     "   in for the DIRTY_MEMORY_CODE bitmap QEMU keeps and unicorn does not. */\n"
     "bool tb_page_has_code(struct uc_struct *uc, tb_page_addr_t addr)\n"
     "{\n"
     "    PageDesc *p = page_find(uc, addr >> TARGET_PAGE_BITS);\n"
     "\n"
     "    return p != NULL && p->first_tb != (uintptr_t)NULL;\n"
     "}\n"),
    ("qemu/accel/tcg/cputlb.c",
     "void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)\n"
     "{\n"
     "    cpu_physical_memory_test_and_clear_dirty(ram_addr, TARGET_PAGE_SIZE,\n"
     "                                             DIRTY_MEMORY_CODE);\n"
     "}",
     "void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)\n"
     "{\n"
     "    /* hvm: code is now translated from this page: every TLB entry that stores into it,\n"
     "       under whatever virtual address, goes back on the notdirty path (found by host\n"
     "       address; unicorn's tb_gen_code reaches only the virtual page it translated). */\n"
     "    uintptr_t host = (uintptr_t)qemu_map_ram_ptr(uc, NULL, ram_addr & TARGET_PAGE_MASK);\n"
     "\n"
     "    if (uc->cpu) {\n"
     "        tlb_reset_dirty(uc->cpu, host, TARGET_PAGE_SIZE);\n"
     "    }\n"
     "}"),
    ("qemu/accel/tcg/cputlb.c",
     "    if (!(!mr || (tlbe->addr_write != -1 && mr->priority < cpu->uc->snapshot_level)) &&\n"
     "            !(tlbe->addr_code != -1) &&\n",
     "    // hvm: an executable page leaves this path once no translated code is recorded for it;\n"
     "    // tlb_protect_code puts it back when some is.\n"
     "    if (!(!mr || (tlbe->addr_write != -1 && mr->priority < cpu->uc->snapshot_level)) &&\n"
     "            !tb_page_has_code(cpu->uc, ram_addr & TARGET_PAGE_MASK) &&\n"),
)

# Exceptions and software interrupts delivered by the CPU itself (QEMU's do_interrupt, as under
# QEMU's TCG) instead of by hvm in Python through UC_HOOK_INTR: an `int $0x30` + `iretq` round
# trip costs ~0.8 us so against ~250-470 us. hvm chooses the vectors (see uc_core.native_events).
NATIVE_EXPORT = "hvm_uc_x86_native_events"
EDITS += (
    ("include/uc_priv.h",
     "    int nested_level;                         // Current nested_level\n",
     "    int nested_level;                         // Current nested_level\n"
     "    // hvm: exceptions (bit per vector 0-31) and software interrupts (INT n, INT3, INTO) the\n"
     "    // CPU delivers itself through its IDT/IVT instead of handing them to UC_HOOK_INTR; a #PF\n"
     "    // at CPL3 without the U bit still goes to the hook when hvm_pf_user_to_hook is set.\n"
     "    uint32_t hvm_native_vectors;\n"
     "    int hvm_native_software;\n"
     "    int hvm_pf_user_to_hook;\n"
     "    uint64_t hvm_native_counts[256];\n"),
    ("qemu/accel/tcg/cpu-exec.c",
     "#if defined(TARGET_X86_64)\n"
     "        CPUArchState *env = cpu->env_ptr;\n"
     "        if (env->exception_is_int) {\n",
     "#if defined(TARGET_X86_64)\n"
     "        CPUArchState *env = cpu->env_ptr;\n"
     "        /* hvm: what QEMU does with an exception (cc->do_interrupt: real, protected and long\n"
     "           mode delivery, stack switches, nested faults promoted to #DF), for the events the\n"
     "           embedder asked for. */\n"
     "        if (uc->hvm_native_vectors || uc->hvm_native_software) {\n"
     "            int vector = cpu->exception_index;\n"
     "            bool native = env->exception_is_int ? uc->hvm_native_software\n"
     "                          : vector < 32 && (uc->hvm_native_vectors >> vector) & 1;\n"
     "            if (native && !env->exception_is_int && vector == EXCP0E_PAGE &&\n"
     "                uc->hvm_pf_user_to_hook && (env->hflags & HF_CPL_MASK) == 3 &&\n"
     "                !(env->error_code & PG_ERROR_U_MASK)) {\n"
     "                native = false;\n"
     "            }\n"
     "            if (native) {\n"
     "                uc->hvm_native_counts[vector & 0xff]++;\n"
     "                CPU_GET_CLASS(cpu)->do_interrupt(cpu);\n"
     "                cpu->exception_index = -1;\n"
     "                *ret = EXCP_INTERRUPT;\n"
     "                return false;\n"
     "            }\n"
     "        }\n"
     "        if (env->exception_is_int) {\n"),
    ("qemu/target/i386/unicorn.c",
     "DEFAULT_VISIBILITY\nvoid uc_init(struct uc_struct *uc)\n",
     "/* hvm: which events the CPU delivers itself (see uc_priv.h); returns the per-vector counts of\n"
     "   those it delivered. */\n"
     "DEFAULT_VISIBILITY\n"
     "uint64_t *hvm_uc_x86_native_events(struct uc_struct *uc, uint32_t vectors, int software,\n"
     "                                   int pf_user_to_hook)\n"
     "{\n"
     "    uc->hvm_native_vectors = vectors;\n"
     "    uc->hvm_native_software = software;\n"
     "    uc->hvm_pf_user_to_hook = pf_user_to_hook;\n"
     "    return uc->hvm_native_counts;\n"
     "}\n"
     "\n"
     "DEFAULT_VISIBILITY\nvoid uc_init(struct uc_struct *uc)\n"),
)

# QEMU 5's 64-bit delivery puts vector * 16 + 2 in the error code of the #GP/#NP a bad IDT entry
# raises; the SDM (vol. 3A, 6.13) has the vector in the selector-index field: vector * 8 + 2,
# as the legacy-mode path already does (kvm-unit-tests and events64 check it).
_IDT64_CHECKS = (
     "    dt = &env->idt;\n"
     "    if (intno * 16 + 15 > dt->limit) {\n"
     "        raise_exception_err(env, EXCP0D_GPF, intno * 16 + 2);\n"
     "    }\n"
     "    ptr = dt->base + intno * 16;\n"
     "    e1 = cpu_ldl_kernel(env, ptr);\n"
     "    e2 = cpu_ldl_kernel(env, ptr + 4);\n"
     "    e3 = cpu_ldl_kernel(env, ptr + 8);\n"
     "    /* check gate type */\n"
     "    type = (e2 >> DESC_TYPE_SHIFT) & 0x1f;\n"
     "    switch (type) {\n"
     "    case 14: /* 386 interrupt gate */\n"
     "    case 15: /* 386 trap gate */\n"
     "        break;\n"
     "    default:\n"
     "        raise_exception_err(env, EXCP0D_GPF, intno * 16 + 2);\n"
     "        break;\n"
     "    }\n"
     "    dpl = (e2 >> DESC_DPL_SHIFT) & 3;\n"
     "    cpl = env->hflags & HF_CPL_MASK;\n"
     "    /* check privilege if software int */\n"
     "    if (is_int && dpl < cpl) {\n"
     "        raise_exception_err(env, EXCP0D_GPF, intno * 16 + 2);\n"
     "    }\n"
     "    /* check valid bit */\n"
     "    if (!(e2 & DESC_P_MASK)) {\n"
     "        raise_exception_err(env, EXCP0B_NOSEG, intno * 16 + 2);\n"
     "    }\n")
EDITS += (
    ("qemu/target/i386/seg_helper.c", _IDT64_CHECKS, _IDT64_CHECKS.replace("intno * 16 + 2", "intno * 8 + 2")),
)

# (4) Debug registers: uc_reg_write of DR0-DR7 only stored the value; QEMU arms its breakpoints
# when the guest executes MOV to DR7 (bpt_helper.c cpu_x86_update_dr7). The write now does the
# same, from scratch: the breakpoints are rebuilt from the registers, never from the references in
# env, which a restored context of another vCPU may have left pointing at freed ones. (Data
# breakpoints stay inert: unicorn compiles QEMU's watchpoints out, exec.c.)
_DR_WRITE64 = ("            CHECK_REG_TYPE(uint64_t);\n"
               "            env->dr[regid - UC_X86_REG_DR0] = *(uint64_t *)value;\n")
EDITS += (
    ("qemu/target/i386/unicorn.c", _DR_WRITE64,
     "            CHECK_REG_TYPE(uint64_t);\n"
     "            {\n"
     "                uint64_t v = *(uint64_t *)value;\n"
     "                target_ulong dr7 = regid == UC_X86_REG_DR7 ? v : env->dr[7];\n"
     "                int i;\n"
     "                cpu_breakpoint_remove_all(env_cpu(env), BP_CPU);\n"
     "                for (i = 0; i < DR7_MAX_BP; i++) {\n"
     "                    env->cpu_breakpoint[i] = NULL;\n"
     "                }\n"
     "                env->dr[regid - UC_X86_REG_DR0] = v;\n"
     "                env->dr[7] = DR7_FIXED_1;\n"
     "                cpu_x86_update_dr7(env, dr7);\n"
     "            }\n"),
)

# (5) Slices ended without a block hook. Unicorn checks for a stop at every translation block's
# start with a helper call (QEMU inlines a load and a branch there), and hvm's C block hook, which
# ended slices and watched for the interrupt window, was a second call per block: together ~half
# the time of a tight guest loop (measured here: ~4.9 -> ~8.5 ns per 4-instruction iteration).
# The rebuilt CPU checks QEMU's way (x86 has no delay slots, which are why unicorn moved the
# check into a helper), takes a stop hvm asks for at the next block boundary (cpu_exit, as
# QEMU's own kick), and stops when an interrupt or NMI hvm is holding could be taken: QEMU's
# CPU_INTERRUPT_HARD/NMI are raised for it, and the point where QEMU would deliver one (EFLAGS.IF
# set, no STI/MOV SS shadow; NMIs unblocked by IRET) ends the slice instead. Unicorn also checks
# for a stop after every guest load and store (a helper call each) and on seeing one restarts
# the instruction, whose store has happened: a device's MMIO write asking for a stop (a LAPIC
# INIT IPI, measured) ran again and again. Those checks are not generated: every stop lands at a
# block boundary (the one after a code hook stays: emu_start's instruction count needs it).
SLICE_EXPORT = "hvm_uc_slice_stop"
EDITS += (
    ("include/uc_priv.h",
     "    uint64_t hvm_native_counts[256];\n",
     "    uint64_t hvm_native_counts[256];\n"
     "    // hvm: a stop asked for from any thread (hvm_uc_slice_stop), taken at a block boundary;\n"
     "    // the interrupt window (1) and NMI window (2) hvm waits for, and how often one ended a run.\n"
     "    volatile int hvm_stop_wanted;\n"
     "    int hvm_window;\n"
     "    uint64_t hvm_window_stops;\n"
     "    // hvm: no stop checks after guest loads and stores (tcg-op.c check_exit_request)\n"
     "    bool hvm_mem_checks_off;\n"),
    ("qemu/tcg/tcg-op.c",
     "    if (tcg_ctx->uc->no_exit_request) {\n",
     "    if (tcg_ctx->uc->no_exit_request || tcg_ctx->uc->hvm_mem_checks_off) {\n"),
    ("qemu/target/i386/translate.c",
     "        check_exit_request(tcg_ctx);\n",
     "        /* hvm: after a code hook the check stays (emu_start's instruction count stops here) */\n"
     "        {\n"
     "            bool off = tcg_ctx->uc->hvm_mem_checks_off;\n"
     "            tcg_ctx->uc->hvm_mem_checks_off = false;\n"
     "            check_exit_request(tcg_ctx);\n"
     "            tcg_ctx->uc->hvm_mem_checks_off = off;\n"
     "        }\n"),
    ("qemu/include/tcg/tcg.h",
     "    TCGv_i32 delay_slot_flag;\n",
     "    TCGv_i32 delay_slot_flag;\n"
     "    TCGLabel *hvm_exitreq_label;  // hvm: the block-start exit check's target (gen-icount.h)\n"),
    ("qemu/include/exec/gen-icount.h",
     "static inline void gen_tb_start(TCGContext *tcg_ctx, TranslationBlock *tb)\n{\n",
     "static inline void gen_tb_start(TCGContext *tcg_ctx, TranslationBlock *tb)\n{\n"
     "    /* hvm: QEMU's inline check of icount_decr where no delay slot needs unicorn's helper */\n"
     "    if (tcg_ctx->delay_slot_flag == NULL) {\n"
     "        TCGv_i32 count = tcg_temp_new_i32(tcg_ctx);\n"
     "        tcg_ctx->hvm_exitreq_label = gen_new_label(tcg_ctx);\n"
     "        tcg_gen_ld_i32(tcg_ctx, count, tcg_ctx->cpu_env,\n"
     "                       offsetof(ArchCPU, neg.icount_decr.u32) - offsetof(ArchCPU, env));\n"
     "        tcg_gen_brcondi_i32(tcg_ctx, TCG_COND_LT, count, 0, tcg_ctx->hvm_exitreq_label);\n"
     "        tcg_temp_free_i32(tcg_ctx, count);\n"
     "        return;\n"
     "    }\n"),
    ("qemu/include/exec/gen-icount.h",
     "    tcg_gen_exit_tb(tcg_ctx, tb, TB_EXIT_REQUESTED);\n}\n",
     "    if (tcg_ctx->hvm_exitreq_label != NULL) {\n"
     "        gen_set_label(tcg_ctx, tcg_ctx->hvm_exitreq_label);\n"
     "        tcg_ctx->hvm_exitreq_label = NULL;\n"
     "    }\n"
     "    tcg_gen_exit_tb(tcg_ctx, tb, TB_EXIT_REQUESTED);\n}\n"),
    ("qemu/accel/tcg/cpu-exec.c",
     "    /* Finally, check if we need to exit to the main loop.  */\n"
     "    if (unlikely(cpu->exit_request)) {\n",
     "    /* Finally, check if we need to exit to the main loop.  */\n"
     "    /* hvm: and whenever a stop is wanted (uc_emu_start clears exit_request, a request that\n"
     "       came just before would be lost) */\n"
     "    if (unlikely(cpu->exit_request) || cpu->uc->hvm_stop_wanted) {\n"),
    ("qemu/softmmu/cpus.c",
     "            r = cpu_exec(uc, cpu);\n",
     "            r = cpu_exec(uc, cpu);\n"
     "\n"
     "            // hvm: the stop hvm_uc_slice_stop asked for (or a window it watched) came\n"
     "            if (uc->hvm_stop_wanted) {\n"
     "                uc->hvm_stop_wanted = 0;\n"
     "                finish = true;\n"
     "                break;\n"
     "            }\n"),
    ("qemu/target/i386/seg_helper.c",
     "    case CPU_INTERRUPT_NMI:\n"
     "        cpu_svm_check_intercept_param(env, SVM_EXIT_NMI, 0, 0);\n",
     "    case CPU_INTERRUPT_NMI:\n"
     "        if (env->uc->hvm_window & 2) {\n"
     "            goto hvm_window;\n"
     "        }\n"
     "        cpu_svm_check_intercept_param(env, SVM_EXIT_NMI, 0, 0);\n"),
    ("qemu/target/i386/seg_helper.c",
     "    case CPU_INTERRUPT_HARD:\n"
     "        cpu_svm_check_intercept_param(env, SVM_EXIT_INTR, 0, 0);\n",
     "    case CPU_INTERRUPT_HARD:\n"
     "        if (env->uc->hvm_window & 1) {\n"
     "        hvm_window:\n"
     "            /* hvm: the CPU could take the interrupt (or NMI) hvm holds: end the run, hvm\n"
     "               delivers it */\n"
     "            cs->interrupt_request &= ~(CPU_INTERRUPT_HARD | CPU_INTERRUPT_NMI);\n"
     "            env->uc->hvm_window = 0;\n"
     "            env->uc->hvm_window_stops++;\n"
     "            env->uc->hvm_stop_wanted = 1;\n"
     "            cpu_exit(cs);\n"
     "            break;\n"
     "        }\n"
     "        cpu_svm_check_intercept_param(env, SVM_EXIT_INTR, 0, 0);\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: which events the CPU delivers itself",
     "/* hvm: slices (see uc_priv.h). what: 0 take stops at block boundaries only (before the first\n"
     "   translation); 1 stop at the next block boundary (any thread); 2 forget\n"
     "   a stop asked for too late for the run it was meant for (between runs); 3 watch for the\n"
     "   windows in ``window`` (1 interrupt, 2 NMI; 0 none; between runs). Returns how many runs\n"
     "   a window ended (where the count is kept). */\n"
     "DEFAULT_VISIBILITY\n"
     "uint64_t *hvm_uc_slice_stop(struct uc_struct *uc, int what, int window)\n"
     "{\n"
     "    CPUState *cs = uc->cpu;\n"
     "    if (what == 0) {\n"
     "        uc->hvm_mem_checks_off = true;\n"
     "    } else if (what == 1) {\n"
     "        uc->hvm_stop_wanted = 1;\n"
     "        cpu_exit(cs);\n"
     "    } else if (what == 2) {\n"
     "        uc->hvm_stop_wanted = 0;\n"
     "        cs->exit_request = 0;\n"
     "        cs->icount_decr_ptr->u16.high = 0;\n"
     "    } else if (what == 3) {\n"
     "        uc->hvm_window = window;\n"
     "        cs->interrupt_request &= ~(CPU_INTERRUPT_HARD | CPU_INTERRUPT_NMI);\n"
     "        if (window) {\n"
     "            cpu_interrupt(cs, (window & 1 ? CPU_INTERRUPT_HARD : 0) | (window & 2 ? CPU_INTERRUPT_NMI : 0));\n"
     "        }\n"
     "    }\n"
     "    return &uc->hvm_window_stops;\n"
     "}\n"
     "\n"
     "/* hvm: which events the CPU delivers itself"),
)

# (6) A bigger softmmu TLB. QEMU's is direct-mapped and shrinks to 64 entries when little of it is
# used (flushes resize it); GRUB's relocator then copies 66 MB backward with its source and
# destination 0xF00 pages apart, a multiple of the table's size: each load evicted the store's
# entry and the other way round, ~45 ns a byte instead of ~5 (measured here; 2.7 s of the Linux
# ISO's boot). Never fewer than 1024 entries: flushes clear more (32 KiB a mode), conflicts need
# distances that are multiples of 4 MiB.
EDITS += (
    ("qemu/include/exec/cpu-defs.h",
     "#define CPU_TLB_DYN_MIN_BITS 6\n#define CPU_TLB_DYN_DEFAULT_BITS 8\n",
     "#define CPU_TLB_DYN_MIN_BITS 10  /* hvm: 6 in QEMU 5 */\n#define CPU_TLB_DYN_DEFAULT_BITS 10\n"),
)

# (7) SYSCALL carried out by the CPU. Unicorn replaced QEMU's helper_syscall with its hook call:
# the embedder had to do the architectural work, which in hvm meant ending the slice and a trip
# through Python for every system call a guest's user space makes (~750 in a busybox boot). When
# hvm switches it on (hvm_uc_x86_native_syscall; never for a Xen PV guest, whose system calls go
# to its kernel through hvm), the helper does what the SDM (vol. 2B, SYSCALL) and the APM (vol. 3)
# describe for IA-32e mode: RCX = next RIP, R11 = RFLAGS with RF clear, RFLAGS &= ~(SFMASK | RF),
# CS/SS flat ring 0 from STAR[47:32] (64-bit code), RIP from LSTAR (from 64-bit code) or CSTAR
# (from compatibility mode); #UD without EFER.SCE or outside IA-32e mode (the Intel CPU hvm models).
SYSCALL_EXPORT = "hvm_uc_x86_native_syscall"
EDITS += (
    ("include/uc_priv.h",
     "    bool hvm_mem_checks_off;\n",
     "    bool hvm_mem_checks_off;\n"
     "    // hvm: SYSCALL carried out by the CPU (no hook), and how many it carried out\n"
     "    int hvm_native_syscall;\n"
     "    uint64_t hvm_native_syscalls;\n"),
    ("qemu/target/i386/seg_helper.c",
     "    // Unicorn: call registered syscall hooks\n    struct hook *hook;\n    uc_engine *uc = env->uc;\n"
     "    bool synced = false;\n\n    HOOK_FOREACH_VAR_DECLARE;\n",
     "    // Unicorn: call registered syscall hooks\n    struct hook *hook;\n    uc_engine *uc = env->uc;\n"
     "    bool synced = false;\n\n"
     "    /* hvm: the instruction itself (see hvm/engine/uc_lib.py, edit 7) */\n"
     "    if (uc->hvm_native_syscall) {\n"
     "        int cs = (env->star >> 32) & 0xfffc;\n"
     "        target_ulong flags;\n"
     "        if (!(env->efer & MSR_EFER_SCE) || !(env->hflags & HF_LMA_MASK)) {\n"
     "            raise_exception_err_ra(env, EXCP06_ILLOP, 0, GETPC());\n"
     "        }\n"
     "        flags = cpu_compute_eflags(env);\n"
     "        env->regs[R_ECX] = env->eip + next_eip_addend;\n"
     "        env->regs[11] = flags & ~RF_MASK;\n"
     "        /* arithmetic flags and DF live outside env->eflags (CC_SRC, env->df) */\n"
     "        cpu_load_eflags(env, flags & ~(env->fmask | RF_MASK),\n"
     "                        ~(CC_O | CC_S | CC_Z | CC_A | CC_P | CC_C | DF_MASK));\n"
     "        env->eip = (env->hflags & HF_CS64_MASK) ? env->lstar : env->cstar;\n"
     "        cpu_x86_load_seg_cache(env, R_CS, cs, 0, 0xffffffff,\n"
     "                               DESC_G_MASK | DESC_P_MASK | DESC_S_MASK | DESC_CS_MASK |\n"
     "                               DESC_R_MASK | DESC_A_MASK | DESC_L_MASK);\n"
     "        cpu_x86_load_seg_cache(env, R_SS, cs + 8, 0, 0xffffffff,\n"
     "                               DESC_G_MASK | DESC_B_MASK | DESC_P_MASK | DESC_S_MASK |\n"
     "                               DESC_W_MASK | DESC_A_MASK);\n"
     "        uc->hvm_native_syscalls++;\n"
     "        return;\n"
     "    }\n\n"
     "    HOOK_FOREACH_VAR_DECLARE;\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: slices (see uc_priv.h). what: 0 take stops at block boundaries only (before the first\n",
     "/* hvm: SYSCALL carried out by the CPU (on) or handed to the hook; returns the count of those\n"
     "   it carried out. */\n"
     "DEFAULT_VISIBILITY\n"
     "uint64_t *hvm_uc_x86_native_syscall(struct uc_struct *uc, int on)\n"
     "{\n"
     "    uc->hvm_native_syscall = on;\n"
     "    return &uc->hvm_native_syscalls;\n"
     "}\n"
     "\n"
     "/* hvm: slices (see uc_priv.h). what: 0 take stops at block boundaries only (before the first\n"),
)

# (8) MOV to CR4 with a reserved bit set raises #GP(0) (SDM vol. 3A, 2.5 and vol. 2B, MOV--Move
# to/from Control Registers); QEMU 5 took any value and silently dropped a few bits (QEMU checks
# since 6.2). Reserved here: the bits the SDM leaves undefined, and those of features this CPU
# model does not have (kvm-unit-tests' lam checks CR4.LAM_SUP, others check LA57, PKE, SMAP ...).
# Only the guest's MOV goes through this check; hvm's own register writes do not.
EDITS += (
    ("qemu/target/i386/misc_helper.c",
     "    case 4:\n        cpu_x86_update_cr4(env, (uint32_t)t0);\n        break;\n",
     "    case 4: {\n"
     "        /* hvm: reserved CR4 bits #GP (see hvm/engine/uc_lib.py, edit 8) */\n"
     "        uint64_t known = CR4_VME_MASK | CR4_PVI_MASK | CR4_TSD_MASK | CR4_DE_MASK |\n"
     "                         CR4_PSE_MASK | CR4_PAE_MASK | CR4_MCE_MASK | CR4_PGE_MASK |\n"
     "                         CR4_PCE_MASK | CR4_OSFXSR_MASK | CR4_OSXMMEXCPT_MASK;\n"
     "        if (env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_UMIP) known |= 1U << 11;  /* CR4.UMIP */\n"
     "        if (env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_LA57) known |= CR4_LA57_MASK;\n"
     "        if (env->features[FEAT_7_0_EBX] & CPUID_7_0_EBX_FSGSBASE) known |= CR4_FSGSBASE_MASK;\n"
     "        if (env->features[FEAT_1_ECX] & CPUID_EXT_PCID) known |= CR4_PCIDE_MASK;\n"
     "        if (env->features[FEAT_1_ECX] & CPUID_EXT_XSAVE) known |= CR4_OSXSAVE_MASK;\n"
     "        if (env->features[FEAT_7_0_EBX] & CPUID_7_0_EBX_SMEP) known |= CR4_SMEP_MASK;\n"
     "        if (env->features[FEAT_7_0_EBX] & CPUID_7_0_EBX_SMAP) known |= CR4_SMAP_MASK;\n"
     "        if (env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKU) known |= CR4_PKE_MASK;\n"
     "        if (env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKS) known |= CR4_PKS_MASK;  /* edit 11 */\n"
     "        if ((uint64_t)t0 & ~known) {\n"
     "            raise_exception_err_ra(env, EXCP0D_GPF, 0, GETPC());\n"
     "        }\n"
     "        cpu_x86_update_cr4(env, (uint32_t)t0);\n"
     "        break;\n"
     "    }\n"),
)

# (9) Two QEMU 5 results that kvm-unit-tests' realmode checks (QEMU fixed both since): PUSHF
# stores RFLAGS with VM and RF cleared in the image (SDM vol. 2B, PUSHF; QEMU 5 pushed RF as IRET
# had just loaded it), and SMSW into a register stores the operand size's worth of CR0 in every
# mode (SDM vol. 2B, SMSW: "the high-order 16 bits are undefined" only on processors before the
# Pentium 4 and Intel Xeon); QEMU 5 stored 16 bits outside 64-bit mode.
EDITS += (
    ("qemu/target/i386/translate.c",
     "            gen_helper_read_eflags(tcg_ctx, s->T0, tcg_ctx->cpu_env);\n"
     "            gen_push_v(s, s->T0);\n",
     "            gen_helper_read_eflags(tcg_ctx, s->T0, tcg_ctx->cpu_env);\n"
     "            /* hvm: VM and RF read as 0 in the pushed image (uc_lib.py, edit 9) */\n"
     "            tcg_gen_andi_tl(tcg_ctx, s->T0, s->T0, ~(target_ulong)(VM_MASK | RF_MASK));\n"
     "            gen_push_v(s, s->T0);\n"),
    ("qemu/target/i386/translate.c",
     "            if (CODE64(s)) {\n                mod = (modrm >> 6) & 3;\n"
     "                ot = (mod != 3 ? MO_16 : s->dflag);\n            } else {\n"
     "                ot = MO_16;\n            }\n",
     "            /* hvm: a register gets the operand size in every mode (uc_lib.py, edit 9) */\n"
     "            mod = (modrm >> 6) & 3;\n"
     "            ot = (mod != 3 ? MO_16 : s->dflag);\n"),
)

# (10) The Broadwell model hvm runs offers protection keys for user pages (CPUID.7.0:ECX.PKU),
# as QEMU's TCG does with -cpu max: QEMU 5 implements RDPKRU/WRPKRU, CR4.PKE and the page-walk
# checks, and only the model table left it out. kvm-unit-tests' pku runs on it. The model also
# offers PKS, which edit 11 implements.
EDITS += (
    ("qemu/target/i386/cpu.c",
     "            CPUID_7_0_EBX_RTM | CPUID_7_0_EBX_RDSEED | CPUID_7_0_EBX_ADX |\n"
     "            CPUID_7_0_EBX_SMAP,\n        .features[FEAT_XSAVE] =\n            CPUID_XSAVE_XSAVEOPT,\n"
     "        .features[FEAT_6_EAX] =\n            CPUID_6_EAX_ARAT,\n        .features[FEAT_VMX_BASIC]",
     "            CPUID_7_0_EBX_RTM | CPUID_7_0_EBX_RDSEED | CPUID_7_0_EBX_ADX |\n"
     "            CPUID_7_0_EBX_SMAP,\n"
     "        /* hvm: protection keys (uc_lib.py, edits 10 and 11) */\n"
     "        .features[FEAT_7_0_ECX] =\n            CPUID_7_0_ECX_PKU | CPUID_7_0_ECX_PKS,\n"
     "        .features[FEAT_XSAVE] =\n            CPUID_XSAVE_XSAVEOPT,\n"
     "        .features[FEAT_6_EAX] =\n            CPUID_6_EAX_ARAT,\n        .features[FEAT_VMX_BASIC]"),
)

# (11) Protection keys for supervisor pages (CPUID.7.0:ECX.PKS, CR4.PKS, the IA32_PKRS MSR; SDM
# vol. 3A, 4.6.2 "Protection Keys"), which QEMU added after 5.0: in IA-32e mode with CR4.PKS set, a
# data access to a supervisor page checks the key in PTE bits 62:59 against PKRS as user pages
# check PKRU (access-disable: no access; write-disable: no write while CR0.WP), a refusal is a #PF
# with the PK bit. PKRS is 32 bits (#GP for more) and, like CR4.PKE/PKS, flushes the TLB, whose
# entries hold the permissions the keys gave. kvm-unit-tests' pks runs on it.
EDITS += (
    ("qemu/target/i386/cpu.h",
     "#define CR4_PKE_MASK   (1U << 22)\n",
     "#define CR4_PKE_MASK   (1U << 22)\n#define CR4_PKS_MASK   (1U << 24)  /* hvm: edit 11 */\n"),
    ("qemu/target/i386/cpu.h",
     "#define CPUID_7_0_ECX_MOVDIR64B         (1U << 28)\n",
     "#define CPUID_7_0_ECX_MOVDIR64B         (1U << 28)\n"
     "#define CPUID_7_0_ECX_PKS               (1U << 31)  /* hvm: edit 11 */\n"),
    ("qemu/target/i386/cpu.h",
     "#define MSR_IA32_TSCDEADLINE            0x6e0\n",
     "#define MSR_IA32_TSCDEADLINE            0x6e0\n#define MSR_IA32_PKRS                   0x6e1  /* hvm */\n"),
    ("qemu/target/i386/cpu.h",
     "    uint32_t pkru;\n    uint32_t tsx_ctrl;\n",
     "    uint32_t pkru;\n    uint32_t pkrs;  /* hvm: edit 11 */\n    uint32_t tsx_ctrl;\n"),
    ("qemu/target/i386/cpu.c",
     "#define TCG_7_0_ECX_FEATURES (CPUID_7_0_ECX_PKU | \\\n",
     "#define TCG_7_0_ECX_FEATURES (CPUID_7_0_ECX_PKU | CPUID_7_0_ECX_PKS /* hvm */ | \\\n"),
    ("qemu/target/i386/helper.c",
     "         CR4_SMEP_MASK | CR4_SMAP_MASK | CR4_LA57_MASK)) {\n",
     "         CR4_SMEP_MASK | CR4_SMAP_MASK | CR4_LA57_MASK |\n"
     "         CR4_PKE_MASK | CR4_PKS_MASK /* hvm: edit 11 */)) {\n"),
    ("qemu/target/i386/helper.c",
     "    if (!(env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKU)) {\n        new_cr4 &= ~CR4_PKE_MASK;\n    }\n",
     "    if (!(env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKU)) {\n        new_cr4 &= ~CR4_PKE_MASK;\n    }\n"
     "    if (!(env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKS)) {  /* hvm: edit 11 */\n"
     "        new_cr4 &= ~CR4_PKS_MASK;\n    }\n"),
    ("qemu/target/i386/misc_helper.c",
     "        env->msr_bndcfgs = val;\n        cpu_sync_bndcs_hflags(env);\n        break;\n",
     "        env->msr_bndcfgs = val;\n        cpu_sync_bndcs_hflags(env);\n        break;\n"
     "    case MSR_IA32_PKRS:  /* hvm: edit 11 */\n"
     "        if (!(env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKS) || val >> 32) {\n"
     "            raise_exception_err_ra(env, EXCP0D_GPF, 0, GETPC());\n"
     "        }\n"
     "        env->pkrs = val;\n"
     "        tlb_flush(env_cpu(env));\n"
     "        break;\n"),
    ("qemu/target/i386/misc_helper.c",
     "    case MSR_IA32_BNDCFGS:\n        val = env->msr_bndcfgs;\n        break;\n",
     "    case MSR_IA32_BNDCFGS:\n        val = env->msr_bndcfgs;\n        break;\n"
     "    case MSR_IA32_PKRS:  /* hvm: edit 11 */\n"
     "        if (!(env->features[FEAT_7_0_ECX] & CPUID_7_0_ECX_PKS)) {\n"
     "            raise_exception_err_ra(env, EXCP0D_GPF, 0, GETPC());\n"
     "        }\n"
     "        val = env->pkrs;\n"
     "        break;\n"),
    ("qemu/target/i386/excp_helper.c",
     "    if ((env->cr[4] & CR4_PKE_MASK) && (env->hflags & HF_LMA_MASK) &&\n"
     "        (ptep & PG_USER_MASK) && env->pkru) {\n"
     "        uint32_t pk = (pte & PG_PKRU_MASK) >> PG_PKRU_BIT;\n"
     "        uint32_t pkru_ad = (env->pkru >> pk * 2) & 1;\n"
     "        uint32_t pkru_wd = (env->pkru >> pk * 2) & 2;\n",
     "    /* hvm: PKRU for user pages, PKRS for supervisor pages (uc_lib.py, edit 11) */\n"
     "    uint32_t pkr = !(env->hflags & HF_LMA_MASK) ? 0 :\n"
     "        (ptep & PG_USER_MASK) ? ((env->cr[4] & CR4_PKE_MASK) ? env->pkru : 0) :\n"
     "        ((env->cr[4] & CR4_PKS_MASK) ? env->pkrs : 0);\n"
     "    if (pkr) {\n"
     "        uint32_t pk = (pte & PG_PKRU_MASK) >> PG_PKRU_BIT;\n"
     "        uint32_t pkru_ad = (pkr >> pk * 2) & 1;\n"
     "        uint32_t pkru_wd = (pkr >> pk * 2) & 2;\n"),
)

# (12) Pause-loop exiting. The vCPUs of a guest take turns on one unicorn CPU, so a vCPU spinning
# on another's progress (a spinlock, Linux's TSC sync check, a wait for an IPI's completion) only
# spins until its quantum ends, 5 ms, before the other can make that progress. Hardware has PLE
# for the same waste under a hypervisor; here, while another vCPU waits for the CPU, hvm sets a
# limit (hvm_uc_pause_exit) and the PAUSE that reaches it in one run ends the run, as a stop hvm
# asks for does, so the spinning vCPU gives up its turn. QEMU 5's PAUSE already leaves the
# execution loop (its helper raises EXCP_INTERRUPT to let another CPU run).
PAUSE_EXPORT = "hvm_uc_pause_exit"
EDITS += (
    ("include/uc_priv.h",
     "    // hvm: SYSCALL carried out by the CPU (no hook), and how many it carried out\n"
     "    int hvm_native_syscall;\n"
     "    uint64_t hvm_native_syscalls;\n",
     "    // hvm: SYSCALL carried out by the CPU (no hook), and how many it carried out\n"
     "    int hvm_native_syscall;\n"
     "    uint64_t hvm_native_syscalls;\n"
     "    // hvm: PAUSEs in this run, the number that ends it (0: never), runs they ended (edit 12)\n"
     "    uint32_t hvm_pauses;\n"
     "    uint32_t hvm_pause_limit;\n"
     "    uint64_t hvm_pause_stops;\n"),
    ("qemu/target/i386/misc_helper.c",
     "    cpu_svm_check_intercept_param(env, SVM_EXIT_PAUSE, 0, GETPC());\n"
     "    env->eip += next_eip_addend;\n\n    do_pause(cpu);\n",
     "    cpu_svm_check_intercept_param(env, SVM_EXIT_PAUSE, 0, GETPC());\n"
     "    env->eip += next_eip_addend;\n\n"
     "    /* hvm: a PAUSE loop ends the run while another vCPU waits (uc_lib.py, edit 12) */\n"
     "    if (env->uc->hvm_pause_limit && ++env->uc->hvm_pauses >= env->uc->hvm_pause_limit) {\n"
     "        env->uc->hvm_pauses = 0;\n"
     "        env->uc->hvm_pause_stops++;\n"
     "        env->uc->hvm_stop_wanted = 1;\n"
     "    }\n"
     "    do_pause(cpu);\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: SYSCALL carried out by the CPU (on) or handed to the hook; returns the count of those\n",
     "/* hvm: PAUSE-loop exits (edit 12): from now on, the ``limit``th PAUSE (0: none) ends the run;\n"
     "   returns how many runs PAUSEs ended (where the count is kept). */\n"
     "DEFAULT_VISIBILITY\n"
     "uint64_t *hvm_uc_pause_exit(struct uc_struct *uc, int limit)\n"
     "{\n"
     "    uc->hvm_pause_limit = limit > 0 ? limit : 0;\n"
     "    uc->hvm_pauses = 0;\n"
     "    return &uc->hvm_pause_stops;\n"
     "}\n"
     "\n"
     "/* hvm: SYSCALL carried out by the CPU (on) or handed to the hook; returns the count of those\n"),
)

# (13) Unchained direct jumps as NOPs. A TB ends in goto_tb slots that QEMU 5 emits as `jmp` to
# the next instruction (the exit path) and later patches to jump straight into the next TB. On
# this project's AMD host a direct jump whose target changed after it ran keeps being predicted
# to its old target: each pass then pays a decoder redirect, and a one-TB loop ran at 4.9 ns per
# iteration instead of 1.9 ns (benchmarks/README.md, "The compute loop: chained jumps"). As a
# NOP until chained, the slot never ran as a jump to an old target, and the first pass after
# chaining trains the predictor as any new branch does. Slots are patched and reset only on the
# thread holding the CPU's turn, between blocks (hvm's vCPUs take turns on one unicorn CPU), so
# writing the opcode byte and the displacement apart is safe.
EDITS += (
    ("qemu/tcg/i386/tcg-target.inc.c",
     "            tcg_out8(s, OPC_JMP_long); /* jmp im */\n"
     "            s->tb_jmp_insn_offset[a0] = tcg_current_code_size(s);\n"
     "            tcg_out32(s, 0);\n",
     "            /* hvm: `nopl 0(%rax,%rax,1)` until chained (uc_lib.py, edit 13) */\n"
     "            tcg_out8(s, 0x0f);\n"
     "            s->tb_jmp_insn_offset[a0] = tcg_current_code_size(s);\n"
     "            tcg_out32(s, 0x0000441f);\n"),
    ("qemu/tcg/i386/tcg-target.h",
     "    /* patch the branch destination */\n"
     "    *(int32_t *)jmp_addr = addr - (jmp_addr + 4);\n",
     "    /* hvm: a jump to the next instruction is reset to the 5-byte NOP (uc_lib.py, edit 13) */\n"
     "    if (addr == jmp_addr + 4) {\n"
     "        *(int32_t *)jmp_addr = 0x0000441f;\n"
     "        *(uint8_t *)(jmp_addr - 1) = 0x0f;\n"
     "        return;\n"
     "    }\n"
     "    /* patch the branch destination */\n"
     "    *(int32_t *)jmp_addr = addr - (jmp_addr + 4);\n"
     "    *(uint8_t *)(jmp_addr - 1) = 0xe9;\n"),
)

# (14) I/O permission. Unicorn dropped QEMU's check of IN/OUT/INS/OUTS against CPL, IOPL and
# the TSS I/O bitmap ("allow all I/O instructions"); hvm made it in Python in every port hook
# and raised the #GP itself (~200 us each). A Xen PV dom0 runs its kernel in ring 3 and reaches
# Xen's I/O emulation through exactly that #GP, ~18 000 times per boot: ~4 s of Python. The
# check is QEMU's again (a helper call only where CPL > IOPL or in virtual-8086 mode), the CPU
# raises the #GP before the port hook runs, and hvm skips its own check (IO_CHECK_EXPORT).
IO_CHECK_EXPORT = "hvm_uc_checks_io"
EDITS += (
    ("qemu/target/i386/translate.c",
     "    // Unicorn: allow all I/O instructions\n    return;\n\n",
     "    /* hvm: QEMU's I/O permission check is kept (uc_lib.py, edit 14) */\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: PAUSE-loop exits (edit 12): from now on, the ``limit``th PAUSE (0: none) ends the run;\n",
     "/* hvm: IN/OUT/INS/OUTS are checked against CPL, IOPL and the TSS I/O bitmap (edit 14) */\n"
     "DEFAULT_VISIBILITY\n"
     "int hvm_uc_checks_io(void)\n"
     "{\n"
     "    return 1;\n"
     "}\n"
     "\n"
     "/* hvm: PAUSE-loop exits (edit 12): from now on, the ``limit``th PAUSE (0: none) ends the run;\n"),
)

# (15) Each new translation block marks its page's TLB write entries not-dirty again (unicorn's
# "undoes tlb_set_dirty in notdirty_write") by scanning every entry of every MMU mode's TLB for
# that virtual page: with the TLB kept at 1024 entries or more (edit 6), 7.5 % of a Linux boot's
# samples (perf, 2026-12-05). A page's entry can only sit at the page's own index of the
# direct-mapped table, so those entries and the 8 of the victim TLB are all that is looked at.
EDITS += (
    ("qemu/accel/tcg/cputlb.c",
     "    for (mmu_idx = 0; mmu_idx < NB_MMU_MODES; mmu_idx++) {\n"
     "        unsigned int i;\n"
     "        unsigned int n = tlb_n_entries(&env_tlb(env)->f[mmu_idx]);\n"
     "\n"
     "        for (i = 0; i < n; i++) {\n"
     "            tlb_reset_dirty_range_by_vaddr_locked(uc, &env_tlb(env)->f[mmu_idx].table[i],\n"
     "                                                  start1, length);\n"
     "        }\n",
     "    for (mmu_idx = 0; mmu_idx < NB_MMU_MODES; mmu_idx++) {\n"
     "        unsigned int i;\n"
     "        target_ulong page;\n"
     "\n"
     "        /* hvm: only the pages' own slots can hold them (uc_lib.py, edit 15) */\n"
     "        for (page = start1 & TARGET_PAGE_MASK; page - (start1 & TARGET_PAGE_MASK) < length;\n"
     "             page += TARGET_PAGE_SIZE) {\n"
     "            tlb_reset_dirty_range_by_vaddr_locked(uc, tlb_entry(env, mmu_idx, page),\n"
     "                                                  start1, length);\n"
     "        }\n"),
)

# (16) External interrupts delivered by the CPU. Unicorn's CPU_INTERRUPT_HARD case delivered
# vector 0 (QEMU asks the PIC there), so hvm delivered every interrupt in Python: registers and
# segments read through the binding, the IDT and stacks walked, the state written back, ~250 us
# each; Xen with its dom0 takes ~4 200 of them per boot. hvm still decides when one is taken (the
# local APIC's acknowledgement, EFLAGS.IF and the STI/MOV SS shadow checked between runs) and
# hands its vector to the CPU, which delivers it as QEMU's cpu_exec does at the run's first
# block boundary: do_interrupt_all, with its faults (#GP, #NP, #SS, #PF, #DF) raised as the CPU
# raises them.
IRQ_EXPORT = "hvm_uc_irq"
EDITS += (
    ("include/uc_priv.h",
     "    struct TranslationBlock *last_tb; // The real last tb we executed.\n",
     "    struct TranslationBlock *last_tb; // The real last tb we executed.\n"
     "    // hvm: vector + 1 of the interrupt the CPU delivers at its next chance (0: none)\n"
     "    int hvm_irq_vector;\n"),
    ("qemu/target/i386/seg_helper.c",
     "        // intno = cpu_get_pic_interrupt(env);\n"
     "        intno = 0;\n",
     "        /* hvm: the vector hvm_uc_irq left (uc_lib.py, edit 16); none, nothing to deliver */\n"
     "        intno = env->uc->hvm_irq_vector - 1;\n"
     "        env->uc->hvm_irq_vector = 0;\n"
     "        if (intno < 0) {\n"
     "            break;\n"
     "        }\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: IN/OUT/INS/OUTS are checked against CPL, IOPL and the TSS I/O bitmap (edit 14) */\n",
     "/* hvm: external interrupt ``vector`` (0-255) delivered by the CPU at the next run's start, which\n"
     "   hvm has checked it may be (edit 16); another value only asks. Returns where vector + 1\n"
     "   waits (0 once delivered). */\n"
     "DEFAULT_VISIBILITY\n"
     "int *hvm_uc_irq(struct uc_struct *uc, int vector)\n"
     "{\n"
     "    if (vector >= 0 && vector < 256) {\n"
     "        uc->hvm_irq_vector = vector + 1;\n"
     "        cpu_interrupt(uc->cpu, CPU_INTERRUPT_HARD);\n"
     "    }\n"
     "    return &uc->hvm_irq_vector;\n"
     "}\n"
     "\n"
     "/* hvm: IN/OUT/INS/OUTS are checked against CPL, IOPL and the TSS I/O bitmap (edit 14) */\n"),
)

# (17) IA32_ARCH_CAPABILITIES (MSR 0x10A, enumerated by CPUID.7.0:EDX[29]), which QEMU 5 kept for
# KVM: a read returned 0 (its "XXX: exception?" default). The Broadwell model hvm runs is one of the
# Intel parts guests look up as open to Meltdown, MDS, L1TF and the rest, so Linux turned on page
# table isolation (a CR3 switch, and with it a TLB flush, at every entry to and exit from its
# kernel), buffer clearing and return thunks, and Xen isolated its PV dom0 likewise (XPTI). An
# emulated CPU has none of those microarchitectural leaks for guests to fence off; hvm says so as
# VMMs do, with the "not affected" bits (uc_cpuid.ARCH_CAPABILITIES) read from here.
ARCH_CAP_EXPORT = "hvm_uc_arch_capabilities"
EDITS += (
    ("include/uc_priv.h",
     "    struct TranslationBlock *last_tb; // The real last tb we executed.\n",
     "    // hvm: what RDMSR of IA32_ARCH_CAPABILITIES reads (edit 17)\n"
     "    uint64_t hvm_arch_capabilities;\n"
     "    struct TranslationBlock *last_tb; // The real last tb we executed.\n"),
    ("qemu/target/i386/misc_helper.c",
     "        /* XXX: exception? */\n        val = 0;\n        break;\n    }\n"
     "    env->regs[R_EAX] = (uint32_t)(val);\n",
     "        if ((uint32_t)env->regs[R_ECX] == MSR_IA32_ARCH_CAPABILITIES &&\n"
     "            (env->features[FEAT_7_0_EDX] & CPUID_7_0_EDX_ARCH_CAPABILITIES)) {\n"
     "            val = env->uc->hvm_arch_capabilities;  /* hvm: edit 17 */\n"
     "            break;\n"
     "        }\n"
     "        /* XXX: exception? */\n        val = 0;\n        break;\n    }\n"
     "    env->regs[R_EAX] = (uint32_t)(val);\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: external interrupt ``vector`` (0-255) delivered by the CPU at the next run's start, which\n",
     "/* hvm: IA32_ARCH_CAPABILITIES as RDMSR reads it once CPUID.7.0:EDX[29] is set (edit 17) */\n"
     "DEFAULT_VISIBILITY\n"
     "void hvm_uc_arch_capabilities(struct uc_struct *uc, uint64_t value, int enumerate)\n"
     "{\n"
     "    CPUX86State *env = &X86_CPU(uc->cpu)->env;\n"
     "    uc->hvm_arch_capabilities = value;\n"
     "    if (enumerate) {\n"
     "        env->features[FEAT_7_0_EDX] |= CPUID_7_0_EDX_ARCH_CAPABILITIES;\n"
     "    } else {\n"
     "        env->features[FEAT_7_0_EDX] &= ~CPUID_7_0_EDX_ARCH_CAPABILITIES;\n"
     "    }\n"
     "}\n"
     "\n"
     "/* hvm: external interrupt ``vector`` (0-255) delivered by the CPU at the next run's start, which\n"),
)

# (18) Instances that run at once, one vCPU each on its own host thread, over the same guest RAM
# (QEMU's multi-threaded TCG; uc_core.ParallelGroup): locked instructions made atomic on the host
# (CF_PARALLEL), translated code dropped in every instance a store reaches it from, and the rare
# atomic access TCG cannot make atomic run alone as one instruction. The comment the edit puts in
# cputlb.c says how.
PARALLEL_EXPORT = "hvm_uc_parallel"
OUTSIDE_WRITE_EXPORT = "hvm_uc_outside_write"
_GROUP_CODE = (
    "/* hvm (edit 18): instances that run at once, one vCPU each on its own thread, over the same\n"
    "   guest RAM. Each keeps its own translated code and TLB, which only its own thread touches:\n"
    "   a store into a page a peer translated code from, and the first code translated from a page\n"
    "   (whose stores must then come back on the notdirty path in every instance), are posted to\n"
    "   the peers, which act on them at their next block boundary (cpu-exec.c). QEMU's MTTCG does\n"
    "   this work from the storing thread under its TLB locks; a store that races the translation\n"
    "   of the very bytes it stores to is left to the guest here as there (x86 asks a program that\n"
    "   modifies code another processor runs to synchronise with it: SDM vol. 3A, 9.1.3). */\n"
    "#define HVM_GROUP_MAX 64\n"
    "struct hvm_group {\n"
    "    pthread_mutex_t lock;   /* recursive: invalidation may post again */\n"
    "    int n;\n"
    "    struct uc_struct *members[HVM_GROUP_MAX];\n"
    "};\n"
    "\n"
    "__thread uint32_t hvm_tls_cflags __attribute__((tls_model(\"initial-exec\")));\n"
    "\n"
    "/* with the group's lock held */\n"
    "static void hvm_post(struct uc_struct *peer, uintptr_t host, uint32_t len, int protect)\n"
    "{\n"
    "    int i, n = peer->hvm_nposted;\n"
    "\n"
    "    for (i = 0; i < n; i++) {\n"
    "        if (peer->hvm_posted[i].host == host && peer->hvm_posted[i].len == len &&\n"
    "            peer->hvm_posted[i].protect == protect) {\n"
    "            break;\n"
    "        }\n"
    "    }\n"
    "    if (i == n) {\n"
    "        if (n < HVM_POSTED) {\n"
    "            peer->hvm_posted[n].host = host;\n"
    "            peer->hvm_posted[n].len = len;\n"
    "            peer->hvm_posted[n].protect = protect;\n"
    "            peer->hvm_nposted = n + 1;\n"
    "        } else {\n"
    "            peer->hvm_overflow |= protect ? 1 : 2;\n"
    "        }\n"
    "    }\n"
    "    __atomic_store_n(&peer->hvm_pending, 1, __ATOMIC_SEQ_CST);\n"
    "    /* the peer's next block start sees it, as it sees cpu_exit's */\n"
    "    __atomic_store_n(&peer->cpu->icount_decr_ptr->u16.high, (uint16_t)-1, __ATOMIC_SEQ_CST);\n"
    "}\n"
    "\n"
    "/* the same post to every other instance of uc's group */\n"
    "static void hvm_post_peers(struct uc_struct *uc, uintptr_t host, uint32_t len, int protect)\n"
    "{\n"
    "    struct hvm_group *g = uc->hvm_group;\n"
    "    int i;\n"
    "\n"
    "    if (g == NULL) {\n"
    "        return;\n"
    "    }\n"
    "    pthread_mutex_lock(&g->lock);\n"
    "    for (i = 0; i < g->n; i++) {\n"
    "        if (g->members[i] != uc) {\n"
    "            hvm_post(g->members[i], host, len, protect);\n"
    "        }\n"
    "    }\n"
    "    pthread_mutex_unlock(&g->lock);\n"
    "}\n"
    "\n"
    "void *hvm_group_join(struct uc_struct *uc, void *group)\n"
    "{\n"
    "    struct hvm_group *g = group;\n"
    "\n"
    "    if (uc->hvm_group != NULL) {\n"
    "        return uc->hvm_group == g || g == NULL ? uc->hvm_group : NULL;\n"
    "    }\n"
    "    if (g == NULL) {\n"
    "        pthread_mutexattr_t attr;\n"
    "\n"
    "        g = calloc(1, sizeof(*g));\n"
    "        if (g == NULL) {\n"
    "            return NULL;\n"
    "        }\n"
    "        pthread_mutexattr_init(&attr);\n"
    "        pthread_mutexattr_settype(&attr, PTHREAD_MUTEX_RECURSIVE);\n"
    "        pthread_mutex_init(&g->lock, &attr);\n"
    "        pthread_mutexattr_destroy(&attr);\n"
    "    }\n"
    "    pthread_mutex_lock(&g->lock);\n"
    "    if (g->n == HVM_GROUP_MAX) {\n"
    "        pthread_mutex_unlock(&g->lock);\n"
    "        return NULL;\n"
    "    }\n"
    "    g->members[g->n++] = uc;\n"
    "    uc->hvm_group = g;\n"
    "    /* locked instructions atomic on the host (TCG's atomic helpers) */\n"
    "    uc->hvm_cflags = CF_PARALLEL;\n"
    "    pthread_mutex_unlock(&g->lock);\n"
    "    /* no peer was told of code this instance translated before, nor it of theirs */\n"
    "    tb_flush(uc->cpu);\n"
    "    tlb_flush(uc->cpu);\n"
    "    return g;\n"
    "}\n"
    "\n"
    "void hvm_group_leave(struct uc_struct *uc)\n"
    "{\n"
    "    struct hvm_group *g = uc->hvm_group;\n"
    "    int i, left;\n"
    "\n"
    "    if (g == NULL) {\n"
    "        return;\n"
    "    }\n"
    "    pthread_mutex_lock(&g->lock);\n"
    "    for (i = 0; i < g->n; i++) {\n"
    "        if (g->members[i] == uc) {\n"
    "            g->members[i] = g->members[--g->n];\n"
    "            break;\n"
    "        }\n"
    "    }\n"
    "    left = g->n;\n"
    "    uc->hvm_group = NULL;\n"
    "    pthread_mutex_unlock(&g->lock);\n"
    "    if (left == 0) {\n"
    "        pthread_mutex_destroy(&g->lock);\n"
    "        free(g);\n"
    "    }\n"
    "}\n"
    "\n"
    "/* the first translated code from the page at ram_addr `page` */\n"
    "void hvm_group_code_added(struct uc_struct *uc, ram_addr_t page)\n"
    "{\n"
    "    if (uc->hvm_group != NULL) {\n"
    "        hvm_post_peers(uc, (uintptr_t)qemu_map_ram_ptr(uc, NULL, page & TARGET_PAGE_MASK),\n"
    "                       TARGET_PAGE_SIZE, 1);\n"
    "    }\n"
    "}\n"
    "\n"
    "/* a store of `size` bytes at ram_addr `addr`: true while a peer has code translated from\n"
    "   the page (the store stays on the notdirty path until the peer has dropped it) */\n"
    "static bool hvm_group_written(struct uc_struct *uc, ram_addr_t addr, unsigned size)\n"
    "{\n"
    "    struct hvm_group *g = uc->hvm_group;\n"
    "    void *host;\n"
    "    bool busy = false;\n"
    "    int i;\n"
    "\n"
    "    if (g == NULL) {\n"
    "        return false;\n"
    "    }\n"
    "    host = qemu_map_ram_ptr(uc, NULL, addr);\n"
    "    pthread_mutex_lock(&g->lock);\n"
    "    for (i = 0; i < g->n; i++) {\n"
    "        struct uc_struct *peer = g->members[i];\n"
    "        ram_addr_t there;\n"
    "\n"
    "        if (peer == uc) {\n"
    "            continue;\n"
    "        }\n"
    "        there = qemu_ram_addr_from_host(peer, host);\n"
    "        if (there != RAM_ADDR_INVALID && tb_page_has_code(peer, there & TARGET_PAGE_MASK)) {\n"
    "            hvm_post(peer, (uintptr_t)host, size, 0);\n"
    "            busy = true;\n"
    "        }\n"
    "    }\n"
    "    pthread_mutex_unlock(&g->lock);\n"
    "    return busy;\n"
    "}\n"
    "\n"
    "/* bytes the embedder wrote into guest RAM outside the CPUs (DMA): every peer drops what\n"
    "   it translated from them, as the writer's own instance does (uc_ctl_remove_cache) */\n"
    "void hvm_group_outside_write(struct uc_struct *uc, uintptr_t host, uint32_t len)\n"
    "{\n"
    "    hvm_post_peers(uc, host, len, 0);\n"
    "}\n"
    "\n"
    "/* on the instance's own thread, between blocks: what its peers posted */\n"
    "void hvm_group_drain(struct uc_struct *uc)\n"
    "{\n"
    "    struct hvm_group *g = uc->hvm_group;\n"
    "    uintptr_t host[HVM_POSTED];\n"
    "    uint32_t len[HVM_POSTED];\n"
    "    int protect[HVM_POSTED];\n"
    "    int i, n, overflow, protects = 0;\n"
    "\n"
    "    pthread_mutex_lock(&g->lock);\n"
    "    n = uc->hvm_nposted;\n"
    "    overflow = uc->hvm_overflow;\n"
    "    for (i = 0; i < n; i++) {\n"
    "        host[i] = uc->hvm_posted[i].host;\n"
    "        len[i] = uc->hvm_posted[i].len;\n"
    "        protect[i] = uc->hvm_posted[i].protect;\n"
    "        protects += protect[i];\n"
    "    }\n"
    "    uc->hvm_nposted = 0;\n"
    "    uc->hvm_overflow = 0;\n"
    "    uc->hvm_pending = 0;\n"
    "    pthread_mutex_unlock(&g->lock);\n"
    "    if (overflow & 2) {\n"
    "        tb_flush(uc->cpu);\n"
    "    }\n"
    "    /* each tlb_reset_dirty scans the whole TLB: beyond a few pages, refilling it is cheaper */\n"
    "    if ((overflow & 1) || protects > 16) {\n"
    "        tlb_flush(uc->cpu);\n"
    "        overflow |= 1;\n"
    "    }\n"
    "    for (i = 0; i < n; i++) {\n"
    "        if (protect[i]) {\n"
    "            if (!(overflow & 1)) {\n"
    "                tlb_reset_dirty(uc->cpu, host[i], TARGET_PAGE_SIZE);\n"
    "            }\n"
    "        } else if (!(overflow & 2)) {\n"
    "            ram_addr_t there = qemu_ram_addr_from_host(uc, (void *)host[i]);\n"
    "\n"
    "            if (there != RAM_ADDR_INVALID) {\n"
    "                tb_invalidate_phys_range(uc, there, there + len[i]);\n"
    "            }\n"
    "        }\n"
    "    }\n"
    "}\n"
    "\n"
)

EDITS += (
    ("include/uc_priv.h",
     "    // hvm: what RDMSR of IA32_ARCH_CAPABILITIES reads (edit 17)\n",
     "    // hvm (edit 18): the group of instances whose vCPUs run at once over the same guest RAM,\n"
     "    // the cflags this one translates with, and what its peers posted for its own thread to do\n"
     "    // at its next block boundary (cputlb.c hvm_group_drain); overflow bit 0: protections\n"
     "    // lost (the TLB is flushed), bit 1: invalidations lost (all code is dropped).\n"
     "    struct hvm_group *hvm_group;\n"
     "    uint32_t hvm_cflags;\n"
     "    volatile int hvm_pending;\n"
     "    int hvm_nposted;\n"
     "    int hvm_overflow;\n"
     "#define HVM_POSTED 256\n"
     "    struct { uintptr_t host; uint32_t len; int protect; } hvm_posted[HVM_POSTED];\n"
     "\n"
     "    // hvm: what RDMSR of IA32_ARCH_CAPABILITIES reads (edit 17)\n"),
    ("include/uc_priv.h",
     "#ifdef UNICORN_TRACER\n#define UC_TRACE_START(loc)",
     "// hvm (edit 18, cputlb.c)\n"
     "void *hvm_group_join(struct uc_struct *uc, void *group);\n"
     "void hvm_group_leave(struct uc_struct *uc);\n"
     "void hvm_group_drain(struct uc_struct *uc);\n"
     "void hvm_group_outside_write(struct uc_struct *uc, uintptr_t host, uint32_t len);\n"
     "extern __thread uint32_t hvm_tls_cflags __attribute__((tls_model(\"initial-exec\")));\n"
     "\n"
     "#ifdef UNICORN_TRACER\n#define UC_TRACE_START(loc)"),
    ("qemu/include/exec/exec-all.h",
     "static inline uint32_t curr_cflags(void)\n{\n    return 0;\n}\n",
     "/* hvm (edit 18): the cflags of the instance this thread runs (uc_emu_start sets them) */\n"
     "extern __thread uint32_t hvm_tls_cflags __attribute__((tls_model(\"initial-exec\")));\n"
     "static inline uint32_t curr_cflags(void)\n{\n    return hvm_tls_cflags;\n}\n"),
    ("qemu/accel/tcg/cputlb.c",
     "void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)\n",
     _GROUP_CODE + "void tlb_protect_code(struct uc_struct *uc, ram_addr_t ram_addr)\n"),
    ("qemu/accel/tcg/cputlb.c",
     "    // hvm: an executable page leaves this path once no translated code is recorded for it;\n",
     "    // hvm (edit 18): nor while a peer instance has code translated from it\n"
     "    if (hvm_group_written(cpu->uc, ram_addr, size)) {\n"
     "        return;\n"
     "    }\n"
     "    // hvm: an executable page leaves this path once no translated code is recorded for it;\n"),
    ("qemu/accel/tcg/translate-all.c",
     "    if (!page_already_protected) {\n        tlb_protect_code(uc, page_addr);\n    }\n",
     "    if (!page_already_protected) {\n        tlb_protect_code(uc, page_addr);\n"
     "        hvm_group_code_added(uc, page_addr);  /* hvm: edit 18 */\n    }\n"),
    ("qemu/accel/tcg/translate-all.h",
     "bool tb_page_has_code(struct uc_struct *uc, tb_page_addr_t addr);\n",
     "bool tb_page_has_code(struct uc_struct *uc, tb_page_addr_t addr);\n"
     "void hvm_group_code_added(struct uc_struct *uc, ram_addr_t page);\n"),
    ("qemu/accel/tcg/cpu-exec.c",
     "    /* Clear the interrupt flag now since we're processing\n",
     "    /* hvm (edit 18): what peer instances posted, acted on before the next block (their\n"
     "       request may come between the clearing of icount_decr below and this look) */\n"
     "    if (cpu->uc->hvm_group != NULL) {\n"
     "        cpu_neg(cpu)->icount_decr.u16.high = 0;\n"
     "        __atomic_thread_fence(__ATOMIC_SEQ_CST);\n"
     "        if (cpu->uc->hvm_pending) {\n"
     "            hvm_group_drain(cpu->uc);\n"
     "            *last_tb = NULL;\n"
     "        }\n"
     "    }\n"
     "    /* Clear the interrupt flag now since we're processing\n"),
    ("qemu/softmmu/cpus.c",
     "            // quit current TB but continue emulating?\n",
     "            // hvm (edit 18): an atomic access TCG cannot make atomic on the host (unaligned,\n"
     "            // or to MMIO) runs alone without the guarantee, as one instruction (QEMU stops\n"
     "            // the other vCPUs for it instead: cpu_exec_step_atomic)\n"
     "            if (r == EXCP_ATOMIC) {\n"
     "                cpu->cflags_next_tb = 1;\n"
     "            }\n"
     "\n"
     "            // quit current TB but continue emulating?\n"),
    ("uc.c",
     "    uc->skip_sync_pc_on_exit = false;\n    uc->stop_request = false;\n",
     "    uc->skip_sync_pc_on_exit = false;\n    uc->stop_request = false;\n"
     "    hvm_tls_cflags = uc->hvm_cflags;  // hvm: edit 18\n"),
    ("uc.c",
     "    // Flush all translation buffers or we leak memory allocated by MMU\n",
     "    hvm_group_leave(uc);  // hvm: edit 18, before any peer could find this one freed\n"
     "\n"
     "    // Flush all translation buffers or we leak memory allocated by MMU\n"),
    ("qemu/target/i386/unicorn.c",
     "/* hvm: IA32_ARCH_CAPABILITIES as RDMSR reads it once CPUID.7.0:EDX[29] is set (edit 17) */\n",
     "/* hvm: run at once with the other instances of ``group`` (NULL: a new one), each on its own\n"
     "   thread, over the same guest RAM (edit 18, cputlb.c); returns the group, NULL if full. */\n"
     "DEFAULT_VISIBILITY\n"
     "void *hvm_uc_parallel(struct uc_struct *uc, void *group)\n"
     "{\n"
     "    return hvm_group_join(uc, group);\n"
     "}\n"
     "\n"
     "/* hvm: ``len`` bytes at host address ``host`` of guest RAM written outside the CPUs: the\n"
     "   group's other instances drop code translated from them (edit 18). */\n"
     "DEFAULT_VISIBILITY\n"
     "void hvm_uc_outside_write(struct uc_struct *uc, uint64_t host, uint32_t len)\n"
     "{\n"
     "    hvm_group_outside_write(uc, (uintptr_t)host, len);\n"
     "}\n"
     "\n"
     "/* hvm: IA32_ARCH_CAPABILITIES as RDMSR reads it once CPUID.7.0:EDX[29] is set (edit 17) */\n"),
)

# (19) An undefined opcode ends the run (UC_ERR_INSN_INVALID, hvm delivering #UD in Python, ~250
# us) only where hvm has not asked the CPU to deliver vector 6 itself (edit 2's switch): a Xen PV
# kernel's CPUID, `ud2; .ascii "xen"; cpuid`, is a #UD its hypervisor emulates, hundreds a boot.
EDITS += (
    ("qemu/target/i386/unicorn.c",
     "    case EXCP06_ILLOP:\n        return true;\n",
     "    case EXCP06_ILLOP:\n"
     "        return !((uc->hvm_native_vectors >> EXCP06_ILLOP) & 1);  /* hvm: edit 19 */\n"),
)

# (20) IRET and far RET pop their frame with the privilege of the CPL they run at (SDM vol. 3A
# 4.6: only the implicit accesses to system structures are supervisor accesses at CPL 3); QEMU 5
# pops with its kernel MMU index whatever the CPL, so SMAP faulted on a ring-3 stack and a
# supervisor page was readable. A Xen PV kernel runs in ring 3 and IRETs to itself (Linux's
# sync_core) ~1 000 times a boot, each fault then handled by hvm in Python (unicorn.py
# _suspend_smap, which stays for PyPI's library). Its data index is the kernel one below CPL 3.
EDITS += (
    ("qemu/target/i386/seg_helper.c",
     "        val = cpu_lduw_kernel_ra(env, (ssp) + (sp & (sp_mask)), ra); \\\n",
     "        val = cpu_lduw_data_ra(env, (ssp) + (sp & (sp_mask)), ra); /* hvm: edit 20 */ \\\n"),
    ("qemu/target/i386/seg_helper.c",
     "        val = (uint32_t)cpu_ldl_kernel_ra(env, SEG_ADDL(ssp, sp, sp_mask), ra); \\\n",
     "        val = (uint32_t)cpu_ldl_data_ra(env, SEG_ADDL(ssp, sp, sp_mask), ra); /* hvm: edit 20 */ \\\n"),
    ("qemu/target/i386/seg_helper.c",
     "        val = cpu_ldq_kernel_ra(env, sp, ra);   \\\n",
     "        val = cpu_ldq_data_ra(env, sp, ra);   /* hvm: edit 20 */ \\\n"),
)

# (21) RDTSC and RDTSCP read the host's TSC after the instructions before them have completed
# (LFENCE then RDTSC). The guest's own ordering (LFENCE; RDTSC, Linux's rdtsc_ordered) becomes no
# host instruction in TCG, and the host's RDTSC may run ahead of the locked instruction before it:
# with vCPUs on two host CPUs (edit 18), Linux's TSC sync check saw a CPU read a TSC older than
# the one the other CPU stored under their lock, and marked the TSC unstable.
EDITS += (
    ("qemu/hw/i386/x86.c",
     "uint64_t cpu_get_tsc(CPUX86State *env)\n{\n    return cpu_get_ticks();\n}\n",
     "uint64_t cpu_get_tsc(CPUX86State *env)\n{\n"
     "#if defined(__x86_64__) || defined(__i386__)\n"
     "    __asm__ __volatile__(\"lfence\" ::: \"memory\");  /* hvm: edit 21 */\n"
     "#endif\n"
     "    return cpu_get_ticks();\n}\n"),
)

# (zlib, not hashlib: this module is on the VMM's import path, which keeps hashlib out)
PATCH_ID = f"{zlib.crc32(repr(EDITS).encode()):08x}"
LIBRARY = "libunicorn.so.2"


def lib_dir(cache: Path | None = None) -> Path:
    """Where the ``unicorn`` recipe puts the rebuilt library."""
    return cache_root(cache) / "unicorn" / "lib"


def stamp(release: str) -> str:
    """What the recipe writes next to a library built from ``release`` with these edits."""
    return f"unicorn {release} hvm-store-path {PATCH_ID}"


def installed_release() -> str | None:
    """The installed unicorn's version, from its dist-info directory: importing unicorn would load
    its library, and importlib.metadata pulls email and socket into the VMM."""
    spec = find_spec("unicorn")
    if spec is None or spec.origin is None:
        return None
    for info in Path(spec.origin).parent.parent.glob("unicorn-*.dist-info"):
        return info.name[len("unicorn-"):-len(".dist-info")]
    return None


def patched_dir(cache: Path | None = None) -> Path | None:
    """The rebuilt library's directory if it matches the installed unicorn and these edits."""
    release, directory = installed_release(), lib_dir(cache)
    try:
        ok = release is not None and (directory / "stamp").read_text().strip() == stamp(release)
    except OSError:
        return None
    return directory if ok and (directory / LIBRARY).is_file() else None


def choose() -> None:
    """Point the unicorn binding at the rebuilt library when it fits (see the module text);
    a ``LIBUNICORN_PATH`` the user set, or unicorn already imported, is left alone."""
    if "unicorn" in sys.modules or "LIBUNICORN_PATH" in os.environ or os.environ.get("HVM_STOCK_UNICORN"):
        return
    directory = patched_dir()
    if directory is not None:
        os.environ["LIBUNICORN_PATH"] = str(directory)


def describe() -> str:
    """Which library the loaded binding uses, for ``--stats``."""
    directory = patched_dir()
    chosen = os.environ.get("LIBUNICORN_PATH")
    if directory is not None and chosen == str(directory):
        return f"libunicorn {installed_release()} rebuilt with hvm's store-path change ({directory})"
    if chosen:
        return f"libunicorn from LIBUNICORN_PATH={chosen}"
    return (f"libunicorn {installed_release()} from PyPI (stores ~10x slower, exceptions delivered in "
            f"Python; `python3 -m images unicorn` builds hvm's)")
