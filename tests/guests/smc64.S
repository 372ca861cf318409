/* Self-modifying code through an alias: one physical page (0x300000) is mapped executable at
   0x210000 and writable but not executable (NX) at 0x211000. Five times the guest stores
   `mov $N, %al; ret` through the NX alias and calls the executable one, which must return N
   each time: a store into a page must drop what was translated from it whatever virtual address
   the store went through (SDM vol. 3A, 11.6: a write to a code page, by any linear address,
   affects the instructions fetched afterwards). The first store comes before any code exists in
   the page, so a TLB entry that had stopped watching the page must start again once code is
   translated from it. Prints "smc alias: 1 2 3 4 5" and exits through isa-debug-exit with 1
   (status 3), or 2 after printing what ran instead. */
        .code64
        .text
        .globl _start
        .set PML4, 0x200000
        .set PDPT, 0x201000
        .set PD, 0x202000
        .set PT, 0x203000
        .set EXEC, 0x210000
        .set DATA, 0x211000
        .set FRAME, 0x300000
        .set P_RW, 0x3
        .set NX, 1 << 63
_start: lea stack_top(%rip), %rsp
        mov $0xc0000080, %ecx           /* EFER.NXE */
        rdmsr
        or $0x800, %eax
        wrmsr
        mov $PML4, %rdi                 /* four zeroed table pages */
        xor %eax, %eax
        mov $4 * 4096 / 8, %ecx
        rep stosq
        movq $PDPT | P_RW, PML4
        movq $PD | P_RW, PDPT
        movq $0x83, PD                  /* 0-2 MiB: one large page, the guest itself */
        movq $PT | P_RW, PD + 8         /* 2-4 MiB: 4 KiB pages */
        mov $NX, %rax                   /* the tables themselves, data */
        mov $PML4 | P_RW, %rbx
        or %rax, %rbx
        xor %ecx, %ecx
1:      mov %rbx, PT(,%rcx,8)
        add $4096, %rbx
        inc %ecx
        cmp $4, %ecx
        jne 1b
        movq $FRAME | P_RW, PT + ((EXEC - 0x200000) >> 12) * 8
        mov $FRAME | P_RW, %rbx
        or %rax, %rbx
        mov %rbx, PT + ((DATA - 0x200000) >> 12) * 8
        mov $PML4, %rax
        mov %rax, %cr3
        lea msg(%rip), %rsi
        call puts64
        mov $1, %r12d
2:      movb $0xb0, DATA                /* mov $N, %al */
        mov %r12b, DATA + 1
        movb $0xc3, DATA + 2            /* ret */
        xor %eax, %eax
        mov $EXEC, %rbx
        call *%rbx
        movzbl %al, %eax
        cmp %r12d, %eax
        jne stale
        mov $' ', %al
        call putc64
        mov %r12, %rax
        call puthex64
        inc %r12d
        cmp $6, %r12d
        jne 2b
        mov $'\n', %al
        call putc64
        mov $1, %al
        jmp done
stale:  lea bad(%rip), %rsi
        call puts64
        call puthex64
        mov $'\n', %al
        call putc64
        mov $2, %al
done:   out %al, $0xf4
3:      cli
        hlt
        jmp 3b

        .include "lib64.S"

msg:    .asciz "smc alias:"
bad:    .asciz " stale code ran, it returned "
        .balign 16
        .space 1024
stack_top:
