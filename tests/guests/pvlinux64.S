/* A 64-bit Xen PV test kernel that checks what a Linux PV kernel relies on beyond the core ABI,
 * each line printed only when the hypervisor answered as Xen does:
 *   Xen's CPUID leaves (signature, version) and no PSE for a PV guest (public/arch-x86/cpuid.h,
 *   cpufeatureset.h); a PTE stored straight into its own L1 table with XCHG once
 *   VMASST_TYPE_writable_pagetables is on, and a store Xen would refuse turned into a #PF
 *   (pv/ro-page-fault.c); the PIT's channel 2 counting through emulated port I/O
 *   (pv/emul-priv-op.c guest_io_read, emul-i8254.c); CLI under virtual IOPL leaving the event
 *   mask alone; a grant-table frame set up and mapped (grant_table.h); the machine-check MSRs
 *   (cpu/mcheck/vmce.c); SEGBASE_GS_USER_SEL never failing. Then SCHEDOP_shutdown poweroff.
 * VIRT_BASE 0 and an identity P2M: a virtual address in the boot mapping is the machine address. */
        .code64
        .set HYPERVISOR_update_va_mapping, 14
        .set HYPERVISOR_xen_version, 17
        .set HYPERVISOR_console_io, 18
        .set HYPERVISOR_grant_table_op, 20
        .set HYPERVISOR_vm_assist, 21
        .set HYPERVISOR_iret, 23
        .set HYPERVISOR_set_segment_base, 25
        .set HYPERVISOR_sched_op, 29
        .set HYPERVISOR_physdev_op, 33
        .set FLAT_USER_CS, 0xe033
        .set SI_SHARED_INFO, 40
        .set SI_PT_BASE, 88
        .set PTE_ADDR_LOW, 0xfffff000
        .set MARK, 0x5a17e0f5

        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvlinux64-test

        .include "pvcommon.inc"
        .macro XEN_CPUID leaf
        mov $\leaf, %eax
        xor %ecx, %ecx
        ud2
        .ascii "xen"
        cpuid
        .endm

        .text
        .globl _start
_start:
        pv_boot trap_table, kernel_stack_top             /* shared_info too, for vcpu_info */

        /* Xen's leaves at 0x40000000: "XenVMMXenVMM", at least two more leaves, version 4.17. */
        XEN_CPUID 0x40000000
        cmp $0x566e6558, %ebx
        jne fail
        cmp $0x65584d4d, %ecx
        jne fail
        cmp $0x4d4d566e, %edx
        jne fail
        cmp $0x40000002, %eax
        jb fail
        XEN_CPUID 0x40000001
        cmp $0x00040011, %eax
        jne fail
        XEN_CPUID 1
        test $(1 << 3), %edx                            /* PSE: no superpages for PV */
        jnz fail
        SAY "pvlinux64: Xen CPUID leaves, no PSE ok\n"

        call pte_stores
        call pit_channel2
        call cli_keeps_mask
        call grant_frame
        call machine_check
        call gs_user_sel

        movl $0, reason(%rip)                           /* SHUTDOWN_poweroff */
        mov $2, %edi                                    /* SCHEDOP_shutdown */
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp fail

/* r12 = the address of the L1 entry that maps scratch_page, walked from the boot L4. */
pte_stores:
        mov $0, %edi                                    /* VMASST_CMD_enable */
        mov $2, %esi                                    /* VMASST_TYPE_writable_pagetables */
        HCALL HYPERVISOR_vm_assist
        test %rax, %rax
        jnz fail
        lea scratch_page(%rip), %r14
        mov start_info(%rip), %rbx
        mov SI_PT_BASE(%rbx), %r12
        mov $39, %ecx
1:      mov %r14, %rax
        shr %cl, %rax
        and $511, %eax
        lea (%r12,%rax,8), %r12                         /* the entry at this level */
        cmp $12, %ecx
        je 2f
        mov (%r12), %r12
        test $1, %r12
        jz fail
        mov $PTE_ADDR_LOW, %eax
        and %rax, %r12                                  /* the next table (below 4 GiB here) */
        sub $9, %ecx
        jmp 1b
2:      mov (%r12), %r13                                /* the PTE as it is */
        lea marker_page(%rip), %rax
        or $0x7, %rax                                   /* present, writable, user */
        mov %rax, %r15
        xchg %rax, (%r12)                               /* a read-only page table: Xen emulates */
        cmp %rax, %r13
        jne fail
        cmpl $MARK, scratch_page(%rip)                  /* the page now shows the marker frame */
        jne fail
        SAY "pvlinux64: PTE stored directly (xchg) ok\n"

        mov %r12, expected_cr2(%rip)
        lea after_refused(%rip), %rax
        mov %rax, resume(%rip)
        mov SI_SHARED_INFO(%rbx), %rax
        add $0x1000, %rax                               /* the hypervisor's next frame: not ours */
        or $0x7, %rax
        mov %rax, (%r12)                                /* refused: the #PF is ours to handle */
        jmp fail
after_refused:
        cmpb $1, pf_seen(%rip)
        jne fail
        mov (%r12), %rax                                /* the entry kept what we stored first */
        and $~0x160, %rax                               /* (A, D by the CPU; G as Xen adds it) */
        cmp %rax, %r15
        jne fail
        xchg %r13, (%r12)                               /* and back */
        cmpl $0, scratch_page(%rip)
        jne fail
        SAY "pvlinux64: refused PTE store faults ok\n"
        ret

/* Channel 2 programmed for a 0xffff count, gate on; two latched reads some hypercalls apart must
 * count down. A port no device answers reads all ones. */
pit_channel2:
        movl $1, iopl(%rip)
        mov $6, %edi                                    /* PHYSDEVOP_set_iopl */
        lea iopl(%rip), %rsi
        HCALL HYPERVISOR_physdev_op
        test %rax, %rax
        jnz fail
        mov $0xb0, %al                                  /* channel 2, lobyte/hibyte, mode 0 */
        out %al, $0x43
        mov $0xff, %al
        out %al, $0x42
        out %al, $0x42
        in $0x61, %al
        and $0xfc, %al
        or $0x01, %al                                   /* gate 2 on, speaker off */
        out %al, $0x61
        call latch2
        mov %eax, %r12d
        mov $50, %r13d
1:      xor %edi, %edi                                  /* XENVER_version: time passing */
        xor %esi, %esi
        HCALL HYPERVISOR_xen_version
        dec %r13d
        jnz 1b
        call latch2
        cmp %eax, %r12d
        jbe fail                                        /* it must have counted down */
        in $0x80, %al
        cmp $0xff, %al
        jne fail
        SAY "pvlinux64: PIT channel 2 counts ok\n"
        ret
latch2:                                                 /* eax = channel 2's latched count */
        mov $0x80, %al
        out %al, $0x43
        in $0x42, %al
        movzbl %al, %ecx
        in $0x42, %al
        movzbl %al, %eax
        shl $8, %eax
        or %ecx, %eax
        ret

cli_keeps_mask:                                         /* vcpu_info[0].evtchn_upcall_mask */
        movb $0, shinfo_page+1(%rip)
        cli
        cmpb $0, shinfo_page+1(%rip)
        jne fail
        movb $1, shinfo_page+1(%rip)
        SAY "pvlinux64: CLI leaves the event mask ok\n"
        ret

grant_frame:
        movw $0x7ff0, gnt_query(%rip)                   /* DOMID_SELF */
        mov $6, %edi                                    /* GNTTABOP_query_size */
        lea gnt_query(%rip), %rsi
        mov $1, %edx
        HCALL HYPERVISOR_grant_table_op
        test %rax, %rax
        jnz fail
        cmpw $0, gnt_query+12(%rip)                     /* status */
        jne fail
        cmpl $1, gnt_query+4(%rip)                      /* nr_frames */
        jb fail
        cmpl $1, gnt_query+8(%rip)                      /* max_nr_frames */
        jb fail
        movw $0x7ff0, gnt_setup(%rip)
        movl $1, gnt_setup+4(%rip)                      /* nr_frames */
        lea gnt_frames(%rip), %rax
        mov %rax, gnt_setup+16(%rip)                    /* frame_list */
        mov $2, %edi                                    /* GNTTABOP_setup_table */
        lea gnt_setup(%rip), %rsi
        mov $1, %edx
        HCALL HYPERVISOR_grant_table_op
        test %rax, %rax
        jnz fail
        cmpw $0, gnt_setup+8(%rip)                      /* status */
        jne fail
        lea grant_page(%rip), %rdi
        mov gnt_frames(%rip), %rsi
        shl $12, %rsi
        or $0x7, %rsi
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        test %rax, %rax
        jnz fail
        movl $MARK, grant_page(%rip)                    /* writable, as Xen shares it */
        cmpl $MARK, grant_page(%rip)
        jne fail
        SAY "pvlinux64: grant table frame set up and mapped ok\n"
        ret

machine_check:
        mov $0x179, %ecx                                /* MCG_CAP: Xen's two banks */
        rdmsr
        cmp $2, %al
        jne fail
        mov $0x401, %ecx                                /* MC0_STATUS: nothing to report */
        rdmsr
        or %edx, %eax
        jnz fail
        SAY "pvlinux64: machine-check MSRs ok\n"
        ret

gs_user_sel:
        mov $3, %edi                                    /* SEGBASE_GS_USER_SEL */
        mov $0xe02b, %esi                               /* FLAT_RING3_DS64 */
        HCALL HYPERVISOR_set_segment_base
        test %rax, %rax
        jnz fail
        mov $3, %edi
        mov $0x1238, %esi                               /* beyond the GDT: loads as NUL */
        HCALL HYPERVISOR_set_segment_base
        test %rax, %rax
        jnz fail
        SAY "pvlinux64: GS user selector loads never fail ok\n"
        ret

pf_handler:                                             /* rcx, r11, error, rip, cs, rflags, rsp, ss */
        testb $3, 32(%rsp)                              /* kernel mode: RPL 0 in the frame */
        jnz fail
        mov 16(%rsp), %rax
        and $3, %eax                                    /* present and write */
        cmp $3, %eax
        jne fail
        mov shinfo_page+16(%rip), %rax                  /* vcpu_info[0].arch.cr2 */
        cmp expected_cr2(%rip), %rax
        jne fail
        movb $1, pf_seen(%rip)
        pop %rcx
        pop %r11
        add $8, %rsp                                    /* the error code */
        mov resume(%rip), %rax
        mov %rax, (%rsp)
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32

gp_handler:
        SAY "pvlinux64: unexpected #GP\n"
        jmp fail

        pv_puts_and_fail pvlinux64

        .section .rodata
        .p2align 4
trap_table:                                             /* trap_info: vector, flags, cs, address */
        .byte 13, 0
        .word FLAT_USER_CS
        .long 0
        .quad gp_handler
        .byte 14, 0
        .word FLAT_USER_CS
        .long 0
        .quad pf_handler
        .quad 0, 0

        .data
        .p2align 3
start_info: .quad 0
expected_cr2: .quad 0
resume: .quad 0
gnt_frames: .quad 0
gnt_query: .word 0, 0                                   /* dom, pad, nr_frames, max, status */
        .long 0, 0
        .word 0, 0
gnt_setup: .word 0, 0                                   /* dom, pad, nr_frames, status, pad, list */
        .long 0
        .word 0, 0, 0, 0
        .quad 0
pf_seen: .byte 0
        .p2align 2
reason: .long 0
iopl: .long 0
        .p2align 12
marker_page: .long MARK
        .p2align 12

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
shinfo_page: .skip 4096
scratch_page: .skip 4096
grant_page: .skip 4096
        .skip 4096
kernel_stack_top:
