/* SMP bring-up through the local APIC: INIT + SIPI to all other CPUs; each AP starts in real
   mode at 0x8000, adds 1 to a shared sum "loops=K" times with locked increments (default 1000),
   then counts itself at 0x9000 while the BSP adds its own K. The command line says how many CPUs
   to wait for ("want=N"); the guest prints how many it saw and the sum ("cpus=N sum=S", S = N x K
   when every locked increment stayed atomic) and powers off. With "crash" on the command line
   the BSP says so and waits while each AP, instead of counting, enters protected mode on the
   BSP's GDT with an empty IDT and executes ud2: a triple fault on an AP, whose crash report must
   carry that AP's registers. With "ticks" each AP spins instead of halting once counted, and
   the BSP, sharing the CPU with them under hvm's software engine, counts the PIT's interrupts
   (mode 2, 4 ms as Linux's HZ=250 tick, through IOAPIC pin 2 to vector 0x30, the 8259s
   masked) while it spins 102 ms on the ACPI PM timer: " ticks=ok" for at least 24 of the 25,
   else the count (a busy AP must not hold the BSP's timer back: periods it misses coalesce and
   are lost, as Linux's jiffies were). With "smc" (one AP) the BSP rewrites, round after round,
   the immediate of a stub at 0xa000 that the AP runs next ("mov $imm32, %eax; ret"), telling the
   AP the round only after its store; the AP executes CPUID (serializing, as the SDM asks before
   running code another processor modified), calls the stub and counts a result that is not the
   round: " smc=ok" after SMC_ROUNDS rounds, else the count of stale results (a vCPU running
   code translated before the other vCPU's store). */
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
        .set TICKS, 0x9028                  /* "ticks": APs spin, the BSP counts PIT interrupts */
        .set TICK_COUNT, 0x902c
        .set TICK_VECTOR, 0x30
        .set SMC, 0x9030                    /* "smc": cross-modifying code, BSP -> AP */
        .set SMC_ROUND, 0x9034
        .set SMC_ACK, 0x9038
        .set SMC_BAD, 0x903c
        .set SMC_STUB, 0xa000               /* its own page: mov $imm32, %eax (66 b8 imm32); ret */
        .set SMC_ROUNDS, 500
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
1:      movl $0, TICKS
        mov 16(%ebx), %esi
        mov $s_ticks, %edi
        call strstr
        jnz 1f
        movl $1, TICKS
1:      movl $0, SMC
        movl $0, SMC_ROUND
        movl $0, SMC_ACK
        movl $0, SMC_BAD
        movl $0x0000b866, SMC_STUB
        movl $0x00c30000, SMC_STUB + 4
        mov 16(%ebx), %esi
        mov $s_smc, %edi
        call strstr
        jnz 1f
        movl $1, SMC
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
        cmpl $0, TICKS
        je 1f
        call tick_test
1:      cmpl $0, SMC
        je 1f
        call smc_test
1:      print "\n"
        jmp poweroff

smc_test:
        mov $1, %esi
1:      mov %esi, SMC_STUB + 2          /* the stub now returns this round... */
        mov %esi, SMC_ROUND             /* ...and only then may the AP run it */
        mov $100000000, %ecx
2:      cmp SMC_ACK, %esi
        je 3f
        pause
        dec %ecx
        jnz 2b
        print " smc=timeout"
        ret
3:      inc %esi
        cmp $SMC_ROUNDS, %esi
        jbe 1b
        print " smc="
        mov SMC_BAD, %eax
        test %eax, %eax
        jnz 4f
        print "ok"
        ret
4:      call putdec
        ret

tick_test:
        mov $tick_isr, %eax             /* interrupt gate TICK_VECTOR -> tick_isr */
        mov %ax, idt32 + TICK_VECTOR * 8
        mov %cs, %dx
        mov %dx, idt32 + TICK_VECTOR * 8 + 2
        movw $0x8e00, idt32 + TICK_VECTOR * 8 + 4
        shr $16, %eax
        mov %ax, idt32 + TICK_VECTOR * 8 + 6
        lidt idt32_ptr
        mov $0xff, %al                  /* both 8259s masked */
        out %al, $0x21
        out %al, $0xa1
        movl $0x1ff, 0xfee000f0         /* LAPIC SVR: software enable */
        movl $0x10 + 2 * 2 + 1, 0xfec00000
        movl $0, 0xfec00010             /* IOAPIC pin 2: physical destination APIC 0 */
        movl $0x10 + 2 * 2, 0xfec00000
        movl $TICK_VECTOR, 0xfec00010   /* fixed, edge, active high, unmasked */
        movl $0, TICK_COUNT
        mov $0x34, %al                  /* PIT channel 0: lo/hi, mode 2, 4773 = 0x12a5 */
        out %al, $0x43
        mov $0xa5, %al
        out %al, $0x40
        mov $0x12, %al
        out %al, $0x40
        sti
        mov $0x608, %dx                 /* spin 102 ms on the PM timer (3.579545 MHz, 24 bits) */
        in %dx, %eax
        mov %eax, %esi
2:      pause
        in %dx, %eax
        sub %esi, %eax
        and $0xffffff, %eax
        cmp $102 * 3580, %eax
        jb 2b
        cli
        print " ticks="
        mov TICK_COUNT, %eax
        cmp $24, %eax
        jb 3f
        print "ok"
        ret
3:      call putdec
        ret

tick_isr:
        incl TICK_COUNT
        movl $0, 0xfee000b0             /* EOI */
        iret

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
        cmpl $0, TICKS
        je 1f
4:      pause                           /* "ticks": stay busy */
        jmp 4b
1:      cmpl $0, SMC
        je 1f
        xor %ax, %ax
        mov %ax, %ss
        mov $0x7000, %sp
        mov $1, %esi                    /* the round */
5:      cmp SMC_ROUND, %esi
        je 6f
        pause
        jmp 5b
6:      xor %eax, %eax
        cpuid                           /* serializing, before running the modified code */
        mov $(SMC_STUB - 0x8000), %bx   /* CS is 0x800 (SIPI vector 8) */
        call *%bx
        cmp %esi, %eax
        je 7f
        lock incl SMC_BAD
7:      mov %esi, SMC_ACK
        inc %esi
        cmp $SMC_ROUNDS, %esi
        jbe 5b
1:      hlt
        jmp 1b
ap_end:

        .section .rodata
s_want: .asciz "want="
s_loops: .asciz "loops="
s_crash: .asciz "crash"
s_ticks: .asciz "ticks"
s_smc:  .asciz "smc"
        .align 8
idt32_ptr: .word (TICK_VECTOR + 1) * 8 - 1
        .long idt32

        .bss
        .align 16
idt32:  .space (TICK_VECTOR + 1) * 8
        .space 4096
stack_top:
