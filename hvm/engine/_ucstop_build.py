"""cffi builder of ``hvm.engine._ucstop``: the unicorn block hook through which time slices end
on PyPI's library (hvm's rebuilt one ends them itself: ``uc_lib`` edit 5, ``uc_core._NativeSlices``),
the IN hook that answers hot status ports without Python (``hvm_in_hook`` below), and the thread
that ends each slice at its deadline (``hvm_slicer``, used by ``uc_slicer.Slicer``).

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

typedef struct {
    uint16_t port; uint16_t enabled; uint32_t lock; uint32_t count; uint32_t pad; uint64_t total;
    uint8_t buf[1024];
} hvm_queued;
typedef struct {
    hvm_queued *queued; int slots; void *reg_read; int cs_id; void *slicer; int64_t batch_ns;
    void (*python)(void *uc, uint32_t port, int size, uint32_t value, void *user);
    unsigned long long served;
} hvm_out_t;
void *hvm_out_hook_address(void);
uint32_t hvm_queued_take(hvm_queued *q, uint8_t *out);

typedef struct {
    int64_t deadline; int64_t asleep_until; int fired; int closed;
    uintptr_t fn; uintptr_t uc; int request; int drop; int *flag;
    ...;
} hvm_slicer;
hvm_slicer *hvm_slicer_new(uintptr_t fn, uintptr_t uc, int request, int drop, int *flag);
void hvm_slicer_begin(hvm_slicer *s, int64_t deadline);
void hvm_slicer_sooner(hvm_slicer *s, int64_t deadline);
void hvm_slicer_cut(hvm_slicer *s);
int hvm_slicer_end(hvm_slicer *s);
void hvm_slicer_close(hvm_slicer *s);
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

/* The time-slice timer (hvm/engine/uc_slicer.py): a thread that sleeps until the armed slice's
   deadline and then requests the stop. In C because a Python thread needs the GIL to wake, and
   a vCPU whose guest polls a port through a Python hook takes the GIL back every few
   microseconds: measured, the Python slicer fired up to 7 ms late, and a 1 ms PIT lost a fifth of
   its ticks. The stop is fn(uc, request, 0) (the rebuilt library's native stop, uc_lib edit 5)
   or, without fn, *flag = 1 (the block hook's ``wanted``); the drop likewise with ``drop`` or 0.
   Deadlines are CLOCK_MONOTONIC nanoseconds, Python's time.monotonic_ns(). */
#include <pthread.h>
#include <stdlib.h>
#include <sys/prctl.h>

typedef struct {
    int64_t deadline;        /* of the armed slice; 0 between slices */
    int64_t asleep_until;    /* the deadline the thread waits for; 0 waiting for a slice */
    int fired;               /* the armed slice's stop was requested */
    int closed;
    uintptr_t fn;            /* uint64_t *(*)(void *uc, int what, int arg), or 0 */
    uintptr_t uc;
    int request, drop;       /* fn's ``what`` to request and to drop the stop */
    int *flag;               /* without fn */
    pthread_mutex_t lock;
    pthread_cond_t cond;
    pthread_t thread;
} hvm_slicer;

typedef uint64_t *(*hvm_stop_fn)(void *, int, int);

static int64_t hvm_now_ns(void)
{
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    return (int64_t)now.tv_sec * 1000000000LL + now.tv_nsec;
}

static void hvm_slicer_stop(hvm_slicer *s, int request)
{
    if (s->fn)
        ((hvm_stop_fn)s->fn)((void *)s->uc, request ? s->request : s->drop, 0);
    else
        __atomic_store_n(s->flag, request, __ATOMIC_RELEASE);
}

static void *hvm_slicer_main(void *arg)
{
    hvm_slicer *s = arg;
    /* Linux lets a sleeping thread's wake-up slip by 50 us by default ("timer slack"): measured,
       the thread then fired ~70 us after deadlines, ~20 us with the slack at its minimum. */
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    pthread_mutex_lock(&s->lock);
    while (!s->closed) {
        if (!s->deadline || s->fired) {
            s->asleep_until = 0;
            pthread_cond_wait(&s->cond, &s->lock);
            continue;
        }
        if (hvm_now_ns() < s->deadline) {
            struct timespec until = {s->deadline / 1000000000LL, s->deadline % 1000000000LL};
            s->asleep_until = s->deadline;
            pthread_cond_timedwait(&s->cond, &s->lock, &until);
            continue;
        }
        s->fired = 1;
        hvm_slicer_stop(s, 1);
    }
    pthread_mutex_unlock(&s->lock);
    return NULL;
}

/* Wake the thread only when it sleeps past ``deadline`` (a wake-up costs a context switch). */
static void hvm_slicer_wake(hvm_slicer *s, int64_t deadline)
{
    if (!s->asleep_until || deadline < s->asleep_until)
        pthread_cond_signal(&s->cond);
}

hvm_slicer *hvm_slicer_new(uintptr_t fn, uintptr_t uc, int request, int drop, int *flag)
{
    pthread_condattr_t attr;
    hvm_slicer *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->fn = fn;
    s->uc = uc;
    s->request = request;
    s->drop = drop;
    s->flag = flag;
    pthread_mutex_init(&s->lock, NULL);
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_cond_init(&s->cond, &attr);
    pthread_condattr_destroy(&attr);
    if (pthread_create(&s->thread, NULL, hvm_slicer_main, s)) {
        pthread_cond_destroy(&s->cond);
        pthread_mutex_destroy(&s->lock);
        free(s);
        return NULL;
    }
    return s;
}

void hvm_slicer_begin(hvm_slicer *s, int64_t deadline)
{
    pthread_mutex_lock(&s->lock);
    hvm_slicer_stop(s, 0);               /* a request the last slice did not live to see */
    s->deadline = deadline > 0 ? deadline : 1;
    s->fired = 0;
    hvm_slicer_wake(s, s->deadline);
    pthread_mutex_unlock(&s->lock);
}

void hvm_slicer_sooner(hvm_slicer *s, int64_t deadline)
{
    pthread_mutex_lock(&s->lock);
    if (s->deadline && !s->fired && deadline < s->deadline) {
        s->deadline = deadline > 0 ? deadline : 1;
        hvm_slicer_wake(s, s->deadline);
    }
    pthread_mutex_unlock(&s->lock);
}

void hvm_slicer_cut(hvm_slicer *s)
{
    pthread_mutex_lock(&s->lock);
    if (s->deadline && !s->fired) {
        s->fired = 1;
        hvm_slicer_stop(s, 1);
    }
    pthread_mutex_unlock(&s->lock);
}

int hvm_slicer_end(hvm_slicer *s)
{
    int fired;
    pthread_mutex_lock(&s->lock);
    s->deadline = 0;
    fired = s->fired;
    pthread_mutex_unlock(&s->lock);
    return fired;
}

void hvm_slicer_close(hvm_slicer *s)
{
    pthread_mutex_lock(&s->lock);
    s->closed = 1;
    pthread_cond_signal(&s->cond);
    pthread_mutex_unlock(&s->lock);
    pthread_join(s->thread, NULL);
    pthread_cond_destroy(&s->cond);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

/* Writes a device lets an engine queue (hvm/published.py ``QueuedWrites``: a UART's THR while
   its byte has nowhere to go but out), taken by the device in order before it handles any other
   access and at the end of each slice, which the first queued byte brings within ``batch_ns``.
   A console that prints through a guest's serial driver writes one byte per OUT; its cost in
   Python (a register access, the THRE interrupt's edge through PIC, IOAPIC and LAPIC) was most
   of what printing cost. One-byte writes at CPL 0 only (see the IN hook); the rest, and bytes
   that find the queue full, go to the Python hook. */
#define HVM_QUEUED_CAP 1024
typedef struct {
    uint16_t port;
    uint16_t enabled;        /* set by the device while such a write needs nothing else from it */
    uint32_t lock;
    uint32_t count;          /* bytes waiting */
    uint32_t pad;
    uint64_t total;          /* bytes queued so far */
    uint8_t buf[HVM_QUEUED_CAP];
} hvm_queued;
typedef struct {
    hvm_queued *queued;
    int slots;
    void *reg_read;
    int cs_id;
    void *slicer;            /* this instance's hvm_slicer, once it has one */
    int64_t batch_ns;
    void (*python)(void *uc, uint32_t port, int size, uint32_t value, void *user);
    unsigned long long served;   /* writes queued by this instance */
} hvm_out_t;

#include <string.h>

static void hvm_out_hook(void *uc, uint32_t port, int size, uint32_t value, void *user)
{
    hvm_out_t *s = user;
    if (size == 1) {
        int i;
        for (i = 0; i < s->slots; i++) {
            hvm_queued *q = &s->queued[i];
            if (q->port != port) {
                continue;
            }
            if (__atomic_load_n(&q->enabled, __ATOMIC_ACQUIRE)) {
                uint64_t cs = 0;
                ((int (*)(void *, int, void *))s->reg_read)(uc, s->cs_id, &cs);
                if ((cs & 3) == 0) {
                    uint32_t before = HVM_QUEUED_CAP;
                    while (__atomic_exchange_n(&q->lock, 1, __ATOMIC_ACQUIRE)) {
                    }
                    if (q->count < HVM_QUEUED_CAP) {
                        before = q->count;
                        q->buf[q->count++] = (uint8_t)value;
                        q->total++;
                    }
                    __atomic_store_n(&q->lock, 0, __ATOMIC_RELEASE);
                    if (before == 0 && s->slicer) {
                        struct timespec now;
                        clock_gettime(CLOCK_MONOTONIC, &now);
                        hvm_slicer_sooner((hvm_slicer *)s->slicer, now.tv_sec * 1000000000LL + now.tv_nsec + s->batch_ns);
                    }
                    if (before < HVM_QUEUED_CAP) {
                        s->served++;
                        return;
                    }
                }
            }
            break;
        }
    }
    s->python(uc, port, size, value, user);
}

void *hvm_out_hook_address(void)
{
    return (void *)hvm_out_hook;
}

/* The bytes waiting in ``q``, moved to ``out`` (room for HVM_QUEUED_CAP); returns how many. */
uint32_t hvm_queued_take(hvm_queued *q, uint8_t *out)
{
    uint32_t n;
    while (__atomic_exchange_n(&q->lock, 1, __ATOMIC_ACQUIRE)) {
    }
    n = q->count;
    memcpy(out, q->buf, n);
    q->count = 0;
    __atomic_store_n(&q->lock, 0, __ATOMIC_RELEASE);
    return n;
}
""", extra_compile_args=["-pthread"], extra_link_args=["-pthread"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
