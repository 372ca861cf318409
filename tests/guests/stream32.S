/* A serial stream: lines "1\n2\n3\n..." on COM1, then power-off after line COUNT (--defsym
   COUNT=n); COUNT=0 streams until the machine is stopped. Every line is predictable, so a test
   can tell whether any byte between the first and the last went missing. */
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
        inc %eax
        jmp 1b

        .bss
        .align 16
        .space 4096
stack_top:
