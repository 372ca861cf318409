/* Real-mode flat binary at 0x7c00: COUNT POST codes (0, 1, 2, ... mod 256) to port 0x80, then
   the code read back from port 0x80 (the last one written, as a diagnostic card shows it) in hex
   on COM1, then "L" and COM1's line status in hex, then power off. Under KVM hvm lets the kernel
   queue the codes (coalesced I/O) and answers LSR polls without Python: the read-back checks the
   queued writes arrived, in order, before the read that followed them. */
        .ifndef COUNT
        .set COUNT, 1000
        .endif
        .code16
        .text
        .globl _start
_start: xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        mov $0x80, %dx
        xor %cx, %cx
1:      mov %cl, %al
        out %al, %dx
        inc %cx
        cmp $COUNT, %cx
        jne 1b
        in %dx, %al
        call hex
        mov $'L', %al
        call putc
        mov $0x3fd, %dx
        in %dx, %al
        call hex
        mov $'\n', %al
        call putc
        mov $0x604, %dx                 /* ACPI S5 */
        mov $0x2000, %ax
        out %ax, %dx
2:      hlt
        jmp 2b

/* AL as two hex digits on COM1. */
hex:    push %ax
        shr $4, %al
        call nibble
        pop %ax
nibble: and $0x0f, %al
        add $'0', %al
        cmp $'9', %al
        jbe putc
        add $'A' - '9' - 1, %al
/* AL on COM1, once the transmitter holds nothing (polls LSR.THRE). */
putc:   push %dx
        push %ax
        mov $0x3fd, %dx
3:      in %dx, %al
        test $0x20, %al
        jz 3b
        pop %ax
        mov $0x3f8, %dx
        out %al, %dx
        pop %dx
        ret

        .org 510                        /* the boot-sector signature */
        .word 0xaa55
