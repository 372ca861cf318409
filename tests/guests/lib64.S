/* Serial output for 64-bit test guests (COM1, polled): putc64 writes %al, puts64 the NUL-ended
   string at %rsi (advancing it), puthex64 %rax in hex without leading zeros. All preserve every
   register except %rsi for puts64. */
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

puthex64:
        push %rax
        push %rbx
        push %rcx
        push %rdx
        mov %rax, %rbx
        mov $16, %ecx
        xor %edx, %edx                  /* set once a digit was printed */
1:      rol $4, %rbx
        mov %bl, %al
        and $0xf, %al
        cmp $1, %ecx                    /* the last digit is printed even when 0 */
        je 2f
        test %al, %al
        jnz 2f
        test %edx, %edx
        jz 4f
2:      mov $1, %edx
        add $'0', %al
        cmp $'9', %al
        jbe 3f
        add $('a' - '9' - 1), %al
3:      call putc64
4:      loop 1b
        pop %rdx
        pop %rcx
        pop %rbx
        pop %rax
        ret
