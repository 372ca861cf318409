/* CR4 and CPUID agreeing as the SDM says (flat binary at 0x100000, entered in 64-bit mode at
   CPL0), checks kvm-unit-tests' lam and xsave made of hvm's software engine:
     lam     MOV to CR4 with bit 28 (LAM_SUP) raises #GP(0) unless CPUID.(7,1):EAX[26] offers LAM
     osxsave CPUID.1:ECX.OSXSAVE (bit 27) is CR4.OSXSAVE (bit 18) as last written, and setting
             that bit raises #GP(0) exactly when CPUID.1:ECX.XSAVE (bit 26) is clear
     ymm     CPUID.(0xD,0):EAX lists the AVX state (bit 2) only with CPUID.1:ECX.AVX (bit 28)
     rdpru   RDPRU (0f 01 fd, bytes capstone cannot decode) raises #UD where CPUID.80000008H:EBX[4]
             does not offer it (under KVM on a host whose emulator refuses it, the fallback decides)
   Prints "lam=ok osxsave=ok ymm=ok rdpru=ok" (a failed check prints "bad" instead of its "ok")
   and exits through isa-debug-exit with 0x20 (status 65). */
        .set GP_VECTOR, 13
        .set UD_VECTOR, 6
        .code64
        .text
        .globl _start
_start: lea stack_top(%rip), %rsp
        lea gp_handler(%rip), %rax
        mov $GP_VECTOR, %edi
        call set_gate
        lea ud_handler(%rip), %rax
        mov $UD_VECTOR, %edi
        call set_gate
        lidt idt_ptr(%rip)

        /* lam */
        mov $7, %eax
        mov $1, %ecx
        cpuid
        bt $26, %eax
        setc %r12b                      /* LAM offered */
        movq $0, gps(%rip)
        mov %cr4, %rax
        mov %rax, %rbx
        bts $28, %rax
        mov %rax, %cr4                  /* 3 bytes: the handler steps over it */
        mov %rbx, %cr4
        mov gps(%rip), %rax
        xor $1, %rax                    /* 0 when it faulted */
        movzbq %r12b, %rcx
        cmp %rcx, %rax                  /* faulted (0) iff LAM absent (0) */
        lea lam_msg(%rip), %rsi
        call verdict

        /* osxsave */
        mov $1, %eax
        cpuid
        bt $26, %ecx
        setc %r12b                      /* XSAVE offered */
        xor %r13d, %r13d                /* failures */
        mov %cr4, %rbx
        mov %rbx, %rax
        btr $18, %rax
        mov %rax, %cr4
        call osxsave_bit
        cmp $0, %eax
        setne %al
        or %al, %r13b
        movq $0, gps(%rip)
        mov %rbx, %rax
        bts $18, %rax
        mov %rax, %cr4
        mov gps(%rip), %rax
        xor $1, %rax                    /* 1 if the write took */
        movzbq %r12b, %rcx
        cmp %rcx, %rax                  /* it takes iff XSAVE is offered */
        setne %al
        or %al, %r13b
        call osxsave_bit
        movzbl %r12b, %ecx
        cmp %ecx, %eax                  /* now set iff the write took */
        setne %al
        or %al, %r13b
        mov %rbx, %rax
        btr $18, %rax
        mov %rax, %cr4
        call osxsave_bit
        cmp $0, %eax
        setne %al
        or %al, %r13b
        mov %rbx, %cr4
        movzbq %r13b, %rax
        xor %ecx, %ecx
        cmp %rcx, %rax
        lea osxsave_msg(%rip), %rsi
        call verdict

        /* ymm */
        mov $1, %eax
        cpuid
        bt $28, %ecx
        setc %r12b                      /* AVX offered */
        xor %r14d, %r14d                /* YMM state listed */
        mov $0, %eax
        cpuid
        cmp $0xd, %eax
        jb 1f
        mov $0xd, %eax
        xor %ecx, %ecx
        cpuid
        bt $2, %eax
        setc %r14b
1:      movzbq %r14b, %rax
        movzbq %r12b, %rcx
        and %rcx, %rax                  /* listed only with AVX: listed & AVX == listed */
        movzbq %r14b, %rcx
        cmp %rcx, %rax
        lea ymm_msg(%rip), %rsi
        call verdict

        /* rdpru */
        xor %r12d, %r12d                /* offered */
        mov $0x80000000, %eax
        cpuid
        cmp $0x80000008, %eax
        jb 3f
        mov $0x80000008, %eax
        cpuid
        bt $4, %ebx
        setc %r12b
3:      movq $0, uds(%rip)
        xor %ecx, %ecx
        test %r12b, %r12b
        jnz 4f                          /* offered: nothing to check here */
        .byte 0x0f, 0x01, 0xfd          /* rdpru: 3 bytes, the #UD handler steps over them */
        mov uds(%rip), %rcx
4:      movzbq %r12b, %rax
        xor $1, %rax                    /* expected #UDs: 1 when not offered */
        and $1, %rax
        test %r12b, %r12b
        jz 5f
        xor %eax, %eax
5:      cmp %rcx, %rax
        lea rdpru_msg(%rip), %rsi
        call verdict

        mov $'\n', %al
        call putc64
        mov $0x20, %al
        out %al, $0xf4                  /* isa-debug-exit: status (0x20 << 1) | 1 */
2:      cli
        hlt
        jmp 2b

/* IDT entry %edi: a 64-bit interrupt gate to %rax in this CS. */
set_gate:
        shl $4, %edi
        lea idt(%rip), %rdx
        add %rdx, %rdi
        mov %ax, (%rdi)
        mov %cs, %dx
        mov %dx, 2(%rdi)
        movw $0x8e00, 4(%rdi)
        shr $16, %rax
        mov %ax, 6(%rdi)
        shr $16, %rax
        mov %eax, 8(%rdi)
        ret

/* CPUID.1:ECX.OSXSAVE in %eax (0 or 1). */
osxsave_bit:
        push %rbx
        push %rcx
        push %rdx
        mov $1, %eax
        cpuid
        shr $27, %ecx
        and $1, %ecx
        mov %ecx, %eax
        pop %rdx
        pop %rcx
        pop %rbx
        ret

/* Print the name at %rsi and "=ok " if the flags say equal, else "=bad ". */
verdict:
        pushf
        call puts64
        popf
        lea ok(%rip), %rsi
        je 1f
        lea bad(%rip), %rsi
1:      jmp puts64

ud_handler:                             /* frame: RIP, CS, RFLAGS, RSP, SS (no error code) */
        incq uds(%rip)
        addq $3, (%rsp)                 /* past the 3-byte instruction */
        iretq

gp_handler:                             /* frame: error code, RIP, CS, RFLAGS, RSP, SS */
        incq gps(%rip)
        addq $3, 8(%rsp)                /* past the 3-byte MOV to CR4 that faulted */
        add $8, %rsp
        iretq

        .include "lib64.S"

        .data
lam_msg:        .asciz "lam="
osxsave_msg:    .asciz "osxsave="
ymm_msg:        .asciz "ymm="
rdpru_msg:      .asciz "rdpru="
ok:             .asciz "ok "
bad:            .asciz "bad "
        .align 8
gps:            .quad 0
uds:            .quad 0
idt_ptr:        .word 256 * 16 - 1
                .quad idt
        .bss
        .align 16
idt:            .skip 256 * 16
                .skip 4096
stack_top:
