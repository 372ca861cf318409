/* REP INS/OUTS in flat 32-bit protected mode, paging off (tests/machine/test_string_io.py holds
   the expected values): words across a page, dwords downwards across a page, 16-bit addressing
   (67h: DI and CX only), a run out again, a long run from a device that serves it in parts, a
   single element, bytes out downwards across pages, and code rewritten by REP INSB then called.
   After each instruction ECX, EDI and ESI go out to the report port. Ports as stringio16.S. */
        .code32
        .text
        .globl _start
        .equ DEV, 0x700
        .equ CHUNKY, 0x708
        .equ REPORT, 0x710
        .equ CODE, 0x718

.macro report
        mov $REPORT, %dx
        mov %ecx, %eax
        out %eax, %dx
        mov %edi, %eax
        out %eax, %dx
        mov %esi, %eax
        out %eax, %dx
.endm

_start: cld
        mov $0x9abcdef0, %esi

        # 1: words across the page at 0x201000.
        mov $0x200ff0, %edi
        mov $100, %ecx
        mov $DEV, %dx
        rep insw
        report

        # 2: dwords downwards across the page at 0x202000, from the device serving parts.
        mov $0x202010, %edi
        mov $10, %ecx
        mov $CHUNKY, %dx
        std
        rep insl
        cld
        report

        # 3: 16-bit addressing (67h): DI and CX move, the upper halves stay (and take no part).
        mov $0x00010100, %edi
        mov $0x00010010, %ecx
        mov $DEV, %dx
        addr16 rep insb
        report

        # 4: the words of 1 out again as dwords, to the device taking runs in parts.
        mov $0x200ff0, %esi
        mov $50, %ecx
        mov $CHUNKY, %dx
        rep outsl
        report

        # 5: 5000 words into 0x300000.
        mov $0x300000, %edi
        mov $5000, %ecx
        mov $CHUNKY, %dx
        rep insw
        report

        # 6: one element.
        mov $0x204000, %edi
        mov $1, %ecx
        mov $DEV, %dx
        rep insb
        report

        # 7: 6 KiB of 5 out as bytes, downwards from 0x302fff.
        mov $0x302fff, %esi
        mov $0x1800, %ecx
        mov $DEV, %dx
        std
        rep outsb
        cld
        report

        # 8: a routine at 0x205001 (mov $1, %al; ret) runs, REP INSB rewrites 0x205000-0x205003
        #    (nop; mov $2, %al; ret), it runs again. Element 0 lies outside the routine.
        movl $0x00c301b0, 0x205001
        mov $0x205001, %ebx
        call *%ebx
        movzbl %al, %ebp
        mov $0x205000, %edi
        mov $4, %ecx
        mov $CODE, %dx
        rep insb
        call *%ebx
        movzbl %al, %eax
        mov $REPORT, %dx
        xchg %eax, %ebp
        out %eax, %dx
        mov %ebp, %eax
        out %eax, %dx

        mov $0x604, %dx                 # ACPI power off
        mov $0x2000, %ax
        out %ax, %dx
1:      cli
        hlt
        jmp 1b
