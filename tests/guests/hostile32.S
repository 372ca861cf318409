/* A hostile guest: "n=N seed=S" on the command line (defaults 1000 and 1); a xorshift32 generator
   drives N random port and MMIO accesses (reads and writes, 1/2/4 bytes, aligned or not) at every
   port, the local APIC and IOAPIC pages and unbacked addresses below 4 GiB. Then it puts COM1
   back in a known state, prints "hostile: done n=N x=<final generator state>" and powers off.

   Only accesses that legitimately end or reset the machine are steered clear of, since the test
   wants the loop to finish: ACPI PM1 (power-off), isa-debug-exit, the 0xCF9 reset register, the
   i8042 command port (0xFE pulses reset), APIC ICR and LVT writes (INIT, SMI) and unmasked IOAPIC
   redirection entries (which could route INIT). Every other value goes where the generator says.
   NMIs the guest may provoke land on an IDT whose gates all return. */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .code32
        .include "lib32.S"

        .set LAPIC, 0xfee00000
        .set IOAPIC, 0xfec00000
        .text
        .globl _start
_start: cli
        mov $stack_top, %esp
        mov 16(%ebx), %ebx              /* the command line */
        mov $1000, %edi
        mov %ebx, %esi
        push %edi
        mov $s_n, %edi
        call strstr
        pop %edi
        jnz 1f
        lea 2(%eax), %esi
        call atoi
        mov %eax, %edi                  /* N */
1:      mov $1, %ebp
        mov %ebx, %esi
        push %edi
        mov $s_seed, %edi
        call strstr
        pop %edi
        jnz 1f
        lea 5(%eax), %esi
        call atoi
        mov %eax, %ebp                  /* generator state; xorshift needs it non-zero */
        test %ebp, %ebp
        jnz 1f
        inc %ebp
1:      mov %edi, count
        call idt_init

/* %ebp: generator state, %edi: accesses left */
loop:   test %edi, %edi
        jz done
        dec %edi
        call next
        mov %eax, %ecx                  /* op = low 3 bits, size = bits 3-4, value = next draw */
        call next
        mov %eax, %esi                  /* value */
        call next                       /* %eax: address bits */
        mov %ecx, %ebx
        and $7, %ebx
        cmp $6, %ebx
        jae mmio
        /* port I/O: port = bits 16-31 */
        shr $16, %eax
        mov %eax, %edx
        cmp $3, %ebx
        jb port_in
        call port_forbidden
        jc loop
        mov %esi, %eax
        bt $3, %ecx
        jc 2f
        bt $4, %ecx
        jc 1f
        out %al, %dx
        jmp loop
1:      out %eax, %dx
        jmp loop
2:      out %ax, %dx
        jmp loop
port_in:
        bt $3, %ecx
        jc 2f
        bt $4, %ecx
        jc 1f
        in %dx, %al
        jmp loop
1:      in %dx, %eax
        jmp loop
2:      in %dx, %ax
        jmp loop

mmio:   /* region from bits 8-9: 0 LAPIC page, 1 IOAPIC page, 2-3 unbacked 0xc0000000-0xfebfffff */
        mov %eax, %edx
        shr $8, %edx
        and $3, %edx
        jz 1f
        cmp $1, %edx
        je 2f
        and $0x3ebfffff, %eax
        or $0xc0000000, %eax
        jmp 3f
1:      shr $20, %eax
        mov %eax, %edx
        and $0x3ff, %edx                /* the offset, 0..0x3ff */
        cmp $7, %ebx
        jne 4f
        cmp $0x300, %edx                /* no writes to the ICR and the LVT: INIT, SMI */
        jb 4f
        cmp $0x380, %edx
        jb loop
4:      lea LAPIC(%edx), %eax
        jmp 3f
2:      shr $20, %eax
        and $0x5f, %eax                 /* IOREGSEL, IOWIN, EOI and the bytes around them */
        cmp $7, %ebx
        jne 4f
        mov %eax, %edx
        and $0xf0, %edx
        cmp $0x10, %edx
        jne 4f
        or $0x10000, %esi               /* what IOWIN takes stays masked: one aligned dword */
        mov %esi, IOAPIC + 0x10
        jmp loop
4:      add $IOAPIC, %eax
3:      cmp $7, %ebx
        je mmio_w
        bt $3, %ecx
        jc 2f
        bt $4, %ecx
        jc 1f
        mov (%eax), %dl
        jmp loop
1:      mov (%eax), %edx
        jmp loop
2:      mov (%eax), %dx
        jmp loop
mmio_w: mov %esi, %edx
        bt $3, %ecx
        jc 2f
        bt $4, %ecx
        jc 1f
        mov %dl, (%eax)
        jmp loop
1:      mov %edx, (%eax)
        jmp loop
2:      mov %dx, (%eax)
        jmp loop

done:   /* COM1 back to 8N1, no loopback, FIFO off, no interrupts, so the report gets out */
        mov $0x3fb, %dx
        mov $0x03, %al
        out %al, %dx
        mov $0x3fc, %dx
        out %al, %dx
        mov $0x3f9, %dx
        xor %al, %al
        out %al, %dx
        mov $0x3fa, %dx
        out %al, %dx
        print "\nhostile: done n="
        mov count, %eax
        call putdec
        print " x="
        mov %ebp, %eax
        call puthex
        print "\n"
        jmp poweroff

/* next: %eax = the next xorshift32 value (Marsaglia 2003: shifts 13, 17, 5) */
next:   mov %ebp, %eax
        shl $13, %eax
        xor %eax, %ebp
        mov %ebp, %eax
        shr $17, %eax
        xor %eax, %ebp
        mov %ebp, %eax
        shl $5, %eax
        xor %eax, %ebp
        mov %ebp, %eax
        ret

/* port_forbidden: CF=1 if a write starting at port %dx would end or reset the machine */
port_forbidden:
        cmp $0x600, %dx                 /* ACPI PM1 event/control blocks and PM timer */
        jb 1f
        cmp $0x60c, %dx
        jb 9f
1:      cmp $0xf4, %dx                  /* isa-debug-exit */
        jb 2f
        cmp $0xf8, %dx
        jb 9f
2:      cmp $0xcf9, %dx                 /* reset control */
        je 9f
        cmp $0x64, %dx                  /* i8042 commands */
        je 9f
        cmp $0x92, %dx                  /* port A: bit 0 is a fast reset on a PC */
        je 9f
        clc
        ret
9:      stc
        ret

/* idt_init: all 256 gates return at once (those of exceptions with an error code drop it) */
idt_init:
        mov %cs, %ax
        shl $16, %eax
        xor %ecx, %ecx
1:      mov $ret_plain, %edx
        cmp $8, %ecx
        je 2f
        cmp $10, %ecx
        jb 3f
        cmp $14, %ecx
        jbe 2f
        cmp $17, %ecx
        jne 3f
2:      mov $ret_error, %edx
3:      mov %dx, %ax                    /* low: selector << 16 | offset 15:0 */
        mov %eax, idt(,%ecx,8)
        mov %edx, %ebx
        and $0xffff0000, %ebx
        or $0x8e00, %ebx                /* present, DPL 0, 32-bit interrupt gate */
        mov %ebx, idt+4(,%ecx,8)
        inc %ecx
        cmp $256, %ecx
        jb 1b
        lidt idt_ptr
        ret
ret_error:
        add $4, %esp
ret_plain:
        iret

        .section .rodata
s_n:    .asciz "n="
s_seed: .asciz "seed="
        .align 4
idt_ptr: .word 256 * 8 - 1
        .long idt

        .bss
        .align 16
count:  .long 0
idt:    .space 256 * 8
        .space 4096
stack_top:
