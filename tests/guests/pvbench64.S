/* A 64-bit Xen PV benchmark kernel (benchmarks/bench_xen_pv.py): writes '<' with console_io,
 * makes COUNT xen_version(XENVER_version) hypercalls, then BATCHES mmu_update calls of ENTRIES
 * page-table updates each, writes '>' and shuts down (poweroff). Assemble with --defsym
 * COUNT=n, BATCHES=b, ENTRIES=e (each 0 by default: the empty run the benchmark subtracts).
 *
 * Each batch remaps the ENTRIES pages of `window` (one 4 KiB page per L1 entry of the boot page
 * tables) to the frames of `spare` and the next batch back, so every update is a real change
 * that Xen validates (xen/arch/x86/mm.c mod_l1_entry: the new frame gets a reference, the old
 * one loses it); after each batch the first window page must show the frame just mapped (a
 * marker word), as the hypervisor flushed the TLB (mmu_update's flush). Any unexpected answer
 * prints "pvbench: FAILED" and crashes the domain.
 * Layout per Xen's public headers: xen.h (start_info, mmu_update), version.h, sched.h. */
        .code64
        .ifndef COUNT
        .set COUNT, 0
        .endif
        .ifndef BATCHES
        .set BATCHES, 0
        .endif
        .ifndef ENTRIES
        .set ENTRIES, 0
        .endif
        .if ENTRIES > 64
        .error "ENTRIES: at most 64 (the window's pages)"
        .endif
        .if BATCHES
        .if ENTRIES < 1
        .error "ENTRIES: at least 1 with BATCHES"
        .endif
        .endif

        .set HYPERVISOR_mmu_update, 1
        .set HYPERVISOR_xen_version, 17
        .set HYPERVISOR_console_io, 18
        .set HYPERVISOR_sched_op, 29
        .set XEN_VERSION, 0x40011                       /* 4.17, what hvm reports */
        .set SI_PT_BASE, 88
        .set PTE_ADDR_LOW, 0xfffff000                   /* the frame bits below 4 GiB: enough here */
        .set WINDOW_MARK, 0x444e4957                    /* "WIND" */
        .set SPARE_MARK, 0x52415053                     /* "SPAR" */

        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvbench64

        .macro HCALL nr
        call hypercall_page + \nr * 32
        .endm

        .text
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        call find_window_l1
        lea start_byte(%rip), %rdx
        call put_byte

        mov $COUNT, %r12
1:      test %r12, %r12
        jz 2f
        xor %edi, %edi                                  /* XENVER_version */
        xor %esi, %esi
        HCALL HYPERVISOR_xen_version
        cmp $XEN_VERSION, %rax
        jne fail
        dec %r12
        jmp 1b

2:      movq $WINDOW_MARK, window(%rip)
        movq $SPARE_MARK, spare(%rip)
        mov $BATCHES, %r12
        xor %r13d, %r13d                                /* 0: map spare's frames, 1: window's own */
3:      test %r12, %r12
        jz 4f
        call fill_requests
        lea requests(%rip), %rdi
        mov $ENTRIES, %esi
        lea done(%rip), %rdx
        mov $0x7ff0, %r10d                              /* DOMID_SELF */
        HCALL HYPERVISOR_mmu_update
        test %rax, %rax
        jnz fail
        cmpl $ENTRIES, done(%rip)
        jne fail
        mov $SPARE_MARK, %eax                           /* what window's first page shows now */
        test %r13d, %r13d
        jz 6f
        mov $WINDOW_MARK, %eax
6:      cmp %rax, window(%rip)
        jne fail
        xor $1, %r13d
        dec %r12
        jmp 3b

4:      test $1, %r13d                                  /* an odd number of batches: map back */
        jz 5f
        call fill_requests
        lea requests(%rip), %rdi
        mov $ENTRIES, %esi
        lea done(%rip), %rdx
        mov $0x7ff0, %r10d
        HCALL HYPERVISOR_mmu_update
        test %rax, %rax
        jnz fail
5:      lea end_byte(%rip), %rdx
        call put_byte
        movl $0, reason(%rip)                           /* SHUTDOWN_poweroff */
        mov $2, %edi                                    /* SCHEDOP_shutdown */
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp fail

/* window_l1 := the machine address of the L1 entry mapping `window`, from the boot page tables
 * (start_info.pt_base; VIRT_BASE 0 and the identity P2M make it the machine address, and the
 * builder maps the tables read-only, so they can be read). */
find_window_l1:
        mov start_info(%rip), %rbx
        mov SI_PT_BASE(%rbx), %rax
        lea window(%rip), %rcx
        mov $39, %r8d
1:      mov %rcx, %rdx
        push %rcx
        mov %r8d, %ecx
        shr %cl, %rdx
        pop %rcx
        and $511, %edx
        lea (%rax,%rdx,8), %rax
        cmp $12, %r8d
        je 2f
        mov (%rax), %rax
        test $1, %eax
        jz fail
        mov $PTE_ADDR_LOW, %edx
        and %rdx, %rax
        sub $9, %r8d
        jmp 1b
2:      mov %rax, window_l1(%rip)
        ret

/* requests[i] := {window_l1 + 8 i (MMU_NORMAL_PT_UPDATE), frame | present, writable, user}, the
 * frame being spare's page i (r13 = 0) or the window's own (r13 = 1). */
fill_requests:
        lea requests(%rip), %rdi
        mov window_l1(%rip), %rsi
        lea spare(%rip), %rdx
        test %r13d, %r13d
        jz 1f
        lea window(%rip), %rdx
1:      or $7, %rdx
        mov $ENTRIES, %ecx
        jecxz 3f
2:      mov %rsi, (%rdi)
        mov %rdx, 8(%rdi)
        add $8, %rsi
        add $4096, %rdx
        add $16, %rdi
        dec %ecx
        jnz 2b
3:      ret

put_byte:                                               /* rdx = the byte's address */
        xor %edi, %edi                                  /* CONSOLEIO_write */
        mov $1, %esi
        HCALL HYPERVISOR_console_io
        ret

fail:
        lea failed(%rip), %rdx
        xor %edi, %edi
        mov $(failed_end - failed), %esi
        HCALL HYPERVISOR_console_io
        movl $3, reason(%rip)                           /* SHUTDOWN_crash */
        mov $2, %edi
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp .

        .section .rodata
start_byte: .ascii "<"
end_byte: .ascii ">"
failed: .ascii "\npvbench: FAILED\n"
failed_end:

        .data
        .p2align 3
start_info: .quad 0
window_l1: .quad 0
done: .long 0
reason: .long 0
        .p2align 4
requests: .skip 64 * 16                                 /* mmu_update {u64 ptr, u64 val} */

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 18                                     /* within one L1 table (2 MiB) */
window: .skip 64 * 4096
spare: .skip 64 * 4096
