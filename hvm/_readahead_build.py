"""cffi builder of ``hvm._readahead``: the thread that populates guest RAM ahead of a guest
sweeping through it (``hvm.readahead``).

A guest's first write to a page of its RAM makes the host kernel find and zero a page, in the
vCPU's thread: ~2-8 us a page on this project's nested host, ~2 s for 1 GiB. Guests that sweep
their memory (Xen scrubbing its free RAM, firmware and memory testers clearing it, an OS zeroing
its free pages) wait for that. This thread watches which 2 MiB chunks of guest RAM became
resident (mincore(2)) and, where the guest has moved from one chunk into the next, populates the
following chunks (MADV_POPULATE_WRITE, Linux 5.14) on another host CPU before the guest gets
there. A chunk touched alone triggers nothing, so a guest that touches its RAM here and there
costs no more host memory than before; a sweep costs at most ``window`` chunks more than it
touches. In C because it polls every millisecond while chunks change and must not hold the GIL.
"""
from __future__ import annotations

from cffi import FFI

ffibuilder = FFI()
ffibuilder.cdef("""
typedef struct hvm_readahead hvm_readahead;
hvm_readahead *hvm_readahead_new(int n, uintptr_t *bases, size_t *sizes, size_t chunk, int window);
uint64_t hvm_readahead_populated(hvm_readahead *ra);
void hvm_readahead_close(hvm_readahead *ra);
""")

ffibuilder.set_source("hvm._readahead", r"""
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

/* Polls every MIN_POLL_NS while chunks keep becoming resident, backing off to MAX_POLL_NS (each
   poll of 1 GiB costs ~0.1-0.2 ms of mincore, measured here) when nothing changes. */
#define MIN_POLL_NS 1000000LL
#define MAX_POLL_NS 32000000LL

typedef struct {
    uint8_t *base;
    size_t size, chunks;
    uint8_t *seen;          /* per chunk: resident (the guest's doing) or populated here */
    unsigned char *vec;     /* mincore's answer, one byte per page */
} region_t;

typedef struct hvm_readahead hvm_readahead;
struct hvm_readahead {
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t cond;
    int stop;
    int n, window;
    size_t chunk, page;
    region_t *regions;
    volatile uint64_t populated;  /* chunks */
};

static int populate(hvm_readahead *ra, region_t *r, size_t c)
{
    size_t len = ra->chunk;
    if ((c + 1) * ra->chunk > r->size)
        len = r->size - c * ra->chunk;
    r->seen[c] = 1;
    if (madvise(r->base + c * ra->chunk, len, MADV_POPULATE_WRITE) != 0)
        return errno == EINVAL ? -1 : 0;   /* EINVAL: a kernel before 5.14, nothing to do here */
    ra->populated++;
    return 0;
}

/* One look at every chunk not yet seen; returns how many became resident, -1 to give up. */
static int poll_once(hvm_readahead *ra, int baseline)
{
    int found = 0, k, i;
    size_t per = ra->chunk / ra->page;
    for (k = 0; k < ra->n; k++) {
        region_t *r = &ra->regions[k];
        size_t c = 0;
        while (c < r->chunks) {
            if (r->seen[c]) {
                c++;
                continue;
            }
            size_t e = c;
            while (e < r->chunks && !r->seen[e])
                e++;
            size_t len = (e == r->chunks ? r->size : e * ra->chunk) - c * ra->chunk;
            if (mincore(r->base + c * ra->chunk, len, r->vec) != 0)
                return found;
            size_t first = c, d;
            for (d = first; d < e; d++) {
                size_t pages = (d + 1 == r->chunks ? r->size - d * ra->chunk : ra->chunk) / ra->page;
                const unsigned char *v = r->vec + (d - first) * per;
                size_t p;
                int hit = 0;
                for (p = 0; p < pages && !hit; p++)
                    hit = v[p] & 1;
                if (!hit || r->seen[d])
                    continue;
                r->seen[d] = 1;
                found++;
                if (baseline)
                    continue;
                /* the guest went on from the chunk below (above): the next ones up (down) */
                if (d > 0 && r->seen[d - 1]) {
                    for (i = 1; i <= ra->window && d + i < r->chunks; i++)
                        if (!r->seen[d + i] && populate(ra, r, d + i) < 0)
                            return -1;
                } else if (d + 1 < r->chunks && r->seen[d + 1]) {
                    for (i = 1; i <= ra->window && (size_t)i <= d; i++)
                        if (!r->seen[d - i] && populate(ra, r, d - i) < 0)
                            return -1;
                }
            }
            c = e;
        }
    }
    return found;
}

static void *run(void *arg)
{
    hvm_readahead *ra = arg;
    long long wait = MIN_POLL_NS;
    /* Only on a host CPU nothing else wants: with vCPU threads busy on every host CPU (unicorn's
       parallel vCPUs), zeroing pages ahead of one would take the CPU from another. */
    struct sched_param idle = {0};
    pthread_setschedparam(pthread_self(), SCHED_IDLE, &idle);
    int found = poll_once(ra, 1);
    pthread_mutex_lock(&ra->lock);
    while (!ra->stop && found >= 0) {
        struct timespec t;
        clock_gettime(CLOCK_MONOTONIC, &t);
        t.tv_nsec += wait;
        t.tv_sec += t.tv_nsec / 1000000000LL;
        t.tv_nsec %= 1000000000LL;
        pthread_cond_timedwait(&ra->cond, &ra->lock, &t);
        if (ra->stop)
            break;
        pthread_mutex_unlock(&ra->lock);
        found = poll_once(ra, 0);
        pthread_mutex_lock(&ra->lock);
        wait = found > 0 ? MIN_POLL_NS : (wait * 2 > MAX_POLL_NS ? MAX_POLL_NS : wait * 2);
    }
    pthread_mutex_unlock(&ra->lock);
    return NULL;
}

static void release(hvm_readahead *ra)
{
    int k;
    for (k = 0; k < ra->n; k++) {
        free(ra->regions[k].seen);
        free(ra->regions[k].vec);
    }
    free(ra->regions);
    free(ra);
}

hvm_readahead *hvm_readahead_new(int n, uintptr_t *bases, size_t *sizes, size_t chunk, int window)
{
    hvm_readahead *ra = calloc(1, sizeof(*ra));
    int k;
    if (ra == NULL)
        return NULL;
    ra->n = n;
    ra->window = window;
    ra->chunk = chunk;
    ra->page = (size_t)sysconf(_SC_PAGESIZE);
    ra->regions = calloc(n, sizeof(region_t));
    if (ra->regions == NULL) {
        free(ra);
        return NULL;
    }
    for (k = 0; k < n; k++) {
        region_t *r = &ra->regions[k];
        r->base = (uint8_t *)bases[k];
        r->size = sizes[k];
        r->chunks = (sizes[k] + chunk - 1) / chunk;
        r->seen = calloc(r->chunks, 1);
        r->vec = malloc(sizes[k] / ra->page + 1);
        if (r->seen == NULL || r->vec == NULL) {
            ra->n = k + 1;
            release(ra);
            return NULL;
        }
    }
    pthread_mutex_init(&ra->lock, NULL);
    {
        pthread_condattr_t attr;
        pthread_condattr_init(&attr);
        pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
        pthread_cond_init(&ra->cond, &attr);
        pthread_condattr_destroy(&attr);
    }
    if (pthread_create(&ra->thread, NULL, run, ra) != 0) {
        release(ra);
        return NULL;
    }
    return ra;
}

uint64_t hvm_readahead_populated(hvm_readahead *ra)
{
    return ra->populated;
}

/* Stops and joins the thread: after this it touches none of the guest's memory. */
void hvm_readahead_close(hvm_readahead *ra)
{
    pthread_mutex_lock(&ra->lock);
    ra->stop = 1;
    pthread_cond_signal(&ra->cond);
    pthread_mutex_unlock(&ra->lock);
    pthread_join(ra->thread, NULL);
    pthread_mutex_destroy(&ra->lock);
    pthread_cond_destroy(&ra->cond);
    release(ra);
}
""", extra_compile_args=["-O2"], libraries=["pthread"])

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
