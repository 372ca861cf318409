/* modes.S started the way firmware starts a boot sector: real mode, flat at 0x7C00. */
        .set REAL, 1
        .include "modes.S"
