/* The engine benchmark's guest (benchmarks/bench_engines.py): a multiboot v1 ELF32, because
   QEMU's -kernel refuses ELF64 multiboot images, that enters long mode itself (static identity
   page tables, its own GDT and IDT), writes '<' to COM1, runs the loop its command line names
   ("<op> <n>": c compute, o port I/O, i interrupts, p popcnt), writes '>' and ends through
   isa-debug-exit (0: done, 1: a self-check failed). */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .set COM1, 0x3f8
        .set POST, 0x80                 /* a cheap device in both VMMs, not an unclaimed port */
        .set FW_CFG_SEL, 0x510          /* fw_cfg's selector: a write every VMM must see at once */
        .set DEBUG_EXIT, 0xf4
        .set VECTOR, 0x30

        .code32
        .text
        .globl _start
_start: mov $stack_top, %esp
        /* "<kernel path> <op> <n>", as both loaders build it from --append / -append. Parsed before
           anything else can overwrite the multiboot info; a bad one leaves op 0, which fails. */
        testb $4, (%ebx)                /* flags: cmdline valid */
        jz enter64
        mov 16(%ebx), %esi
1:      lodsb
        test %al, %al
        jz enter64
        cmp $' ', %al
        jne 1b
        lodsb
        mov %al, %bl
        lodsb
        cmp $' ', %al
        jne enter64
        xor %edi, %edi
2:      movzbl (%esi), %eax
        sub $'0', %eax
        cmp $9, %eax
        ja 3f
        imul $10, %edi, %edi
        add %eax, %edi
        inc %esi
        jmp 2b
3:      cmpb $0, (%esi)
        jne enter64
        test %edi, %edi                 /* the loops run at least once */
        jz enter64
        mov %edi, count
        mov %bl, op

enter64:
        mov %cr4, %eax
        or $0x20, %eax                  /* PAE */
        mov %eax, %cr4
        mov $pml4, %eax
        mov %eax, %cr3
        mov $0xc0000080, %ecx           /* EFER.LME */
        rdmsr
        or $0x100, %eax
        wrmsr
        mov %cr0, %eax
        or $0x80000000, %eax            /* PG; multiboot entered with PE set */
        mov %eax, %cr0
        lgdt gdt_ptr
        ljmp $0x08, $long64

        .code64
long64: mov $0x10, %eax
        mov %eax, %ds
        mov %eax, %es
        mov %eax, %ss
        lea handler(%rip), %rax         /* the gate's offset is split over three fields */
        lea idt + VECTOR * 16(%rip), %rdi
        mov %ax, (%rdi)
        movw $0x08, 2(%rdi)
        movw $0x8e00, 4(%rdi)           /* present, DPL0, 64-bit interrupt gate, no IST */
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        lidt idt_ptr(%rip)

        mov count(%rip), %ecx           /* zero-extends into %rcx */
        movzbl op(%rip), %ebx
        mov $COM1, %dx
        mov $'<', %al
        out %al, %dx
        cmp $'c', %bl
        je compute
        cmp $'o', %bl
        je port_io
        cmp $'i', %bl
        je interrupts
        cmp $'p', %bl
        je popcnt_loop
        cmp $'f', %bl
        je fw_cfg_io
        jmp failed

compute:                                /* COMPUTE_INSNS instructions per iteration */
        xor %eax, %eax
        mov $1, %edx
1:      add %rcx, %rax
        xor %rax, %rdx
        rol $7, %rdx
        dec %rcx
        jnz 1b
        jmp done

port_io:
        mov $POST, %dx
        jmp 1f
fw_cfg_io:                              /* KVM may queue POST writes (coalesced I/O): this exits */
        mov $FW_CFG_SEL, %dx
1:      out %al, %dx
        dec %rcx
        jnz 1b
        jmp done

interrupts:                             /* the handler counts, so a lost or doubled one fails */
        mov %rcx, %r9
        xor %r8d, %r8d
1:      int $VECTOR
        dec %rcx
        jnz 1b
        cmp %r9, %r8
        jne failed
        jmp done

handler:
        inc %r8
        iretq

popcnt_loop:                            /* KVM's emulator refuses popcnt at CPL0: the fallback */
        mov $0xf0f0, %eax
1:      popcnt %eax, %ebx
        cmp $8, %ebx
        jne failed
        dec %rcx
        jnz 1b
        jmp done

done:   xor %ebx, %ebx
        jmp 1f
failed: mov $1, %ebx                    /* '>' still comes, so the parent sees the exit status */
1:      mov $COM1, %dx
        mov $'>', %al
        out %al, %dx
        mov $DEBUG_EXIT, %dx
        mov %ebx, %eax
        out %al, %dx
halt:   cli
        hlt
        jmp halt

        .data
        .balign 8
gdt:    .quad 0
        .quad 0x00af9a000000ffff        /* 0x08: 64-bit code, DPL0 */
        .quad 0x00cf92000000ffff        /* 0x10: flat data */
gdt_end:
gdt_ptr:
        .word gdt_end - gdt - 1
        .long gdt
idt_ptr:
        .word 256 * 16 - 1
        .long idt, 0                    /* ELF32 has no 64-bit relocation for a .quad */
count:  .long 0
op:     .byte 0

        .balign 4096
pml4:   .long pdpt + 3, 0               /* present, writable */
        .fill 511, 8, 0
pdpt:   .long pd + 3, 0
        .fill 511, 8, 0
pd:     .set page, 0                    /* the first GiB, identity-mapped in 2 MiB pages */
        .rept 512
        .long page << 21 | 0x83, 0
        .set page, page + 1
        .endr

        .bss
        .balign 4096
idt:    .space 256 * 16
        .space 4096
stack_top:
