/* Multiboot v1 -> coreboot shim in front of Debian's GRUB i386-coreboot kernel (images/grub.py
   says why). The recipe assembles it with --defsym GRUB_ENTRY in a directory holding
   grub-segments.inc: a table of GRUB's segments (source, link address, file size, memory size,
   4 longs each, between `segments` and `segments_end`) followed by their bytes. */
        .set MB_MAGIC, 0x1badb002
        .set MB_FLAGS, 0x00000002               /* memory information, please */
        .set LBIO_TABLE, 0x800                  /* GRUB scans 0x500-0x1000 in 24-byte steps */
        .set LBIO_ITEM, LBIO_TABLE + 24
        .set LBIO_END, 0x1000
        .set REGION_SIZE, 20                    /* u64 base, u64 length, u32 type */

        .code32
        .section .shim, "awx"
        .align 4
        .long MB_MAGIC, MB_FLAGS, -(MB_MAGIC + MB_FLAGS)

/* coreboot table header (signature, header size, header checksum, table size, table checksum,
   entries) and its one memory item (tag 1, size). The sizes are filled in at run time; GRUB
   checks only the signature, so the checksums stay 0. */
template:
        .ascii "LBIO"
        .long 24, 0, 0, 0, 1
        .long 1, 0
template_end:

        .balign 4
        .include "grub-segments.inc"

        .globl _start
_start: cli
        cld
        mov $LBIO_TABLE, %edi
        mov $template, %esi
        mov $(template_end - template) / 4, %ecx
        rep movsl                               /* EDI: where the first region goes */
        cmp $0x2badb002, %eax
        jne halt                                /* not entered by a multiboot loader */
        testb $0x40, (%ebx)                     /* mmap_length/mmap_addr valid? */
        jz mem_only
        mov 48(%ebx), %esi
        mov 44(%ebx), %edx
        add %esi, %edx                          /* end of the map */
1:      cmp %edx, %esi
        jae tables_done
        cmp $LBIO_END - REGION_SIZE, %edi
        ja tables_done                          /* keep the table below 0x1000 */
        lodsl                                   /* entry size, not counting this field */
        lea (%esi,%eax), %ebp
        mov $REGION_SIZE / 4, %ecx              /* an LBIO region is a multiboot entry minus its size */
        rep movsl
        mov %ebp, %esi
        jmp 1b

mem_only:                                       /* only mem_upper: one region of RAM from 1 MiB */
        testb $1, (%ebx)
        jz halt
        movl $0x100000, (%edi)
        movl $0, 4(%edi)
        mov 8(%ebx), %ecx
        shl $10, %ecx
        mov %ecx, 8(%edi)
        movl $0, 12(%edi)
        movl $1, 16(%edi)
        add $REGION_SIZE, %edi

tables_done:
        mov %edi, %eax
        sub $LBIO_ITEM, %eax
        mov %eax, LBIO_TABLE + 12               /* table size */
        mov %eax, LBIO_ITEM + 4                 /* memory item size */
        /* Only now do GRUB's segments go to their link addresses: a loader could not put the
           kernel at 0x9000 itself, since QEMU's -kernel loads an ELF as one block, which would
           span the VGA window. Copies are whole dwords (the bytes are padded to 4 with zeros),
           then the rest of each segment's memory size is zeroed. */
        mov $segments, %ebx
3:      cmp $segments_end, %ebx
        jae 5f
        mov (%ebx), %esi
        mov 4(%ebx), %edi
        mov 8(%ebx), %ecx
        add $3, %ecx
        shr $2, %ecx
        rep movsl
        mov 4(%ebx), %ecx
        add 12(%ebx), %ecx                      /* end of the segment in memory */
        sub %edi, %ecx
        jbe 4f
        xor %eax, %eax
        rep stosb
4:      add $16, %ebx
        jmp 3b
5:      mov $GRUB_ENTRY, %eax
        jmp *%eax

halt:   hlt
        jmp halt
