/* A 64-bit Xen PV test kernel that starts its second vCPU as Linux's cpu_initialize_context
 * does: a vcpu_guest_context (public/arch-x86/xen.h, 64-bit layout) given with
 * VCPUOP_initialise, then VCPUOP_up. The context's DS is an LDT selector with no LDT: Xen's
 * load_segments cannot load it, so vCPU 1 starts in its failsafe callback, DS NUL, with the
 * selectors and the interrupted RIP in the frame (xen/arch/x86/domain.c); it checks them and
 * goes on to the context's entry point with HYPERVISOR_iret. There it runs on its own stack with the boot
 * page tables, says so, raises an event on an IPI port bound to vCPU 0 (EVTCHNOP_bind_ipi), and
 * counts. vCPU 0 takes it down (VCPUOP_down of another vCPU): the count stops; VCPUOP_up: it
 * goes on counting from where it was. At last vCPU 1 takes itself down with VCPUOP_down. vCPU 0
 * checks what Xen answers along the way (a second initialise is -EEXIST, VCPUOP_is_up 0 before
 * VCPUOP_up, 1 while it runs, 0 while down) and powers off; with LAST_DOWN defined it takes
 * itself down instead, the last vCPU up, which Xen answers by powering the domain off.
 * VIRT_BASE 0 and an identity P2M: a virtual address in the boot mapping is the machine address. */
        .code64
        .set HYPERVISOR_set_trap_table, 0
        .set HYPERVISOR_stack_switch, 3
        .set HYPERVISOR_console_io, 18
        .set HYPERVISOR_iret, 23
        .set HYPERVISOR_vcpu_op, 24
        .set HYPERVISOR_sched_op, 29
        .set HYPERVISOR_event_channel_op, 32
        .set FLAT_KERNEL_CS, 0xe033
        .set FLAT_KERNEL_SS, 0xe02b
        .set SI_PT_BASE, 88
        .set VCPUOP_initialise, 0
        .set VCPUOP_up, 1
        .set VCPUOP_down, 2
        .set VCPUOP_is_up, 3
        /* vcpu_guest_context offsets (64-bit) */
        .set CTX_FLAGS, 512
        .set CTX_RIP, 648
        .set CTX_CS, 656
        .set CTX_RFLAGS, 664
        .set CTX_RSP, 672
        .set CTX_SS, 680
        .set CTX_DS, 696
        .set CTX_FAILSAFE, 5120
        .set CTX_KERNEL_SS, 4968
        .set CTX_KERNEL_SP, 4976
        .set CTX_CR3, 5008
        .set CTX_SIZE, 5168
        .set VGCF_in_kernel, 4

        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvsmp64-test

        .include "pvcommon.inc"
        .macro VCPUOP cmd, vcpu, arg
        mov $\cmd, %edi
        mov $\vcpu, %esi
        lea \arg, %rdx
        HCALL HYPERVISOR_vcpu_op
        .endm

        .text
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        mov $FLAT_KERNEL_SS, %edi
        lea boot_stack_top(%rip), %rsi
        HCALL HYPERVISOR_stack_switch

        movl $0, ipi(%rip)                              /* EVTCHNOP_bind_ipi to vCPU 0 */
        mov $7, %edi
        lea ipi(%rip), %rsi
        HCALL HYPERVISOR_event_channel_op
        test %rax, %rax
        jnz fail

        VCPUOP VCPUOP_is_up, 1, 0
        test %rax, %rax                                 /* exists, not up */
        jnz fail

        lea context(%rip), %rbx
        movq $VGCF_in_kernel, CTX_FLAGS(%rbx)
        lea ap_entry(%rip), %rax
        mov %rax, CTX_RIP(%rbx)
        movw $FLAT_KERNEL_CS, CTX_CS(%rbx)
        movq $0x200, CTX_RFLAGS(%rbx)
        lea ap_stack_top(%rip), %rax
        mov %rax, CTX_RSP(%rbx)
        mov %rax, CTX_KERNEL_SP(%rbx)
        movw $FLAT_KERNEL_SS, CTX_SS(%rbx)
        movq $FLAT_KERNEL_SS, CTX_KERNEL_SS(%rbx)
        mov start_info(%rip), %rax
        mov SI_PT_BASE(%rax), %rax                      /* the boot L4: its address is its maddr */
        mov %rax, CTX_CR3(%rbx)                         /* xen_pfn_to_cr3: mfn << 12 */
        movw $0x0f, CTX_DS(%rbx)                        /* LDT entry 1: there is no LDT */
        lea ap_failsafe(%rip), %rax
        mov %rax, CTX_FAILSAFE(%rbx)
        VCPUOP VCPUOP_initialise, 1, context(%rip)
        test %rax, %rax
        jnz fail
        VCPUOP VCPUOP_initialise, 1, context(%rip)
        cmp $-17, %rax                                  /* EEXIST */
        jne fail
        VCPUOP VCPUOP_is_up, 1, 0
        test %rax, %rax                                 /* initialised, not up yet */
        jnz fail
        VCPUOP VCPUOP_up, 1, 0
        test %rax, %rax
        jnz fail

1:      mov $0, %edi                                    /* SCHEDOP_yield until vCPU 1 has run */
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        cmpb $1, ap_ran(%rip)
        jne 1b
        VCPUOP VCPUOP_is_up, 1, 0
        cmp $1, %rax
        jne fail

        VCPUOP VCPUOP_down, 1, 0                        /* vCPU 1 down, from here */
        test %rax, %rax
        jnz fail
        VCPUOP VCPUOP_is_up, 1, 0
        test %rax, %rax
        jnz fail
        /* It stops when it next looks at its events (Xen's vcpu_sleep_nosync: not at once), so
         * wait for the count to hold still over a settle, then for as long again. A vCPU still
         * running counts on every yield of its own and never holds still. */
        mov $50, %r13d
4:      mov ap_count(%rip), %r12
        call settle
        cmp ap_count(%rip), %r12
        je 5f
        dec %r13d
        jnz 4b
        jmp fail
5:      call settle
        call settle
        cmp ap_count(%rip), %r12                        /* held: it counts no more */
        jne fail
        SAY "pvsmp64: vCPU 0 took vCPU 1 down, its count stopped\n"
        VCPUOP VCPUOP_up, 1, 0
        test %rax, %rax
        jnz fail
3:      mov $0, %edi                                    /* SCHEDOP_yield until it counts again */
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        cmp ap_count(%rip), %r12
        je 3b
        ja fail                                         /* from where it was, not from 1 */
        SAY "pvsmp64: vCPU 1 up again, counting on\n"
        movb $1, ap_may_stop(%rip)
2:      mov $0, %edi
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        VCPUOP VCPUOP_is_up, 1, 0
        test %rax, %rax
        jnz 2b
        .ifdef LAST_DOWN
        SAY "pvsmp64: vCPU 1 went down, vCPU 0 goes down last\n"
        VCPUOP VCPUOP_down, 0, 0                        /* the domain powers off (Xen) */
        jmp fail
        .endif
        SAY "pvsmp64: vCPU 1 went down, vCPU 0 powers off\n"
        movl $0, reason(%rip)
        mov $2, %edi                                    /* SCHEDOP_shutdown poweroff */
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp fail

settle:                                                 /* 100 yields */
        push %rbx
        mov $100, %ebx
1:      mov $0, %edi
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        dec %ebx
        jnz 1b
        pop %rbx
        ret

/* vCPU 1 starts here: rcx, r11, ds, es, fs, gs, rip, cs, rflags, rsp, ss on the context's stack. */
ap_failsafe:
        cmpq $0x0f, 16(%rsp)                            /* the DS that did not load */
        jne fail
        cmpq $0, 24(%rsp)                               /* ES, FS, GS: NUL, as given */
        jne fail
        lea ap_entry(%rip), %rax
        cmp %rax, 48(%rsp)                              /* where it was to start */
        jne fail
        mov %ds, %eax
        test %eax, %eax                                 /* DS was left NUL */
        jnz fail
        SAY "pvsmp64: vCPU 1 started in its failsafe callback ok\n"
        add $48, %rsp                                   /* rip, cs, rflags, rsp, ss */
        pushq $0                                        /* iret flags: not VGCF_in_syscall */
        jmp hypercall_page + HYPERVISOR_iret * 32

ap_entry:
        lea ap_stack_top(%rip), %rax
        cmp %rax, %rsp                                  /* the context's stack */
        jne fail
        SAY "pvsmp64: vCPU 1 running\n"
        mov ipi+4(%rip), %eax                           /* EVTCHNOP_send on the IPI port */
        mov %eax, send_port(%rip)
        mov $4, %edi
        lea send_port(%rip), %rsi
        HCALL HYPERVISOR_event_channel_op
        test %rax, %rax
        jnz fail
        movb $1, ap_ran(%rip)
        xor %r13d, %r13d                                /* the count lives in a register: a */
1:      inc %r13                                        /* restart would begin it again */
        mov %r13, ap_count(%rip)
        mov $0, %edi                                    /* SCHEDOP_yield */
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        cmpb $1, ap_may_stop(%rip)
        jne 1b
        SAY "pvsmp64: vCPU 1 takes itself down\n"
        VCPUOP VCPUOP_down, 1, 0
        jmp fail                                        /* never runs again */

        pv_puts_and_fail pvsmp64

        .data
        .p2align 3
start_info: .quad 0
ipi: .long 0, 0                                         /* vcpu, port (out) */
send_port: .long 0
reason: .long 0
ap_count: .quad 0
ap_ran: .byte 0
ap_may_stop: .byte 0

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
context: .skip CTX_SIZE
        .p2align 12
        .skip 8192
boot_stack_top:
        .skip 8192
ap_stack_top:
