/* The system tables 64-bit test guests share: a GDT with kernel and user segments and a 64-bit
   TSS, an empty IDT, and the routines that load and fill them. The guest defines kstack_top (the
   TSS's RSP0). Include it after the guest's code: it holds code and data. */
        .set KCODE, 0x08
        .set KDATA, 0x10
        .set UDATA, 0x1b
        .set UCODE, 0x23
        .set TSSSEL, 0x28

/* sys64_init: load the GDT (reloading CS and the data segments), the TSS with RSP0 = kstack_top,
   and the IDT. Clobbers %rax and %rdi. */
sys64_init:
        lgdt gdt_ptr(%rip)
        lea 1f(%rip), %rax
        push $KCODE
        push %rax
        lretq
1:      mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        lea tss(%rip), %rax             /* TSS descriptor base, split over 16 bytes */
        lea gdt_tss(%rip), %rdi
        mov %ax, 2(%rdi)
        shr $16, %rax
        mov %al, 4(%rdi)
        mov %ah, 7(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        lea kstack_top(%rip), %rax
        mov %rax, tss+4(%rip)           /* RSP0 */
        mov $TSSSEL, %ax
        ltr %ax
        lidt idt_ptr(%rip)
        ret

/* set_gate: gate %ebx <- handler %rax, type/DPL word %edx, IST %ecx. Clobbers %rax and %rdi. */
set_gate:
        lea idt(%rip), %rdi
        shl $4, %rbx
        add %rbx, %rdi
        shr $4, %rbx
        mov %ax, (%rdi)
        movw $KCODE, 2(%rdi)
        mov %cl, 4(%rdi)
        mov %dh, 5(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        movl $0, 12(%rdi)
        ret

/* user_pde: let CPL3 reach the 2 MiB page at 2-4 MiB of hvm's identity tables (U on PML4[0],
   PDPT[0] and PD entry 1, then a TLB flush); returns the PD entry's address in %rdi. Clobbers %rax. */
user_pde:
        mov %cr3, %rax
        and $~0xfff, %rax
        orq $4, (%rax)
        mov (%rax), %rax
        and $~0xfff, %rax
        orq $4, (%rax)
        mov (%rax), %rdi
        and $~0xfff, %rdi
        add $8, %rdi
        orq $4, (%rdi)
        mov %cr3, %rax
        mov %rax, %cr3
        ret

/* user_page: user_pde, then copy %ecx bytes from %rsi to %rdi (inside that page) for CPL3 to
   run. Clobbers %rax, %rcx, %rsi and %rdi. */
user_page:
        push %rdi
        call user_pde
        pop %rdi
        rep movsb
        ret

/* user_iret: continue at CPL3 at %rax on the stack %rdx, interrupts enabled. */
user_iret:
        push $UDATA
        push %rdx
        push $0x202
        push $UCODE
        push %rax
        iretq

        .balign 8
gdt:    .quad 0
        .quad 0x00af9b000000ffff        /* 0x08 kernel code, 64-bit */
        .quad 0x00cf93000000ffff        /* 0x10 kernel data */
        .quad 0x00cff3000000ffff        /* 0x18 user data, DPL3 */
        .quad 0x00affb000000ffff        /* 0x20 user code, 64-bit, DPL3 */
gdt_tss: .quad 0x0000890000000067       /* 0x28 available 64-bit TSS, base filled in */
        .quad 0
gdt_end:
gdt_ptr: .word gdt_end - gdt - 1
        .quad gdt
idt_ptr: .word 256 * 16 - 1
        .quad idt
        .balign 16
tss:    .space 0x68
        .balign 4096
idt:    .space 4096
