"""cffi builder of ``hvm.engine._ucstop``: the unicorn block hook through which time slices end
on PyPI's library (hvm's rebuilt one ends them itself: ``uc_lib`` edit 5, ``uc_core._NativeSlices``),
and the IN hook that answers hot status ports without Python (``hvm_in_hook`` below).

Why C: unicorn 2.1.4 checks for a stop request after every guest load and store as well as at
each translation block's start, and when the request is seen after a store it restarts the
storing instruction, whose store has already happened (measured: one extra ``inc [mem]`` per
asynchronous ``uc_emu_stop``; a locked increment counted twice). A stop is therefore only
requested from inside a block hook, before any instruction of the block has run: other threads
set ``wanted`` and this hook, called at every block entry, turns it into ``uc_emu_stop``. Written
in Python the hook would cost a microsecond per block; in C it costs a few nanoseconds.

The same hook finds the interrupt window: while an interrupt waits for the guest to set
EFLAGS.IF, ``window`` asks it to stop at the first block entered with IF set. STI, POPF and IRET
end a translation block, so that is the block right after IF changed (KVM's "interrupt window"
exit, which hardware gives KVM and unicorn has no hook for). After STI the next block holds the
one instruction in its interrupt shadow (QEMU translates it alone); ``window_skip`` lets that
block run before the window counts. ``any_block`` stops at the next block whatever IF says: an
NMI waiting for the IRET that ends its predecessor's handler (IRET ends a block) is let in there.
"""
from __future__ import annotations

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
typedef struct {
    int wanted; void *stop; unsigned long long stops;
    int window; int eflags_id; void *reg_read; unsigned long long window_stops;
    int window_skip; int any_block;
} hvm_stop_t;
void *hvm_block_hook_address(void);

typedef struct { uint16_t port; uint16_t state; uint32_t pad; uint64_t hits; } hvm_published;
typedef struct {
    int32_t active; int32_t read_hi; int64_t start_ns; int64_t offset; uint32_t reload;
    uint8_t port61; uint8_t refresh; uint16_t pad; uint64_t hits42; uint64_t hits61;
} hvm_timer2;
typedef struct {
    hvm_published *published; int slots; hvm_timer2 *timer2;
    void *reg_read; int cs_id;
    uint32_t (*python)(void *uc, uint32_t port, int size, void *user);
    unsigned long long served;
} hvm_in_t;
void *hvm_in_hook_address(void);
""")
ffibuilder.set_source("hvm.engine._ucstop", r"""
#include <stdint.h>

typedef struct {
    volatile int wanted;      /* set by any thread: end the slice at the next block entry */
    void *stop;               /* uc_emu_stop, looked up in the loaded libunicorn */
    unsigned long long stops;
    int window;               /* end the slice at the first block entered with EFLAGS.IF set */
    int eflags_id;            /* UC_X86_REG_EFLAGS */
    void *reg_read;           /* uc_reg_read */
    unsigned long long window_stops;
    int window_skip;          /* block entries to let pass before watching for the window */
    int any_block;            /* the window is any block entry, IF or not */
} hvm_stop_t;

/* uc_cb_hookcode_t: (uc_engine *uc, uint64_t address, uint32_t size, void *user_data) */
static void hvm_block_hook(void *uc, uint64_t address, uint32_t size, void *user)
{
    hvm_stop_t *s = user;
    (void)address;
    (void)size;
    if (s->wanted) {
        s->wanted = 0;
        s->stops++;
        ((int (*)(void *))s->stop)(uc);
    } else if (s->window && s->window_skip) {
        s->window_skip--;
    } else if (s->window) {
        uint64_t flags = 0;
        ((int (*)(void *, int, void *))s->reg_read)(uc, s->eflags_id, &flags);
        if (s->any_block || (flags & 0x200)) {
            s->window = 0;
            s->window_stops++;
            ((int (*)(void *))s->stop)(uc);
        }
    }
}

void *hvm_block_hook_address(void)
{
    return (void *)hvm_block_hook;
}

/* Reads a guest polls thousands of times, answered without a trip into Python (which costs
   microseconds a read: enough to fail Linux's PIT calibration, whose quality check allows ~24 us
   for four reads): the registers devices publish (hvm/published.py, the layout kvmffi's C loop
   reads too), and channel 2 of the PIT with port 0x61 while channel 2 counts in mode 0, binary,
   LSB then MSB, nothing latched (hvm/devices/irq/pit8254.py publishes that state and takes it
   back before it handles any other access). Only one-byte reads at CPL 0 (CS.RPL 0): elsewhere
   the I/O permission checks of the Python hook apply. Anything else goes to that hook. */
#include <time.h>

typedef struct { uint16_t port; uint16_t state; uint32_t pad; uint64_t hits; } hvm_published;
typedef struct {
    int32_t active;          /* the Python model's state below is current */
    int32_t read_hi;         /* the LSB/MSB flip-flop of channel 2's reads */
    int64_t start_ns;        /* CLOCK_MONOTONIC when channel 2 began counting */
    int64_t offset;          /* clocks it had counted before that */
    uint32_t reload;         /* its count, 1..65536 */
    uint8_t port61;          /* port 0x61's gate and speaker bits */
    uint8_t refresh;         /* port 0x61's refresh bit, flipping at every read */
    uint16_t pad;
    uint64_t hits42, hits61; /* reads answered here */
} hvm_timer2;
typedef struct {
    hvm_published *published;
    int slots;
    hvm_timer2 *timer2;
    void *reg_read;          /* uc_reg_read */
    int cs_id;               /* UC_X86_REG_CS */
    uint32_t (*python)(void *uc, uint32_t port, int size, void *user);
    unsigned long long served;
} hvm_in_t;

#define PIT_HZ 1193182ULL

static uint64_t timer2_clocks(const hvm_timer2 *t)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    int64_t ns = (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec - t->start_ns;
    if (ns < 0)
        ns = 0;
    /* ns * PIT_HZ / 1e9 without overflowing 64 bits (as the Python model's _clocks rounds) */
    return (uint64_t)t->offset + (uint64_t)(((unsigned __int128)ns * PIT_HZ) / 1000000000ULL);
}

static uint32_t hvm_in_hook(void *uc, uint32_t port, int size, void *user)
{
    hvm_in_t *s = user;
    if (size == 1) {
        uint64_t cs = 0;
        ((int (*)(void *, int, void *))s->reg_read)(uc, s->cs_id, &cs);
        if ((cs & 3) == 0) {
            int i;
            for (i = 0; i < s->slots; i++) {
                if (s->published[i].port == port) {
                    uint16_t state = __atomic_load_n(&s->published[i].state, __ATOMIC_ACQUIRE);
                    if (state & 0x100) {
                        s->published[i].hits++;
                        s->served++;
                        return state & 0xff;
                    }
                    break;
                }
            }
            hvm_timer2 *t = s->timer2;
            if (t && t->active && (port == 0x42 || port == 0x61)) {
                uint64_t clocks = timer2_clocks(t);
                s->served++;
                if (port == 0x61) {
                    t->hits61++;
                    t->refresh ^= 1;
                    return t->port61 | t->refresh << 4 | (clocks >= t->reload) << 5;
                }
                uint32_t count = (uint32_t)((t->reload - clocks) & 0xffff);  /* mode 0 wraps on */
                t->hits42++;
                t->read_hi ^= 1;
                return t->read_hi ? count & 0xff : count >> 8;
            }
        }
    }
    return s->python(uc, port, size, user);
}

void *hvm_in_hook_address(void)
{
    return (void *)hvm_in_hook;
}
""")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
