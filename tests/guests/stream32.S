/* A serial stream: lines "1\n2\n3\n..." on COM1, then power-off after line COUNT (--defsym
   COUNT=n); COUNT=0 streams until the machine is stopped. Every line is predictable, so a test
   can tell whether any byte between the first and the last went missing. With WAIT_AT=k the
   guest waits after line k until a byte arrives on COM1 (a client that connected late has then
   seen the first k lines, and the guest is still running). */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .code32
        .include "lib32.S"
        .ifndef COUNT
        .set COUNT, 0
        .endif

        .text
        .globl _start
_start: mov $stack_top, %esp
        mov $1, %eax
1:      call putdec
        push %eax
        mov $'\n', %al
        call putc
        pop %eax
        cmp $COUNT, %eax
        je poweroff
        .ifdef WAIT_AT
        cmp $WAIT_AT, %eax
        jne 3f
        mov %eax, %ebx
        mov $0x3fd, %dx
2:      in %dx, %al                     /* LSR: data ready? */
        test $1, %al
        jz 2b
        mov $0x3f8, %dx
        in %dx, %al                     /* take the byte */
        mov %ebx, %eax
3:
        .endif
        inc %eax
        jmp 1b

        .bss
        .align 16
        .space 4096
stack_top:
