// The kernels of kernels/*.cu built for the CPU emulator (cuda_emu.h), behind one C entry
// point shaped like cuLaunchKernel. Built and loaded by the crate's emulation tests.
#include "cuda_emu.h"

#include "../filter.cu"
#include "../fused.cu"
#include "../int8.cu"
#include "../norms.cu"
#include "../score.cu"
#include "../topk.cu"

#include <mutex>
#include <vector>
#include <utility>

// Self-tests: kernels that are wrong on purpose, to show the emulator catches them.
// Half of each warp waits at the block barrier, the other half at the warp barrier.
extern "C" __global__ void hv_emu_selftest_divergent_barrier() {
    if (threadIdx.x % 32 < 16)
        __syncthreads();
    else
        __syncwarp();
}
// Reads a neighbour's shared-memory slot with no barrier after the writes.
extern "C" __global__ void hv_emu_selftest_race(float* out, float base) {
    __shared__ float s[256];
    s[threadIdx.x] = base + threadIdx.x;
    out[threadIdx.x] = s[(threadIdx.x + 1) % 256] - base;
}

// cuBLAS's part of a GEMM-scored program, on the CPU: C (m × n, column-major, ldc) = Aᵀ·B
// with A (k × m, lda = k: rows of the corpus) and B (k × n, ldb = k: the queries), FP32
// sums. TF32 rounds both operands to 10 mantissa bits first, as the tensor cores do; FP16
// operands are binary16 bits, BF16 ones bfloat16 bits. As cublasGemmEx(transa = T, transb = N) computes it, for the
// emulated cuBLAS of driver.cpp and the programs' emulation tests alike.
enum HvGemmKind { kGemmFp32 = 0, kGemmTf32 = 1, kGemmFp16 = 2, kGemmBf16 = 3 };

extern "C" void hv_emu_gemm(int kind, long long m, long long n, long long k, const void* a,
                            long long lda, const void* b, long long ldb, float* c,
                            long long ldc) {
    auto load = [kind](const void* base, long long i) -> float {
        if (kind == kGemmFp16) return hv_half_to_float(static_cast<const unsigned short*>(base)[i]);
        if (kind == kGemmBf16) return hv_bf16_to_float(static_cast<const unsigned short*>(base)[i]);
        float v = static_cast<const float*>(base)[i];
        return kind == kGemmTf32 ? __uint_as_float(hv_to_tf32(v)) : v;
    };
    std::vector<float> col(static_cast<size_t>(k));
    for (long long j = 0; j < n; ++j) {
        for (long long t = 0; t < k; ++t) col[t] = load(b, j * ldb + t);
        for (long long i = 0; i < m; ++i) {
            float acc = 0.0f;
            for (long long t = 0; t < k; ++t) acc += load(a, i * lda + t) * col[t];
            c[j * ldc + i] = acc;
        }
    }
}

namespace {

// The GEMM steps of a program, as the emulator runs them: once, not per thread (grid and
// block must be 1 × 1 × 1 and 32). Arguments: A, B, C, m (rows), n (queries), k (dim), ldc.
template <int KIND, class T>
void gemm_step(const T* a, const T* b, float* c, long long m, long long n, int k, long long ldc) {
    hv_emu_gemm(KIND, m, n, k, a, k, b, k, c, ldc);
}
void hv_gemm_fp32(const float* a, const float* b, float* c, long long m, long long n, int k,
                  long long ldc) {
    gemm_step<kGemmFp32>(a, b, c, m, n, k, ldc);
}
void hv_gemm_tf32(const float* a, const float* b, float* c, long long m, long long n, int k,
                  long long ldc) {
    gemm_step<kGemmTf32>(a, b, c, m, n, k, ldc);
}
void hv_gemm_fp16(const unsigned short* a, const unsigned short* b, float* c, long long m,
                  long long n, int k, long long ldc) {
    gemm_step<kGemmFp16>(a, b, c, m, n, k, ldc);
}
void hv_gemm_bf16(const unsigned short* a, const unsigned short* b, float* c, long long m,
                  long long n, int k, long long ldc) {
    gemm_step<kGemmBf16>(a, b, c, m, n, k, ldc);
}

template <class F>
struct Signature;
template <class... A>
struct Signature<void(A...)> {
    static constexpr size_t count = sizeof...(A);
    static constexpr size_t sizes[sizeof...(A) + 1] = {sizeof(A)..., 0};
};

template <class... A, size_t... I>
void call_with(void (*f)(A...), void** p, std::index_sequence<I...>) {
    f(*static_cast<A*>(p[I])...);
}

template <class... A>
constexpr size_t arity(void (*)(A...)) {
    return sizeof...(A);
}

struct Entry {
    const char* name;
    void (*invoke)(void** params);
    const size_t* param_sizes;
    size_t params;
    // Runs once, on the host (the GEMM steps), not once per emulated thread.
    bool direct;
};

#define HV_EMU_KERNEL(f)                                                                   \
    Entry {                                                                                \
        #f, [](void** p) { call_with(f, p, std::make_index_sequence<arity(f)>{}); },        \
            Signature<decltype(f)>::sizes, Signature<decltype(f)>::count, false            \
    }
#define HV_EMU_DIRECT(f)                                                                   \
    Entry {                                                                                \
        #f, [](void** p) { call_with(f, p, std::make_index_sequence<arity(f)>{}); },        \
            Signature<decltype(f)>::sizes, Signature<decltype(f)>::count, true             \
    }

const Entry kKernels[] = {
    HV_EMU_KERNEL(hv_row_inv_norms),   HV_EMU_KERNEL(hv_score_small_q),
    HV_EMU_KERNEL(hv_score_tiled),     HV_EMU_KERNEL(hv_score_tiled_tf32),
    HV_EMU_KERNEL(hv_select_topk),     HV_EMU_KERNEL(hv_sort_topk),
    HV_EMU_KERNEL(hv_topk_small_q),    HV_EMU_KERNEL(hv_topk_tiled),
    HV_EMU_KERNEL(hv_topk_tiled_tf32), HV_EMU_KERNEL(hv_rows_to_half),
    HV_EMU_KERNEL(hv_score_small_q_f16), HV_EMU_KERNEL(hv_score_tiled_f16),
    HV_EMU_KERNEL(hv_topk_small_q_f16), HV_EMU_KERNEL(hv_topk_tiled_f16),
    HV_EMU_KERNEL(hv_filter_small_q), HV_EMU_KERNEL(hv_filter_small_q_f16),
    HV_EMU_KERNEL(hv_filter_tiled), HV_EMU_KERNEL(hv_filter_tiled_tf32),
    HV_EMU_KERNEL(hv_filter_tiled_f16), HV_EMU_KERNEL(hv_score_small_q_l2),
    HV_EMU_KERNEL(hv_score_tiled_l2), HV_EMU_KERNEL(hv_topk_small_q_l2),
    HV_EMU_KERNEL(hv_topk_tiled_l2), HV_EMU_KERNEL(hv_filter_small_q_l2),
    HV_EMU_KERNEL(hv_filter_tiled_l2), HV_EMU_KERNEL(hv_emu_selftest_divergent_barrier),
    HV_EMU_KERNEL(hv_emu_selftest_race), HV_EMU_KERNEL(hv_apply_row_factors),
    HV_EMU_KERNEL(hv_queries_to_half), HV_EMU_KERNEL(hv_select_topk_scored),
    HV_EMU_DIRECT(hv_gemm_fp32),
    HV_EMU_DIRECT(hv_gemm_tf32), HV_EMU_DIRECT(hv_gemm_fp16),
    HV_EMU_DIRECT(hv_gemm_bf16), HV_EMU_KERNEL(hv_score_small_q_bf16),
    HV_EMU_KERNEL(hv_score_tiled_bf16), HV_EMU_KERNEL(hv_topk_small_q_bf16),
    HV_EMU_KERNEL(hv_topk_tiled_bf16), HV_EMU_KERNEL(hv_filter_small_q_bf16),
    HV_EMU_KERNEL(hv_filter_tiled_bf16), HV_EMU_KERNEL(hv_int8_bounds), HV_EMU_KERNEL(hv_int8_mask),
    HV_EMU_KERNEL(hv_score_small_q_l2_f16), HV_EMU_KERNEL(hv_score_tiled_fp32_f16),
    HV_EMU_KERNEL(hv_score_tiled_l2_f16), HV_EMU_KERNEL(hv_topk_small_q_l2_f16),
    HV_EMU_KERNEL(hv_topk_tiled_fp32_f16), HV_EMU_KERNEL(hv_topk_tiled_l2_f16),
    HV_EMU_KERNEL(hv_filter_small_q_l2_f16), HV_EMU_KERNEL(hv_filter_tiled_fp32_f16),
    HV_EMU_KERNEL(hv_filter_tiled_l2_f16), HV_EMU_KERNEL(hv_score_small_q_l2_bf16),
    HV_EMU_KERNEL(hv_score_tiled_fp32_bf16), HV_EMU_KERNEL(hv_score_tiled_l2_bf16),
    HV_EMU_KERNEL(hv_topk_small_q_l2_bf16), HV_EMU_KERNEL(hv_topk_tiled_fp32_bf16),
    HV_EMU_KERNEL(hv_topk_tiled_l2_bf16), HV_EMU_KERNEL(hv_filter_small_q_l2_bf16),
    HV_EMU_KERNEL(hv_filter_tiled_fp32_bf16), HV_EMU_KERNEL(hv_filter_tiled_l2_bf16),
};

const Entry* find(const char* name) {
    for (const Entry& k : kKernels)
        if (strcmp(k.name, name) == 0) return &k;
    return nullptr;
}

struct Body {
    void (*invoke)(void**);
    void** params;
};

}  // namespace

// Runs kernel `name` over the grid, one block after another. params: as cuLaunchKernel's
// kernelParams (one pointer to each argument's value); device pointers are host pointers.
// Returns 0, or 1 with a message in err (unknown kernel, bad block size, deadlock, a warp
// collective with exited lanes).
extern "C" int hv_emu_launch(const char* name, const unsigned int* grid, const unsigned int* block,
                             unsigned int smem, void** params, unsigned long long seed, char* err,
                             size_t err_len) {
    static std::mutex serial;
    std::lock_guard<std::mutex> hold(serial);
    auto report = [&](const std::string& m) {
        snprintf(err, err_len, "%s: %s", name, m.c_str());
        return 1;
    };
    const Entry* e = find(name);
    if (!e) return report("no such kernel");
    if (e->direct) {
        if (grid[0] * grid[1] * grid[2] != 1 || block[0] * block[1] * block[2] != 32)
            return report("a GEMM step runs on a 1 x 1 x 1 grid of one warp");
        e->invoke(params);
        return 0;
    }
    hv_emu::Launch l;
    l.grid = dim3{grid[0], grid[1], grid[2]};
    l.block = dim3{block[0], block[1], block[2]};
    l.threads = block[0] * block[1] * block[2];
    if (l.threads == 0 || l.threads > 1024 || l.threads % 32 != 0)
        return report("block size must be a multiple of 32 up to 1024");
    if (smem > 48 * 1024) return report("more than 48 KiB of dynamic shared memory");
    l.fibers = hv_emu::fiber_pool(l.threads).data();
    l.warp_groups.resize(l.threads / 32);
    l.warp_slots.assign(l.threads, 0);
    l.dynamic_smem.assign(smem, 0xCD);  // garbage, as on a GPU
    l.rng.seed(seed);
    Body body{e->invoke, params};
    l.body = [](void* b) { static_cast<Body*>(b)->invoke(static_cast<Body*>(b)->params); };
    l.body_arg = &body;
    hv_emu::launch() = &l;
    for (unsigned int z = 0; z < l.grid.z && l.error.empty(); ++z)
        for (unsigned int y = 0; y < l.grid.y && l.error.empty(); ++y)
            for (unsigned int x = 0; x < l.grid.x && l.error.empty(); ++x) {
                l.bid = dim3{x, y, z};
                hv_emu::run_block(l);
            }
    hv_emu::launch() = nullptr;
    if (!l.error.empty()) return report(l.error);
    return 0;
}

// The size of each parameter of kernel `name`, in order, into out[0..cap); returns the
// parameter count, or -1 for an unknown kernel.
extern "C" int hv_emu_param_sizes(const char* name, size_t* out, size_t cap) {
    const Entry* e = find(name);
    if (!e) return -1;
    for (size_t i = 0; i < e->params && i < cap; ++i) out[i] = e->param_sizes[i];
    return static_cast<int>(e->params);
}
