// Top-k fused with scoring, for k ≤ HV_LIST_MAX_K: scores live only in registers and
// shared memory, and each warp keeps its queries' best k in a warp list (list.cuh). Every
// block writes k candidates per query for its part of rows row0 .. row0 + rows:
//   out_s/out_i[q * out_ld + part * k + j], j < k, best first (absent: HV_ABSENT_BITS, -1),
// and hv_select_topk / hv_sort_topk (topk.cu) merge the parts. Candidates are corpus row
// indices.
#include "common.cuh"
#include "list.cuh"
#include "small_q.cuh"
#include "tile.cuh"

// The fused kernels are bounded to 85 registers (three blocks per SM), which ptxas meets
// with no spill, except the FP32 tiled one: bounded so, it spills on sm_80, so it runs
// two blocks per SM (up to 128 registers).

// Small batches: one part per warp (part = global warp index), rows strided over warps.
// T is the corpus element (float, or FP16 bits); inv null means unit-norm rows.
template <class T>
__device__ __forceinline__ void hv_topk_small_q_impl(const float* __restrict__ queries, int nq,
                                                     int dim, const T* __restrict__ x,
                                                     const float* __restrict__ inv,
                                                     const float* __restrict__ bias,
                                                     const unsigned int* __restrict__ mask,
                                                     long long row0, long long rows, int k,
                                                     float* __restrict__ out_s,
                                                     long long* __restrict__ out_i,
                                                     long long out_ld) {
    HV_DYNAMIC_SMEM(float, q_s);
    hv_stage_queries(q_s, queries, nq, dim);
    int lane = threadIdx.x % HV_WARP;
    long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    long long part = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP;
    HvList lists[HV_SMALL_Q];
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q) hv_list_clear(lists[q]);
    const long long end = row0 + rows;
    // A masked-out row is not read (warp-uniform: every lane has the same r), except from
    // the FP16 copy, where the early test made ptxas spill on sm_90.
    const bool skip_masked = sizeof(T) == sizeof(float);
    for (long long r = row0 + part; r < end; r += warps) {
        if (skip_masked && !hv_live(mask, r)) continue;
        float acc[HV_SMALL_Q];
        hv_row_dots(q_s, nq, dim, x + r * dim, lane, acc);
        if (!skip_masked && !hv_live(mask, r)) continue;
        float s = inv ? inv[r] : 1.0f, b = bias ? bias[r] : 0.0f;
        #pragma unroll
        for (int q = 0; q < HV_SMALL_Q; ++q) {
            if (q < nq) {
                float v = acc[q] * s;
                unsigned int key = hv_key(bias ? v + b : v);
                unsigned int lk;
                long long li;
                hv_list_last(lists[q], k, lk, li);
                if (hv_better(key, r, lk, li)) hv_list_insert(lists[q], k, key, r);
            }
        }
    }
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q)
        if (q < nq) hv_list_store(lists[q], k, out_s + q * out_ld + part * k, out_i + q * out_ld + part * k);
}

// Two blocks per SM: the eight lists and four loads in flight per lane need up to 128
// registers; the loads in flight, not the warps, keep memory busy.
extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                long long row0, long long rows, int k, float* __restrict__ out_s,
                long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, k, out_s, out_i, out_ld);
}

// The same over the FP16 copy of the corpus (Precision::Fp16): half the bytes.
extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q_f16(const float* __restrict__ queries, int nq, int dim,
                    const unsigned short* __restrict__ x, const float* __restrict__ inv,
                    const unsigned int* __restrict__ mask, long long row0, long long rows,
                    int k, float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, k, out_s, out_i, out_ld);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q_bf16(const float* __restrict__ queries, int nq, int dim,
                     const HvBf16* __restrict__ x, const float* __restrict__ inv,
                     const unsigned int* __restrict__ mask, long long row0, long long rows,
                     int k, float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, row0, rows, k, out_s, out_i, out_ld);
}

// Large batches: block (x, y) takes queries 64y .. 64y+63 and rows
// row0 + [x · seg_tiles · 64, +seg_tiles · 64), one 64 × 64 tile at a time; warp w keeps the lists
// of queries 8w .. 8w+7 (the block's part and query tile: hv_tile_block).
template <int MODE, class T>
__device__ __forceinline__ void hv_topk_tiled_impl(const float* __restrict__ queries, int nq, int dim,
                                                   const T* __restrict__ x,
                                                   const float* __restrict__ inv,
                                                   const float* __restrict__ bias,
                                                   const unsigned int* __restrict__ mask,
                                                   long long row0, long long rows, int seg_tiles, int k,
                                                   float* __restrict__ out_s,
                                                   long long* __restrict__ out_i, long long out_ld) {
    __shared__ HvTileSmem sm;
    const int lane = threadIdx.x % HV_WARP, warp = threadIdx.x / HV_WARP;
    const HvTileBlock tb = hv_tile_block(nq);
    const int q0 = tb.q0;
    HvList lists[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) hv_list_clear(lists[i]);
    hv_walk_segment<MODE>(sm, queries, nq, dim, x, inv, bias, mask, row0, rows, seg_tiles, q0,
                          tb.part, [&](long long n0) {
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            int qm = warp * 8 + i;
            #pragma unroll
            for (int h = 0; h < 2; ++h) {
                int rn = lane + 32 * h;
                // Absent rows map to key 0, which is never offered.
                hv_list_offer(lists[i], k, hv_key(sm.s[qm][rn]), n0 + rn);
            }
        }
    });
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        int q = q0 + warp * 8 + i;
        if (q < nq) {
            long long at = (long long)q * out_ld + tb.part * k;
            hv_list_store(lists[i], k, out_s + at, out_i + at);
        }
    }
}

// Two blocks per SM at least: up to 128 registers for the eight lists and the tile.
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
              const float* __restrict__ inv, const unsigned int* __restrict__ mask, long long row0,
              long long rows, int seg_tiles, int k, float* __restrict__ out_s, long long* __restrict__ out_i,
              long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

// The same on the tensor cores, operands rounded to TF32 (Precision::Tf32).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_tf32(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                   const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                   long long row0, long long rows, int seg_tiles, int k, float* __restrict__ out_s,
                   long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_TF32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

// The same from the FP16 copy of the corpus (unit-norm rows, inv null), FP16 tensor cores
// (Precision::Fp16).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_f16(const float* __restrict__ queries, int nq, int dim,
                  const unsigned short* __restrict__ x, const float* __restrict__ inv,
                  const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                  float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP16>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_bf16(const float* __restrict__ queries, int nq, int dim,
                   const HvBf16* __restrict__ x, const float* __restrict__ inv,
                   const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                   float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_BF16>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

// L2 (FP32 only): the scores of hv_topk_small_q and hv_topk_tiled plus each row's bias
// -||row||^2 / 2, so the best score is the nearest row. Kernels of their own, so that the
// others keep their registers.
extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                   const float* __restrict__ bias, const unsigned int* __restrict__ mask,
                   long long row0, long long rows, int k, float* __restrict__ out_s,
                   long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_topk_tiled_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                 const float* __restrict__ bias, const unsigned int* __restrict__ mask, long long row0,
                 long long rows, int seg_tiles, int k, float* __restrict__ out_s,
                 long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

// A corpus stored in 16 bits, kept on the device as stored (see score.cu): L2's small
// batches, and the FP32 tiles (cosine and inner product: inv or null; L2: bias).
extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q_l2_f16(const float* __restrict__ queries, int nq, int dim,
                      const unsigned short* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long row0, long long rows,
                      int k, float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_fp32_f16(const float* __restrict__ queries, int nq, int dim,
                      const unsigned short* __restrict__ x, const float* __restrict__ inv,
                      const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                      float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_l2_f16(const float* __restrict__ queries, int nq, int dim,
                    const unsigned short* __restrict__ x, const float* __restrict__ bias,
                    const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                    float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(256, 2)
hv_topk_small_q_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                      const HvBf16* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long row0, long long rows,
                      int k, float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, row0, rows, k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_fp32_bf16(const float* __restrict__ queries, int nq, int dim,
                      const HvBf16* __restrict__ x, const float* __restrict__ inv,
                      const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                      float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS, 2)
hv_topk_tiled_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                    const HvBf16* __restrict__ x, const float* __restrict__ bias,
                    const unsigned int* __restrict__ mask, long long row0, long long rows, int seg_tiles, int k,
                    float* __restrict__ out_s, long long* __restrict__ out_i, long long out_ld) {
    hv_topk_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, row0, rows, seg_tiles,
                                k, out_s, out_i, out_ld);
}
