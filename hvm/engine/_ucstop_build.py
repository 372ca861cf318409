"""cffi builder of ``hvm.engine._ucstop``: the unicorn block hook through which time slices end
on PyPI's library (hvm's rebuilt one ends them itself: ``uc_lib`` edit 5, ``uc_core._NativeSlices``).

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
""")

if __name__ == "__main__":
    ffibuilder.compile(verbose=True)
