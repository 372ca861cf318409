/* A 64-bit Xen PV test kernel for what pv64 leaves out: SCHEDOP_poll, an LDT of its own, and a
 * HYPERVISOR_iret to a selector that does not load. It prints one line per check and powers off;
 * any answer other than Xen's prints "pvabi64: FAILED" and crashes the domain.
 *   - MMUEXT_SET_LDT: a page of descriptors, mapped read-only, becomes the LDT; FS loaded with
 *     its data selector reads through the descriptor's base; the page cannot be mapped writable
 *     any more (-EBUSY, get_page_from_l1e in xen/arch/x86/mm.c); an empty slot is #GP(selector).
 *   - HYPERVISOR_iret whose CS is that data selector: the guest's own #GP, error code the
 *     selector, at the place it was returning to (Xen's IRETQ faults, entry.S hands it on).
 *   - SCHEDOP_poll (xen/common/sched/core.c do_poll): -EINVAL for more than 128 ports or a port
 *     past the ABI's, -EFAULT for an unmapped port list; with a timeout and nothing pending it
 *     sleeps until system time passes the timeout; woken by its VIRQ_TIMER port while that port
 *     is masked (no upcall: no event callback is registered, one would crash the domain);
 *     returns at once while a polled port is pending.
 *   - HYPERVISOR_set_debugreg (xen/arch/x86/pv/misc-hypercalls.c): an instruction breakpoint in
 *     DR0 enabled in DR7 is a #DB at that instruction, through the trap table, and
 *     get_debugreg(6) then has B0 set; what Xen refuses it refuses with Xen's errno. (NO_BREAKPOINT:
 *     armed and read back only, for hosts whose KVM cannot run ring 3 with debug registers.)
 * System time is the guest's own reading of vcpu_time_info (xen.h: system_time +
 * ((rdtsc - tsc_timestamp) << tsc_shift) * tsc_to_system_mul >> 32). */
        .code64
        .set HYPERVISOR_set_debugreg, 8
        .set HYPERVISOR_get_debugreg, 9
        .set HYPERVISOR_update_va_mapping, 14
        .set HYPERVISOR_set_timer_op, 15
        .set HYPERVISOR_console_io, 18
        .set HYPERVISOR_iret, 23
        .set HYPERVISOR_mmuext_op, 26
        .set HYPERVISOR_sched_op, 29
        .set HYPERVISOR_event_channel_op, 32
        .set FLAT_KERNEL_CS, 0xe033
        .set FLAT_KERNEL_SS, 0xe02b
        .set MMUEXT_SET_LDT, 13
        .set SCHEDOP_poll, 3
        .set LDT_DATA_SEL, 0x0f                         /* LDT entry 1, RPL 3 */
        .set LDT_EMPTY_SEL, 0x17                        /* LDT entry 2: all zeros */
        .set POLL_NS, 20000000                          /* 20 ms */

        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvabi64-test

        .include "pvcommon.inc"

        .macro EXPECT value                             /* the last hypercall answered \value */
        cmp $\value, %rax
        jne fail
        .endm

        .text
        .globl _start
_start:
        pv_boot trap_table, stack_top

        call ldt
        call bad_iret
        call poll
        call breakpoint
        movl $0, reason(%rip)                           /* SHUTDOWN_poweroff */
        mov $2, %edi
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp fail

/* -- the LDT ---------------------------------------------------------------------------------- */
ldt:
        /* Entry 1: a ring-3 read/write data segment whose base is ldt_target (below 4 GiB:
         * VIRT_BASE 0). Access byte 0xf2 (P, DPL 3, S, type 2: not yet accessed), flags 0xc
         * (G, D/B), limit 0xfffff. */
        lea ldt_target(%rip), %rax
        mov %eax, %edx
        shl $16, %edx
        or $0xffff, %edx                                /* base 15:0, limit 15:0 */
        mov %edx, ldt_page+8(%rip)
        mov %eax, %edx
        shr $16, %edx
        and $0xff, %edx                                 /* base 23:16 */
        or $0x00cff200, %edx
        mov %eax, %ecx
        and $0xff000000, %ecx                           /* base 31:24 */
        or %ecx, %edx
        mov %edx, ldt_page+12(%rip)

        lea ldt_page(%rip), %rdi                        /* read-only: it is to hold descriptors */
        mov %rdi, %rsi
        or $0x5, %rsi                                   /* present, user */
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        EXPECT 0

        movl $MMUEXT_SET_LDT, mmuext(%rip)
        lea ldt_page(%rip), %rax
        mov %rax, mmuext+8(%rip)
        movq $3, mmuext+16(%rip)                        /* entries 0-2 */
        call one_mmuext
        EXPECT 0

        mov $LDT_DATA_SEL, %eax
        mov %eax, %fs
        mov %fs:0, %rax
        movabs $0x5345474d454e5453, %rdx                /* what ldt_target holds */
        cmp %rdx, %rax
        jne fail
        xor %eax, %eax
        mov %eax, %fs
        testl $0x100, ldt_page+12(%rip)                 /* the CPU set the accessed bit */
        jz fail
        SAY "pvabi64: FS loaded from the LDT reads through its base ok\n"

        lea ldt_page(%rip), %rdi                        /* a writable mapping of it now */
        mov %rdi, %rsi
        or $0x7, %rsi
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        EXPECT -16
        SAY "pvabi64: the LDT page cannot be mapped writable -16\n"

        lea 1f(%rip), %rax
        mov %rax, gp_resume(%rip)
        mov %rsp, gp_rsp(%rip)
        mov $LDT_EMPTY_SEL, %eax
        mov %eax, %fs                                   /* #GP(0x14) */
        jmp fail
1:      cmpq $(LDT_EMPTY_SEL & ~3), gp_error(%rip)
        jne fail
        SAY "pvabi64: an empty LDT slot is #GP 0x14\n"
        ret

/* -- HYPERVISOR_iret to a data selector as CS ---------------------------------------------------- */
bad_iret:
        lea 1f(%rip), %rax
        mov %rax, gp_resume(%rip)
        mov %rsp, gp_rsp(%rip)
        pushq $FLAT_KERNEL_SS                           /* ss */
        pushq gp_rsp(%rip)                              /* rsp */
        pushq $0x202                                    /* rflags */
        pushq $(LDT_DATA_SEL & ~3)                      /* cs: RPL 0, the guest kernel's own */
        lea iret_target(%rip), %rax
        push %rax                                       /* rip */
        pushq $0                                        /* flags */
        jmp hypercall_page + HYPERVISOR_iret * 32
iret_target:
        jmp fail                                        /* never: CS does not load */
1:      cmpq $(LDT_DATA_SEL & ~3), gp_error(%rip)
        jne fail
        lea iret_target(%rip), %rax
        cmp %rax, gp_rip(%rip)
        jne fail
        SAY "pvabi64: iret to a data selector as CS is #GP 0xc at its target\n"
        ret

/* -- SCHEDOP_poll ------------------------------------------------------------------------------ */
poll:
        movl $129, poll_args+8(%rip)                    /* too many ports */
        lea ports(%rip), %rax
        mov %rax, poll_args(%rip)
        call do_poll
        EXPECT -22
        movl $1, poll_args+8(%rip)
        movl $5000, ports(%rip)                         /* past the 2-level ABI's 4096 */
        call do_poll
        EXPECT -22
        movabs $0x00007f0000001000, %rax                /* unmapped */
        mov %rax, poll_args(%rip)
        call do_poll
        EXPECT -14
        SAY "pvabi64: poll refuses bad arguments -22 -22 -14\n"

        movl $0, evt_virq(%rip)                         /* VIRQ_TIMER on vCPU 0, masked */
        movl $0, evt_virq+4(%rip)
        mov $1, %edi                                    /* EVTCHNOP_bind_virq */
        lea evt_virq(%rip), %rsi
        HCALL HYPERVISOR_event_channel_op
        EXPECT 0
        mov evt_virq+8(%rip), %eax
        mov %eax, ports(%rip)
        lock bts %rax, shinfo_page+2560(%rip)           /* evtchn_mask */
        lea ports(%rip), %rax
        mov %rax, poll_args(%rip)

        /* Nothing pending: it sleeps until the timeout. */
        call set_deadline
        mov %rax, poll_args+16(%rip)
        call do_poll
        EXPECT 0
        call deadline_passed
        mov ports(%rip), %eax
        bt %rax, shinfo_page+2048(%rip)                 /* evtchn_pending: still clear */
        jc fail
        SAY "pvabi64: poll slept until its timeout ok\n"

        /* No timeout: the masked timer port wakes it. */
        call set_deadline
        mov %rax, %rdi
        HCALL HYPERVISOR_set_timer_op
        EXPECT 0
        movq $0, poll_args+16(%rip)
        call do_poll
        EXPECT 0
        call deadline_passed
        mov ports(%rip), %eax
        bt %rax, shinfo_page+2048(%rip)
        jnc fail
        cmpb $0, shinfo_page+0(%rip)                    /* evtchn_upcall_pending: masked, none */
        jne fail
        SAY "pvabi64: poll woken by its masked timer port ok\n"

        call do_poll                                    /* the port is still pending */
        EXPECT 0
        SAY "pvabi64: poll on a pending port returns at once\n"
        ret

/* -- debug registers ------------------------------------------------------------------------- */
        .macro SETDR reg, value
        mov $\reg, %edi
        movabs $\value, %rsi
        HCALL HYPERVISOR_set_debugreg
        .endm

breakpoint:
        SETDR 0, 0xffff800000000000                     /* Xen's own area */
        EXPECT -1
        SETDR 7, 0x2401                                 /* GD */
        EXPECT -1
        SETDR 7, 0x100000001                            /* upper half reserved */
        EXPECT -22
        SETDR 8, 0
        EXPECT -19
        SETDR 7, 0x20001                                /* an I/O breakpoint, CR4.DE clear */
        EXPECT -1
        SAY "pvabi64: set_debugreg refuses -1 -1 -22 -19 -1\n"

        mov $0, %edi
        lea bp_target(%rip), %rsi
        HCALL HYPERVISOR_set_debugreg
        EXPECT 0
        SETDR 7, 0x1                                    /* L0: execute, 1 byte */
        EXPECT 0
        mov $7, %edi
        HCALL HYPERVISOR_get_debugreg
        EXPECT 0x401                                    /* with DR7's always-one bit */
        .ifdef NO_BREAKPOINT                            /* a host that cannot fire it: off again */
        SETDR 7, 0
        EXPECT 0
        ret
        .endif
bp_target:
        nop                                             /* #DB here, before it runs */
        lea bp_target(%rip), %rax
        cmp %rax, db_rip(%rip)
        jne fail
        testq $1, db_dr6(%rip)                          /* B0 */
        jz fail
        SAY "pvabi64: DR0 breakpoint is #DB at its address, DR6.B0 set ok\n"
        ret

db_handler:                                             /* rcx, r11, rip, cs, rflags, rsp, ss */
        mov 16(%rsp), %rax
        mov %rax, db_rip(%rip)
        mov $6, %edi
        HCALL HYPERVISOR_get_debugreg
        mov %rax, db_dr6(%rip)
        mov $7, %edi                                    /* off, or it fires again at the iret */
        mov $0, %esi
        HCALL HYPERVISOR_set_debugreg
        pop %rcx
        pop %r11
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32

do_poll:
        mov $SCHEDOP_poll, %edi
        lea poll_args(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        ret

set_deadline:                                           /* deadline = rax = now + POLL_NS */
        call now
        add $POLL_NS, %rax
        mov %rax, deadline(%rip)
        ret

deadline_passed:                                        /* fails unless system time is past it */
        call now
        cmp deadline(%rip), %rax
        jb fail
        ret

now:                                                    /* rax = system time (ns), vCPU 0 */
        lea shinfo_page+32(%rip), %rsi                  /* vcpu_info[0].time */
        rdtsc
        shl $32, %rdx
        or %rdx, %rax
        sub 8(%rsi), %rax                               /* - tsc_timestamp */
        movsbl 28(%rsi), %ecx                           /* tsc_shift */
        test %ecx, %ecx
        js 1f
        shl %cl, %rax
        jmp 2f
1:      neg %ecx
        shr %cl, %rax
2:      mov 24(%rsi), %edx                              /* tsc_to_system_mul */
        mul %rdx
        shrd $32, %rdx, %rax
        add 16(%rsi), %rax                              /* + system_time */
        ret

one_mmuext:
        lea mmuext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10d                              /* DOMID_SELF */
        HCALL HYPERVISOR_mmuext_op
        ret

gp_handler:                                             /* rcx, r11, error, rip, cs, rflags, rsp, ss */
        mov 16(%rsp), %rax
        mov %rax, gp_error(%rip)
        mov 24(%rsp), %rax
        mov %rax, gp_rip(%rip)
        mov gp_rsp(%rip), %rsp
        jmp *gp_resume(%rip)

        pv_puts_and_fail pvabi64

        .section .rodata
        .p2align 4
trap_table:                                             /* trap_info: vector, flags, cs, address */
        .byte 1, 0
        .word FLAT_KERNEL_CS
        .long 0
        .quad db_handler
        .byte 13, 0
        .word FLAT_KERNEL_CS
        .long 0
        .quad gp_handler
        .quad 0, 0

        .data
        .p2align 3
start_info: .quad 0
reason: .long 0
        .p2align 3
mmuext: .long 0, 0
        .quad 0, 0
gp_resume: .quad 0
gp_rsp: .quad 0
gp_error: .quad 0
gp_rip: .quad 0
deadline: .quad 0
db_rip: .quad 0
db_dr6: .quad 0
poll_args: .quad 0                                      /* sched_poll: ports, nr_ports, timeout */
        .long 0, 0
        .quad 0
ports: .long 0
evt_virq: .long 0, 0, 0                                 /* virq, vcpu, port (out) */
        .p2align 3
ldt_target: .quad 0x5345474d454e5453
        .p2align 12
ldt_page: .skip 4096                                    /* its own page: it becomes a descriptor page */

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
shinfo_page: .skip 4096
        .skip 8192
stack_top:
