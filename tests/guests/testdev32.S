/* QEMU's pc-testdev as kvm-unit-tests drives it: the scratch register at 0xe0 (any width, any
   offset) and its byte-wide twin at 0xe8, the I/O memory window at 0xff000000, and an interrupt
   line raised through port 0x2005 that the 8259 delivers as vector 0x25. Then the STI shadow
   (kvm-unit-tests' eventinj): with that interrupt waiting, `sti; int $0x30` runs the INT first,
   and the interrupt comes when its handler's IRET sets IF again: the handlers log "S" then "H".
   Then NMI blocking: an NMI handler that sends itself a second NMI logs "A" before and "B" after
   sending it; the second one waits for the first one's IRET and logs "C": "ABC".
   Prints what it read, then leaves through isa-debug-exit with 0 (exit status 1). */
        .set MB_MAGIC, 0x1badb002      /* no boot information wanted */

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, 0, -MB_MAGIC

        .code32
        .include "lib32.S"

        .text
        .globl _start
_start: mov $stack_top, %esp
        print "testdev port "
        mov $0x12345678, %eax
        out %eax, $0xe0
        in $0xe0, %eax
        call puthex
        mov $0xab, %al
        out %al, $0xe1                  /* byte 1 of the same register */
        in $0xe0, %eax
        print " "
        call puthex
        in $0xe2, %ax                   /* the upper half, shifted down */
        movzwl %ax, %eax
        print " "
        call puthex
        mov $0xcd, %al
        out %al, $0xe3
        in $0xe1, %al
        movzbl %al, %eax
        print " "
        call puthex
        print "\n"

        print "testdev byteport "
        mov $0xdeadbeef, %eax
        out %eax, $0xe8
        in $0xe8, %eax
        call puthex
        in $0xea, %ax                   /* (unaligned words differ between QEMU's TCG and its KVM path) */
        movzwl %ax, %eax
        print " "
        call puthex
        in $0xe0, %eax                  /* the register both ports share */
        print " "
        call puthex
        print "\n"

        print "testdev iomem "
        movl $0xcafef00d, 0xff000000
        mov 0xff000000, %eax
        call puthex
        movw $0x1122, 0xff000010
        mov 0xff00000e, %eax
        print " "
        call puthex
        movb $0x77, 0xff00ffff
        movzbl 0xff00ffff, %eax
        print " "
        call puthex
        print "\n"

        /* An interrupt through a testdev line: IRQ 5 on the 8259 (vector 0x25), the local APIC
           passing 8259 interrupts through LINT0 as a BIOS leaves it */
        movl $0x1ff, 0xfee000f0         /* APIC software-enabled, spurious vector 0xff */
        movl $0x700, 0xfee00350         /* LVT LINT0: ExtINT */
        mov $irq5, %eax
        mov $0x25, %ebx
        call set_gate
        lidt idtr
        mov $0x11, %al                  /* ICW1-4: master at 0x20, slave at 0x28, 8086 mode */
        out %al, $0x20
        mov $0x20, %al
        out %al, $0x21
        mov $0x04, %al
        out %al, $0x21
        mov $0x01, %al
        out %al, $0x21
        mov $0x11, %al
        out %al, $0xa0
        mov $0x28, %al
        out %al, $0xa1
        mov $0x02, %al
        out %al, $0xa1
        mov $0x01, %al
        out %al, $0xa1
        mov $0xdf, %al                  /* only IRQ 5 */
        out %al, $0x21
        mov $0xff, %al
        out %al, $0xa1
        sti
        mov $1, %al
        mov $0x2005, %dx                /* raise line 5 ... */
        out %al, %dx
        mov $100000, %ecx
1:      cmpl $0, irqs
        jne 2f
        loop 1b
2:      mov $0, %al
        mov $0x2005, %dx                /* ... and lower it */
        out %al, %dx
        cli
        print "testdev irq5="
        mov irqs, %eax
        call putdec
        print "\n"

        mov $int30, %eax                /* vector 0x30: a software interrupt's handler */
        mov $0x30, %ebx
        call set_gate
        movl $0, irqs
        movl $0, log_len
        mov $1, %al                     /* IRQ 5 waits: IF is clear */
        mov $0x2005, %dx
        out %al, %dx
        sti
        int $0x30                       /* in STI's shadow: before the waiting interrupt */
        mov $100000, %ecx
1:      cmpl $0, irqs
        jne 2f
        loop 1b
2:      cli
        mov $0, %al
        out %al, %dx
        print "testdev shadow="
        mov $log, %esi
        call puts
        print "\n"

        mov $nmi, %eax                  /* vector 2 */
        mov $2, %ebx
        call set_gate
        movl $0, log_len
        movl $0, log
        movl $0, nmis
        movl $0, 0xfee00310             /* ICR: NMI to APIC ID 0, this CPU (the self shorthand is for fixed interrupts only) */
        movl $0x4400, 0xfee00300
        mov $100000, %ecx
1:      cmpl $2, nmis
        jae 2f
        in $0xe0, %al                   /* (an exit to the VMM now and then, for KVM to look at NMIs) */
        loop 1b
2:      print "testdev nmi="
        mov $log, %esi
        call puts
        print "\n"
        xor %eax, %eax
        out %eax, $0xf4
1:      cli
        hlt
        jmp 1b

irq5:   incl irqs
        push %eax
        mov $'H', %al
        call log_char
        mov $0x20, %al                  /* EOI */
        out %al, $0x20
        pop %eax
        iret

nmi:    push %eax
        push %ecx
        incl nmis
        cmpl $1, nmis
        jne 2f
        mov $'A', %al
        call log_char
        movl $0x4400, 0xfee00300        /* a second NMI, while this one is served */
        mov $10000, %ecx
1:      loop 1b
        mov $'B', %al
        call log_char
        jmp 3f
2:      mov $'C', %al
        call log_char
3:      pop %ecx
        pop %eax
        iret

/* set_gate: IDT vector %ebx -> 32-bit interrupt gate to %eax in this code segment. Clobbers %eax. */
set_gate:
        mov %ax, idt(,%ebx,8)
        shr $16, %eax
        mov %ax, idt + 6(,%ebx,8)
        mov %cs, %ax
        mov %ax, idt + 2(,%ebx,8)
        movw $0x8e00, idt + 4(,%ebx,8)
        ret

int30:  push %eax
        mov $'S', %al
        call log_char
        pop %eax
        iret

/* log_char: append %al to log */
log_char:
        push %ebx
        mov log_len, %ebx
        cmp $15, %ebx
        jae 1f
        mov %al, log(%ebx)
        incl log_len
1:      pop %ebx
        ret

        .data
        .align 8
log:    .space 16
log_len: .long 0
nmis:   .long 0
idtr:   .word 256 * 8 - 1
        .long idt
irqs:   .long 0

        .bss
        .align 16
idt:    .space 256 * 8
        .space 4096
stack_top:
