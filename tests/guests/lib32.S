/* Serial output helpers for 32-bit test guests (COM1, polled). Clobber only what they say. */
        .set COM1, 0x3f8

/* print "literal": emit a string constant through puts */
        .macro print str
        .pushsection .rodata
9001:   .asciz "\str"
        .popsection
        push %esi
        mov $9001b, %esi
        call puts
        pop %esi
        .endm

        .text
/* putc: write %al to COM1 once the transmitter is empty */
putc:   push %edx
        push %eax
1:      mov $COM1+5, %dx
        in %dx, %al
        test $0x20, %al
        jz 1b
        pop %eax
        mov $COM1, %dx
        out %al, %dx
        pop %edx
        ret

/* puts: write the NUL-terminated string at %esi */
puts:   push %esi
        push %eax
1:      lodsb
        test %al, %al
        jz 2f
        call putc
        jmp 1b
2:      pop %eax
        pop %esi
        ret

/* putdec: write %eax as unsigned decimal */
putdec: push %eax
        push %ebx
        push %ecx
        push %edx
        mov $10, %ebx
        xor %ecx, %ecx
1:      xor %edx, %edx
        div %ebx
        push %edx
        inc %ecx
        test %eax, %eax
        jnz 1b
2:      pop %eax
        add $'0', %al
        call putc
        loop 2b
        pop %edx
        pop %ecx
        pop %ebx
        pop %eax
        ret

/* puthex: write %eax as 8 hex digits */
puthex: push %eax
        push %ecx
        push %edx
        mov %eax, %edx
        mov $8, %ecx
1:      rol $4, %edx
        mov %dl, %al
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 2f
        add $('a' - '9' - 1), %al
2:      call putc
        loop 1b
        pop %edx
        pop %ecx
        pop %eax
        ret

/* strstr: %esi haystack, %edi needle (both NUL-terminated); ZF=1 and %eax=match if found */
strstr: push %ecx
        push %esi
        push %edi
1:      xor %ecx, %ecx
2:      mov (%edi,%ecx), %al
        test %al, %al
        jz 3f                   /* whole needle matched */
        cmp (%esi,%ecx), %al
        jne 4f
        inc %ecx
        jmp 2b
3:      mov %esi, %eax
        xor %ecx, %ecx          /* ZF=1 */
        jmp 5f
4:      cmpb $0, (%esi)
        je 6f
        inc %esi
        jmp 1b
6:      or $1, %ecx             /* ZF=0: not found */
5:      pop %edi
        pop %esi
        pop %ecx
        ret

/* atoi: parse decimal at %esi into %eax */
atoi:   push %ebx
        push %esi
        xor %eax, %eax
1:      movzbl (%esi), %ebx
        sub $'0', %ebx
        cmp $9, %ebx
        ja 2f
        imul $10, %eax
        add %ebx, %eax
        inc %esi
        jmp 1b
2:      pop %esi
        pop %ebx
        ret

/* poweroff through ACPI PM1a_CNT: SLP_TYP=S5(0) | SLP_EN */
poweroff:
        mov $0x604, %dx
        mov $0x2000, %ax
        out %ax, %dx
1:      cli
        hlt
        jmp 1b
