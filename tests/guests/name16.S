/* A boot sector that says which disk it is: it prints "booted: " and the NUL-ended name the test
   writes at byte NAME (up to 32 bytes) on COM1, then leaves through isa-debug-exit with 1. */
        .code16
        .text
        .globl _start
        .set NAME, 0x180
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        mov $said, %si
        call puts
        mov $0x7c00 + NAME, %si
        call puts
        mov $crlf, %si
        call puts
        mov $1, %al
        out %al, $0xf4
1:      hlt
        jmp 1b

/* With interrupts off (SeaBIOS's serial copy of the screen flushes from its timer interrupt). */
puts:   lodsb
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
        jmp puts
3:      ret

said:   .asciz "booted: "
crlf:   .asciz "\r\n"
        .org NAME
        .space 32
        .org 510
        .byte 0x55, 0xaa
