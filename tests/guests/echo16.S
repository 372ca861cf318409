/* Interrupt-driven UART receive in real mode: program the 8259 pair (IRQ4 -> vector 0x24),
   enable the UART's receive interrupt and halt; the ISR echoes each received byte upper-cased.
   Receiving '.' powers the machine off. */
        .code16
        .text
        .globl _start
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        movw $isr, 0x24*4               /* IVT entry for vector 0x24 */
        movw $0, 0x24*4+2
        mov $0x11, %al                  /* ICW1: edge, cascade, ICW4 needed */
        out %al, $0x20
        out %al, $0xa0
        mov $0x20, %al                  /* ICW2: master vectors 0x20-0x27 */
        out %al, $0x21
        mov $0x28, %al                  /*       slave 0x28-0x2f */
        out %al, $0xa1
        mov $0x04, %al                  /* ICW3: slave on IRQ2 */
        out %al, $0x21
        mov $0x02, %al
        out %al, $0xa1
        mov $0x01, %al                  /* ICW4: 8086 mode */
        out %al, $0x21
        out %al, $0xa1
        mov $0xef, %al                  /* unmask IRQ4 only */
        out %al, $0x21
        mov $0xff, %al
        out %al, $0xa1
        mov $0x3fc, %dx                 /* MCR: DTR|RTS|OUT2 */
        mov $0x0b, %al
        out %al, %dx
        mov $0x3f9, %dx                 /* IER: received data available */
        mov $0x01, %al
        out %al, %dx
        mov $ready, %si
1:      lodsb
        test %al, %al
        jz 2f
        mov $0x3f8, %dx
        out %al, %dx
        jmp 1b
2:      sti
3:      hlt
        jmp 3b

isr:    push %ax
        push %dx
1:      mov $0x3fd, %dx                 /* drain while LSR.DR */
        in %dx, %al
        test $1, %al
        jz 3f
        mov $0x3f8, %dx
        in %dx, %al
        cmp $'.', %al
        je off
        cmp $'a', %al
        jb 2f
        cmp $'z', %al
        ja 2f
        sub $0x20, %al
2:      out %al, %dx
        jmp 1b
3:      mov $0x20, %al                  /* EOI */
        out %al, $0x20
        pop %dx
        pop %ax
        iret
off:    mov $0x604, %dx
        mov $0x2000, %ax
        out %ax, %dx
4:      cli
        hlt
        jmp 4b
ready:  .asciz "ready\n"

# The boot-sector signature: what marks these bytes as bootable (a BIOS, and hvm, check it).
        .org 510
        .word 0xaa55
