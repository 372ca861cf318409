/* Benchmark guest (multiboot): N `out` instructions to an unclaimed port, then poweroff.
   Assemble with --defsym COUNT=n; COUNT=0 gives the empty guest the benchmark subtracts. */
        .set MB_MAGIC, 0x1badb002
        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC
        .code32
        .text
        .globl _start
_start: mov $0x3f8, %dx                 /* first serial byte: start of the measured part */
        mov $'<', %al
        out %al, %dx
        mov $COUNT, %ecx
        mov $0x510, %dx
        jecxz 2f
1:      out %al, %dx
        dec %ecx
        jnz 1b
2:      mov $0x3f8, %dx
        mov $'>', %al
        out %al, %dx
        mov $0x604, %dx
        mov $0x2000, %ax
        out %ax, %dx
3:      cli
        hlt
        jmp 3b
