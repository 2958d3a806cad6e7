// Full cosine scores of unit-norm queries against corpus rows, for `cosine` and for top-k
// with k above what the fused kernels keep: out[q][r] = hv_row_score(Q[q] · X[r]): the
// cosine (inv the inverse norms), the inner product, or L2's score (bias).
// Rows cleared in the live mask score absent (never selected by top-k).
#include "common.cuh"
#include "small_q.cuh"
#include "tile.cuh"

// Memory-bound scorer for small batches (Q ≤ HV_SMALL_Q): see small_q.cuh. T is the
// corpus element (float, or FP16 bits); inv null means unit-norm rows.
template <class T>
__device__ __forceinline__ void hv_score_small_q_impl(const float* __restrict__ queries, int nq,
                                                      int dim, const T* __restrict__ x,
                                                      const float* __restrict__ inv,
                                                      const float* __restrict__ bias,
                                                      const unsigned int* __restrict__ mask,
                                                      long long row0, long long rows,
                                                      float* __restrict__ out, long long ld) {
    HV_DYNAMIC_SMEM(float, q_s);
    hv_stage_queries(q_s, queries, nq, dim);
    int lane = threadIdx.x % HV_WARP;
    long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    long long first = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP;
    for (long long i = first; i < rows; i += warps) {
        long long r = row0 + i;
        // A masked-out row is never read (warp-uniform: every lane has the same r).
        if (!hv_live(mask, r)) {
            if (lane < nq) out[lane * ld + i] = __uint_as_float(HV_ABSENT_BITS);
            continue;
        }
        float acc[HV_SMALL_Q];
        hv_row_dots(q_s, nq, dim, x + r * dim, lane, acc);
        // Every lane has every total; lane q stores query q's.
        float mine = acc[0];
        #pragma unroll
        for (int q = 1; q < HV_SMALL_Q; ++q) mine = lane == q ? acc[q] : mine;
        if (lane < nq) out[lane * ld + i] = hv_row_score(mine, inv, bias, r);
    }
}

extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                 const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                 long long row0, long long rows, float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// The same over the FP16 copy of the corpus (Precision::Fp16): half the bytes.
extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q_f16(const float* __restrict__ queries, int nq, int dim,
                     const unsigned short* __restrict__ x, const float* __restrict__ inv,
                     const unsigned int* __restrict__ mask, long long row0, long long rows,
                     float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q_bf16(const float* __restrict__ queries, int nq, int dim,
                      const HvBf16* __restrict__ x, const float* __restrict__ inv,
                      const unsigned int* __restrict__ mask, long long row0, long long rows,
                      float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// Compute-bound scorer for large batches: one 64 × 64 tile per block (tile.cuh), copied
// out row by row so the stores coalesce.
template <int MODE, class T>
__device__ __forceinline__ void hv_score_tiled_impl(const float* __restrict__ queries, int nq, int dim,
                                                    const T* __restrict__ x,
                                                    const float* __restrict__ inv,
                                                    const float* __restrict__ bias,
                                                    const unsigned int* __restrict__ mask,
                                                    long long row0, long long rows,
                                                    float* __restrict__ out, long long ld) {
    __shared__ HvTileSmem sm;
    const HvTileBlock tb = hv_tile_block(nq);
    const int q0 = tb.q0;
    const long long n0 = tb.part * HV_TN;
    hv_tile_scores<MODE>(sm, queries, nq, dim, x, inv, bias, mask, row0, rows, q0, n0);
    for (int e = threadIdx.x; e < HV_TM * HV_TN; e += HV_TILE_THREADS) {
        int qm = e / HV_TN, rn = e % HV_TN;
        if (q0 + qm < nq && n0 + rn < rows) out[(long long)(q0 + qm) * ld + n0 + rn] = sm.s[qm][rn];
    }
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
               const float* __restrict__ inv, const unsigned int* __restrict__ mask,
               long long row0, long long rows, float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// The same on the tensor cores, operands rounded to TF32 (Precision::Tf32).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_tf32(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                    const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                    long long row0, long long rows, float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_TF32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// The same from the FP16 copy of the corpus (unit-norm rows, inv null), FP16 tensor cores
// (Precision::Fp16).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_f16(const float* __restrict__ queries, int nq, int dim,
                   const unsigned short* __restrict__ x, const float* __restrict__ inv,
                   const unsigned int* __restrict__ mask, long long row0, long long rows,
                   float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP16>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_bf16(const float* __restrict__ queries, int nq, int dim,
                    const HvBf16* __restrict__ x, const float* __restrict__ inv,
                    const unsigned int* __restrict__ mask, long long row0, long long rows,
                    float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_BF16>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

// L2 (FP32 only): hv_score_small_q and hv_score_tiled with each row's bias
// -||row||^2 / 2 added to its scores.
extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                    const float* __restrict__ bias, const unsigned int* __restrict__ mask,
                    long long row0, long long rows, float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                  const float* __restrict__ bias, const unsigned int* __restrict__ mask,
                  long long row0, long long rows, float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

// A corpus stored in 16 bits (StoreConfig's F16 and BF16), kept on the device as stored
// with no f32 copy: the rows are widened to f32 as they are read, and every product and
// sum is FP32, as on the CPU, so a score is exact with respect to the stored values.
// Cosine and inner product read them through hv_score_small_q_f16 / _bf16 (inv the rows'
// inverse norms, or null); these are the rest: L2's small batches, and the FP32 tiles.
extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q_l2_f16(const float* __restrict__ queries, int nq, int dim,
                      const unsigned short* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long row0, long long rows,
                      float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_fp32_f16(const float* __restrict__ queries, int nq, int dim,
                       const unsigned short* __restrict__ x, const float* __restrict__ inv,
                       const unsigned int* __restrict__ mask, long long row0, long long rows,
                       float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_l2_f16(const float* __restrict__ queries, int nq, int dim,
                     const unsigned short* __restrict__ x, const float* __restrict__ bias,
                     const unsigned int* __restrict__ mask, long long row0, long long rows,
                     float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(256, 3)
hv_score_small_q_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                      const HvBf16* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long row0, long long rows,
                      float* __restrict__ out, long long ld) {
    hv_score_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_fp32_bf16(const float* __restrict__ queries, int nq, int dim,
                       const HvBf16* __restrict__ x, const float* __restrict__ inv,
                       const unsigned int* __restrict__ mask, long long row0, long long rows,
                       float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, out, ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_score_tiled_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                     const HvBf16* __restrict__ x, const float* __restrict__ bias,
                     const unsigned int* __restrict__ mask, long long row0, long long rows,
                     float* __restrict__ out, long long ld) {
    hv_score_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, out, ld);
}

// The scores of rows row0 .. row0 + rows from their dot products, in place (after a GEMM
// wrote the dots: cuBLAS does the arithmetic, this the per-row part the fused kernels do
// in their epilogue): out[q][i] = hv_row_score(out[q][i]) for live rows, absent for rows
// the mask clears. Memory-bound: one read and one write of each score.
extern "C" __global__ void __launch_bounds__(256)
hv_apply_row_factors(float* __restrict__ out, long long ld, int nq, long long row0,
                     long long rows, const float* __restrict__ inv,
                     const float* __restrict__ bias, const unsigned int* __restrict__ mask) {
    long long total = (long long)nq * rows;
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step) {
        long long q = e / rows, i = e % rows, r = row0 + i;
        float* s = out + q * ld + i;
        *s = hv_live(mask, r) ? hv_row_score(*s, inv, bias, r) : __uint_as_float(HV_ABSENT_BITS);
    }
}
