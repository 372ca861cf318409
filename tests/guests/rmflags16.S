/* Two real-mode results kvm-unit-tests' realmode checks (flat at 0x7c00, like a boot sector):
     rf    IRETL loads EFLAGS with RF (bit 16) set; the PUSHFL right after stores RF clear (SDM
           vol. 2B, PUSHF: VM and RF are cleared in the image)
     smsw  SMSW into a 32-bit register stores CR0's low 32 bits (CR0.CD, bit 30, set for the test)
   Prints "rf=ok smsw=ok" ("bad" for a failed check) on COM1 and powers off (ACPI S5). */
        .code16
        .text
        .globl _start
_start: xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        pushfl
        popl %eax
        or $0x10000, %eax               /* RF */
        pushl %eax
        xor %ebx, %ebx
        mov %cs, %bx
        pushl %ebx
        pushl $1f
        iretl
1:      pushfl
        popl %edx
        mov $s_rf, %si
        call puts
        test $0x10000, %edx
        call verdict

        mov %cr0, %ebx
        mov %ebx, %ecx
        or $0x40000000, %ebx            /* CD */
        mov %ebx, %cr0
        mov $0x12345678, %eax
        smswl %eax
        mov %ecx, %cr0
        mov $s_smsw, %si
        call puts
        cmp %eax, %ebx
        call verdict
        mov $s_nl, %si
        call puts
        mov $0x604, %dx                 /* ACPI S5 */
        mov $0x2000, %ax
        out %ax, %dx
2:      cli
        hlt
        jmp 2b

/* verdict: "ok" if ZF is set, else "bad". */
verdict:
        mov $s_ok, %si
        jz puts
        mov $s_bad, %si
/* puts: the NUL-ended string at %si on COM1. Keeps every register but %si. */
puts:   push %ax
        push %dx
1:      lodsb
        test %al, %al
        jz 3f
        mov %al, %ah
        mov $0x3fd, %dx
2:      in %dx, %al
        test $0x20, %al
        jz 2b
        mov $0x3f8, %dx
        mov %ah, %al
        out %al, %dx
        jmp 1b
3:      pop %dx
        pop %ax
        ret

s_rf:   .asciz "rf="
s_smsw: .asciz " smsw="
s_ok:   .asciz "ok"
s_bad:  .asciz "bad"
s_nl:   .asciz "\n"

        .org 510
        .word 0xaa55
