/* A 64-bit Xen PV test kernel: an ELF with Xen's notes that runs in ring 3 under a hypervisor
 * and reports on hvm's console what each PV mechanism did:
 *   console_io and the console ring; set_trap_table and a #PF in kernel mode (CR2 from the
 *   shared_info page it maps with update_va_mapping); forbidden page-table updates (each answer
 *   printed as "refused <name> <rc>"); an L4 of its own pinned, filled by mmu_update and made
 *   the base; the forced-emulation CPUID; a trip to user mode through
 *   HYPERVISOR_iret and back by SYSCALL, INT 0x80 (a DPL-3 trap) and a #UD; then
 *   SCHEDOP_shutdown with the reason in PV_REASON (0 poweroff, 3 crash).
 * Layout per Xen's public headers: xen.h (start_info, mmu_update, mmuext_op), arch-x86/
 * xen-x86_64.h (selectors, iret_context), elfnote.h (notes). */
        .code64
        .ifndef PV_REASON
        .set PV_REASON, 0
        .endif

        .set HYPERVISOR_set_trap_table, 0
        .set HYPERVISOR_mmu_update, 1
        .set HYPERVISOR_stack_switch, 3
        .set HYPERVISOR_update_va_mapping, 14
        .set HYPERVISOR_set_timer_op, 15
        .set HYPERVISOR_console_io, 18
        .set HYPERVISOR_iret, 23
        .set HYPERVISOR_mmuext_op, 26
        .set HYPERVISOR_nmi_op, 28
        .set HYPERVISOR_sched_op, 29
        .set HYPERVISOR_callback_op, 30
        .set HYPERVISOR_event_channel_op, 32
        .set FLAT_KERNEL_SS, 0xe02b
        .set FLAT_USER_CS, 0xe033
        .set FLAT_USER_SS, 0xe02b
        .set SI_SHARED_INFO, 40
        .set SI_NR_PAGES, 32
        .set SI_CONSOLE_MFN, 72
        .set SI_CONSOLE_EVTCHN, 80
        .set SI_PT_BASE, 88

        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pv64-test

        .include "pvcommon.inc"

        .text
        .globl _start
_start:
        mov %rsi, start_info(%rip)
        SAY "pv64: console_io works\n"

        lea trap_table(%rip), %rdi
        HCALL HYPERVISOR_set_trap_table
        test %rax, %rax
        jnz fail
        mov $FLAT_KERNEL_SS, %edi
        lea kernel_stack_top(%rip), %rsi
        HCALL HYPERVISOR_stack_switch

        /* The console ring: bytes into out[], out_prod moved, then the event channel kicked. */
        mov start_info(%rip), %rbx
        mov SI_CONSOLE_MFN(%rbx), %r12
        shl $12, %r12                                   /* identity P2M and VIRT_BASE 0 */
        lea ring_msg(%rip), %rsi
        mov $(ring_msg_end - ring_msg), %ecx
        mov 3084(%r12), %eax                            /* out_prod */
1:      mov %eax, %edx
        and $2047, %edx
        movb (%rsi), %r8b
        movb %r8b, 1024(%r12,%rdx)
        inc %rsi
        inc %eax
        dec %ecx
        jnz 1b
        mov %eax, 3084(%r12)
        mov SI_CONSOLE_EVTCHN(%rbx), %eax
        mov %eax, port(%rip)
        mov $4, %edi                                    /* EVTCHNOP_send */
        lea port(%rip), %rsi
        HCALL HYPERVISOR_event_channel_op

        /* Map shared_info over shinfo_page: its frame is the hypervisor's, shared with us. */
        lea shinfo_page(%rip), %rdi
        mov SI_SHARED_INFO(%rbx), %rsi
        or $0x7, %rsi                                   /* present, writable, user */
        mov $2, %edx                                    /* UVMF_INVLPG */
        HCALL HYPERVISOR_update_va_mapping
        test %rax, %rax
        jnz fail

        /* A #PF in kernel mode: the handler checks CR2 in vcpu_info and skips the access. */
        movabs $0x00007f0000001000, %rax
        mov %rax, expected_cr2(%rip)
        mov (%rax), %rax
after_fault:
        cmpb $1, pf_seen(%rip)
        jne fail

        call forbidden_updates
        call new_page_tables
        call timer_event
        mov $0, %edi                                    /* XENNMI_register_callback */
        lea nmi_cb(%rip), %rsi
        HCALL HYPERVISOR_nmi_op
        test %rax, %rax
        jnz fail

        /* The forced-emulation prefix: CPUID leaf 0 as the hypervisor answers it. */
        xor %eax, %eax
        xor %ecx, %ecx
        ud2
        .ascii "xen"
        cpuid
        cmp $0x756e6547, %ebx                           /* "Genu"ineIntel (unicorn's model) */
        je 1f
        cmp $0x68747541, %ebx                           /* "Auth"enticAMD: KVM on an AMD host */
        jne fail
1:
        SAY "pv64: forced-emulation cpuid ok\n"

        /* User mode: a user L4 (the same tables), a syscall callback, then iret to ring 3. */
        mov start_info(%rip), %rbx
        mov SI_PT_BASE(%rbx), %rax
        shr $12, %rax
        movl $15, mmuext+0(%rip)                        /* MMUEXT_NEW_USER_BASEPTR */
        mov %rax, mmuext+8(%rip)
        call one_mmuext
        test %rax, %rax
        jnz fail
        mov $0, %edi                                    /* CALLBACKOP_register */
        lea syscall_cb(%rip), %rsi
        HCALL HYPERVISOR_callback_op
        test %rax, %rax
        jnz fail

        pushq $FLAT_USER_SS
        lea user_stack_top(%rip), %rax
        push %rax
        pushq $0x202
        pushq $FLAT_USER_CS
        lea user_code(%rip), %rax
        push %rax
        pushq $0                                        /* iret flags: not VGCF_in_syscall */
        jmp hypercall_page + HYPERVISOR_iret * 32

/* Runs in guest user mode (ring 3, user page table): three ways back to the kernel. */
user_code:
        mov $0x5a5a, %r15
        syscall
        int $0x80
        ud2
        jmp .

syscall_entry:                                          /* bounced: rcx, r11, rip, cs, rflags, rsp, ss */
        testb $3, 24(%rsp)                              /* CS of the interrupted code */
        jz fail
        cmp $0x5a5a, %r15
        jne fail
        SAY "pv64: syscall from user mode ok\n"
        pop %rcx
        pop %r11
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32       /* back to user, after the syscall */

int80_handler:
        testb $3, 24(%rsp)
        jz fail
        SAY "pv64: int 0x80 from user mode ok\n"
        pop %rcx
        pop %r11
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32

ud_handler:                                             /* from user mode: we are done */
        testb $3, 24(%rsp)
        jz fail
        SAY "pv64: #UD from user mode ok\n"
        movl $PV_REASON, reason(%rip)
        mov $2, %edi                                    /* SCHEDOP_shutdown */
        lea reason(%rip), %rsi
        HCALL HYPERVISOR_sched_op
        jmp fail

pf_handler:                                             /* rcx, r11, error, rip, cs, rflags, rsp, ss */
        testb $3, 32(%rsp)                              /* a kernel-mode fault: RPL 0 in the frame */
        jnz fail
        mov shinfo_page+16(%rip), %rax                  /* vcpu_info[0].arch.cr2 */
        cmp expected_cr2(%rip), %rax
        jne fail
        movb $1, pf_seen(%rip)
        SAY "pv64: #PF in kernel mode ok\n"
        pop %rcx
        pop %r11
        add $8, %rsp                                    /* the error code */
        lea after_fault(%rip), %rax
        mov %rax, (%rsp)
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32

gp_handler:
        SAY "pv64: unexpected #GP\n"
        jmp fail

/* Each forbidden update must be refused; the answer is printed for the test to check. */
forbidden_updates:
        mov start_info(%rip), %rbx
        /* 1. Map our L4 writable (a page table never is). */
        lea scratch_page(%rip), %rdi
        mov SI_PT_BASE(%rbx), %rsi
        or $0x7, %rsi
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        lea name_l4_writable(%rip), %rdi
        call report
        /* 2. Map a frame that is not ours: the one after shared_info is the hypervisor's. */
        lea scratch_page(%rip), %rdi
        mov SI_SHARED_INFO(%rbx), %rsi
        add $0x1000, %rsi
        or $0x5, %rsi
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        lea name_foreign(%rip), %rdi
        call report
        /* 3. Change a reserved L4 slot (256: the hypervisor's area) with mmu_update. */
        mov SI_PT_BASE(%rbx), %rax
        add $(256 * 8), %rax                            /* machine address: identity, VIRT_BASE 0 */
        mov %rax, mmu_req(%rip)
        mov SI_PT_BASE(%rbx), %rax
        or $0x5, %rax                                   /* anything: the slot is not ours */
        mov %rax, mmu_req+8(%rip)
        lea mmu_req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10d
        HCALL HYPERVISOR_mmu_update
        lea name_reserved(%rip), %rdi
        call report
        /* 4. Unpin a table nobody pinned: our own image's first page. */
        movl $4, mmuext+0(%rip)                         /* MMUEXT_UNPIN_TABLE */
        lea _start(%rip), %rax
        shr $12, %rax
        mov %rax, mmuext+8(%rip)
        call one_mmuext
        lea name_unpin(%rip), %rdi
        call report
        ret

/* A top-level table of our own: made read-only in our mapping, pinned as an L4, filled with the
 * boot L4's guest slots by mmu_update (each entry validated), then made the kernel's base. */
new_page_tables:
        push %rbx
        mov start_info(%rip), %rbx
        lea new_l4(%rip), %rdi
        mov %rdi, %rsi
        or $0x5, %rsi                                   /* present, user: no longer writable */
        mov $2, %edx
        HCALL HYPERVISOR_update_va_mapping
        test %rax, %rax
        jnz fail
        movl $3, mmuext+0(%rip)                         /* MMUEXT_PIN_L4_TABLE */
        lea new_l4(%rip), %rax
        shr $12, %rax
        mov %rax, mmuext+8(%rip)
        call one_mmuext
        test %rax, %rax
        jnz fail
        mov SI_PT_BASE(%rbx), %r12
        xor %r13d, %r13d
1:      mov (%r12,%r13,8), %rax
        test %rax, %rax
        jz 2f
        lea new_l4(%rip), %rcx
        lea (%rcx,%r13,8), %rcx
        mov %rcx, mmu_req(%rip)
        mov %rax, mmu_req+8(%rip)
        lea mmu_req(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10d
        HCALL HYPERVISOR_mmu_update
        test %rax, %rax
        jnz fail
        incl copied(%rip)
2:      inc %r13
        cmp $256, %r13
        jb 1b
        cmpl $0, copied(%rip)
        je fail
        movl $5, mmuext+0(%rip)                         /* MMUEXT_NEW_BASEPTR */
        lea new_l4(%rip), %rax
        shr $12, %rax
        mov %rax, mmuext+8(%rip)
        call one_mmuext
        test %rax, %rax
        jnz fail
        incl copied+4(%rip)                             /* a store through the new tables */
        SAY "pv64: running on page tables built with mmu_update ok\n"
        pop %rbx
        ret

/* A Xen timer through an event channel: VIRQ_TIMER bound to a port, a single-shot deadline 1 ms
 * after the system time in vcpu_time_info, SCHEDOP_block (which unmasks events) until the
 * upcall enters event_handler. */
timer_event:
        movl $0, evt_virq(%rip)                         /* VIRQ_TIMER */
        movl $0, evt_virq+4(%rip)                       /* vCPU 0 */
        mov $1, %edi                                    /* EVTCHNOP_bind_virq */
        lea evt_virq(%rip), %rsi
        HCALL HYPERVISOR_event_channel_op
        test %rax, %rax
        jnz fail
        mov $0, %edi                                    /* CALLBACKOP_register */
        lea event_cb(%rip), %rsi
        HCALL HYPERVISOR_callback_op
        test %rax, %rax
        jnz fail
        mov shinfo_page+32+16(%rip), %rdi               /* vcpu_info[0].time.system_time */
        add $1000000, %rdi
        HCALL HYPERVISOR_set_timer_op
        test %rax, %rax
        jnz fail
1:      mov $1, %edi                                    /* SCHEDOP_block */
        xor %esi, %esi
        HCALL HYPERVISOR_sched_op
        cmpb $1, timer_seen(%rip)
        jne 1b
        SAY "pv64: timer event through an upcall ok\n"
        ret

event_handler:                                          /* rcx, r11, rip, cs, rflags, rsp, ss */
        mov evt_virq+8(%rip), %eax                      /* the port bind_virq gave */
        lock btr %rax, shinfo_page+2048(%rip)           /* evtchn_pending: was it raised? */
        jnc fail
        movb $0, shinfo_page+0(%rip)                    /* evtchn_upcall_pending */
        movq $0, shinfo_page+8(%rip)                    /* evtchn_pending_sel */
        movb $1, timer_seen(%rip)
        pop %rcx
        pop %r11
        pushq $0
        jmp hypercall_page + HYPERVISOR_iret * 32

one_mmuext:                                             /* the one op in mmuext, for ourselves */
        lea mmuext(%rip), %rdi
        mov $1, %esi
        xor %edx, %edx
        mov $0x7ff0, %r10d                              /* DOMID_SELF */
        HCALL HYPERVISOR_mmuext_op
        ret

/* report: rdi = NUL-terminated name, rax = the hypercall's answer; "refused NAME -N" if it failed. */
report:
        push %rax
        push %rdi
        test %rax, %rax
        jns fail
        SAY "pv64: refused "
        mov (%rsp), %rdi
        xor %esi, %esi
1:      cmpb $0, (%rdi,%rsi)
        je 2f
        inc %esi
        jmp 1b
2:      call puts
        SAY " -"
        mov 8(%rsp), %rax
        neg %rax
        call put_decimal
        SAY "\n"
        add $16, %rsp
        ret

put_decimal:                                            /* rax: a small non-negative number */
        lea numbuf_end(%rip), %rdi
        mov $10, %ecx
1:      xor %edx, %edx
        div %rcx
        add $'0', %dl
        dec %rdi
        mov %dl, (%rdi)
        test %rax, %rax
        jnz 1b
        lea numbuf_end(%rip), %rsi
        sub %rdi, %rsi
        jmp puts

        pv_puts_and_fail pv64

        .section .rodata
ring_msg:
        .ascii "pv64: console ring works\n"
ring_msg_end:
name_l4_writable: .asciz "l4-writable"
name_foreign:     .asciz "foreign-frame"
name_reserved:    .asciz "reserved-slot"
name_unpin:       .asciz "unpin-unpinned"
        .p2align 4
trap_table:                                             /* trap_info: vector, flags, cs, address */
        .byte 6, 0
        .word FLAT_USER_CS
        .long 0
        .quad ud_handler
        .byte 13, 0
        .word FLAT_USER_CS
        .long 0
        .quad gp_handler
        .byte 14, 0
        .word FLAT_USER_CS
        .long 0
        .quad pf_handler
        .byte 0x80, 3                                   /* DPL 3: user mode may INT 0x80 */
        .word FLAT_USER_CS
        .long 0
        .quad int80_handler
        .quad 0, 0

        .data
        .p2align 3
start_info: .quad 0
expected_cr2: .quad 0
pf_seen: .byte 0
        .p2align 2
port: .long 0
reason: .long 0
        .p2align 3
syscall_cb:                                             /* callback_register: type, flags, address */
        .word 2, 0                                      /* CALLBACKTYPE_syscall */
        .long 0
        .quad syscall_entry
mmuext: .long 0, 0
        .quad 0, 0
mmu_req: .quad 0, 0
copied: .long 0, 0
evt_virq: .long 0, 0, 0                                 /* virq, vcpu, port (out) */
timer_seen: .byte 0
        .p2align 3
nmi_cb: .quad gp_handler, 0                             /* xennmi_callback: handler, pad */
event_cb:                                               /* callback_register: CALLBACKTYPE_event */
        .word 0, 0
        .long 0
        .quad event_handler
numbuf: .skip 24
numbuf_end:

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
shinfo_page: .skip 4096
scratch_page: .skip 4096
new_l4: .skip 4096
        .skip 4096
kernel_stack_top:
        .skip 4096
user_stack_top:
