/* String I/O: `rep insb` 16 bytes from port 0x700 (a device the test attaches through the Python
   API), then `rep outsb` them to COM1 with one instruction, then power off. */
        .code16
        .text
        .globl _start
_start: xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %sp
        cld
        mov $buf, %di
        mov $0x700, %dx
        mov $16, %cx
        rep insb
        mov $buf, %si
        mov $0x3f8, %dx
        mov $16, %cx
        rep outsb
        mov $nl, %si
        mov $1, %cx
        rep outsb
        mov $0x604, %dx
        mov $0x2000, %ax
        out %ax, %dx
1:      cli
        hlt
        jmp 1b
nl:     .byte '\n'
buf:    .space 16

# The boot-sector signature: what marks these bytes as bootable (a BIOS, and hvm, check it).
        .org 510
        .word 0xaa55
