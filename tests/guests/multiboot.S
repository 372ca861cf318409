/* A multiboot v1 kernel that reports what its loader gave it (command line, memory, modules, the
   memory map, and the BIOS data area's COM1 port, EBDA segment and base memory), then acts on its
   command line:
   exit=N (isa-debug-exit N), poweroff, triple (triple fault), msr (WRMSR/RDMSR of 0x40000200),
   mmio (a load and a store at 0xd0000000), com2 (print on COM2), popcnt (an instruction KVM's
   emulator refuses, on MMIO so it fails on every host), hang (cli; hlt forever). */
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000003       /* page-align modules, want memory info */

        .section .multiboot, "a"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

        .code32
        .include "lib32.S"

        .text
        .globl _start
_start: mov $stack_top, %esp
        mov %ebx, %ebp                  /* multiboot info */
        cmp $0x2badb002, %eax
        je 1f
        print "bad magic\n"
        jmp poweroff
1:      print "cmdline=["
        mov 16(%ebp), %esi
        call puts
        print "]\nmem_lower="
        mov 4(%ebp), %eax
        call putdec
        print " mem_upper="
        mov 8(%ebp), %eax
        call putdec
        print "\nmods="
        mov 20(%ebp), %eax
        call putdec
        print "\n"

        mov 20(%ebp), %ecx              /* modules */
        mov 24(%ebp), %ebx
        test %ecx, %ecx
        jz mmap
2:      print "mod=["
        mov 8(%ebx), %esi
        call puts
        print "] size="
        mov 4(%ebx), %eax
        sub (%ebx), %eax
        call putdec
        print " aligned="
        mov (%ebx), %eax
        and $0xfff, %eax
        setz %al
        movzbl %al, %eax
        call putdec
        print " data=["
        push %ecx
        mov (%ebx), %esi
        mov 4(%ebx), %ecx
        sub %esi, %ecx
        cmp $16, %ecx
        jbe 3f
        mov $16, %ecx
3:      jecxz 4f
5:      lodsb
        call putc
        loop 5b
4:      pop %ecx
        print "]\n"
        add $16, %ebx
        dec %ecx
        jnz 2b

mmap:   mov 44(%ebp), %ecx              /* mmap_length */
        mov 48(%ebp), %ebx              /* mmap_addr */
        add %ebx, %ecx
1:      cmp %ecx, %ebx
        jae bios
        print "mmap "
        mov 8(%ebx), %eax
        call puthex
        mov 4(%ebx), %eax
        call puthex
        print " "
        mov 16(%ebx), %eax
        call puthex
        mov 12(%ebx), %eax
        call puthex
        print " "
        mov 20(%ebx), %eax
        call putdec
        print "\n"
        add (%ebx), %ebx
        add $4, %ebx
        jmp 1b

bios:   print "bios com1="            /* what a BIOS left in its data area */
        movzwl 0x400, %eax
        call puthex
        print " ebda="
        movzwl 0x40e, %eax
        call puthex
        print " basemem="
        movzwl 0x413, %eax
        call putdec
        print "\n"

cmds:   mov 16(%ebp), %esi              /* skip the kernel path: commands follow the first space */
1:      lodsb
        test %al, %al
        jz poweroff
        cmp $' ', %al
        jne 1b
        mov %esi, %ebp
        mov $s_exit, %edi
        call strstr
        jnz 2f
        lea 5(%eax), %esi
        call atoi
        mov $0xf4, %dx
        out %eax, %dx
        jmp hang
2:      mov %ebp, %esi
        mov $s_triple, %edi
        call strstr
        jnz 3f
        print "triple fault next\n"
        lidt null_idt
        ud2
3:      mov %ebp, %esi
        mov $s_popcnt, %edi
        call strstr
        jnz 4f
        print "popcnt on mmio next\n"
        popcnt 0xd0000000, %eax
        print "popcnt="
        call putdec
        print "\n"
        jmp poweroff
4:      mov %ebp, %esi
        mov $s_msr, %edi
        call strstr
        jnz 5f
        mov $0x40000200, %ecx           /* an MSR the test serves from Python */
        mov $0x1234, %eax
        xor %edx, %edx
        wrmsr
        rdmsr
        print "msr="
        call puthex
        print "\n"
        jmp poweroff
5:      mov %ebp, %esi
        mov $s_mmio, %edi
        call strstr
        jnz 6f
        mov 0xd0000000, %eax            /* a read and a write the test serves from Python */
        inc %eax
        mov %eax, 0xd0000004
        print "mmio="
        call puthex
        print "\n"
        jmp poweroff
6:      mov %ebp, %esi
        mov $s_com2, %edi
        call strstr
        jnz 7f
        mov $s_com2_text, %esi          /* COM2 at 0x2f8, polled like COM1 */
8:      lodsb
        test %al, %al
        jz poweroff
        mov %al, %bl
        mov $0x2fd, %dx
9:      in %dx, %al
        test $0x20, %al
        jz 9b
        mov $0x2f8, %dx
        mov %bl, %al
        out %al, %dx
        jmp 8b
7:      mov %ebp, %esi
        mov $s_hang, %edi
        call strstr
        jz hang
        jmp poweroff
hang:   cli
        hlt
        jmp hang

        .section .rodata
s_exit:   .asciz "exit="
s_triple: .asciz "triple"
s_popcnt: .asciz "popcnt"
s_hang:   .asciz "hang"
s_msr:    .asciz "msr"
s_mmio:   .asciz "mmio"
s_com2:   .asciz "com2"
s_com2_text: .asciz "hello on COM2\n"
        .align 8
null_idt: .word 0
        .long 0

        .bss
        .align 16
        .space 8192
stack_top:
