/* Instruction-set check in long mode (flat binary at 0x100000, entered in 64-bit mode; -m 16M).
   At CPL0 it runs instructions this project's KVM host refuses in its instruction emulator
   (popcnt, crc32, SSE arithmetic and a #PF it raises, cmpxchg16b, int3, INT n, clac/stac,
   rdtscp), then enters CPL3 with iretq, runs popcnt/crc32/SSE there, takes two #BPs from CPL3 (the second one's handler goes
   back to the kernel: a CPL3 -> CPL0 round trip that works without SYSCALL), and prints
     "popcnt=10 crc=<crc32c> sse=ffff paddd=<sum> cx16=7 pf=40000000 bp=1 intn=1 ac=3 tscp=3
      ubp=2 ucpl=3 upopcnt=10 ucrc=<crc32c> usse=ffff lzcnt=<1: right | 2: hidden by CPUID>"
   then exits through isa-debug-exit with 0x20 (status 65) when every check held, 0x21 (67)
   otherwise. Every value is compared inside the guest too, so a silent mis-execution (lzcnt run
   as bsr) fails it. */
        .set TSC_AUX, 0xc0000103
        .set AUX_VALUE, 0x2a
        .set UNMAPPED, 0x40000000       /* PDPT[1] is not present */

        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        call sys64_init
        mov %rsp, kernel_rsp(%rip)      /* where back_in_kernel (and `unexpected`) resume */
        call build_idt
        call build_page_tables
        mov %cr0, %rax                  /* SSE: CR0.EM=0, MP=1; CR4.OSFXSR|OSXMMEXCPT */
        and $~4, %rax
        or $2, %rax
        mov %rax, %cr0
        mov %cr4, %rax
        or $0x600, %rax
        mov %rax, %cr4

        /* ---- CPL0 ---- */
        mov $0xf0f0f0f0, %eax
        popcnt %eax, %eax
        mov %rax, k_popcnt(%rip)
        call crc_of_data
        mov %rax, k_crc(%rip)
        call sse_mask
        mov %rax, k_sse(%rip)
        movdqu vec_a(%rip), %xmm1       /* data-dependent SSE: a lane-wise sum stored back */
        movdqu vec_b(%rip), %xmm2
        paddd %xmm2, %xmm1
        movdqu %xmm1, vec_sum(%rip)
        mov vec_sum(%rip), %rax
        xor vec_sum+8(%rip), %rax
        mov %rax, k_paddd(%rip)
        /* cmpxchg16b: a match stores RCX:RBX (ZF=1), a mismatch loads memory (ZF=0). */
        xor %r8d, %r8d
        mov $1, %eax
        mov $2, %edx
        mov $3, %ebx
        mov $4, %ecx
        lock cmpxchg16b pair(%rip)
        jnz 2f
        or $1, %r8
2:      cmpq $3, pair(%rip)
        jne 3f
        cmpq $4, pair+8(%rip)
        jne 3f
        or $2, %r8
3:      xor %eax, %eax
        lock cmpxchg16b pair(%rip)
        jz 4f
        cmp $3, %rax
        jne 4f
        cmp $4, %rdx
        jne 4f
        or $4, %r8
4:      mov %r8, k_cx16(%rip)
        /* A #PF raised by an SSE memory operand: CR2 and the error code (read, supervisor,
           not present: 0) reach the handler, which resumes at pf_ret. */
        paddd UNMAPPED, %xmm1
pf_ret:
        /* int3 at CPL0: the handler checks the return address. */
        int3
bp_ret0:
        int $0x30                       /* INT n at CPL0: its handler checks the return address */
int_ret0:
        /* stac sets RFLAGS.AC, clac clears it. */
        xor %r8d, %r8d
        stac
        pushf
        pop %rax
        bt $18, %rax
        jnc 5f
        or $1, %r8
5:      clac
        pushf
        pop %rax
        bt $18, %rax
        jc 6f
        or $2, %r8
6:      mov %r8, k_ac(%rip)
        /* rdtscp: TSC_AUX in ECX, a TSC between two RDTSCs. */
        xor %r8d, %r8d
        mov $TSC_AUX, %ecx
        mov $AUX_VALUE, %eax
        xor %edx, %edx
        wrmsr
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        mov %rdx, %r9
        rdtscp
        cmp $AUX_VALUE, %ecx
        jne 7f
        or $1, %r8
7:      shl $32, %rdx
        or %rax, %rdx
        mov %rdx, %r10
        rdtsc
        shl $32, %rdx
        or %rax, %rdx
        cmp %r9, %r10
        jb 8f
        cmp %r10, %rdx
        jb 8f
        or $2, %r8
8:      mov %r8, k_tscp(%rip)
        /* lzcnt is checked only where CPUID advertises it (leaf 0x80000001 ECX bit 5). */
        movq $2, lzcnt_state(%rip)      /* 2: hidden */
        mov $0x80000001, %eax
        xor %ecx, %ecx
        cpuid
        bt $5, %ecx
        jnc 9f
        movq $0, lzcnt_state(%rip)
        mov $0x00f00000, %eax
        lzcnt %eax, %eax                /* 8; BSR would give 23 */
        cmp $8, %eax
        jne 9f
        movq $1, lzcnt_state(%rip)      /* 1: ok */
9:
        /* ---- to CPL3 ---- */
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
1:      cli
        hlt
        jmp 1b

user_entry:
        mov %cs, %eax                   /* the CPL (the selector itself is the host's to pick: */
        and $3, %eax                    /*  a paravirtual KVM may show its own) */
        mov %rax, u_cpl(%rip)
        mov $0xf0f0f0f0, %eax
        popcnt %eax, %eax
        mov %rax, u_popcnt(%rip)
        call crc_of_data
        mov %rax, u_crc(%rip)
        call sse_mask
        mov %rax, u_sse(%rip)
        int3                            /* returns here */
        int3                            /* goes back to the kernel */
1:      jmp 1b

/* crc32c of the 16 bytes at `data`, from ~0 (SSE4.2 crc32, quadword steps): in %rax. */
crc_of_data:
        mov $0xffffffff, %eax
        crc32q data(%rip), %rax
        crc32q data+8(%rip), %rax
        ret

/* pcmpeqb of a register with itself, as a byte mask: 0xffff. */
sse_mask:
        pcmpeqb %xmm0, %xmm0
        pmovmskb %xmm0, %eax
        ret

bp_handler:                             /* frame: RIP CS RFLAGS RSP SS */
        cmpq $UCODE, 8(%rsp)
        je 2f
        lea bp_ret0(%rip), %rax         /* CPL0: the return address is past the int3 */
        cmp %rax, (%rsp)
        jne 1f
        incq k_bp(%rip)
1:      iretq
2:      incq u_bp(%rip)                 /* CPL3: the frame must be on the RSP0 stack */
        lea kstack_top(%rip), %rax
        sub $40, %rax
        cmp %rax, %rsp
        je 3f
        movq $0x21, result(%rip)
3:      cmpq $2, u_bp(%rip)
        jb 1b
        jmp back_in_kernel

pf_handler:
        mov %cr2, %rax
        or (%rsp), %rax                 /* the error code, in the low bits CR2 leaves clear */
        mov %rax, k_pf(%rip)
        add $8, %rsp
        lea pf_ret(%rip), %rax
        mov %rax, (%rsp)
        iretq

int30_handler:
        lea int_ret0(%rip), %rax
        cmp %rax, (%rsp)
        jne 1f
        incq k_intn(%rip)
1:      iretq

unexpected:
        movq $0x21, result(%rip)
        jmp back_in_kernel

build_idt:
        xor %ebx, %ebx
        xor %ecx, %ecx                  /* no IST */
1:      lea unexpected(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        inc %ebx
        cmp $256, %ebx
        jb 1b
        mov $3, %ebx
        lea bp_handler(%rip), %rax
        mov $0xee00, %edx               /* DPL3 interrupt gate: int3 from user mode */
        call set_gate
        mov $14, %ebx
        lea pf_handler(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        mov $0x30, %ebx
        lea int30_handler(%rip), %rax
        mov $0x8e00, %edx
        call set_gate
        ret

/* PML4[0] -> PDPT[0] -> PD: 16 MiB identity in 2 MiB user-accessible pages. */
build_page_tables:
        lea pdpt(%rip), %rax
        or $7, %rax
        mov %rax, pml4(%rip)
        lea pd(%rip), %rax
        or $7, %rax
        mov %rax, pdpt(%rip)
        lea pd(%rip), %rdi
        mov $0x87, %eax                 /* P | W | U | PS */
        mov $8, %ecx
1:      mov %rax, (%rdi)
        add $0x200000, %rax
        add $8, %rdi
        loop 1b
        lea pml4(%rip), %rax
        mov %rax, %cr3
        ret

/* Print the fields; result 0x20 only if every value is the expected one. */
report:
        lea fields(%rip), %r12
        xor %r13d, %r13d                /* mismatches */
1:      mov (%r12), %rsi
        test %rsi, %rsi
        jz 3f
        cmp fields(%rip), %rsi
        je 2f
        mov $' ', %al
        call putc64
2:      call puts64
        mov 8(%r12), %rdi
        mov (%rdi), %rax
        call puthex64
        mov 16(%r12), %rdx
        cmp $-1, %rdx                   /* -1: any nonzero value passes */
        jne 6f
        test %rax, %rax
        jnz 4f
        inc %r13
        jmp 4f
6:      cmp %rdx, %rax
        je 4f
        inc %r13
4:      add $24, %r12
        jmp 1b
3:      mov $'\n', %al
        call putc64
        cmpq $0x21, result(%rip)
        je 5f
        test %r13, %r13
        jnz 5f
        movq $0x20, result(%rip)
        ret
5:      movq $0x21, result(%rip)
        ret

        .include "lib64.S"
        .include "sys64.S"

        .balign 8
/* name, value address, expected value; the crc values are crc32c(data) from ~0, no final xor */
fields: .quad s_popcnt, k_popcnt, 0x10
        .quad s_crc, k_crc, CRC
        .quad s_sse, k_sse, 0xffff
        .quad s_paddd, k_paddd, PADDD
        .quad s_cx16, k_cx16, 7
        .quad s_pf, k_pf, UNMAPPED
        .quad s_bp, k_bp, 1
        .quad s_intn, k_intn, 1
        .quad s_ac, k_ac, 3
        .quad s_tscp, k_tscp, 3
        .quad s_ubp, u_bp, 2
        .quad s_ucpl, u_cpl, 3
        .quad s_upopcnt, u_popcnt, 0x10
        .quad s_ucrc, u_crc, CRC
        .quad s_usse, u_sse, 0xffff
        .quad s_lzcnt, lzcnt_state, LZCNT_OK_OR_HIDDEN
        .quad 0
        .set CRC, 0x78b6ad9a
        .set PADDD, 0x8000002200000022
        /* lzcnt_state: 1 = advertised and right, 2 = hidden; both pass, 0 (wrong) does not */
        .set LZCNT_OK_OR_HIDDEN, -1

s_popcnt: .asciz "popcnt="
s_crc:  .asciz "crc="
s_sse:  .asciz "sse="
s_paddd: .asciz "paddd="
s_cx16: .asciz "cx16="
s_pf:   .asciz "pf="
s_bp:   .asciz "bp="
s_intn: .asciz "intn="
s_ac:   .asciz "ac="
s_tscp: .asciz "tscp="
s_ubp:  .asciz "ubp="
s_ucpl: .asciz "ucpl="
s_upopcnt: .asciz "upopcnt="
s_ucrc: .asciz "ucrc="
s_usse: .asciz "usse="
s_lzcnt: .asciz "lzcnt="

        .balign 16
data:   .quad 0x0123456789abcdef, 0xfedcba9876543210
vec_a:  .long 1, 2, 3, 0x7fffffff
vec_b:  .long 0x10, 0x20, 0x30, 1
vec_sum: .quad 0, 0
pair:   .quad 1, 2
result:      .quad 0
kernel_rsp:  .quad 0
k_popcnt:    .quad 0
k_crc:       .quad 0
k_sse:       .quad 0
k_paddd:     .quad 0
k_cx16:      .quad 0
k_pf:        .quad 0
k_bp:        .quad 0
k_intn:      .quad 0
k_ac:        .quad 0
k_tscp:      .quad 0
u_bp:        .quad 0
u_cpl:       .quad 0
u_popcnt:    .quad 0
u_crc:       .quad 0
u_sse:       .quad 0
lzcnt_state: .quad 0

        .balign 4096
pml4:   .space 4096
pdpt:   .space 4096
pd:     .space 4096
        .space 4096
kstack_top:
        .space 4096
ustack_top:
