/* A boot sector that stores into the BIOS's shadow copy at F000:FFF0 (the reset vector) and into
   the VGA BIOS at C000:0000, both of which SeaBIOS has made read-only through the i440FX's PAM
   registers before it boots, and into RAM at 0000:0600. Each store flips every bit of the byte;
   the byte is read back after a jump, so the store's own block has ended. It says on COM1 which
   bytes kept their value and leaves through isa-debug-exit: 1 when both ROM bytes kept theirs and
   the RAM byte changed, 2 otherwise. */
        .code16
        .text
        .globl _start
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %ss
        mov $0x7c00, %sp
        mov $0xf000, %ax
        mov $0xfff0, %di
        call flip
        jne fail
        mov $0xc000, %ax
        xor %di, %di
        call flip
        jne fail
        xor %ax, %ax
        mov $0x600, %di
        call flip
        je fail
        mov $ok, %si
        call puts
        mov $1, %al
        jmp done
fail:   mov $bad, %si
        call puts
        mov $2, %al
done:   out %al, $0xf4
1:      hlt
        jmp 1b

/* Store the complement of the byte at AX:DI there; ZF set when it reads back unchanged. */
flip:   mov %ax, %es
        mov %es:(%di), %bl
        mov %bl, %al
        not %al
        mov %al, %es:(%di)
        jmp 1f
1:      cmp %es:(%di), %bl
        ret

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

ok:     .asciz "rom16: ROM kept its bytes, RAM took the store\r\n"
bad:    .asciz "rom16: a store went where it should not, or not where it should\r\n"
        .org 510
        .byte 0x55, 0xaa
