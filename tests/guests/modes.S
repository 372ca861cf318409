/* A guest that climbs the x86 modes itself and reports what it saw in long mode.

   Built two ways: as a multiboot kernel (entered in 32-bit protected mode, the way QEMU -kernel
   and GRUB start Xen), and with REAL defined as a real-mode flat binary at 0x7C00 (modes16.S, the
   way firmware starts a boot sector). Either way it loads its own GDT, builds 4-level page tables,
   turns on PAE, EFER.LME and paging, and jumps to 64-bit code, which:
     - loads an IDT whose base is the linear address 0xffffff8000000000 (above 4 GiB, mapped onto
       the table's physical page) and reads it back with SIDT;
     - executes ud2 at `ud_here`, whose #UD handler prints the vector and the RIP it was pushed;
     - reads the unmapped 0x40000000 at `pf_here`, whose #PF handler prints the vector, error
       code, CR2 and RIP;
     - arms the local APIC timer (one-shot, vector 0x40), halts, and prints the vector that
       woke it;
   then prints "modes: done" and exits through isa-debug-exit with 0x10 (status 33). A vector
   nothing expects prints "unexpected" and exits with 0x11 (status 35). */
        .set HIGH_IDT, 0xffffff8000000000
        .set LAPIC, 0xfee00000
        .set CODE32, 0x08
        .set DATA, 0x10
        .set CODE64, 0x18
        /* Tables and stack at fixed physical addresses below 1 MiB, page-aligned, so neither
           build needs an aligned section (which would move the flat binary's first byte). */
        .set pml4, 0x20000
        .set pdpt_low, 0x21000
        .set pd_low, 0x22000
        .set pd_apic, 0x23000
        .set pdpt_high, 0x24000
        .set pd_high, 0x25000
        .set pt_high, 0x26000
        .set idt, 0x27000
        .set stack_top, 0x29000

        .text
        .globl _start
.ifdef REAL
        .code16
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        lgdtl gdt_desc
        mov %cr0, %eax
        or $1, %eax
        mov %eax, %cr0
        ljmpl $CODE32, $protected
.else
        .section .multiboot, "a"
        .align 4
        .long 0x1badb002, 0, -0x1badb002
        .text
_start:
.endif
        .code32
        cli
        lgdt gdt_desc
        ljmp $CODE32, $protected
protected:
        mov $DATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov %ax, %fs
        mov %ax, %gs
        mov $stack_top, %esp
        mov $pml4, %edi
        mov $(stack_top - pml4) / 4, %ecx
        xor %eax, %eax
        rep stosl
        mov $s_from, %esi
        call puts
        /* 0-2 MiB identity (code, data, stacks), the LAPIC's 2 MiB page identity, and the IDT's
           page at HIGH_IDT: PML4[511] -> PDPT[0] -> PD[0] -> PT[0]. */
        mov $pdpt_low + 3, %eax
        mov %eax, pml4
        mov $pdpt_high + 3, %eax
        mov %eax, pml4 + 511 * 8
        mov $pd_low + 3, %eax
        mov %eax, pdpt_low
        mov $pd_apic + 3, %eax
        mov %eax, pdpt_low + 3 * 8
        movl $0x83, pd_low                              /* 2 MiB page at 0 */
        movl $LAPIC + 0x93, pd_apic + ((LAPIC >> 21) & 511) * 8   /* uncached */
        mov $pd_high + 3, %eax
        mov %eax, pdpt_high
        mov $pt_high + 3, %eax
        mov %eax, pd_high
        mov $idt + 3, %eax
        mov %eax, pt_high
        mov %cr4, %eax
        or $0x20, %eax                                  /* PAE */
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx
        rdmsr
        or $0x100, %eax                                 /* LME */
        wrmsr
        mov %cr0, %eax
        or $0x80000000, %eax                            /* PG: long mode is active */
        mov %eax, %cr0
        ljmp $CODE64, $long

        .code64
long:   mov $DATA, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $stack_top, %esp
        /* Gates for #UD, #PF, the timer; every other vector goes to `unexpected`. */
        xor %ecx, %ecx
1:      lea unexpected(%rip), %rax
        cmp $6, %ecx
        jne 2f
        lea on_ud(%rip), %rax
2:      cmp $14, %ecx
        jne 3f
        lea on_pf(%rip), %rax
