/* Serial output for 64-bit test guests (COM1, polled): putc64 writes %al, puts64 the NUL-ended
   string at %rsi (advancing it). Both preserve every register except %rsi for puts64. */
putc64: push %rdx
        push %rax
1:      mov $0x3fd, %dx
        in %dx, %al
        test $0x20, %al
        jz 1b
        pop %rax
        mov $0x3f8, %dx
        out %al, %dx
        pop %rdx
        ret

puts64: push %rax
1:      lodsb
        test %al, %al
        jz 2f
        call putc64
        jmp 1b
2:      pop %rax
        ret
