/* A do-nothing Xen PV kernel for the domain builder's tests (tests/unit/test_pv_builder.py): the
   code never runs; what matters is its Xen ELF notes (xen/include/public/elfnote.h) and layout.
   Linked with pvnotes64.ld at VBASE + PHYS (physical PHYS). Variants, as --defsym:
     NOTES     0 no Xen notes at all, 1 (default) ELF notes, 2 the legacy __xen_guest string
     FULL      1 (default) VIRT_BASE, ENTRY, HYPERCALL_PAGE too; 0 only what Xen insists on
     FEATURES  0 none (default), 1 Linux's, 2 "!dom0", 3 "!auto_translated_physmap",
               4 an unknown required name, 5 an unknown plain name
     ENTRY     ENTRY note value (default _start)
     INIT_P2M  when defined, the INIT_P2M note; MOD_START_PFN likewise
     BSS_SIZE  bytes of .bss (default one page) */

.macro xennote type, kind, value:vararg
        .pushsection .note.Xen, "a", @note
        .balign 4
        .long 4                         /* namesz: "Xen\0" */
        .long 2f - 1f                   /* descsz */
        .long \type
        .asciz "Xen"
1:      \kind \value
2:      .balign 4
        .popsection
.endm

.ifndef NOTES
        .set NOTES, 1
.endif
.ifndef FULL
        .set FULL, 1
.endif
.ifndef FEATURES
        .set FEATURES, 0
.endif
.ifndef BSS_SIZE
        .set BSS_SIZE, 4096
.endif

        .text
        .globl _start
_start: hlt
        jmp _start

        .balign 4096
        .globl hypercall_page
hypercall_page:                         /* pre-filled with ret, as XTF does */
        .fill 4096, 1, 0xc3

        .data
        .globl data_marker
data_marker:
        .ascii "pvnotes64 data\n"

        .bss
        .balign 4096
        .skip BSS_SIZE

.if NOTES == 1
        xennote 6, .asciz, "hvm-test"                   /* GUEST_OS */
        xennote 8, .asciz, "generic"                    /* LOADER */
        xennote 5, .asciz, "xen-3.0"                    /* XEN_VERSION */
  .if FULL
        xennote 3, .quad, VBASE                         /* VIRT_BASE */
        xennote 4, .quad, 0                             /* PADDR_OFFSET */
    .ifdef ENTRY
        xennote 1, .quad, ENTRY
    .else
        xennote 1, .quad, _start                        /* ENTRY */
    .endif
        xennote 2, .quad, hypercall_page                /* HYPERCALL_PAGE */
        xennote 12, .quad, 0xffff800000000000           /* HV_START_LOW */
        xennote 17, .long, 0x801                        /* SUPPORTED_FEATURES */
  .endif
  .ifdef INIT_P2M
        xennote 15, .quad, INIT_P2M
  .endif
  .ifdef MOD_START_PFN
        xennote 16, .long, 1
  .endif
  .if FEATURES == 1
        xennote 10, .ascii, "!writable_page_tables|pae_pgdir_above_4gb"
  .elseif FEATURES == 2
        xennote 10, .asciz, "!dom0"
  .elseif FEATURES == 3
        xennote 10, .asciz, "pae_pgdir_above_4gb|!auto_translated_physmap"
  .elseif FEATURES == 4
        xennote 10, .asciz, "!no_such_feature"
  .elseif FEATURES == 5
        xennote 10, .asciz, "no_such_feature|writable_descriptor_tables"
  .endif
.elseif NOTES == 2
        /* Before ELF notes: p_paddr held virtual addresses, ELF_PADDR_OFFSET defaulted to
           VIRT_BASE and HYPERCALL_PAGE was a page number from VIRT_BASE. */
        .section __xen_guest
        .asciz "GUEST_OS=linux,XEN_VER=xen-3.0,VIRT_BASE=0xffffffff80000000,HYPERCALL_PAGE=0x201,LOADER=generic"
.endif
