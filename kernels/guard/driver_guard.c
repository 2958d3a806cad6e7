// The driver guard: a thin library in front of the CUDA driver that turns every result
// code this build's bindings do not know into CUDA_ERROR_UNKNOWN (999).
//
// cudarc declares CUresult as a Rust enum of the codes in its bindings (cuda-12000 here),
// so a newer driver returning a code added since would hand Rust a value outside the
// enum: undefined behaviour. The guard's soname is libcuda.so, the first name cudarc
// asks the dynamic loader for, so once hybridvec has loaded it (src/cuda/guard.rs)
// cudarc binds to these functions. Each forwards to the driver (libcuda.so.1, a
// dependency of this library) and checks the code on its way back; the raw code is kept
// for the error message (hv_guard_last_unknown). Entry points not listed here resolve
// past the guard to the driver itself (dlsym searches a library's dependencies), so a
// call this list lacks still works, unguarded.
//
// Built by build.rs with the system C compiler; no CUDA header is needed.
#include <dlfcn.h>
#include <stddef.h>
#include <stdatomic.h>

// The codes of cudarc 0.19's cuda-12000 CUresult, ascending. Newer bindings only add
// codes, so this list stays safe if the feature moves up (it may then say UNKNOWN where
// the bindings would have named the code).
static const unsigned short kKnown[] = {
    0, 1, 2, 3, 4, 5, 6, 7, 8, 34, 46, 100, 101, 102, 200, 201, 202, 205, 206, 207, 208,
    209, 210, 211, 212, 213, 214, 215, 216, 217, 218, 219, 220, 221, 222, 223, 224, 300,
    301, 302, 303, 304, 400, 401, 500, 600, 700, 701, 702, 703, 704, 705, 708, 709, 710,
    711, 712, 713, 714, 715, 716, 717, 718, 719, 720, 800, 801, 802, 803, 804, 805, 806,
    807, 808, 809, 810, 811, 812, 900, 901, 902, 903, 904, 905, 906, 907, 908, 909, 910,
    911, 912, 999
};

static atomic_uint last_unknown;

static unsigned int checked(unsigned int code) {
    size_t lo = 0, hi = sizeof kKnown / sizeof kKnown[0];
    if (code == 0) return 0;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (kKnown[mid] == code) return code;
        if (kKnown[mid] < code) lo = mid + 1; else hi = mid;
    }
    atomic_store(&last_unknown, code);
    return 999;
}

// The last code the guard replaced with 999 (0: none yet).
unsigned int hv_guard_last_unknown(void) { return atomic_load(&last_unknown); }

#define GUARD(name, params, types, args)                                    \
    typedef unsigned int (*name##_fn) types;                                \
    static name##_fn real_##name;                                           \
    unsigned int name params {                                              \
        if (!real_##name) return 500; /* CUDA_ERROR_NOT_FOUND */            \
        return checked(real_##name args);                                   \
    }

#include "entries.h"

#undef GUARD

// Resolves every forwarded entry point. hybridvec calls it once, under a lock, before
// cudarc's first driver call (which the lock orders after it). Returns 0, or 1 when the
// driver cannot be found. An entry point the driver lacks answers CUDA_ERROR_NOT_FOUND.
int hv_guard_open(void) {
    // Already loaded as this library's dependency: RTLD_NOLOAD only finds it.
    void* h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
    if (!h) return 1;
#define GUARD(name, params, types, args) real_##name = (name##_fn)dlsym(h, #name);
#include "entries.h"
#undef GUARD
    return 0;
}
