/* A boot sector that asks the BIOS what early boot code asks, and prints the answers:
     e820 <base> <length> <type>      (low 32 bits) for each INT 15h AX=E820h entry, EBX continuation to 0
     e801 <ax> <bx> <cx> <dx> cf=<CF>  INT 15h AX=E801h
     88 <ax> cf=<CF>                   INT 15h AH=88h
     int13 ah=<AH> cf=<CF>             INT 13h AH=41h (EDD installation check): no disks here
     int10 ah=<AH> cf=<CF>             INT 10h AH=4Fh (VBE controller information)
   then powers off. Values in hex. Built flat at 0x7C00 with the 55 AA signature. */
        .code16
        .text
        .globl _start
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %sp

        xor %ebx, %ebx
1:      mov $0xe820, %eax
        mov $0x534d4150, %edx
        mov $20, %ecx
        mov $buf, %di
        int $0x15
        jc 2f
        mov $s_e820, %si
        call puts
        mov buf, %eax                   /* the low halves: a guest below 4 GiB */
        call puthex
        call space
        mov buf+8, %eax
        call puthex
        call space
        mov buf+16, %eax
        call puthex
        call newline
        test %ebx, %ebx
        jnz 1b

2:      mov $0xe801, %ax
        xor %bx, %bx
        xor %cx, %cx
        xor %dx, %dx
        stc
        int $0x15
        call save_cf
        push %dx
        push %cx
        push %bx
        mov $s_e801, %si
        call puts
        movzwl %ax, %eax
        call puthex
        call space
        pop %ax
        call puthex
        call space
        pop %ax
        call puthex
        call space
        pop %ax
        call puthex
        call print_cf

        mov $0x88, %ah
        stc
        int $0x15
        call save_cf
        mov $s_88, %si
        call puts
        movzwl %ax, %eax
        call puthex
        call print_cf

        mov $0x41, %ah
        mov $0x55aa, %bx
        mov $0x80, %dl
        clc
        int $0x13
        call save_cf
        mov $s_int13, %si
        call print_ah_cf

        mov $0x4f00, %ax
        mov $buf, %di
        clc
        int $0x10
        call save_cf
        mov $s_int10, %si
        call print_ah_cf

        mov $0x604, %dx                 /* ACPI S5 */
        mov $0x2000, %ax
        out %ax, %dx
3:      cli
        hlt
        jmp 3b

save_cf:
        pushf
        pop cf_word
        ret

print_ah_cf:                            /* %si: label; prints AH and the saved CF */
        push %ax
        call puts
        pop %ax
        shr $8, %ax
        movzwl %ax, %eax
        call puthex
print_cf:
        mov $s_cf, %si
        call puts
        mov cf_word, %ax
        and $1, %ax
        movzwl %ax, %eax
        call puthex
newline:
        mov $'\n', %al
        jmp putc
space:  mov $' ', %al
putc:   push %dx
        push %ax
        mov $0x3fd, %dx
1:      in %dx, %al
        test $0x20, %al
        jz 1b
        pop %ax
        mov $0x3f8, %dx
        out %al, %dx
        pop %dx
        ret

puts:   push %ax
1:      lodsb
        test %al, %al
        jz 2f
        call putc
        jmp 1b
2:      pop %ax
        ret

puthex:                                 /* %eax, without leading zeros */
        push %eax
        push %ecx
        push %edx
        mov %eax, %edx
        mov $8, %cx
1:      rol $4, %edx
        mov %dl, %al
        and $0xf, %al
        cmp $1, %cx
        je 2f
        test %al, %al
        jnz 2f
        test $0x80000000, %ecx          /* set once a digit was printed */
        jz 3f
2:      or $0x80000000, %ecx
        add $'0', %al
        cmp $'9', %al
        jbe 4f
        add $('a' - '9' - 1), %al
4:      call putc
3:      dec %cx
        jnz 1b
        pop %edx
        pop %ecx
        pop %eax
        ret

s_e820: .asciz "e820 "
s_e801: .asciz "e801 "
s_88:   .asciz "88 "
s_int13: .asciz "int13 ah="
s_int10: .asciz "int10 ah="
s_cf:   .asciz " cf="
        .balign 2
cf_word: .word 0
buf:    .space 20
        .org 510
        .word 0xaa55
