"""cffi API-mode builder: every ioctl number, constant and struct layout comes from <linux/kvm.h>.

Structs are declared partially (``...;``) so the C compiler checks each field we name against the
system header and fills in sizes and offsets; nothing is hand-copied.
"""
from __future__ import annotations

from cffi import FFI

IOCTLS = [
    # /dev/kvm
    "KVM_GET_API_VERSION", "KVM_CREATE_VM", "KVM_CHECK_EXTENSION", "KVM_GET_VCPU_MMAP_SIZE",
    "KVM_GET_SUPPORTED_CPUID", "KVM_GET_MSR_INDEX_LIST", "KVM_GET_MSR_FEATURE_INDEX_LIST",
    # VM
    "KVM_CREATE_VCPU", "KVM_SET_USER_MEMORY_REGION", "KVM_CREATE_IRQCHIP", "KVM_CREATE_PIT2",
    "KVM_IRQ_LINE", "KVM_IRQ_LINE_STATUS", "KVM_SIGNAL_MSI", "KVM_IOEVENTFD", "KVM_IRQFD",
    "KVM_X86_SET_MSR_FILTER", "KVM_SET_TSS_ADDR", "KVM_SET_IDENTITY_MAP_ADDR", "KVM_GET_DIRTY_LOG",
    "KVM_ENABLE_CAP", "KVM_SET_GSI_ROUTING", "KVM_GET_CLOCK", "KVM_SET_CLOCK",
    # vCPU
    "KVM_RUN", "KVM_GET_REGS", "KVM_SET_REGS", "KVM_GET_SREGS", "KVM_SET_SREGS", "KVM_GET_FPU",
    "KVM_SET_FPU", "KVM_GET_XCRS", "KVM_SET_XCRS", "KVM_GET_MSRS", "KVM_SET_MSRS", "KVM_SET_CPUID2",
    "KVM_GET_CPUID2", "KVM_GET_LAPIC", "KVM_SET_LAPIC", "KVM_GET_MP_STATE", "KVM_SET_MP_STATE",
    "KVM_GET_VCPU_EVENTS", "KVM_SET_VCPU_EVENTS", "KVM_GET_DEBUGREGS", "KVM_SET_DEBUGREGS",
    "KVM_SET_GUEST_DEBUG", "KVM_TRANSLATE", "KVM_INTERRUPT",
    "KVM_REGISTER_COALESCED_MMIO", "KVM_UNREGISTER_COALESCED_MMIO",
]

CONSTANTS = [
    "KVM_API_VERSION",
    "KVM_EXIT_UNKNOWN", "KVM_EXIT_EXCEPTION", "KVM_EXIT_IO", "KVM_EXIT_HYPERCALL", "KVM_EXIT_DEBUG",
    "KVM_EXIT_HLT", "KVM_EXIT_MMIO", "KVM_EXIT_IRQ_WINDOW_OPEN", "KVM_EXIT_SHUTDOWN",
    "KVM_EXIT_FAIL_ENTRY", "KVM_EXIT_INTR", "KVM_EXIT_SET_TPR", "KVM_EXIT_TPR_ACCESS",
    "KVM_EXIT_NMI", "KVM_EXIT_INTERNAL_ERROR", "KVM_EXIT_SYSTEM_EVENT", "KVM_EXIT_IOAPIC_EOI",
    "KVM_EXIT_X86_RDMSR", "KVM_EXIT_X86_WRMSR", "KVM_EXIT_X86_BUS_LOCK",
    "KVM_EXIT_IO_IN", "KVM_EXIT_IO_OUT",
    "KVM_INTERNAL_ERROR_EMULATION", "KVM_INTERNAL_ERROR_SIMUL_EX", "KVM_INTERNAL_ERROR_DELIVERY_EV",
    "KVM_INTERNAL_ERROR_UNEXPECTED_EXIT_REASON", "KVM_INTERNAL_ERROR_EMULATION_FLAG_INSTRUCTION_BYTES",
    "KVM_SYSTEM_EVENT_SHUTDOWN", "KVM_SYSTEM_EVENT_RESET", "KVM_SYSTEM_EVENT_CRASH",
    "KVM_MP_STATE_RUNNABLE", "KVM_MP_STATE_UNINITIALIZED", "KVM_MP_STATE_INIT_RECEIVED",
    "KVM_MP_STATE_HALTED", "KVM_MP_STATE_SIPI_RECEIVED",
    "KVM_MEM_LOG_DIRTY_PAGES", "KVM_MEM_READONLY",
    "KVM_MSR_EXIT_REASON_INVAL", "KVM_MSR_EXIT_REASON_UNKNOWN", "KVM_MSR_EXIT_REASON_FILTER",
    "KVM_MSR_FILTER_READ", "KVM_MSR_FILTER_WRITE", "KVM_MSR_FILTER_DEFAULT_ALLOW",
    "KVM_MSR_FILTER_DEFAULT_DENY", "KVM_MSR_FILTER_MAX_RANGES",
    "KVM_IOEVENTFD_FLAG_DATAMATCH", "KVM_IOEVENTFD_FLAG_PIO", "KVM_IOEVENTFD_FLAG_DEASSIGN",
    "KVM_IRQFD_FLAG_DEASSIGN", "KVM_PIT_SPEAKER_DUMMY",
    "KVM_IRQ_ROUTING_IRQCHIP", "KVM_IRQCHIP_PIC_MASTER", "KVM_IRQCHIP_PIC_SLAVE", "KVM_IRQCHIP_IOAPIC",
    "KVM_GUESTDBG_ENABLE", "KVM_GUESTDBG_SINGLESTEP", "KVM_GUESTDBG_USE_SW_BP",
    "KVM_GUESTDBG_USE_HW_BP", "KVM_GUESTDBG_INJECT_DB", "KVM_GUESTDBG_INJECT_BP",
    # capabilities we name in errors or probe
    "KVM_CAP_IRQCHIP", "KVM_CAP_HLT", "KVM_CAP_USER_MEMORY", "KVM_CAP_SET_TSS_ADDR",
    "KVM_CAP_EXT_CPUID", "KVM_CAP_NR_VCPUS", "KVM_CAP_MAX_VCPUS", "KVM_CAP_NR_MEMSLOTS",
    "KVM_CAP_PIT2", "KVM_CAP_IOEVENTFD", "KVM_CAP_IRQFD", "KVM_CAP_SIGNAL_MSI",
    "KVM_CAP_SET_IDENTITY_MAP_ADDR", "KVM_CAP_IMMEDIATE_EXIT", "KVM_CAP_X86_USER_SPACE_MSR",
    "KVM_CAP_X86_MSR_FILTER", "KVM_CAP_INTERNAL_ERROR_DATA", "KVM_CAP_DEBUGREGS", "KVM_CAP_XCRS",
    "KVM_CAP_VCPU_EVENTS", "KVM_CAP_MP_STATE", "KVM_CAP_SET_GUEST_DEBUG", "KVM_CAP_XEN_HVM",
    "KVM_CAP_HYPERV", "KVM_CAP_GUEST_DEBUG_HW_BPS", "KVM_CAP_ADJUST_CLOCK", "KVM_CAP_SYNC_MMU",
    "KVM_CAP_IRQ_ROUTING", "KVM_CAP_TSC_CONTROL", "KVM_CAP_X86_DISABLE_EXITS", "KVM_CAP_READONLY_MEM",
    "KVM_CAP_COALESCED_MMIO", "KVM_CAP_COALESCED_PIO", "KVM_COALESCED_MMIO_PAGE_OFFSET",
    "KVM_CAP_SYNC_REGS", "KVM_SYNC_X86_REGS", "KVM_SYNC_X86_SREGS",
]

CDEF = """
struct kvm_userspace_memory_region { uint32_t slot; uint32_t flags; uint64_t guest_phys_addr;
    uint64_t memory_size; uint64_t userspace_addr; };
struct kvm_regs { uint64_t rax, rbx, rcx, rdx, rsi, rdi, rsp, rbp, r8, r9, r10, r11, r12, r13,
    r14, r15, rip, rflags; };
struct kvm_segment { uint64_t base; uint32_t limit; uint16_t selector; uint8_t type, present, dpl,
    db, s, l, g, avl; uint8_t unusable; ...; };
struct kvm_dtable { uint64_t base; uint16_t limit; ...; };
struct kvm_sregs { struct kvm_segment cs, ds, es, fs, gs, ss, tr, ldt; struct kvm_dtable gdt, idt;
    uint64_t cr0, cr2, cr3, cr4, cr8, efer, apic_base; uint64_t interrupt_bitmap[...]; };
struct kvm_fpu { uint8_t fpr[8][16]; uint16_t fcw, fsw; uint8_t ftwx; uint16_t last_opcode;
    uint64_t last_ip, last_dp; uint8_t xmm[16][16]; uint32_t mxcsr; ...; };
struct kvm_xcr { uint32_t xcr; uint64_t value; ...; };
struct kvm_xcrs { uint32_t nr_xcrs; uint32_t flags; struct kvm_xcr xcrs[...]; ...; };
struct kvm_msr_entry { uint32_t index; uint64_t data; ...; };
struct kvm_msrs { uint32_t nmsrs; struct kvm_msr_entry entries[]; ...; };
struct kvm_msr_list { uint32_t nmsrs; uint32_t indices[]; };
struct kvm_cpuid_entry2 { uint32_t function, index, flags, eax, ebx, ecx, edx; ...; };
struct kvm_cpuid2 { uint32_t nent; struct kvm_cpuid_entry2 entries[]; ...; };
struct kvm_lapic_state { char regs[...]; };
struct kvm_mp_state { uint32_t mp_state; };
struct kvm_debugregs { uint64_t db[4]; uint64_t dr6; uint64_t dr7; uint64_t flags; ...; };
struct kvm_guest_debug_arch { uint64_t debugreg[8]; };
struct kvm_guest_debug { uint32_t control; struct kvm_guest_debug_arch arch; ...; };
struct kvm_translation { uint64_t linear_address; uint64_t physical_address; uint8_t valid,
    writeable, usermode; ...; };
struct kvm_interrupt { uint32_t irq; };
struct kvm_irq_level { uint32_t irq; uint32_t level; ...; };
struct kvm_msi { uint32_t address_lo, address_hi, data, flags; ...; };
struct kvm_pit_config { uint32_t flags; ...; };
struct kvm_ioeventfd { uint64_t datamatch; uint64_t addr; uint32_t len; int32_t fd;
    uint32_t flags; ...; };
struct kvm_irqfd { uint32_t fd; uint32_t gsi; uint32_t flags; uint32_t resamplefd; ...; };
struct kvm_msr_filter_range { uint32_t flags; uint32_t nmsrs; uint32_t base; uint8_t *bitmap; };
struct kvm_msr_filter { uint32_t flags; struct kvm_msr_filter_range ranges[...]; };
struct kvm_enable_cap { uint32_t cap; uint32_t flags; uint64_t args[4]; ...; };
struct kvm_dirty_log { uint32_t slot; void *dirty_bitmap; ...; };
typedef struct { uint8_t injected; uint8_t nr; uint8_t has_error_code; uint8_t pending;
    uint32_t error_code; } hvm_events_exception;
typedef struct { uint8_t injected; uint8_t nr; uint8_t soft; uint8_t shadow; } hvm_events_interrupt;
typedef struct { uint8_t injected; uint8_t pending; uint8_t masked; uint8_t pad; } hvm_events_nmi;
struct kvm_vcpu_events { hvm_events_exception exception; hvm_events_interrupt interrupt;
    hvm_events_nmi nmi; uint32_t sipi_vector; uint32_t flags; ...; };
struct kvm_clock_data { uint64_t clock; uint32_t flags; ...; };
struct kvm_irq_routing_irqchip { uint32_t irqchip; uint32_t pin; };
struct kvm_irq_routing_entry { uint32_t gsi; uint32_t type; uint32_t flags; ...; };
struct kvm_irq_routing { uint32_t nr; uint32_t flags; struct kvm_irq_routing_entry entries[]; ...; };
static const int HVM_ROUTE_UNION_OFFSET;

/* The vCPU's exit exchange page: fixed part, then one union member per exit reason. */
struct kvm_run { uint8_t request_interrupt_window; uint8_t immediate_exit; uint32_t exit_reason;
    uint8_t ready_for_interrupt_injection; uint8_t if_flag; uint16_t flags; uint64_t cr8;
    uint64_t apic_base; uint64_t kvm_valid_regs; uint64_t kvm_dirty_regs; ...; };
struct kvm_sync_regs { struct kvm_regs regs; struct kvm_sregs sregs; ...; };
static const int HVM_RUN_SYNC_OFFSET;
typedef struct { uint8_t direction; uint8_t size; uint16_t port; uint32_t count;
    uint64_t data_offset; } hvm_run_io;
typedef struct { uint64_t phys_addr; uint8_t data[8]; uint32_t len; uint8_t is_write; } hvm_run_mmio;
typedef struct { uint64_t hardware_entry_failure_reason; uint32_t cpu; } hvm_run_fail_entry;
typedef struct { uint32_t exception; uint32_t error_code; } hvm_run_ex;
typedef struct { uint32_t suberror; uint32_t ndata; uint64_t data[16]; } hvm_run_internal;
typedef struct { uint32_t suberror; uint32_t ndata; uint64_t flags; uint8_t insn_size;
    uint8_t insn_bytes[15]; } hvm_run_emulation_failure;
typedef struct { uint32_t type; uint32_t ndata; uint64_t data[16]; } hvm_run_system_event;
typedef struct { uint8_t error; uint8_t pad[7]; uint32_t reason; uint32_t index;
    uint64_t data; } hvm_run_msr;
typedef struct { uint32_t exception; uint32_t pad; uint64_t pc; uint64_t dr6; uint64_t dr7; } hvm_run_debug;

static const int HVM_RUN_EXIT_UNION_OFFSET;

struct kvm_coalesced_mmio_zone { uint64_t addr; uint32_t size; ...; };
typedef struct { uint64_t addr; uint32_t len; uint32_t pio; uint8_t data[8]; } hvm_coalesced;
typedef struct { uint16_t port; uint16_t state; uint32_t pad; uint64_t hits; } hvm_published;
static const int HVM_PUBLISHED_SLOTS;

int hvm_ioctl(int fd, unsigned long request, void *arg);
int hvm_run_served(int fd, struct kvm_run *run, void *ring, hvm_published *published, uint64_t *served);
int hvm_ring_pop(void *ring, hvm_coalesced *out);
int hvm_zone_pio(struct kvm_coalesced_mmio_zone *zone, uint32_t pio);
int hvm_ioctl_int(int fd, unsigned long request, unsigned long arg);
int hvm_install_kick_handler(int signo);
"""

SOURCE = r"""
#include <errno.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/ioctl.h>
#include <linux/kvm.h>

/* Named views of the anonymous kvm_run union members, typed by the header itself. */
typedef typeof(((struct kvm_vcpu_events *)0)->exception) hvm_events_exception;
typedef typeof(((struct kvm_vcpu_events *)0)->interrupt) hvm_events_interrupt;
typedef typeof(((struct kvm_vcpu_events *)0)->nmi) hvm_events_nmi;
typedef typeof(((struct kvm_run *)0)->io) hvm_run_io;
typedef typeof(((struct kvm_run *)0)->mmio) hvm_run_mmio;
typedef typeof(((struct kvm_run *)0)->fail_entry) hvm_run_fail_entry;
typedef typeof(((struct kvm_run *)0)->ex) hvm_run_ex;
typedef typeof(((struct kvm_run *)0)->internal) hvm_run_internal;
typedef typeof(((struct kvm_run *)0)->emulation_failure) hvm_run_emulation_failure;
typedef typeof(((struct kvm_run *)0)->system_event) hvm_run_system_event;
typedef typeof(((struct kvm_run *)0)->msr) hvm_run_msr;
typedef struct { __u32 exception; __u32 pad; __u64 pc; __u64 dr6; __u64 dr7; } hvm_run_debug;
_Static_assert(sizeof(hvm_run_debug) == sizeof(((struct kvm_run *)0)->debug.arch), "debug layout");

static const int HVM_RUN_EXIT_UNION_OFFSET = offsetof(struct kvm_run, io);
static const int HVM_RUN_SYNC_OFFSET = offsetof(struct kvm_run, s.regs);
static const int HVM_ROUTE_UNION_OFFSET = offsetof(struct kvm_irq_routing_entry, u);

/* One typed entry point per argument kind: cffi calls release the GIL, so KVM_RUN blocks
   only its own thread. */
static int hvm_ioctl(int fd, unsigned long request, void *arg) { return ioctl(fd, request, arg); }
static int hvm_ioctl_int(int fd, unsigned long request, unsigned long arg)
{ return ioctl(fd, request, arg); }

/* Published registers (hvm/published.py): a device keeps the current value of a status register
   whose read changes nothing in ``state`` (0x100 | value; 0 while a read would have an effect),
   so a one-byte IN of it is answered here without a trip through Python. Same layout as the
   Python side's struct. */
typedef struct { uint16_t port; uint16_t state; uint32_t pad; uint64_t hits; } hvm_published;
static const int HVM_PUBLISHED_SLOTS = 8;
typedef struct { uint64_t addr; uint32_t len; uint32_t pio; uint8_t data[8]; } hvm_coalesced;

/* The coalesced ring page is 4 KiB on x86 (KVM_COALESCED_MMIO_MAX uses the kernel's PAGE_SIZE). */
#define HVM_RING_MAX ((4096 - sizeof(struct kvm_coalesced_mmio_ring)) / sizeof(struct kvm_coalesced_mmio))

static int hvm_ring_pending(void *ring_page)
{
    struct kvm_coalesced_mmio_ring *ring = ring_page;
    return ring && ring->first != __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE);
}

/* KVM_RUN until an exit the caller must see: < 0 (errno set) when KVM_RUN failed, 1 when the
   coalesced ring holds writes (the caller applies them before the exit, keeping the guest's
   order), else 0. Reads of published registers are answered in between and counted in
   ``served``. */
static int hvm_run_served(int fd, struct kvm_run *run, void *ring, hvm_published *published, uint64_t *served)
{
    for (;;) {
        int ret = ioctl(fd, KVM_RUN, 0);
        if (ret < 0)
            return ret;
        if (hvm_ring_pending(ring))
            return 1;
        if (run->exit_reason != KVM_EXIT_IO || run->io.direction != KVM_EXIT_IO_IN ||
            run->io.size != 1 || run->io.count != 1)
            return 0;
        int i;
        uint16_t state = 0;
        for (i = 0; i < HVM_PUBLISHED_SLOTS; i++) {
            if (published[i].port == run->io.port) {
                state = __atomic_load_n(&published[i].state, __ATOMIC_ACQUIRE);
                break;
            }
        }
        if (!(state & 0x100))
            return 0;
        ((__u8 *)run)[run->io.data_offset] = (__u8)state;
        __atomic_fetch_add(&published[i].hits, 1, __ATOMIC_RELAXED);
        (*served)++;
    }
}

/* Take the oldest coalesced write off the ring (KVM API, KVM_REGISTER_COALESCED_MMIO): 1 if
   there was one. The caller serialises consumers; KVM is the only producer. */
static int hvm_ring_pop(void *ring_page, hvm_coalesced *out)
{
    struct kvm_coalesced_mmio_ring *ring = ring_page;
    __u32 first = ring->first;
    if (first == __atomic_load_n(&ring->last, __ATOMIC_ACQUIRE))
        return 0;
    struct kvm_coalesced_mmio *e = &ring->coalesced_mmio[first];
    out->addr = e->phys_addr;
    out->len = e->len;
    out->pio = e->pio;
    memcpy(out->data, e->data, sizeof(out->data));
    __atomic_store_n(&ring->first, (first + 1) % HVM_RING_MAX, __ATOMIC_RELEASE);
    return 1;
}

/* The zone's ``pio`` shares an anonymous union with ``pad``: set it from C. */
static int hvm_zone_pio(struct kvm_coalesced_mmio_zone *zone, __u32 pio) { zone->pio = pio; return 0; }

/* A handler that does nothing: its only purpose is to make a blocked KVM_RUN return EINTR.
   Installed without SA_RESTART, from C, so it works whichever thread builds the machine. */
static void hvm_kick(int signo) { (void)signo; }
static int hvm_install_kick_handler(int signo)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = hvm_kick;
    sigemptyset(&sa.sa_mask);
    return sigaction(signo, &sa, NULL);
}
"""


def _cdef() -> str:
    lines = [CDEF]
    lines += [f"#define {name} ..." for name in IOCTLS + CONSTANTS]
    return "\n".join(lines)


ffibuilder = FFI()
ffibuilder.cdef(_cdef())
ffibuilder.set_source("kvmffi._kvm", SOURCE)

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
