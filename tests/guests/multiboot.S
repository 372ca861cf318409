/* A multiboot v1 kernel that reports what its loader gave it (command line, memory, modules, the
   memory map, and the BIOS data area's COM1 port, EBDA segment and base memory), what QEMU's fw_cfg
   device says (signature, features, CPU counts, RAM size, a DMA read, the etc/e820 file), then acts on its
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

fwcfg:  print "fw_cfg sig="            /* the data port, a byte at a time */
        xor %eax, %eax
        call cfg_select
        mov $4, %ecx
1:      call cfg_byte
        call putc
        loop 1b
        print " id="
        mov $0x01, %eax
        call cfg_select
        mov $4, %ecx
        call cfg_le
        call putdec
        print " cpus="
        mov $0x05, %eax
        call cfg_select
        mov $2, %ecx
        call cfg_le
        call putdec
        print " maxcpus="
        mov $0x0f, %eax
        call cfg_select
        mov $2, %ecx
        call cfg_le
        call putdec
        print " ram="
        mov $0x03, %eax
        call cfg_select
        mov $4, %ecx
        call cfg_le
        mov %eax, %ebx
        mov $4, %ecx
        call cfg_le
        call puthex
        mov %ebx, %eax
        call puthex
        print "\n"

        print "fw_cfg dma="            /* the DMA register reads "QEMU CFG" */
        mov $0x514, %dx
        in %dx, %eax
        call put4
        mov $0x518, %dx
        in %dx, %eax
        call put4
        /* a DMA descriptor (big-endian): select key 0 and read 4 bytes into dma_buf */
        mov $0x0000000a, %eax
        bswap %eax
        mov %eax, dma_desc
        mov $4, %eax
        bswap %eax
        mov %eax, dma_desc+4
        movl $0, dma_desc+8
        mov $dma_buf, %eax
        bswap %eax
        mov %eax, dma_desc+12
        xor %eax, %eax
        mov $0x514, %dx
        out %eax, %dx
        mov $dma_desc, %eax
        bswap %eax
        mov $0x518, %dx
        out %eax, %dx                   /* the low half starts the transfer */
        print " read="
        mov dma_buf, %eax
        call put4
        print " status="
        mov dma_desc, %eax
        bswap %eax
        call putdec
        print "\n"

        mov $0x19, %eax                 /* the file directory (key 0x19): etc/e820, opt/hvm/greeting */
        call cfg_select
        mov $4, %ecx
        call cfg_be
        mov %eax, %ebx                  /* entries */
2:      test %ebx, %ebx
        jz 5f
        mov $4, %ecx
        call cfg_be
        mov %eax, %edx                  /* size */
        mov $4, %ecx
        call cfg_be
        shr $16, %eax                   /* select (then 16 reserved bits) */
        push %eax
        mov $cfg_name, %edi
        mov $56, %ecx
3:      call cfg_byte
        stosb
        loop 3b
        pop %eax
        mov $s_e820, %edi
        call cfg_named
        jne 4f
        mov %edx, e820_size
        movl $1, e820_seen
4:      mov $s_greet, %edi
        call cfg_named
        jne 4f
        mov %edx, greet_size
        mov %eax, greet_key
4:      dec %ebx
        jmp 2b
5:      print "fw_cfg e820="
        cmpl $0, e820_seen
        je 6f
        print "found size%20="
        mov e820_size, %eax
        xor %edx, %edx
        mov $20, %ecx
        div %ecx
        mov %edx, %eax
        call putdec
        jmp 7f
6:      print "missing"
7:      print "\n"
        mov greet_key, %eax             /* a file the user gave with --fw-cfg / -fw_cfg */
        test %eax, %eax
        jz cmds
        call cfg_select
        print "fw_cfg greeting=["
        mov greet_size, %ecx
        jecxz 8f
9:      call cfg_byte
        call putc
        loop 9b
8:      print "]\n"

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

/* cfg_select: select fw_cfg item %ax (a 16-bit write to the selector) */
cfg_select:
        push %edx
        mov $0x510, %dx
        out %ax, %dx
        pop %edx
        ret

/* cfg_byte: the next byte of the selected item in %al */
cfg_byte:
        push %edx
        mov $0x511, %dx
        in %dx, %al
        pop %edx
        ret

/* cfg_le / cfg_be: the next %ecx (1-4) bytes as a little- / big-endian number in %eax */
cfg_le: push %ebx
        push %ecx
        push %edx
        xor %ebx, %ebx
        xor %edx, %edx                  /* shift */
1:      call cfg_byte
        movzbl %al, %eax
        push %ecx
        mov %dl, %cl
        shl %cl, %eax
        pop %ecx
        or %eax, %ebx
        add $8, %edx
        loop 1b
        mov %ebx, %eax
        pop %edx
        pop %ecx
        pop %ebx
        ret

cfg_be: push %ebx
        push %ecx
        xor %ebx, %ebx
1:      call cfg_byte
        shl $8, %ebx
        mov %al, %bl
        loop 1b
        mov %ebx, %eax
        pop %ecx
        pop %ebx
        ret

/* cfg_named: ZF=1 if cfg_name is exactly the NUL-terminated name at %edi; keeps %eax */
cfg_named:
        push %eax
        push %esi
        mov $cfg_name, %esi
1:      mov (%edi), %al
        cmp (%esi), %al
        jne 2f
        inc %esi
        inc %edi
        test %al, %al
        jnz 1b
2:      pop %esi
        pop %eax
        ret

/* put4: write the four bytes of %eax as characters, lowest first */
put4:   push %ecx
        mov $4, %ecx
1:      call putc
        shr $8, %eax
        loop 1b
        pop %ecx
        ret

        .section .rodata
s_exit:   .asciz "exit="
s_triple: .asciz "triple"
s_popcnt: .asciz "popcnt"
s_hang:   .asciz "hang"
s_msr:    .asciz "msr"
s_mmio:   .asciz "mmio"
s_com2:   .asciz "com2"
s_e820:   .asciz "etc/e820"
s_greet:  .asciz "opt/hvm/greeting"
s_com2_text: .asciz "hello on COM2\n"
        .align 8
null_idt: .word 0
        .long 0

        .bss
        .align 16
dma_desc: .space 16
dma_buf:  .space 4
cfg_name: .space 57
        .align 4
e820_seen: .long 0
e820_size: .long 0
greet_key: .long 0
greet_size: .long 0
        .align 16
        .space 8192
stack_top:
