/* Real-mode flat binary loaded at 0x7c00, like a boot sector: greet on COM1, then power off (or,
   built with --defsym RESET_WITH=1/2, reset the machine through port 0xCF9 / the i8042). */
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
3:
.ifdef RESET_WITH
.if RESET_WITH == 1
        mov $0xcf9, %dx                 /* chipset reset control: SYS_RST | RST_CPU */
        mov $0x06, %al
        out %al, %dx
.else
        mov $0xfe, %al                  /* i8042: pulse the reset line */
        out %al, $0x64
.endif
.else
        mov $0x604, %dx                 /* ACPI S5 */
        mov $0x2000, %ax
        out %ax, %dx
.endif
4:      cli
        hlt
        jmp 4b
msg:    .asciz "Hello from real mode!\r\n"

# The boot-sector signature: what marks these bytes as bootable (a BIOS, and hvm, check it).
        .org 510
        .word 0xaa55
