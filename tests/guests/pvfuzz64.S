/* A hostile 64-bit Xen PV kernel: it makes the hypercalls listed in `calls` (written into its
 * memory by the test before it runs: a count, then {nr, arg1..arg5} per call) straight through
 * SYSCALL, whatever their arguments, then says "pvfuzz: done" through console_io and powers off.
 * A call may also end the run itself (shutdown, a bad iret): hvm must survive every one. */
        .code64
        .include "xennotes.inc"
        pv_test_kernel_notes hvm-pvfuzz64

        .text
        .globl _start
_start:
        lea calls(%rip), %rbx
        mov (%rbx), %r12                                /* count */
        add $8, %rbx
1:      test %r12, %r12
        jz 2f
        mov 0(%rbx), %rax
        mov 8(%rbx), %rdi
        mov 16(%rbx), %rsi
        mov 24(%rbx), %rdx
        mov 32(%rbx), %r10
        mov 40(%rbx), %r8
        push %rbx
        push %r12
        syscall
        pop %r12
        pop %rbx
        add $48, %rbx
        dec %r12
        jmp 1b
2:      xor %edi, %edi                                  /* CONSOLEIO_write */
        mov $(done_end - done), %esi
        lea done(%rip), %rdx
        mov $18, %eax
        syscall
        mov $2, %edi                                    /* SCHEDOP_shutdown, poweroff */
        lea reason(%rip), %rsi
        mov $29, %eax
        syscall
        jmp .

        .section .rodata
done:   .ascii "pvfuzz: done\n"
done_end:

        .data
        .p2align 3
reason: .long 0, 0
        .globl calls
calls:  .quad 0
        .skip 64 * 48

        .text
        .p2align 12
hypercall_page: .skip 4096

        .bss
        .p2align 12
        .skip 8192
