/* Benchmark guest (multiboot): N port accesses, then poweroff. Assemble with --defsym COUNT=n
   (COUNT=0 gives the empty guest the benchmark subtracts); PORT (default 0x510, unclaimed)
   names the port and READ=1 makes each access an `in` instead of an `out`. */
        .ifndef PORT
        .set PORT, 0x510
        .endif
        .ifndef READ
        .set READ, 0
        .endif
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
        mov $PORT, %dx
        jecxz 2f
1:
        .if READ
        in %dx, %al
        .else
        out %al, %dx
        .endif
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
