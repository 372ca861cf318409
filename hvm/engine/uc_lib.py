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
``tlb_reset_dirty_range_all`` does. (2) EFLAGS: an export of where the CPU keeps EFLAGS, for the
block hook's IF check. (3) Events: the CPU delivers the exceptions and software interrupts hvm
asks for with QEMU's own ``do_interrupt`` instead of handing each to ``UC_HOOK_INTR`` (~0.8 us
against ~250 us in Python). (4) QEMU 5's error code for a bad 64-bit IDT entry, corrected.
(5) Writing DR0-DR7 arms QEMU's instruction breakpoints, as MOV to DR7 does.

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

# Where the CPU keeps EFLAGS as stored: hvm's block hook reads IF there at each block while an
# interrupt waits for it, instead of through uc_reg_read, which first computes the arithmetic
# flags (~12 ns a block; see _ucstop_build).
EFLAGS_EXPORT = "hvm_uc_x86_eflags"
EDITS += (
    ("qemu/target/i386/unicorn.c",
     "DEFAULT_VISIBILITY\nvoid uc_init(struct uc_struct *uc)\n",
     "/* hvm: the address of EFLAGS as the CPU stores it (IF, TF, DF... exact; the arithmetic flags\n"
     "   are computed lazily and are not there). */\n"
     "DEFAULT_VISIBILITY\n"
     "target_ulong *hvm_uc_x86_eflags(struct uc_struct *uc)\n"
     "{\n"
     "    return &((CPUX86State *)uc->cpu->env_ptr)->eflags;\n"
     "}\n"
     "\n"
     "DEFAULT_VISIBILITY\nvoid uc_init(struct uc_struct *uc)\n"),
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
     "/* hvm: the address of EFLAGS",
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
     "/* hvm: the address of EFLAGS"),
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

# (5) Debug registers: uc_reg_write of DR0-DR7 only stored the value; QEMU arms its breakpoints
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
