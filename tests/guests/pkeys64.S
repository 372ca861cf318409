/* Protection keys on hvm's software CPU, as kvm-unit-tests' pku and pks check them (flat binary
   at 0x100000, entered in 64-bit mode at CPL0 on hvm's identity tables of 2 MiB pages):
     cpuid  CPUID.(7,0):ECX offers PKU (bit 3) and PKS (bit 31); OSPKE (bit 4) is clear until
            CR4.PKE is set, then set
     pku    the 2-4 MiB page made a user page with key 1 and PKRU access-disabling key 1: a
            supervisor read faults with error code 0x21 (present, PK)
     pks    the same page made a supervisor page, CR4.PKS and CR0.WP set, PKRS write-disabling
            key 1: a write faults with 0x23 (present, write, PK)
     wp0    the same with CR0.WP clear: the write goes through (0: no fault)
   The #PF handler records the error code and clears PKRU and PKRS, so the access is retried and
   succeeds. Prints "cpuid=ok pku=21 pks=23 wp0=0" and exits through isa-debug-exit 0x20
   (status 65). */
        .set PKRS, 0x6e1
        .set PAGE, 0x200000
        .code64
        .text
        .globl _start
_start: lea kstack_top(%rip), %rsp
        call sys64_init
        mov $14, %ebx
        lea pf_handler(%rip), %rax
        mov $0x8e00, %edx
        xor %ecx, %ecx
        call set_gate

        mov $7, %eax
        xor %ecx, %ecx
        cpuid
        mov %ecx, %r12d
        mov %cr4, %rax
        bts $22, %rax                   /* CR4.PKE */
        mov %rax, %cr4
        mov $7, %eax
        xor %ecx, %ecx
        cpuid
        lea s_cpuid(%rip), %rsi
        call puts64
        and $0x80000018, %r12d          /* PKS, OSPKE, PKU before */
        and $0x80000018, %ecx           /* and after */
        cmp $0x80000008, %r12d
        jne 1f
        cmp $0x80000018, %ecx
        jne 1f
        lea s_ok(%rip), %rsi
        jmp 2f
1:      lea s_bad(%rip), %rsi
2:      call puts64

        /* PKU: PD entry 1 (2-4 MiB) user-accessible on every level, key 1 */
        call user_pde                   /* %rdi: the PD entry of the page */
        btsq $59, (%rdi)
        mov %cr3, %rax
        mov %rax, %cr3
        mov $4, %eax                    /* PKRU: access-disable key 1 */
        xor %ecx, %ecx
        xor %edx, %edx
        wrpkru
        movq $0, pf_error(%rip)
        mov $PAGE, %rbx
        mov (%rbx), %rax
        lea s_pku(%rip), %rsi
        call puts64
        mov pf_error(%rip), %rax
        call puthex64

        /* PKS: the page a supervisor page, key 1 write-disabled with CR0.WP set */
        andq $~4, (%rdi)
        invlpg (%rbx)
        mov %cr4, %rax
        bts $24, %rax                   /* CR4.PKS */
        mov %rax, %cr4
        mov %cr0, %rax
        bts $16, %rax                   /* CR0.WP */
        mov %rax, %cr0
        call pkrs_wd1
        movq $0, pf_error(%rip)
        movq $1, (%rbx)
        lea s_pks(%rip), %rsi
        call puts64
        mov pf_error(%rip), %rax
        call puthex64

        mov %cr0, %rax
        btr $16, %rax
        mov %rax, %cr0
        call pkrs_wd1
        movq $0, pf_error(%rip)
        movq $2, (%rbx)
        lea s_wp0(%rip), %rsi
        call puts64
        mov pf_error(%rip), %rax
        call puthex64
        mov $'\n', %al
        call putc64
        mov $0x20, %al
        out %al, $0xf4
3:      hlt
        jmp 3b

pkrs_wd1:
        mov $PKRS, %ecx
        mov $8, %eax                    /* write-disable key 1 */
        xor %edx, %edx
        wrmsr
        ret

pf_handler:
        push %rax
        push %rcx
        push %rdx
        mov 24(%rsp), %rax              /* the error code */
        mov %rax, pf_error(%rip)
        xor %eax, %eax
        xor %ecx, %ecx
        xor %edx, %edx
        wrpkru
        mov $PKRS, %ecx
        wrmsr
        pop %rdx
        pop %rcx
        pop %rax
        add $8, %rsp
        iretq

        .include "lib64.S"
        .include "sys64.S"

s_cpuid: .asciz "cpuid="
s_ok:   .asciz "ok"
s_bad:  .asciz "bad"
s_pku:  .asciz " pku="
s_pks:  .asciz " pks="
s_wp0:  .asciz " wp0="
        .balign 8
pf_error: .quad 0
        .balign 4096
        .space 4096
kstack_top:
