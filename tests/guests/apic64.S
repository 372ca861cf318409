/* Local APIC timer and IOAPIC routing (flat binary at 0x100000, entered in 64-bit mode on hvm's
   identity page tables, which cover the APIC pages; GDT and IDT from sys64.S). Interrupt handlers count and EOI:
     1. LAPIC timer, periodic (vector 0x40, divide 1, 2,000,000 bus clocks): 10 interrupts;
     2. LAPIC timer, one-shot, same count, vector 0x41: exactly 1 interrupt, then the current count
        reads 0 (its own vector: a periodic tick already pending when the timer was masked is
        delivered after the switch, on real CPUs too, and must not pass for the one-shot's);
     3. the PIT (mode 2, 11932 clocks ~ 10 ms) with the 8259 pair masked, through IOAPIC pin 2
        (ISA IRQ 0, as QEMU's interrupt source override routes it) to vector 0x42: 5 interrupts.
   It prints "periodic=a oneshot=1 count=0 ioapic=5" (hex) and exits through isa-debug-exit 0x20
   (status 65). The host measures that the whole run is not shorter than the 10 + 1 periods
   and 5 PIT ticks it waited for. */
        .set APIC, 0xfee00000
        .set IOAPIC, 0xfec00000
        .set PERIOD, 2000000

        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        call sys64_init
        call build_idt
        mov $0xff, %al                  /* both 8259s masked: only the APIC path may deliver */
        out %al, $0x21
        out %al, $0xa1
        mov $APIC, %rbx
        movl $0x1ff, 0xf0(%rbx)         /* SVR: software enable, spurious vector 0xff */
        movl $0xb, 0x3e0(%rbx)          /* divide by 1 */
        movl $0x20040, 0x320(%rbx)      /* LVT timer: periodic, vector 0x40 */
        movl $PERIOD, 0x380(%rbx)       /* initial count: starts the timer */
        sti
1:      hlt
        cmpq $10, timer_count(%rip)
        jb 1b
        movl $0x10000, 0x320(%rbx)      /* masked: no more periodic ticks */
        mov timer_count(%rip), %rax
        mov %rax, periodic(%rip)
        movl $0x00041, 0x320(%rbx)      /* one-shot, vector 0x41 */
        movl $PERIOD, 0x380(%rbx)
2:      hlt
        cmpq $1, oneshot_count(%rip)
        jb 2b
        mov $3 * PERIOD / 1000, %ecx    /* wait a few periods' worth of loop for a second one */
3:      pause
        loop 3b
        mov oneshot_count(%rip), %rax
        mov %rax, oneshot(%rip)
        mov 0x390(%rbx), %eax           /* current count: 0 after a one-shot expired */
        mov %rax, count_left(%rip)

        /* IOAPIC pin 2: vector 0x42, fixed, physical destination APIC 0, edge, active high. */
        mov $IOAPIC, %rdi
        movl $0x10 + 2 * 2 + 1, (%rdi)  /* IOREGSEL: redirection entry 2, high half */
        movl $0, 0x10(%rdi)
        movl $0x10 + 2 * 2, (%rdi)
        movl $0x42, 0x10(%rdi)
        mov $0x34, %al                  /* PIT channel 0: lo/hi, mode 2 */
        out %al, $0x43
        mov $0x9c, %al                  /* 11932 = 0x2e9c */
        out %al, $0x40
        mov $0x2e, %al
        out %al, $0x40
4:      hlt
        cmpq $5, pit_count(%rip)
        jb 4b
        cli
        call report
        mov $0x20, %al
        out %al, $0xf4
5:      hlt
        jmp 5b

timer_handler:
        incq timer_count(%rip)
        jmp eoi

oneshot_handler:
        incq oneshot_count(%rip)
        jmp eoi

pit_handler:
        incq pit_count(%rip)
eoi:    push %rax
        mov $APIC, %eax                 /* above 2 GiB: no 32-bit absolute address for it */
        movl $0, 0xb0(%rax)
        pop %rax
        iretq

build_idt:                              /* gates 0x40, 0x41 and 0x42 */
        mov $0x8e00, %edx
        xor %ecx, %ecx
        mov $0x40, %ebx
        lea timer_handler(%rip), %rax
        call set_gate
        mov $0x41, %ebx
        lea oneshot_handler(%rip), %rax
        call set_gate
        mov $0x42, %ebx
        lea pit_handler(%rip), %rax
        call set_gate
        ret

report:
        lea s_periodic(%rip), %rsi
        call puts64
        mov periodic(%rip), %rax
        call puthex64
        lea s_oneshot(%rip), %rsi
        call puts64
        mov oneshot(%rip), %rax
        call puthex64
        lea s_count(%rip), %rsi
        call puts64
        mov count_left(%rip), %rax
        call puthex64
        lea s_ioapic(%rip), %rsi
        call puts64
        mov pit_count(%rip), %rax
        call puthex64
        mov $'\n', %al
        call putc64
        ret

        .include "lib64.S"
        .include "sys64.S"

s_periodic: .asciz "periodic="
s_oneshot: .asciz " oneshot="
s_count: .asciz " count="
s_ioapic: .asciz " ioapic="
        .balign 8
timer_count: .quad 0
oneshot_count: .quad 0
pit_count: .quad 0
periodic: .quad 0
oneshot: .quad 0
count_left: .quad 0
        .balign 4096
        .space 4096
kstack_top:
