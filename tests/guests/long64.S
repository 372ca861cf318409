/* Flat binary entered in 64-bit long mode at 0x100000 on hvm's identity page tables:
   proves 64-bit arithmetic and a store/load above 4 GiB of address space is not needed; prints
   a 64-bit product in hex, then exits through isa-debug-exit with 0x21 (status 67). */
        .code64
        .text
        .globl _start
_start: lea stack_top(%rip), %rsp
        lea msg(%rip), %rsi
        call puts64
        mov $0x123456789, %rax
        mov $0x10, %rbx
        imul %rbx, %rax                 /* 0x1234567890: needs more than 32 bits */
        mov $16, %rcx
1:      rol $4, %rax
        mov %al, %bl
        and $0xf, %bl
        add $'0', %bl
        cmp $'9', %bl
        jbe 2f
        add $('a' - '9' - 1), %bl
2:      push %rax
        mov %bl, %al
        call putc64
        pop %rax
        dec %rcx
        jnz 1b
        mov $'\n', %al
        call putc64
        mov $0xf4, %dx
        mov $0x21, %al
        out %al, %dx
3:      cli
        hlt
        jmp 3b

        .include "lib64.S"

msg:    .asciz "long mode: "
        .balign 16
        .space 1024
stack_top:
