// A CPU emulator of the CUDA device code in kernels/*.cu, for tests on machines without a
// GPU. Not a simulator of timing or of the memory model: it runs every block of a grid in
// turn, each CUDA thread as a fiber on one OS thread, and switches fibers only at
// __syncthreads, __syncwarp and warp collectives (shuffles, ballots, mma). Threads run in a
// seeded random order between barriers, so a read of shared memory that lacks its barrier
// sees stale data and fails the test instead of passing by luck. It also reports what would
// be undefined on a GPU: a barrier not reached by every live thread of its group (deadlock),
// and a warp collective with exited lanes.
//
// The kernels see the usual names (threadIdx, __shfl_xor_sync, atomicAdd, ...); only
// dynamic shared memory (HV_DYNAMIC_SMEM) and the tensor-core wrappers (hv_mma_*) differ,
// and common.cuh selects them under HV_EMULATION.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>
#include <csetjmp>
#include <ucontext.h>

#define HV_EMULATION 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
// One block runs at a time on one OS thread (launches are serialised), so a function-local
// static is exactly one block's shared memory.
#define __shared__ static

struct dim3 {
    unsigned int x = 1, y = 1, z = 1;
};
struct alignas(16) float4 {
    float x, y, z, w;
};
struct alignas(8) float2 {
    float x, y;
};
struct alignas(16) uint4 {
    unsigned int x, y, z, w;
};
struct alignas(8) uint2 {
    unsigned int x, y;
};

#if defined(__x86_64__)
#define HV_EMU_ASM_SWITCH 1
// The fiber switch on x86-64: pushes the callee-saved registers, stores the stack pointer in
// *save, loads `load` (a stack pointer stored the same way, or a fresh frame that
// `resume` lays out), pops that context's registers and returns into it. A quarter of the
// cost of glibc's _setjmp/_longjmp pair, which also walks the cancellation handlers.
extern "C" __attribute__((visibility("hidden"))) void hv_emu_switch(void** save, void* load);
asm(R"(
    .text
    .globl hv_emu_switch
    .hidden hv_emu_switch
    .type hv_emu_switch, @function
hv_emu_switch:
    pushq %rbp
    pushq %rbx
    pushq %r12
    pushq %r13
    pushq %r14
    pushq %r15
    movq %rsp, (%rdi)
    movq %rsi, %rsp
    popq %r15
    popq %r14
    popq %r13
    popq %r12
    popq %rbx
    popq %rbp
    ret
    .size hv_emu_switch, .-hv_emu_switch
)");
#endif

