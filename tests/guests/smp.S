/* SMP bring-up through the local APIC: INIT + SIPI to all other CPUs; each AP starts in real
   mode at 0x8000, adds 1 to a shared sum "loops=K" times with locked increments (default 1000),
   then counts itself at 0x9000 while the BSP adds its own K. The command line says how many CPUs
   to wait for ("want=N"); the guest prints how many it saw and the sum ("cpus=N sum=S", S = N x K
   when every locked increment stayed atomic) and powers off. */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .code32
        .include "lib32.S"

        .set ICR_LOW, 0xfee00300
        .set AP_COUNT, 0x9000
        .set LOOPS, 0x9004
        .set SUM, 0x9008
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
1:      movl $1000, LOOPS
        mov 16(%ebx), %esi
        mov $s_loops, %edi
        call strstr
        jnz 1f
        lea 6(%eax), %esi
        call atoi
        mov %eax, LOOPS
1:      movl $0, AP_COUNT
        movl $0, SUM
        mov $ap_start, %esi             /* copy the trampoline below 1 MiB */
        mov $0x8000, %edi
        mov $(ap_end - ap_start), %ecx
        rep movsb
        movl $0x000c4500, ICR_LOW       /* INIT, all excluding self */
        movl $0x000c4608, ICR_LOW       /* SIPI, vector 0x08 -> 0x8000 */
        movl $0x000c4608, ICR_LOW       /* second SIPI, as the MP spec asks */
        mov LOOPS, %ecx
4:      lock incl SUM
        dec %ecx
        jnz 4b
        mov $300000000, %ecx
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
        print " sum="
        mov SUM, %eax
        call putdec
        print "\n"
        jmp poweroff

        .code16
ap_start:
        cli
        xor %ax, %ax
        mov %ax, %ds
        mov LOOPS, %ecx
2:      lock incl SUM
        dec %ecx
        jnz 2b
        lock incl AP_COUNT
1:      hlt
        jmp 1b
ap_end:

        .section .rodata
s_want: .asciz "want="
s_loops: .asciz "loops="

        .bss
        .align 16
        .space 4096
stack_top:
