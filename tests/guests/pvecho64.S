/* A 64-bit Xen PV test kernel that echoes its console: it sleeps (SCHEDOP_block) until an
 * event comes, copies what the console ring's in[] holds to out[] and notifies, and powers off
 * once it has echoed a 'q'. Layout: io/console.h struct xencons_interface. */
        .code64
        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvecho64

        .set SI_SHARED_INFO, 40
        .set SI_CONSOLE_MFN, 72
        .set SI_CONSOLE_EVTCHN, 80

        .text
        .globl _start
_start:
        mov %rsi, %rbx
        lea shinfo(%rip), %rdi                          /* map shared_info over our page */
        mov SI_SHARED_INFO(%rbx), %rsi
        or $0x7, %rsi
        mov $2, %edx                                    /* UVMF_INVLPG */
        mov $14, %eax                                   /* HYPERVISOR_update_va_mapping */
        syscall
        mov %rbx, %rsi
        mov SI_CONSOLE_MFN(%rsi), %r12
        shl $12, %r12                                   /* identity P2M and VIRT_BASE 0 */
        mov SI_CONSOLE_EVTCHN(%rsi), %eax
        mov %eax, port(%rip)
        mov $0, %edi                                    /* CALLBACKOP_register: the event callback */
        lea event_cb(%rip), %rsi
        mov $30, %eax
        syscall
        lea hello(%rip), %rsi
        mov $(hello_end - hello), %ecx
        call put
wait:   mov $1, %edi                                    /* SCHEDOP_block: unmasks events, sleeps */
        xor %esi, %esi
        mov $29, %eax
        syscall
1:      mov 3072(%r12), %eax                            /* in_cons */
        cmp 3076(%r12), %eax                            /* in_prod */
        je wait
        mov %eax, %edx
        and $1023, %edx
        movzbl (%r12,%rdx), %ebx
        inc %eax
        mov %eax, 3072(%r12)
        mov %bl, byte(%rip)
        lea byte(%rip), %rsi
        mov $1, %ecx
        call put
        cmp $'q', %bl
        jne 1b
        mov $2, %edi                                    /* SCHEDOP_shutdown, poweroff */
        lea reason(%rip), %rsi
        mov $29, %eax
        syscall
        jmp .

put:    /* rsi = bytes, ecx = count: into out[], out_prod moved, port notified */
        mov 3084(%r12), %eax
2:      mov %eax, %edx
        and $2047, %edx
        movb (%rsi), %r8b
        movb %r8b, 1024(%r12,%rdx)
        inc %rsi
        inc %eax
        dec %ecx
        jnz 2b
        mov %eax, 3084(%r12)
        mov $4, %edi                                    /* EVTCHNOP_send */
        lea port(%rip), %rsi
        mov $32, %eax
        syscall
        ret

event_handler:                                          /* rcx, r11, rip, cs, rflags, rsp, ss */
        /* Any event means "look at the ring": acknowledge them all (vcpu_info 0's upcall flag
           and selector, the first word of pending bits) so no upcall repeats. */
        movb $0, shinfo+0(%rip)
        movq $0, shinfo+8(%rip)
        movq $0, shinfo+2048(%rip)
        pop %rcx
        pop %r11
        pushq $0
        mov $23, %eax                                   /* HYPERVISOR_iret through its stub shape */
        push %rcx
        push %r11
        push %rax
        syscall

        .section .rodata
hello:  .ascii "pvecho: ready\n"
hello_end:

        .data
        .p2align 3
port:   .long 0
reason: .long 0
byte:   .byte 0
        .p2align 3
event_cb:
        .word 0, 0
        .long 0
        .quad event_handler

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
shinfo: .skip 4096
