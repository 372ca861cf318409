/* A boot sector SeaBIOS loads from the first hard disk: it reads its second sector (the payload,
   CHS 0/0/2) with the BIOS disk services (INT 13h AH=02h), writes it to LBA 2 (AH=03h, CHS 0/0/3),
   reads that back into another buffer,
   compares, says so on COM1, and leaves through isa-debug-exit: value 1 when the data came back,
   2 when a call failed or the data differed. */
        .code16
        .text
        .globl _start
_start: cli
        xor %ax, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $0x7c00, %sp
        sti
        mov %dl, drive
        mov $0x0201, %ax                /* the payload: only this first sector was loaded */
        mov $0x0002, %cx
        xor %dh, %dh
        mov $payload, %bx
        int $0x13
        jc fail
        mov $0x0301, %ax                /* write 1 sector */
        mov $0x0003, %cx                /* cylinder 0, sector 3 */
        xor %dh, %dh                    /* head 0 */
        mov drive, %dl
        mov $payload, %bx
        int $0x13
        jc fail
        mov $0x0201, %ax                /* read it back */
        mov $0x0003, %cx
        xor %dh, %dh
        mov drive, %dl
        mov $0x8000, %bx
        int $0x13
        jc fail
        mov $payload, %si
        mov $0x8000, %di
        mov $512, %cx
        repe cmpsb
        jne fail
        mov $ok, %si
        call puts
        mov $1, %al
        jmp done
fail:   mov $bad, %si
        call puts
        mov $2, %al
done:   out %al, $0xf4
1:      cli
        hlt
        jmp 1b

/* With interrupts off: SeaBIOS copies the screen to COM1 from its timer interrupt, which
   would otherwise cut into this line. */
puts:   cli
4:      lodsb
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
        jmp 4b
3:      ret

drive:  .byte 0
ok:     .asciz "disk16: wrote LBA 2 and read it back\r\n"
bad:    .asciz "disk16: disk call failed\r\n"
        .org 510
        .byte 0x55, 0xaa
payload:
        .ascii "hvm wrote this sector through the BIOS"
        .org payload + 512, 0x5a