3:      cmp $0x40, %ecx
        jne 4f
        lea on_timer(%rip), %rax
4:      call set_gate
        inc %ecx
        cmp $256, %ecx
        jb 1b
        lidt idt_desc(%rip)
        sidt seen_idt(%rip)
        lea s_idt(%rip), %rsi
        call puts64
        mov seen_idt + 2(%rip), %rax
        call puthex64
        mov $'\n', %al
        call putc64

        .globl ud_here
ud_here:
        ud2
        mov $0x40000000, %rax
        .globl pf_here
pf_here:
        mov (%rax), %rbx                                /* 3 bytes: 48 8b 18 */

        mov $LAPIC, %edi                                /* a disp32 would sign-extend */
        movl $0x1ff, 0xf0(%rdi)                         /* SVR: software enable */
        movl $0xb, 0x3e0(%rdi)                          /* divide by 1 */
        movl $0x40, 0x320(%rdi)                         /* LVT timer: one-shot, vector 0x40 */
        movl $100000, 0x380(%rdi)                       /* initial count */
5:      sti
        hlt
        cli
        cmpb $0, timer_seen(%rip)
        je 5b
        lea s_done(%rip), %rsi
        call puts64
        mov $0x10, %al
        jmp exit

/* set_gate: IDT entry %ecx -> interrupt gate at %rax (64-bit offset), selector CODE64. */
set_gate:
        mov $idt, %edi
        mov %ecx, %edx
        shl $4, %edx
        add %rdx, %rdi
        mov %ax, (%rdi)
        movw $CODE64, 2(%rdi)
        movw $0x8e00, 4(%rdi)
        mov %rax, %rdx
        shr $16, %rdx
        mov %dx, 6(%rdi)
        shr $16, %rdx
        mov %edx, 8(%rdi)
        movl $0, 12(%rdi)
        ret

on_ud:  lea s_ud(%rip), %rsi
        call puts64
        mov (%rsp), %rax
        call puthex64
        mov $'\n', %al
        call putc64
        addq $2, (%rsp)                                 /* past ud2 */
        iretq

on_pf:  lea s_pf(%rip), %rsi
        call puts64
        mov (%rsp), %rax                                /* error code */
        call puthex64
        lea s_cr2(%rip), %rsi
        call puts64
        mov %cr2, %rax
        call puthex64
        lea s_rip(%rip), %rsi
        call puts64
        mov 8(%rsp), %rax
        call puthex64
        mov $'\n', %al
        call putc64
        add $8, %rsp                                    /* the error code */
        addq $3, (%rsp)                                 /* past the load */
        iretq

on_timer:
        push %rax
        push %rsi
        lea s_timer(%rip), %rsi
        call puts64
        movb $1, timer_seen(%rip)
        mov $LAPIC + 0xb0, %esi
        movl $0, (%rsi)                                 /* EOI */
        pop %rsi
        pop %rax
        iretq

unexpected:
        lea s_unexpected(%rip), %rsi
        call puts64
        mov $0x11, %al
exit:   mov $0xf4, %dx
        out %al, %dx
6:      cli
        hlt
        jmp 6b

        .include "lib64.S"
        .code32
        .include "lib32.S"

        .section .rodata
.ifdef REAL
s_from: .asciz "modes: from real mode\n"
.else
s_from: .asciz "modes: from protected mode\n"
.endif
s_idt:  .asciz "idt base "
s_ud:   .asciz "vector 6 at "
s_pf:   .asciz "vector 14 error "
s_cr2:  .asciz " cr2 "
s_rip:  .asciz " at "
s_timer: .asciz "interrupt 0x40\n"
s_done: .asciz "modes: done\n"
s_unexpected: .asciz "unexpected vector\n"

        .data
        .balign 8
gdt:    .quad 0
        .quad 0x00cf9a000000ffff                        /* 0x08: 32-bit code */
        .quad 0x00cf92000000ffff                        /* 0x10: data */
        .quad 0x00af9a000000ffff                        /* 0x18: 64-bit code */
gdt_end:
        .balign 4
        .word 0
gdt_desc:
        .word gdt_end - gdt - 1
        .long gdt
        .balign 8
        .word 0, 0, 0
idt_desc:
        .word 256 * 16 - 1
        .quad HIGH_IDT
        .balign 8
        .word 0, 0, 0
seen_idt:
        .word 0
        .quad 0
timer_seen:
        .byte 0
