/* IRETQ at CPL3 with CR4.SMAP set, as a Xen PV guest kernel (ring 3) returns from its own
   exception frames (flat binary at 0x100000, entered in 64-bit mode on hvm's identity tables).

   The guest makes 2-4 MiB a user page, copies a small user routine there, turns SMAP on when
   CPUID offers it, and enters CPL3. The routine builds an IRETQ frame on its own (user) stack
   and returns through it to the next instruction at CPL3, a ud2. The #UD handler checks it came
   from CPL3 at that ud2 and prints "smap=<0|1> cpl3 iretq: ok" (or the RIP and CS it got), then
   exits through isa-debug-exit with 0x10 (status 33). Architecturally IRET's stack reads at CPL3
   are user-mode accesses, which SMAP never restricts. */
        .set USER, 0x200000

        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        call sys64_init
        mov $6, %ebx
        lea on_ud(%rip), %rax
        mov $0x8e00, %edx
        xor %ecx, %ecx
        call set_gate

        lea user_code(%rip), %rsi        /* the user routine, at USER for CPL3 */
        mov $USER, %edi
        mov $(user_end - user_code), %ecx
        call user_page

        mov $7, %eax
        xor %ecx, %ecx
        cpuid
        shr $20, %ebx
        and $1, %ebx
        mov %bl, smap(%rip)
        jz 1f
        mov %cr4, %rax
        or $(1 << 21), %rax
        mov %rax, %cr4
1:      mov $USER, %eax
        mov $USER + 0x1000, %edx
        jmp user_iret

/* The user routine, copied to USER: an IRETQ from CPL3 to CPL3 through a frame on the user stack. */
user_code:
        mov %rsp, %rax
        push $UDATA
        push %rax
        pushfq
        push $UCODE
        lea user_ud - user_code + USER, %rcx
        push %rcx
        iretq
user_ud:
        ud2
user_end:

on_ud:  lea s_smap(%rip), %rsi
        call puts64
        movzbl smap(%rip), %eax
        call puthex64
        mov (%rsp), %rbx                /* RIP */
        cmp $(user_ud - user_code + USER), %rbx
        jne 2f
        testb $3, 8(%rsp)               /* CS: from CPL3 */
        jz 2f
        lea s_ok(%rip), %rsi
        call puts64
        jmp 3f
2:      lea s_bad(%rip), %rsi
        call puts64
        mov %rbx, %rax
        call puthex64
        mov $' ', %al
        call putc64
        mov 8(%rsp), %rax
        call puthex64
        mov $'\n', %al
        call putc64
3:      mov $0xf4, %dx
        mov $0x10, %al
        out %al, %dx
4:      cli
        hlt
        jmp 4b

        .include "lib64.S"
        .include "sys64.S"

s_smap: .asciz "smap="
s_ok:   .asciz " cpl3 iretq: ok\n"
s_bad:  .asciz " #UD at "
smap:   .byte 0
        .balign 16
        .space 2048
kstack_top:
