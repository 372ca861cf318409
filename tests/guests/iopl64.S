/* Port I/O from CPL3 obeys IOPL and the TSS I/O bitmap (SDM vol. 1, 19.5), as a Xen PV kernel
   (ring 3) depends on: Xen keeps its serial port to itself that way (flat binary at 0x100000,
   entered in 64-bit mode on hvm's identity tables). The TSS's I/O map base points past its limit,
   so only IOPL can grant access. The user routine sets AL to 0x5a and reads port 0x61:
     1. with IOPL 3 the IN runs and the routine's ud2 is reached: "iopl3: in ran";
     2. with IOPL 0 the IN raises #GP(0) pointing at the IN, AL still 0x5a: "iopl0: #GP(0) at in, al kept".
   Then isa-debug-exit 0x10 (status 33). */
        .set USER, 0x200000

        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        movw $0x68, tss+0x66(%rip)      /* the I/O map starts past the TSS limit: no bitmap */
        call sys64_init
        mov $6, %ebx
        lea on_ud(%rip), %rax
        mov $0x8e00, %edx
        xor %ecx, %ecx
        call set_gate
        mov $13, %ebx
        lea on_gp(%rip), %rax
        mov $0x8e00, %edx
        xor %ecx, %ecx
        call set_gate

        lea user_code(%rip), %rsi        /* the user routine, at USER for CPL3 */
        mov $USER, %edi
        mov $(user_end - user_code), %ecx
        call user_page
        mov $0x3202, %ecx               /* IOPL 3, IF */
        jmp to_user

to_user:                                /* CPL3 at USER with flags %rcx */
        push $UDATA
        push $USER + 0x1000
        push %rcx
        push $UCODE
        push $USER
        iretq

user_code:
        mov $0x5a, %al
        in $0x61, %al
        ud2
user_end:

on_ud:  lea s_iopl3(%rip), %rsi
        call puts64
        mov $0x202, %ecx                /* again, IOPL 0 */
        jmp to_user

on_gp:  lea s_gp(%rip), %rsi
        call puts64
        cmpq $0, (%rsp)                 /* error code 0 */
        jne bad
        cmpq $USER + 2, 8(%rsp)         /* RIP at the IN */
        jne bad
        cmp $0x5a, %al
        jne bad
        lea s_kept(%rip), %rsi
        call puts64
        jmp out
bad:    lea s_bad(%rip), %rsi
        call puts64
out:    mov $0x10, %al
        out %al, $0xf4
1:      cli
        hlt
        jmp 1b

        .include "lib64.S"
        .include "sys64.S"

s_iopl3: .asciz "iopl3: in ran\n"
s_gp:   .asciz "iopl0: #GP(0)"
s_kept: .asciz " at in, al kept\n"
s_bad:  .asciz " with the wrong frame or AL\n"
        .balign 16
        .space 2048
kstack_top:
