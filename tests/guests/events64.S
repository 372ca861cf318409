/* Exception, interrupt and privilege conformance in long mode (flat binary at 0x100000, entered
   in 64-bit mode; needs -m 64M). The guest installs its own GDT (kernel and user segments, a
   TSS with RSP0 and IST1), IDT and 4-level page tables, then:
     kernel: #DE through IST1 (checks the stack it lands on), #UD (ud2 skipped by its handler),
             int3 at CPL0, PASSES x 512 demand-paged #PFs (write pass, then read pass) on a
             2 MiB region whose page table it empties between passes;
     user (CPL3, entered with iretq): 3 x syscall/sysretq (the handler checks it runs at CPL0
             with RCX/R11 as SYSCALL sets them), int $0x80 through a DPL3 trap gate (checks the
             CPL3 frame and the switch to RSP0), int3 (#BP from CPL3), popcnt, pcmpeqb/pmovmskb,
             a #PF on a read (U=1, P=0), a #PF on a write to a read-only page (U|W|P), int $0x82
             through a DPL0 gate (#GP with error code 0x412), and int $0x81 back to the kernel.
   It prints one line of counters and results, then exits through isa-debug-exit with 0x20
   (status 65) when every check held, 0x21 (status 67) otherwise. */
        .set DEMAND, 0x40000000         /* 2 MiB of demand-paged virtual space */
        .set BACKING, 0x2000000         /* its physical pages, 32 MiB up */
        .ifndef PASSES
        .set PASSES, 4
        .endif

        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        call sys64_init
        lea ist_top(%rip), %rax
        mov %rax, tss+0x24(%rip)        /* IST1 */
        call build_idt
        call build_page_tables

        /* SSE for the user part: CR0.EM=0, MP=1; CR4.OSFXSR|OSXMMEXCPT. */
        mov %cr0, %rax
        and $~4, %rax
        or $2, %rax
        mov %rax, %cr0
        mov %cr4, %rax
        or $0x600, %rax
        mov %rax, %cr4

        /* SYSCALL: EFER.SCE, STAR (kernel CS 0x08, user base 0x10), LSTAR, FMASK=IF|TF. */
        mov $0xc0000080, %ecx
        rdmsr
        or $1, %eax
        wrmsr
        mov $0xc0000081, %ecx
        xor %eax, %eax
        mov $((0x10 | 3) << 16 | KCODE), %edx
        wrmsr
        mov $0xc0000082, %ecx
        lea syscall_entry(%rip), %rax
        mov %rax, %rdx
        shr $32, %rdx
        wrmsr
        mov $0xc0000084, %ecx
        mov $0x300, %eax
        xor %edx, %edx
        wrmsr

        /* #DE through IST1 */
        xor %edx, %edx
        mov $1, %eax
        xor %ecx, %ecx
        div %rcx                        /* 48 f7 f1: the handler skips 3 bytes */
        /* #UD */
        ud2
        /* #BP at CPL0 */
        int3

        /* Demand paging: PASSES passes over 512 pages, alternately writing and reading. */
        xor %r12, %r12
2:      mov $DEMAND, %rdi
        mov $512, %ecx
3:      test $1, %r12
        jnz 4f
        mov %rdi, (%rdi)                /* write pass: each page stores its own address */
        jmp 5f
4:      mov (%rdi), %rax                /* read pass: the page the write pass filled, remapped */
        xor %rdi, %rax
        or %rax, pf_read_sum(%rip)
5:      add $0x1000, %rdi
        loop 3b
        call unmap_demand
        inc %r12
        cmp $PASSES, %r12
        jb 2b

        /* A read-only mapped page for the user write test: the last demand page, P only. */
        mov $(BACKING + 511 * 0x1000 + 5), %rax     /* P | U, not W */
        mov %rax, demand_pt + 511 * 8(%rip)

        /* To CPL3. */
        mov %rsp, kernel_rsp(%rip)
        lea user_entry(%rip), %rax
        lea ustack_top(%rip), %rdx
        jmp user_iret

back_in_kernel:
        mov kernel_rsp(%rip), %rsp
        mov $KDATA, %ax
        mov %ax, %ds
        mov %ax, %es
        call report
        mov $0xf4, %dx
        mov result(%rip), %al
        out %al, %dx
6:      cli
        hlt
        jmp 6b

/* ---- CPL3 ---- */
user_entry:
        mov %cs, %ax
        mov %ax, user_cs(%rip)
        mov $3, %ebx
1:      mov $0x1234, %rax
        syscall
        cmp $0x5678, %rax               /* the handler's answer */
        jne 2f
        incq sys_ok(%rip)
2:      dec %ebx
        jnz 1b
        int $0x80
        int3
        mov $0xf0f0f0f0, %eax
        popcnt %eax, %eax
        mov %rax, popcnt_result(%rip)
        pcmpeqb %xmm0, %xmm0
        pmovmskb %xmm0, %eax
        mov %rax, sse_result(%rip)
        mov DEMAND + 0x3000, %rax       /* not present: #PF with U */
        movq $1, DEMAND + 511 * 0x1000  /* read-only: #PF with U|W|P; the handler makes it writable */
        int $0x82                       /* DPL0 gate: #GP(0x82 * 8 + 2) */
        int $0x81

/* ---- handlers ---- */
de_handler:                             /* IST1: must be running on ist stack */
        lea ist_top(%rip), %rax
        sub %rsp, %rax
        cmp $64, %rax
        ja 1f
        incq de_count(%rip)
1:      addq $3, (%rsp)
        iretq

ud_handler:
        incq ud_count(%rip)
        addq $2, (%rsp)
        iretq

bp_handler:
        incq bp_count(%rip)
        iretq

gp_handler:                             /* error code, then RIP */
        pop %rax
        mov %rax, gp_error(%rip)
        addq $2, (%rsp)                 /* skip the 2-byte int $0x82 */
        iretq

pf_handler:
        push %rax
        push %rbx
        push %rcx
        mov 24(%rsp), %rax              /* error code */
        and $0x1f, %eax
        bts %rax, pf_codes(%rip)        /* which error codes were seen */
        incq pf_count(%rip)
        mov %cr2, %rax
        mov %rax, %rbx
        sub $DEMAND, %rbx
        shr $12, %rbx
        cmp $512, %rbx
        jae pf_bad
        mov %rbx, %rcx
        shl $12, %rcx
        add $(BACKING + 7), %rcx        /* P | W | U */
        lea demand_pt(%rip), %rax
        mov %rcx, (%rax, %rbx, 8)
        mov %cr2, %rax
        invlpg (%rax)
        pop %rcx
        pop %rbx
        pop %rax
        add $8, %rsp                    /* drop the error code */
        iretq
pf_bad: movq $0x21, result(%rip)
        jmp back_in_kernel

int80_handler:                          /* frame: RIP CS RFLAGS RSP SS, on the RSP0 stack */
        cmpq $UCODE, 8(%rsp)
        jne 1f
        cmpq $UDATA, 32(%rsp)
        jne 1f
        lea kstack_top(%rip), %rax
        sub $40, %rax
        cmp %rax, %rsp
        jne 1f
        incq int80_ok(%rip)
1:      iretq

int81_handler:
        jmp back_in_kernel

syscall_entry:                          /* CPL0, user RSP, RCX = return RIP, R11 = RFLAGS */
        mov %cs, %rdx
        cmp $KCODE, %rdx
        jne 1f
        mov %ss, %rdx
        cmp $KDATA, %rdx
        jne 1f
        lea user_entry(%rip), %rdx
        cmp %rdx, %rcx
        jb 1f
        test $0x200, %r11               /* the user's IF, saved in R11 */
        jz 1f
        pushf                           /* FMASK cleared IF */
        pop %rdx
        test $0x200, %rdx
        jnz 1f
        mov $0x5678, %rax
1:      sysretq

unmap_demand:
        lea demand_pt(%rip), %rdi
        mov $512, %ecx
        xor %eax, %eax
        rep stosq
        mov %cr3, %rax
        mov %rax, %cr3
        ret

/* IDT: 256 gates, all to a catch-all that fails, then the ones under test. */
build_idt:
        xor %ebx, %ebx
1:      lea unexpected(%rip), %rax
        mov $0x8e00, %edx               /* interrupt gate, DPL0 */
        xor %ecx, %ecx
        call set_gate
        inc %ebx
        cmp $256, %ebx
        jb 1b
        mov $0, %ebx
        lea de_handler(%rip), %rax
        mov $0x8e00, %edx
        mov $1, %ecx                    /* IST1 */
        call set_gate
        mov $3, %ebx
        lea bp_handler(%rip), %rax
        mov $0xee00, %edx               /* DPL3: int3 from user mode */
        xor %ecx, %ecx
        call set_gate
        mov $6, %ebx
        lea ud_handler(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        mov $13, %ebx
        lea gp_handler(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        mov $14, %ebx
        lea pf_handler(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        mov $0x80, %ebx
        lea int80_handler(%rip), %rax
        mov $0xef00, %edx               /* trap gate, DPL3 */
        call set_gate
        mov $0x81, %ebx
        lea int81_handler(%rip), %rax
        mov $0xee00, %edx
        call set_gate
        ret                             /* 0x82 stays DPL0: user int $0x82 is a #GP */

unexpected:
        movq $0x21, result(%rip)
        jmp back_in_kernel

/* PML4[0] -> PDPT; PDPT[0] -> PD0 (64 MiB identity in 2 MiB pages, user-accessible);
   PDPT[1] -> PD1; PD1[0] -> demand_pt (DEMAND, all not present at first). */
build_page_tables:
        lea pdpt(%rip), %rax
        or $7, %rax
        mov %rax, pml4(%rip)
        lea pd0(%rip), %rax
        or $7, %rax
        mov %rax, pdpt(%rip)
        lea pd1(%rip), %rax
        or $7, %rax
        mov %rax, pdpt+8(%rip)
        lea demand_pt(%rip), %rax
        or $7, %rax
        mov %rax, pd1(%rip)
        lea pd0(%rip), %rdi
        mov $0x87, %eax                 /* P | W | U | PS */
        mov $32, %ecx
1:      mov %rax, (%rdi)
        add $0x200000, %rax
        add $8, %rdi
        loop 1b
        lea pml4(%rip), %rax
        mov %rax, %cr3
        ret

/* "de=1 ud=1 bp=2 pf=801 codes=80017 sys=3 int80=1 popcnt=10 sse=ffff gp=412 cs=23" */
report:
        lea s_de(%rip), %rsi
        mov de_count(%rip), %rax
        call field
        lea s_ud(%rip), %rsi
        mov ud_count(%rip), %rax
        call field
        lea s_bp(%rip), %rsi
        mov bp_count(%rip), %rax
        call field
        lea s_pf(%rip), %rsi
        mov pf_count(%rip), %rax
        call field
        lea s_codes(%rip), %rsi
        mov pf_codes(%rip), %rax
        call field
        lea s_sys(%rip), %rsi
        mov sys_ok(%rip), %rax
        call field
        lea s_int80(%rip), %rsi
        mov int80_ok(%rip), %rax
        call field
        lea s_popcnt(%rip), %rsi
        mov popcnt_result(%rip), %rax
        call field
        lea s_sse(%rip), %rsi
        mov sse_result(%rip), %rax
        call field
        lea s_gp(%rip), %rsi
        mov gp_error(%rip), %rax
        call field
        lea s_cs(%rip), %rsi
        mov user_cs(%rip), %rax
        call field
        mov $'\n', %al
        call putc64
        cmpq $0x21, result(%rip)
        je 1f
        cmpq $0, pf_read_sum(%rip)      /* every remapped page still held its own address */
        jne 2f
        movq $0x20, result(%rip)
1:      ret
2:      movq $0x21, result(%rip)
        ret

/* print " name=hex" (the first field without the leading space) */
field:  cmp $s_de, %rsi
        je 1f
        push %rax
        mov $' ', %al
        call putc64
        pop %rax
1:      call puts64
        jmp puthex64

        .include "lib64.S"
        .include "sys64.S"

s_de:   .asciz "de="
s_ud:   .asciz "ud="
s_bp:   .asciz "bp="
s_pf:   .asciz "pf="
s_codes: .asciz "codes="
s_sys:  .asciz "sys="
s_int80: .asciz "int80="
s_popcnt: .asciz "popcnt="
s_sse:  .asciz "sse="
s_gp:   .asciz "gp="
s_cs:   .asciz "cs="

        .balign 8
result:        .quad 0
kernel_rsp:    .quad 0
de_count:      .quad 0
ud_count:      .quad 0
bp_count:      .quad 0
pf_count:      .quad 0
pf_codes:      .quad 0
pf_read_sum:   .quad 0
gp_error:      .quad 0
sys_ok:        .quad 0
int80_ok:      .quad 0
popcnt_result: .quad 0
sse_result:    .quad 0
user_cs:       .quad 0

        .balign 4096
pml4:   .space 4096
pdpt:   .space 4096
pd0:    .space 4096
pd1:    .space 4096
demand_pt: .space 4096
        .space 4096
kstack_top:
        .space 1024
ist_top:
        .space 4096
ustack_top:
