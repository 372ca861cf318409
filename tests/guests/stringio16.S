/* REP INS/OUTS in real mode (tests/machine/test_string_io.py holds the expected values): byte, word
   and dword elements, 16- and 32-bit addressing (67h), DF=1, segment bases (ES x 16), a segment
   override, runs across a 4 KiB page, across the 64 KiB wrap of DI, a count of 0 with ECX's upper
   half set, a long run, and code rewritten by REP INSB then called. After each instruction ECX,
   EDI and ESI go out to the report port, 32 bits each. Ports: a byte stream device at 0x700, one
   that serves runs in small parts at 0x708, the report at 0x710, a code source at 0x718. */
        .code16
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

.macro es_at segment
        mov $\segment, %ax
        mov %ax, %es
.endm

_start: cli
        xor %ax, %ax
        mov %ax, %ss
        mov $0x7c00, %sp
        mov %ax, %ds
        cld
        mov $0x9abcdef0, %esi

        # 1: words into 2000:0FF0, across the page at 0x21000; 16-bit addressing moves CX and DI
        #    only, the upper halves of ECX and EDI stay.
        es_at 0x2000
        mov $0x56780ff0, %edi
        mov $0x12340028, %ecx
        mov $DEV, %dx
        rep insw
        report

        # 2: bytes downwards (DF=1) from 3000:0100.
        es_at 0x3000
        mov $0x100, %edi
        mov $16, %ecx
        mov $DEV, %dx
        std
        rep insb
        cld
        report

        # 3: dwords (66h) from the device that serves runs in parts.
        es_at 0x4000
        xor %edi, %edi
        mov $8, %ecx
        mov $CHUNKY, %dx
        rep insl
        report

        # 4: 32-bit addressing (67h) in real mode: ECX and EDI.
        es_at 0x5000
        mov $0x100, %edi
        mov $0x20, %ecx
        mov $DEV, %dx
        addr32 rep insw
        report

.ifndef NO_WRAP
        # 5: DI wraps from 0xFFFE to 0 inside the run (ES base 0x60100: not at a page boundary).
        #    Left out with NO_WRAP (see the test).
        es_at 0x6010
        mov $0xfff8, %edi
        mov $8, %ecx
        mov $DEV, %dx
        rep insw
        report
.endif

        # 6: the words of 1 out again from DS=2000.
        mov $0x2000, %ax
        mov %ax, %ds
        mov $0x0ff0, %esi
        mov $40, %ecx
        mov $DEV, %dx
        rep outsw
        xor %ax, %ax
        mov %ax, %ds
        report

        # 7: the bytes of 2 out downwards through an ES override (DS points elsewhere), to the
        #    device that takes runs in parts.
        es_at 0x3000
        mov $0x1000, %ax
        mov %ax, %ds
        mov $0x100, %esi
        mov $16, %ecx
        mov $CHUNKY, %dx
        std
        rep outsb %es:(%si), (%dx)
        cld
        xor %ax, %ax
        mov %ax, %ds
        report

        # 8: CX = 0 (ECX's upper half set): nothing moves.
        es_at 0x2000
        mov $0x500, %edi
        mov $0xffff0000, %ecx
        mov $DEV, %dx
        rep insw
        report

        # 9: 24 KiB of words into 7000:0000, six pages.
        es_at 0x7000
        xor %edi, %edi
        mov $0x3000, %ecx
        mov $DEV, %dx
        rep insw
        report

        # 10: words downwards across the page at 0x49000.
        es_at 0x4800
        mov $0x1010, %edi
        mov $20, %ecx
        mov $CHUNKY, %dx
        std
        rep insw
        cld
        report

        # 11: words downwards, DI wrapping from 0 to 0xFFFE (ES base 0x58100).
        es_at 0x5810
        mov $4, %edi
        mov $6, %ecx
        mov $DEV, %dx
        std
        rep insw
        cld
        report

        # 12: a routine at 0:9001 (mov $1, %al; ret) runs, REP INSB rewrites 0:9000-9003 from the
        #     code source (nop; mov $2, %al; ret), and it runs again: the new code must be what
        #     runs. Element 0 lies outside the routine, so only the later elements touch it.
        movw $0x01b0, 0x9001
        movb $0xc3, 0x9003
        mov $0x9001, %bx
        call *%bx
        movzbl %al, %ebp
        es_at 0
        mov $0x9000, %edi
        mov $4, %ecx
        mov $CODE, %dx
        rep insb
        call *%bx
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
