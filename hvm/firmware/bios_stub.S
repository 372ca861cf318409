/* hvm's real-mode interrupt handlers for direct boot, at F000:0000 (physical 0xF0000).

   A kernel started by GRUB or QEMU's -kernel may still call the BIOS from real mode (Xen's
   start-up asks int 10h for video and int 13h for disks): with an interrupt vector table of
   zeros the call jumps to 0000:0000 and runs whatever is there. These handlers answer instead:
   int 15h E820 (the map hvm reports everywhere), E801 and 88h from the data the machine fills
   in at 0x100; every other software interrupt "function not supported" (CF=1, AH=86h), and the
   8259 IRQ vectors an EOI to both controllers.

   The assembled bytes are kept in hvm/firmware/bios_data.py (hvm needs no assembler at run
   time); tests/unit/test_bios_data.py assembles this file and checks they are the same. */
        .code16
        .text
        .globl unsupported, irq, int15
unsupported:
        push %bp
        mov %sp, %bp
        orw $1, 6(%bp)                  /* CF in the FLAGS image IRET restores */
        mov $0x86, %ah
        pop %bp
        iret

irq:    push %ax
        mov $0x20, %al                  /* non-specific EOI */
        out %al, $0xa0
        out %al, $0x20
        pop %ax
        iret

int15:  cmp $0xe820, %eax
        je e820
        cmp $0xe801, %ax
        je e801
        cmp $0x88, %ah
        jne unsupported
        mov %cs:ext_kib, %ax
        jmp ok
e801:   mov %cs:e801_low, %ax
        mov %cs:e801_high, %bx
        mov %ax, %cx
        mov %bx, %dx
        jmp ok
e820:   cmp $0x534d4150, %edx           /* 'SMAP' */
        jne unsupported
        cmp $20, %ecx
        jb unsupported
        cmp %cs:e820_count, %ebx
        jae unsupported
        push %ds
        push %si
        push %di
        push %cs
        pop %ds
        imul $20, %bx, %si
        add $e820_table, %si
        mov $20, %cx
        cld
        rep movsb                       /* ES:DI <- this entry */
        pop %di
        pop %si
        pop %ds
        inc %ebx
        cmp %cs:e820_count, %ebx
        jb 1f
        xor %ebx, %ebx                  /* 0: that was the last entry */
1:      mov $0x534d4150, %eax
        mov $20, %ecx
ok:     push %bp
        mov %sp, %bp
        andw $~1, 6(%bp)                /* CF clear */
        pop %bp
        iret

        .org 0x100                      /* filled in by the machine */
ext_kib:    .word 0                     /* 88h: KiB above 1 MiB, at most 0xFFFF */
e801_low:   .word 0                     /* E801: KiB between 1 MiB and 16 MiB */
e801_high:  .word 0                     /*       64 KiB blocks between 16 MiB and 4 GiB */
            .word 0
e820_count: .long 0
            .long 0
e820_table:                             /* 20-byte entries */
