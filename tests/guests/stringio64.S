/* REP INS/OUTS in 64-bit mode on hvm's identity page tables (tests/machine/test_string_io.py
   holds the expected values): words across a page, dwords downwards from the device that serves
   runs in parts, 32-bit addressing (67h: ECX and EDI, written zero-extended), a run out again and
   a long run. After each instruction RCX, RDI and RSI go out to the report port, each as its low
   then its high 32 bits. Ports as stringio16.S. */
        .code64
        .text
        .globl _start
        .equ DEV, 0x700
        .equ CHUNKY, 0x708
        .equ REPORT, 0x710

.macro out64 reg
        mov \reg, %rax
        out %eax, %dx
        shr $32, %rax
        out %eax, %dx
.endm

.macro report
        mov $REPORT, %dx
        out64 %rcx
        out64 %rdi
        out64 %rsi
.endm

_start: cld
        mov $0x123456789abcdef0, %rsi

        # 1: words across the page at 0x201000.
        mov $0x200ff0, %rdi
        mov $100, %rcx
        mov $DEV, %dx
        rep insw
        report

        # 2: dwords downwards across the page at 0x202000.
        mov $0x202010, %rdi
        mov $10, %rcx
        mov $CHUNKY, %dx
        std
        rep insl
        cld
        report

        # 3: 32-bit addressing: EDI = 0x203000, ECX = 16; both written back zero-extended.
        mov $0xffffffff00203000, %rdi
        mov $0xaaaaaaaa00000010, %rcx
        mov $DEV, %dx
        addr32 rep insw
        report

        # 4: the words of 1 out again.
        mov $0x200ff0, %rsi
        mov $100, %rcx
        mov $CHUNKY, %dx
        rep outsw
        report

        # 5: 5000 words into 0x300000.
        mov $0x300000, %rdi
        mov $5000, %rcx
        mov $DEV, %dx
        rep insw
        report

        mov $0x604, %dx                 # ACPI power off
        mov $0x2000, %ax
        out %ax, %dx
1:      cli
        hlt
        jmp 1b
