/* Real-mode flat binary loaded at 0x7c00, like a boot sector: greet on COM1, then power off. */
        .code16
        .text
        .globl _start
_start: xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        mov $msg, %si
1:      lodsb
        test %al, %al
        jz 3f
        mov %al, %bl
        mov $0x3fd, %dx
2:      in %dx, %al
        test $0x20, %al
        jz 2b
        mov $0x3f8, %dx
        mov %bl, %al
        out %al, %dx
        jmp 1b
3:      mov $0x604, %dx                 /* ACPI S5 */
        mov $0x2000, %ax
        out %ax, %dx
4:      cli
        hlt
        jmp 4b
msg:    .asciz "Hello from real mode!\r\n"