namespace hv_emu {

enum class State { Ready, Waiting, Done };

// SplitMix64: the seeded schedule's generator, one draw per fiber switch.
struct SplitMix64 {
    uint64_t s = 0;
    void seed(uint64_t v) { s = v; }
    uint64_t operator()() {
        uint64_t z = (s += 0x9E3779B97F4A7C15ull);
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
        z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
        return z ^ (z >> 31);
    }
};

// A fiber switches with hv_emu_switch on x86-64; elsewhere it starts once through
// makecontext/swapcontext, and every later switch is a _setjmp/_longjmp pair, which
// (unlike swapcontext) makes no system call. Fibers and their
// stacks outlive a block and a launch (see `fiber_pool`): a fiber that finished its body
// parks at the top of its loop, and the next block resumes it there, so a block costs no
// stack allocation and no context set-up.
struct Fiber {
    jmp_buf jb;
    void* sp = nullptr;  // the saved stack pointer (HV_EMU_ASM_SWITCH)
    // Parked at the top of `fiber_main`'s loop: resuming it runs the next body. A fiber
    // that never ran, or was abandoned mid-body (a deadlocked block), starts afresh.
    bool parked = false;
    bool fresh = true;
    State state = State::Ready;
    unsigned int linear = 0;
    dim3 tid;
    std::unique_ptr<char[]> stack;
    size_t stack_bytes = 0;  // used from the bottom of `stack`: less than the allocation
};

// A barrier over a group of fibers (the block, or one warp): released when every live
// member has arrived.
struct Group {
    int live = 0;
    int arrived = 0;
    std::vector<int> waiting;
};

struct Launch {
    dim3 grid, block, bid;
    unsigned int threads = 0;
    Fiber* fibers = nullptr;  // the calling thread's pool, at least `threads` long
    Group block_group;
    std::vector<Group> warp_groups;
    std::vector<uint64_t> warp_slots;  // 32 per warp: the values lanes exchange
    std::vector<int> ready;
    ucontext_t scheduler;
    ucontext_t start;  // scratch for starting a fresh fiber
    jmp_buf scheduler_jb;
    void* scheduler_sp = nullptr;  // HV_EMU_ASM_SWITCH
    int current = -1;
    SplitMix64 rng;
    std::vector<unsigned char> dynamic_smem;
    std::string error;
    void (*body)(void*) = nullptr;
    void* body_arg = nullptr;
};

inline Launch*& launch() {
    static Launch* l = nullptr;
    return l;
}
inline Fiber& me() { return launch()->fibers[launch()->current]; }

inline void fail(const std::string& what) {
    Launch* l = launch();
    if (l->error.empty()) {
        char where[96];
        snprintf(where, sizeof where, " (block %u,%u thread %u)", l->bid.x, l->bid.y, me().linear);
        l->error = what + where;
    }
}

// Leaves fiber `f` (the running one) for the scheduler; returns when it is resumed.
inline void to_scheduler(Fiber& f) {
    Launch* l = launch();
#ifdef HV_EMU_ASM_SWITCH
    hv_emu_switch(&f.sp, l->scheduler_sp);
#else
    if (!_setjmp(f.jb)) _longjmp(l->scheduler_jb, 1);
#endif
}

inline void yield() { to_scheduler(launch()->fibers[launch()->current]); }

inline void release(Group& g) {
    Launch* l = launch();
    for (int f : g.waiting) {
        l->fibers[f].state = State::Ready;
        l->ready.push_back(f);
    }
    g.waiting.clear();
    g.arrived = 0;
}

inline void arrive(Group& g) {
    Launch* l = launch();
    if (++g.arrived == g.live) {
        release(g);
        return;
    }
    me().state = State::Waiting;
    g.waiting.push_back(l->current);
    yield();
}

inline Group& my_warp() { return launch()->warp_groups[me().linear / 32]; }
inline unsigned int lane() { return me().linear % 32; }

inline void sync_block() { arrive(launch()->block_group); }
inline void sync_warp() { arrive(my_warp()); }

// Every lane of the warp offers `v` and gets what lane `src(lane)` offered.
template <class T, class F>
inline T exchange(unsigned int mask, T v, F src) {
    static_assert(sizeof(T) <= 8, "warp exchange of at most 8 bytes");
    if (mask != 0xffffffffu) fail("warp collective with a partial mask (the kernels use full warps)");
    if (my_warp().live != 32) fail("warp collective after some lanes exited");
    Launch* l = launch();
    uint64_t* slots = &l->warp_slots[(me().linear / 32) * 32];
    unsigned int ln = lane();
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    slots[ln] = bits;
    sync_warp();
    unsigned int from = src(ln);
    T out = v;
    if (from < 32) memcpy(&out, &slots[from], sizeof(T));
    sync_warp();
    return out;
}

// All 32 lanes' values of `v`, for collectives that need the whole warp (mma).
template <class T>
inline void gather(T v, T (&all)[32]) {
    Launch* l = launch();
    uint64_t* slots = &l->warp_slots[(me().linear / 32) * 32];
    if (my_warp().live != 32) fail("warp collective after some lanes exited");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    slots[lane()] = bits;
    sync_warp();
    for (int i = 0; i < 32; ++i) memcpy(&all[i], &slots[i], sizeof(T));
    sync_warp();
}

inline void fiber_main() {
    for (;;) {
        Launch* l = launch();
        l->body(l->body_arg);
        Fiber& f = me();
        f.state = State::Done;
        // An exited thread no longer counts at the block's or its warp's barriers.
        for (Group* g : {&l->block_group, &my_warp()}) {
            --g->live;
            if (g->live > 0 && g->arrived == g->live) release(*g);
        }
        f.parked = true;
        to_scheduler(f);
    }
}

// The calling OS thread's fibers, kept for its later launches. A thread (a stream of the
// emulated driver) never shares its fibers, since a parked fiber's saved context belongs
// to the thread that parked it.
inline std::vector<Fiber>& fiber_pool(unsigned int threads) {
    static thread_local std::vector<Fiber> pool;
    if (pool.size() < threads) pool.resize(threads);
    return pool;
}

// Runs `f` until it waits or exits. Kept out of line so no caller's locals live across
// the _setjmp.
__attribute__((noinline)) inline void resume(Launch& l, Fiber& f) {
#ifdef HV_EMU_ASM_SWITCH
    if (f.fresh) {
        f.fresh = false;
        // The frame hv_emu_switch unwinds into fiber_main: six registers, then its entry
        // as the return address, above it a null return address of its own, so that it
        // starts with the stack pointer 8 mod 16, as after a call.
        uintptr_t top = (reinterpret_cast<uintptr_t>(f.stack.get()) + f.stack_bytes) & ~uintptr_t(15);
        void** sp = reinterpret_cast<void**>(top);
        *--sp = nullptr;
        *--sp = reinterpret_cast<void*>(&fiber_main);
        for (int i = 0; i < 6; ++i) *--sp = nullptr;
        f.sp = sp;
    }
    hv_emu_switch(&l.scheduler_sp, f.sp);
#else
    if (!_setjmp(l.scheduler_jb)) {
        if (!f.fresh) _longjmp(f.jb, 1);
        f.fresh = false;
        getcontext(&l.start);
        l.start.uc_stack.ss_sp = f.stack.get();
        l.start.uc_stack.ss_size = f.stack_bytes;
        l.start.uc_link = nullptr;
        makecontext(&l.start, fiber_main, 0);
        swapcontext(&l.scheduler, &l.start);
    }
#endif
}

inline void run_block(Launch& l) {
    const size_t stack_bytes = 256 * 1024;
    l.block_group = Group{static_cast<int>(l.threads), 0, {}};
    for (auto& g : l.warp_groups) g = Group{0, 0, {}};
    for (unsigned int t = 0; t < l.threads; ++t) l.warp_groups[t / 32].live++;
    l.ready.clear();
    for (unsigned int t = 0; t < l.threads; ++t) {
        Fiber& f = l.fibers[t];
        if (!f.stack) {
            f.stack.reset(new char[stack_bytes]);
            // Stacks of equal size share their cache sets at the top, where every switch
            // lands; a per-fiber offset spreads them over the caches.
            f.stack_bytes = stack_bytes - (t * 17 % 1024) * 64;
        }
        f.linear = t;
        f.tid = dim3{t % l.block.x, (t / l.block.x) % l.block.y, t / (l.block.x * l.block.y)};
        f.state = State::Ready;
        f.fresh = !f.parked;
        f.parked = false;
        l.ready.push_back(static_cast<int>(t));
    }
    unsigned int done = 0;
    while (done < l.threads) {
        if (l.ready.empty()) {
            char msg[160];
            snprintf(msg, sizeof msg,
                     "deadlock in block %u,%u: %u threads wait at a barrier that the others "
                     "never reach", l.bid.x, l.bid.y, l.threads - done);
            if (l.error.empty()) l.error = msg;
            return;
        }
        // A uniform pick without a division (Lemire's multiply-shift).
        size_t pick = static_cast<size_t>((static_cast<unsigned __int128>(l.rng()) * l.ready.size()) >> 64);
        int f = l.ready[pick];
        l.ready[pick] = l.ready.back();
        l.ready.pop_back();
        l.current = f;
        resume(l, l.fibers[f]);
        if (l.fibers[f].state == State::Done) ++done;
    }
}

}  // namespace hv_emu

#define threadIdx (hv_emu::me().tid)
#define blockIdx (hv_emu::launch()->bid)
#define blockDim (hv_emu::launch()->block)
#define gridDim (hv_emu::launch()->grid)

inline void __syncthreads() { hv_emu::sync_block(); }
inline void __syncwarp(unsigned int mask = 0xffffffffu) {
    if (mask != 0xffffffffu) hv_emu::fail("__syncwarp with a partial mask");
    hv_emu::sync_warp();
}

template <class T>
inline T __shfl_xor_sync(unsigned int mask, T v, int o) {
    return hv_emu::exchange(mask, v, [o](unsigned int l) { return l ^ static_cast<unsigned int>(o); });
}
template <class T>
inline T __shfl_sync(unsigned int mask, T v, int src) {
    return hv_emu::exchange(mask, v, [src](unsigned int) { return static_cast<unsigned int>(src) % 32; });
}
template <class T>
inline T __shfl_up_sync(unsigned int mask, T v, unsigned int d) {
    return hv_emu::exchange(mask, v, [d](unsigned int l) { return l >= d ? l - d : 32u; });
}
template <class T>
inline T __shfl_down_sync(unsigned int mask, T v, unsigned int d) {
    return hv_emu::exchange(mask, v, [d](unsigned int l) { return l + d < 32 ? l + d : 32u; });
}
inline unsigned int __ballot_sync(unsigned int mask, int pred) {
    unsigned int all[32];
    if (mask != 0xffffffffu) hv_emu::fail("__ballot_sync with a partial mask");
    hv_emu::gather(static_cast<unsigned int>(pred != 0), all);
    unsigned int bits = 0;
    for (int i = 0; i < 32; ++i) bits |= all[i] << i;
    return bits;
}
// redux.sync.add.u32: every lane gets the sum over the warp (wrapping, as on the device).
inline unsigned int __reduce_add_sync(unsigned int mask, unsigned int v) {
    unsigned int all[32];
    if (mask != 0xffffffffu) hv_emu::fail("__reduce_add_sync with a partial mask");
    hv_emu::gather(v, all);
    unsigned int sum = 0;
    for (unsigned int x : all) sum += x;
    return sum;
}
inline int __popc(unsigned int v) { return __builtin_popcount(v); }
inline int __ffs(unsigned int v) { return __builtin_ffs(static_cast<int>(v)); }

// One OS thread runs all fibers, so atomics are plain read-modify-writes.
inline unsigned int atomicAdd(unsigned int* p, unsigned int v) {
    unsigned int old = *p;
    *p = old + v;
    return old;
}
inline int atomicAdd(int* p, int v) {
    int old = *p;
    *p = old + v;
    return old;
}

template <class T>
inline T __ldg(const T* p) { return *p; }
inline unsigned int __float_as_uint(float f) {
    unsigned int u;
    memcpy(&u, &f, 4);
    return u;
}
inline float __uint_as_float(unsigned int u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}
inline float rsqrtf(float x) { return 1.0f / sqrtf(x); }
inline int __float_as_int(float f) {
    int i;
    memcpy(&i, &f, 4);
    return i;
}
inline double __longlong_as_double(long long v) {
    double d;
    memcpy(&d, &v, 8);
    return d;
}
// Four signed bytes of a and of b multiplied and summed into c (dp4a.s32.s32).
inline int __dp4a(int a, int b, int c) {
    for (int i = 0; i < 4; ++i)
        c += static_cast<signed char>(a >> (8 * i)) * static_cast<signed char>(b >> (8 * i));
    return c;
}
// f64 operations rounded to nearest, one at a time (the emulator is built as ISO C++, so
// nothing is contracted into an FMA).
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
// f64 → f32 rounded down (towards −∞) or up (towards +∞).
inline float __double2float_rd(double v) {
    float f = static_cast<float>(v);
    return static_cast<double>(f) > v ? std::nextafter(f, -INFINITY) : f;
}
inline float __double2float_ru(double v) {
    float f = static_cast<float>(v);
    return static_cast<double>(f) < v ? std::nextafter(f, INFINITY) : f;
}

// Tensor cores. TF32 keeps 10 mantissa bits, rounded to nearest with ties away from zero
// (cvt.rna.tf32.f32).
// cp.async, synchronously: the copy (or the zero fill) lands at once, so the emulator
// checks where the pipeline puts data, not when it arrives.
inline void hv_cp_async16(void* smem, const void* gmem, int bytes) {
    if (bytes == 16)
        memcpy(smem, gmem, 16);
    else
        memset(smem, 0, 16);
}
inline void hv_cp_async_commit() {}
template <int N>
inline void hv_cp_async_wait() {}

inline unsigned int hv_to_tf32(float f) {
    unsigned int u = __float_as_uint(f);
    if ((u & 0x7f800000u) != 0x7f800000u) u += 0x1000u;
    return u & 0xffffe000u;
}

namespace hv_emu {
// The common end of an m16n8kK mma: D = A · B + C, where C is the warp's accumulator
// fragments (c/d = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}, g = lane / 4,
// t = lane % 4), and each lane gets its own four elements of D back.
template <int K>
inline void mma_accumulate(float (&d)[4], const float (&A)[16][K], const float (&B)[K][8]) {
    float C[16][8];
    for (int r = 0; r < 4; ++r) {
        float all[32];
        gather(d[r], all);
        for (int l = 0; l < 32; ++l) C[l / 4 + 8 * (r >> 1)][2 * (l % 4) + (r & 1)] = all[l];
    }
    int g = lane() / 4, t = lane() % 4;
    for (int r = 0; r < 4; ++r) {
        int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
        float acc = C[row][col];
        for (int kk = 0; kk < K; ++kk) acc = fmaf(A[row][kk], B[kk][col], acc);
        d[r] = acc;
    }
}
}  // namespace hv_emu

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32, with the PTX ISA's fragment layout:
// g = lane / 4, t = lane % 4; a = {A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]},
// b = {B[t][g], B[t+4][g]}, c/d = {C[g][2t], C[g][2t+1], C[g+8][2t], C[g+8][2t+1]}.
inline void hv_mma_tf32(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    float A[16][8], B[8][8];
    for (int r = 0; r < 4; ++r) {
        unsigned int all[32];
        hv_emu::gather(a[r], all);
        for (int l = 0; l < 32; ++l) {
            int g = l / 4, t = l % 4;
            A[g + 8 * (r & 1)][t + 4 * (r >> 1)] = __uint_as_float(all[l]);
        }
    }
    for (int r = 0; r < 2; ++r) {
        unsigned int all[32];
        hv_emu::gather(b[r], all);
        for (int l = 0; l < 32; ++l) B[l % 4 + 4 * r][l / 4] = __uint_as_float(all[l]);
    }
    hv_emu::mma_accumulate(d, A, B);
}

// FP16 through the compiler's _Float16 (IEEE binary16, round to nearest even).
inline float hv_half_to_float(unsigned short h) {
    _Float16 v;
    memcpy(&v, &h, 2);
    return static_cast<float>(v);
}
inline unsigned short hv_float_to_half(float f) {
    _Float16 v = static_cast<_Float16>(f);
    unsigned short h;
    memcpy(&h, &v, 2);
    return h;
}
inline unsigned int hv_pack_half2(float lo, float hi) {
    return static_cast<unsigned int>(hv_float_to_half(lo)) |
           (static_cast<unsigned int>(hv_float_to_half(hi)) << 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32, with the PTX ISA's fragment layout
// (each register two halves, the lower index in the low half): g = lane / 4, t = lane % 4;
// a = {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]}, b = {B[2t..][g],
// B[2t+8..][g]}, c/d as for m16n8k8.
inline void hv_mma_f16(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    float A[16][16], B[16][8];
    for (int r = 0; r < 4; ++r) {
        unsigned int all[32];
        hv_emu::gather(a[r], all);
        for (int l = 0; l < 32; ++l) {
            int g = l / 4, t = l % 4;
            for (int h = 0; h < 2; ++h)
                A[g + 8 * (r & 1)][2 * t + h + 8 * (r >> 1)] =
                    hv_half_to_float(static_cast<unsigned short>(all[l] >> (16 * h)));
        }
    }
    for (int r = 0; r < 2; ++r) {
        unsigned int all[32];
        hv_emu::gather(b[r], all);
        for (int l = 0; l < 32; ++l)
            for (int h = 0; h < 2; ++h)
                B[2 * (l % 4) + h + 8 * r][l / 4] =
                    hv_half_to_float(static_cast<unsigned short>(all[l] >> (16 * h)));
    }
    hv_emu::mma_accumulate(d, A, B);
}

// BF16: round to nearest even by the bits (inputs are finite), the high half of an f32.
inline unsigned short hv_float_to_bf16(float f) {
    unsigned int u = __float_as_uint(f);
    u += 0x7fffu + ((u >> 16) & 1u);
    return static_cast<unsigned short>(u >> 16);
}
inline unsigned int hv_pack_bf162(float lo, float hi) {
    return static_cast<unsigned int>(hv_float_to_bf16(lo)) |
           (static_cast<unsigned int>(hv_float_to_bf16(hi)) << 16);
}

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32: hv_mma_f16's layout, BF16 values.
inline void hv_mma_bf16(float (&d)[4], const unsigned int (&a)[4], const unsigned int (&b)[2]) {
    float A[16][16], B[16][8];
    auto bf = [](unsigned int w, int h) { return __uint_as_float(((w >> (16 * h)) & 0xffffu) << 16); };
    for (int r = 0; r < 4; ++r) {
        unsigned int all[32];
        hv_emu::gather(a[r], all);
        for (int l = 0; l < 32; ++l) {
            int g = l / 4, t = l % 4;
            for (int h = 0; h < 2; ++h) A[g + 8 * (r & 1)][2 * t + h + 8 * (r >> 1)] = bf(all[l], h);
        }
    }
    for (int r = 0; r < 2; ++r) {
        unsigned int all[32];
        hv_emu::gather(b[r], all);
        for (int l = 0; l < 32; ++l)
            for (int h = 0; h < 2; ++h) B[2 * (l % 4) + h + 8 * r][l / 4] = bf(all[l], h);
    }
    hv_emu::mma_accumulate(d, A, B);
}

#define HV_DYNAMIC_SMEM(T, name) T* name = reinterpret_cast<T*>(hv_emu::launch()->dynamic_smem.data())
