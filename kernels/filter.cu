// Top-k for k above the warp lists (HV_LIST_MAX_K < k ≤ HV_MAX_K), fused with scoring by a
// threshold. tau[q · tau_ld] is a score no better than query q's k-th best (the k-th best of
// k or more sampled rows), so only rows scoring at least that can be in the answer; those
// are appended to the query's list:
//   out_s/out_i[q * cap + slot], slot = count[q]++ (count zero before the launch),
// and hv_select_topk (with the counts) picks the top k from the lists. Scores never go to
// device memory; candidates do, about k · rows / sample per query. count[q] may end above
// cap, the lists then being incomplete: the host checks and runs the chunked path instead.
#include "common.cuh"
#include "list.cuh"
#include "small_q.cuh"
#include "tile.cuh"

// The lowest order key that passes for query q: tau's, less 8 units in the last place, so
// that a row scored a few ulps apart from its sampled score still passes (extra candidates
// are harmless). An absent tau (fewer than k live rows sampled) lets every live row pass.
__device__ __forceinline__ unsigned int hv_filter_floor(const float* __restrict__ tau,
                                                        long long tau_ld, long long q) {
    unsigned int t = hv_key(tau[q * tau_ld]);
    return t > 8u ? t - 8u : 1u;
}

__device__ __forceinline__ void hv_filter_store(unsigned int slot, long long cap, long long q, float s,
                                                long long r, float* __restrict__ out_s,
                                                long long* __restrict__ out_i) {
    if (slot < cap) {
        out_s[q * cap + slot] = s;
        out_i[q * cap + slot] = r;
    }
}

// Small batches: one warp per row, rows strided over warps (as hv_topk_small_q).
template <class T>
__device__ __forceinline__ void hv_filter_small_q_impl(const float* __restrict__ queries, int nq,
                                                       int dim, const T* __restrict__ x,
                                                       const float* __restrict__ inv,
                                                       const float* __restrict__ bias,
                                                       const unsigned int* __restrict__ mask,
                                                       long long rows, const float* __restrict__ tau, long long tau_ld,
                                                       unsigned int* __restrict__ count,
                                                       long long cap, float* __restrict__ out_s,
                                                       long long* __restrict__ out_i) {
    HV_DYNAMIC_SMEM(float, q_s);
    hv_stage_queries(q_s, queries, nq, dim);
    int lane = threadIdx.x % HV_WARP;
    long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    long long first = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP;
    // Lane q < nq filters query q.
    unsigned int floor = lane < nq ? hv_filter_floor(tau, tau_ld, lane) : 0xffffffffu;
    for (long long r = first; r < rows; r += warps) {
        float acc[HV_SMALL_Q];
        // A masked-out row is never read (warp-uniform: every lane has the same r).
        if (!hv_live(mask, r)) continue;
        hv_row_dots(q_s, nq, dim, x + r * dim, lane, acc);
        float mine = acc[0];
        #pragma unroll
        for (int q = 1; q < HV_SMALL_Q; ++q) mine = lane == q ? acc[q] : mine;
        float sc = hv_row_score(mine, inv, bias, r);
        if (lane < nq && hv_key(sc) >= floor)
            hv_filter_store(atomicAdd(count + lane, 1u), cap, lane, sc, r, out_s, out_i);
    }
}

extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                  const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                  long long rows, const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                  long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, rows, tau, tau_ld, count, cap, out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q_f16(const float* __restrict__ queries, int nq, int dim,
                      const unsigned short* __restrict__ x, const float* __restrict__ inv,
                      const unsigned int* __restrict__ mask, long long rows,
                      const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                      long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, rows, tau, tau_ld, count, cap, out_s, out_i);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q_bf16(const float* __restrict__ queries, int nq, int dim,
                       const HvBf16* __restrict__ x, const float* __restrict__ inv,
                       const unsigned int* __restrict__ mask, long long rows,
                       const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                       long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, inv, nullptr, mask, rows, tau, tau_ld, count, cap, out_s, out_i);
}

// Large batches: block (x, y) takes queries 64y .. 64y+63 and rows
// [x · seg_tiles · 64, +seg_tiles · 64), a tile at a time; warp w filters queries
// 8w .. 8w+7, one atomic per warp and query for all its passing lanes.
template <int MODE, class T>
__device__ __forceinline__ void hv_filter_tiled_impl(const float* __restrict__ queries, int nq, int dim,
                                                     const T* __restrict__ x,
                                                     const float* __restrict__ inv,
                                                     const float* __restrict__ bias,
                                                     const unsigned int* __restrict__ mask,
                                                     long long rows, int seg_tiles,
                                                     const float* __restrict__ tau, long long tau_ld,
                                                     unsigned int* __restrict__ count, long long cap,
                                                     float* __restrict__ out_s,
                                                     long long* __restrict__ out_i) {
    __shared__ HvTileSmem sm;
    const int lane = threadIdx.x % HV_WARP, warp = threadIdx.x / HV_WARP;
    const HvTileBlock tb = hv_tile_block(nq);
    const int q0 = tb.q0;
    unsigned int floor[8];
    #pragma unroll
    for (int i = 0; i < 8; ++i) {
        int q = q0 + warp * 8 + i;
        floor[i] = q < nq ? hv_filter_floor(tau, tau_ld, q) : 0xffffffffu;  // nothing passes
    }
    hv_walk_segment<MODE>(sm, queries, nq, dim, x, inv, bias, mask, 0, rows, seg_tiles, q0,
                          tb.part, [&](long long n0) {
        #pragma unroll
        for (int i = 0; i < 8; ++i) {
            int qm = warp * 8 + i;
            float s0 = sm.s[qm][lane], s1 = sm.s[qm][lane + 32];
            // Absent rows have key 0, below every floor.
            bool p0 = hv_key(s0) >= floor[i], p1 = hv_key(s1) >= floor[i];
            unsigned int b0 = __ballot_sync(HV_FULL, p0), b1 = __ballot_sync(HV_FULL, p1);
            if ((b0 | b1) == 0u) continue;  // warp-uniform
            unsigned int base = 0;
            if (lane == 0) base = atomicAdd(count + q0 + qm, (unsigned int)(__popc(b0) + __popc(b1)));
            base = __shfl_sync(HV_FULL, base, 0);
            unsigned int below = (1u << lane) - 1u;
            long long q = q0 + qm;
            if (p0) hv_filter_store(base + __popc(b0 & below), cap, q, s0, n0 + lane, out_s, out_i);
            if (p1)
                hv_filter_store(base + __popc(b0) + __popc(b1 & below), cap, q, s1, n0 + lane + 32,
                                out_s, out_i);
        }
    });
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                const float* __restrict__ inv, const unsigned int* __restrict__ mask, long long rows,
                int seg_tiles, const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_tf32(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                     const float* __restrict__ inv, const unsigned int* __restrict__ mask,
                     long long rows, int seg_tiles, const float* __restrict__ tau, long long tau_ld,
                     unsigned int* __restrict__ count, long long cap, float* __restrict__ out_s,
                     long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_TF32>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_f16(const float* __restrict__ queries, int nq, int dim,
                    const unsigned short* __restrict__ x, const float* __restrict__ inv,
                    const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                    const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                    float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP16>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

// The same over the BF16 copy of the corpus (Precision::Bf16).
extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_bf16(const float* __restrict__ queries, int nq, int dim,
                     const HvBf16* __restrict__ x, const float* __restrict__ inv,
                     const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                     const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                     float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_BF16>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

// L2 (FP32 only): hv_filter_small_q and hv_filter_tiled with each row's bias
// -||row||^2 / 2 added to its scores.
extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                     const float* __restrict__ bias, const unsigned int* __restrict__ mask,
                     long long rows, const float* __restrict__ tau, long long tau_ld,
                     unsigned int* __restrict__ count, long long cap, float* __restrict__ out_s,
                     long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, rows, tau, tau_ld, count, cap,
                           out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_l2(const float* __restrict__ queries, int nq, int dim, const float* __restrict__ x,
                   const float* __restrict__ bias, const unsigned int* __restrict__ mask, long long rows,
                   int seg_tiles, const float* __restrict__ tau, long long tau_ld,
                   unsigned int* __restrict__ count, long long cap, float* __restrict__ out_s,
                   long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, rows, seg_tiles, tau, tau_ld,
                                  count, cap, out_s, out_i);
}

// A corpus stored in 16 bits, kept on the device as stored (see score.cu): L2's small
// batches, and the FP32 tiles (cosine and inner product: inv or null; L2: bias).
extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q_l2_f16(const float* __restrict__ queries, int nq, int dim,
                        const unsigned short* __restrict__ x, const float* __restrict__ bias,
                        const unsigned int* __restrict__ mask, long long rows,
                        const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                        long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, rows, tau, tau_ld, count, cap, out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_fp32_f16(const float* __restrict__ queries, int nq, int dim,
                        const unsigned short* __restrict__ x, const float* __restrict__ inv,
                        const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                        const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                        float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_l2_f16(const float* __restrict__ queries, int nq, int dim,
                      const unsigned short* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                      const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                      float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(256)
hv_filter_small_q_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                        const HvBf16* __restrict__ x, const float* __restrict__ bias,
                        const unsigned int* __restrict__ mask, long long rows,
                        const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count,
                        long long cap, float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_small_q_impl(queries, nq, dim, x, nullptr, bias, mask, rows, tau, tau_ld, count, cap, out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_fp32_bf16(const float* __restrict__ queries, int nq, int dim,
                        const HvBf16* __restrict__ x, const float* __restrict__ inv,
                        const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                        const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                        float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, inv, nullptr, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}

extern "C" __global__ void __launch_bounds__(HV_TILE_THREADS)
hv_filter_tiled_l2_bf16(const float* __restrict__ queries, int nq, int dim,
                      const HvBf16* __restrict__ x, const float* __restrict__ bias,
                      const unsigned int* __restrict__ mask, long long rows, int seg_tiles,
                      const float* __restrict__ tau, long long tau_ld, unsigned int* __restrict__ count, long long cap,
                      float* __restrict__ out_s, long long* __restrict__ out_i) {
    hv_filter_tiled_impl<HV_FP32>(queries, nq, dim, x, nullptr, bias, mask, rows, seg_tiles, tau, tau_ld, count, cap,
                                  out_s, out_i);
}
