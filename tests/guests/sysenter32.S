/* SYSENTER/SYSEXIT round trips (flat binary at 0x100000, entered in 32-bit protected mode).
   The kernel sets the SYSENTER MSRs, SYSEXITs to CPL3, and the user code SYSENTERs back three
   times; the entry point checks it runs at CPL0 (it reads CR0) on the SYSENTER_ESP stack with
   CS=0x08/SS=0x10 and IF cleared, counts, and SYSEXITs back (EDX = return EIP, ECX = ESP).
   A fourth SYSENTER with EAX=0 ends it: the kernel prints
     "sysenter=3 ucs=1b uss=23 bad=0"
   and powers off. */
        .set KCODE, 0x08
        .set KDATA, 0x10
        .set SYSENTER_CS, 0x174
        .set SYSENTER_ESP, 0x175
        .set SYSENTER_EIP, 0x176

        .code32
        .text
        .globl _start
_start: jmp main
        .include "lib32.S"              /* first: its print macro is used below */
main:   mov $kstack_top, %esp
        lgdt gdt_ptr
        ljmp $KCODE, $1f
1:      mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        mov %ax, %ss
        mov $SYSENTER_CS, %ecx
        mov $KCODE, %eax
        xor %edx, %edx
        wrmsr
        mov $SYSENTER_ESP, %ecx
        mov $entry_stack_top, %eax
        wrmsr
        mov $SYSENTER_EIP, %ecx
        mov $sysenter_entry, %eax
        wrmsr
        pushf                           /* IF=1 at CPL3 (SYSEXIT keeps EFLAGS), so the entry */
        orl $0x200, (%esp)              /* can see SYSENTER clear it; nothing raises an IRQ */
        popf
        mov $user_entry, %edx
        mov $ustack_top, %ecx
        sysexit

user_entry:
        mov %cs, %eax
        mov %eax, ucs
        mov %ss, %eax
        mov %eax, uss
        mov $3, %ebx
2:      mov $1, %eax
        mov $3f, %edx
        mov %esp, %ecx
        sysenter
3:      dec %ebx
        jnz 2b
        xor %eax, %eax
        sysenter                        /* no return */

sysenter_entry:
        cmp $entry_stack_top, %esp
        jne 1f
        mov %cs, %esi
        cmp $KCODE, %esi
        jne 1f
        mov %ss, %esi
        cmp $KDATA, %esi
        jne 1f
        mov %cr0, %esi                  /* #GP unless CPL0 */
        pushf
        pop %esi
        test $0x200, %esi
        jnz 1f
        jmp 2f
1:      incl bad
2:      test %eax, %eax
        jz done
        incl count
        sysexit

done:   mov $kstack_top, %esp
        print "sysenter="
        mov count, %eax
        call putdec
        print " ucs="
        mov ucs, %eax
        call puthex2
        print " uss="
        mov uss, %eax
        call puthex2
        print " bad="
        mov bad, %eax
        call putdec
        mov $'\n', %al
        call putc
        call poweroff

/* the low byte of %eax as two hex digits */
puthex2:
        push %eax
        shl $24, %eax
        mov $2, %ecx
1:      rol $4, %eax
        push %eax
        and $0xf, %al
        add $'0', %al
        cmp $'9', %al
        jbe 2f
        add $('a' - '9' - 1), %al
2:      call putc
        pop %eax
        loop 1b
        pop %eax
        ret

        .balign 8
gdt:    .quad 0
        .quad 0x00cf9b000000ffff        /* 0x08 kernel code */
        .quad 0x00cf93000000ffff        /* 0x10 kernel data */
        .quad 0x00cffb000000ffff        /* 0x18 user code, DPL3: SYSEXIT's CS = SYSENTER_CS + 16 */
        .quad 0x00cff3000000ffff        /* 0x20 user data, DPL3: SYSEXIT's SS = SYSENTER_CS + 24 */
gdt_end:
gdt_ptr: .word gdt_end - gdt - 1
        .long gdt
count:  .long 0
bad:    .long 0
ucs:    .long 0
uss:    .long 0
        .balign 16
        .space 1024
kstack_top:
        .space 1024
entry_stack_top:
        .space 1024
ustack_top:
