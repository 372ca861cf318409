/* Timers programmed while the CPU is busy (flat binary at 0x100000, entered in 64-bit mode on
   hvm's identity page tables; GDT and IDT from sys64.S). A guest that programs a timer and then
   spins without HLT or any exit must still be interrupted on time: Linux's check_timer does this
   with the PIT, and calls the routing an "MP-BIOS bug" when fewer than 5 of its ticks arrive.
     1. the PIT (mode 2, 1193 clocks ~ 1 ms) through IOAPIC pin 2 to vector 0x42 with the 8259
        pair masked, while spinning 50 ms on the ACPI PM timer: at least 25 ticks ("pit=ok";
        otherwise the count in hex);
     2. the PIT stopped, 5 ms later a LAPIC one-shot of 100 000 bus clocks (vector 0x41), while
        spinning 20 ms: exactly 1 interrupt.
   It prints "pit=ok oneshot=1" and exits through isa-debug-exit 0x20 (status 65). */
        .set APIC, 0xfee00000
        .set IOAPIC, 0xfec00000
        .set PM_TMR, 0x608              /* the ACPI PM timer: 3.579545 MHz, 24 bits */
        .set PM_MS, 3580                /* PM timer ticks per millisecond, rounded up */

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

        /* IOAPIC pin 2: vector 0x42, fixed, physical destination APIC 0, edge, active high. */
        mov $IOAPIC, %rdi
        movl $0x10 + 2 * 2 + 1, (%rdi)
        movl $0, 0x10(%rdi)
        movl $0x10 + 2 * 2, (%rdi)
        movl $0x42, 0x10(%rdi)
        mov $0x34, %al                  /* PIT channel 0: lo/hi, mode 2, 1193 = 0x4a9 */
        out %al, $0x43
        mov $0xa9, %al
        out %al, $0x40
        mov $0x04, %al
        out %al, $0x40
        sti
        mov $50 * PM_MS, %ecx
        call pm_spin
        cli
        mov pit_count(%rip), %rax
        mov %rax, pit_seen(%rip)

        mov $0x30, %al                  /* channel 0 to mode 0 with no count: it stops */
        out %al, $0x43
        movl $0x10 + 2 * 2, (%rdi)
        movl $0x10042, 0x10(%rdi)       /* pin 2 masked */
        mov $5 * PM_MS, %ecx
        call pm_spin
        movl $0xb, 0x3e0(%rbx)          /* divide by 1 */
        movl $0x00041, 0x320(%rbx)      /* LVT timer: one-shot, vector 0x41 */
        movl $100000, 0x380(%rbx)       /* initial count: starts the timer */
        sti
        mov $20 * PM_MS, %ecx
        call pm_spin
        cli

        lea s_pit(%rip), %rsi
        call puts64
        mov pit_seen(%rip), %rax
        cmp $25, %rax
        jb 1f
        lea s_ok(%rip), %rsi
        call puts64
        jmp 2f
1:      call puthex64
2:      lea s_oneshot(%rip), %rsi
        call puts64
        mov oneshot_count(%rip), %rax
        call puthex64
        mov $'\n', %al
        call putc64
        mov $0x20, %al
        out %al, $0xf4
3:      hlt
        jmp 3b

/* pm_spin: busy-wait %ecx PM timer ticks (no HLT: the CPU stays busy). Clobbers %rax, %rdx, %rsi. */
pm_spin:
        mov $PM_TMR, %dx
        in %dx, %eax
        mov %eax, %esi
1:      pause
        in %dx, %eax
        sub %esi, %eax
        and $0xffffff, %eax             /* elapsed, across the counter's wrap */
        cmp %ecx, %eax
        jb 1b
        ret

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

build_idt:                              /* gates 0x41 and 0x42 */
        mov $0x8e00, %edx
        xor %ecx, %ecx
        mov $0x41, %ebx
        lea oneshot_handler(%rip), %rax
        call set_gate
        mov $0x42, %ebx
        lea pit_handler(%rip), %rax
        call set_gate
        ret

        .include "lib64.S"
        .include "sys64.S"

s_pit:  .asciz "pit="
s_ok:   .asciz "ok"
s_oneshot: .asciz " oneshot="
        .balign 8
pit_count: .quad 0
oneshot_count: .quad 0
pit_seen: .quad 0
        .balign 4096
        .space 4096
kstack_top:
