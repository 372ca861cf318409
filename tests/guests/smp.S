/* SMP bring-up through the in-kernel local APIC: INIT + SIPI to all other CPUs; each AP starts
   in real mode at 0x8000 and counts itself at 0x9000. The command line says how many CPUs to
   wait for ("want=N"); the guest prints how many it saw ("cpus=N") and powers off. */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .code32
        .include "lib32.S"

        .set ICR_LOW, 0xfee00300
        .set AP_COUNT, 0x9000
        .text
        .globl _start
_start: mov $stack_top, %esp
        mov 16(%ebx), %esi              /* cmdline */
        mov $s_want, %edi
        call strstr
        mov $1, %ebp
        jnz 1f
        lea 5(%eax), %esi
        call atoi
        mov %eax, %ebp                  /* CPUs to wait for */
1:      movl $0, AP_COUNT
        mov $ap_start, %esi             /* copy the trampoline below 1 MiB */
        mov $0x8000, %edi
        mov $(ap_end - ap_start), %ecx
        rep movsb
        movl $0x000c4500, ICR_LOW       /* INIT, all excluding self */
        movl $0x000c4608, ICR_LOW       /* SIPI, vector 0x08 -> 0x8000 */
        movl $0x000c4608, ICR_LOW       /* second SIPI, as the MP spec asks */
        mov $3000000, %ecx
2:      mov AP_COUNT, %eax
        inc %eax
        cmp %ebp, %eax
        jae 3f
        pause
        dec %ecx
        jnz 2b
3:      print "cpus="
        mov AP_COUNT, %eax
        inc %eax
        call putdec
        print "\n"
        jmp poweroff

        .code16
ap_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        lock incl AP_COUNT
1:      hlt
        jmp 1b
ap_end:

        .section .rodata
s_want: .asciz "want="

        .bss
        .align 16
        .space 4096
stack_top:
