/* SMP bring-up through the local APIC: INIT + SIPI to all other CPUs; each AP starts in real
   mode at 0x8000, adds 1 to a shared sum "loops=K" times with locked increments (default 1000),
   then counts itself at 0x9000 while the BSP adds its own K. The command line says how many CPUs
   to wait for ("want=N"); the guest prints how many it saw and the sum ("cpus=N sum=S", S = N x K
   when every locked increment stayed atomic) and powers off. With "crash" on the command line
   the BSP says so and waits while each AP, instead of counting, enters protected mode on the
   BSP's GDT with an empty IDT and executes ud2: a triple fault on an AP, whose crash report must
   carry that AP's registers. */
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
        .set CRASH, 0x900c
        .set EMPTY_IDT, 0x9010              /* limit 0, base 0: every vector is beyond it */
        .set BSP_GDT, 0x9018                /* the BSP's GDTR, for an AP to enter protected mode */
        .set AP_PM_JUMP, 0x9020             /* far pointer: offset of ap_pm in the copy, BSP's CS */
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
        movl $0, CRASH
        movl $0, EMPTY_IDT
        movl $0, EMPTY_IDT + 4
        mov 16(%ebx), %esi
        mov $s_crash, %edi
        call strstr
        jnz 1f
        movl $1, CRASH
        sgdt BSP_GDT
        movl $(0x8000 + ap_pm - ap_start), AP_PM_JUMP
        mov %cs, %ax
        mov %ax, AP_PM_JUMP + 4
        print "smp: each AP will now fault\n"
1:        mov $ap_start, %esi             /* copy the trampoline below 1 MiB */
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
        cmpl $0, CRASH
        je 3f
        lgdt BSP_GDT
        lidt EMPTY_IDT
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl *AP_PM_JUMP
        .code32
ap_pm:  ud2                             /* #UD, no IDT: #GP, #DF, shutdown */
        .code16
3:        mov LOOPS, %ecx
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
s_crash: .asciz "crash"

        .bss
        .align 16
        .space 4096
stack_top:
