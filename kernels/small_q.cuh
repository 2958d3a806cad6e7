// The memory-bound half of scoring: Q ≤ HV_SMALL_Q queries against a stream of corpus
// rows, one warp per row, coalesced 16-byte loads, many rows per block. The queries sit in
// dynamic shared memory set per launch, so concurrent calls never share them.
#pragma once
#include "common.cuh"

#define HV_SMALL_Q 8

// Copies nq × dim query floats into shared memory; ends with a barrier.
__device__ __forceinline__ void hv_stage_queries(float* q_s, const float* __restrict__ queries,
                                                 int nq, int dim) {
    for (int i = threadIdx.x; i < nq * dim; i += blockDim.x) q_s[i] = queries[i];
    __syncthreads();
}

// acc[q] = Q[q] · xr for q < nq, summed over the warp (every lane gets the totals).
__device__ __forceinline__ void hv_row_dots(const float* q_s, int nq, int dim,
                                            const float* __restrict__ xr, int lane,
                                            float (&acc)[HV_SMALL_Q]) {
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q) acc[q] = 0.0f;
    if ((dim & 3) == 0) {
        const float4* x4 = reinterpret_cast<const float4*>(xr);
        const float4* q4 = reinterpret_cast<const float4*>(q_s);
        const int d4 = dim / 4;
        // Four 16-byte loads in flight per lane before their FMAs (at D = 768, a lane's
        // six loads of the row in two rounds), then the rest one by one.
        int j = lane;
        for (; j + 3 * HV_WARP < d4; j += 4 * HV_WARP) {
            float4 v[4];
            #pragma unroll
            for (int u = 0; u < 4; ++u) v[u] = __ldg(x4 + j + u * HV_WARP);
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q) {
                if (q < nq) {
                    #pragma unroll
                    for (int u = 0; u < 4; ++u) {
                        const float4 w = q4[q * d4 + j + u * HV_WARP];
                        acc[q] = fmaf(v[u].x, w.x, fmaf(v[u].y, w.y, fmaf(v[u].z, w.z, fmaf(v[u].w, w.w, acc[q]))));
                    }
                }
            }
        }
        for (; j < d4; j += HV_WARP) {
            float4 v = __ldg(x4 + j);
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q) {
                if (q < nq) {
                    float4 w = q4[q * d4 + j];
                    acc[q] = fmaf(v.x, w.x, fmaf(v.y, w.y, fmaf(v.z, w.z, fmaf(v.w, w.w, acc[q]))));
                }
            }
        }
    } else {
        for (int j = lane; j < dim; j += HV_WARP) {
            float v = __ldg(xr + j);
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q)
                if (q < nq) acc[q] = fmaf(v, q_s[q * dim + j], acc[q]);
        }
    }
    // nq is uniform over the warp: only the queries present pay for a warp sum.
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q)
        if (q < nq) acc[q] = hv_warp_sum(acc[q]);
}

// acc[q] += Q[q][at .. at + 8] · the eight 16-bit values of p (the element type of
// `row`), for q < nq.
template <class H>
__device__ __forceinline__ void hv_half8_dots(const H* row, const float* q_s, int nq, int dim,
                                              int at, uint4 p, float (&acc)[HV_SMALL_Q]) {
    unsigned int words[4] = {p.x, p.y, p.z, p.w};
    float v[8];
    #pragma unroll
    for (int i = 0; i < 4; ++i) hv_unpack2(row, words[i], v[2 * i], v[2 * i + 1]);
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q) {
        if (q < nq) {
            // Two 128-bit shared loads (dim and at are multiples of 8 here).
            const float4* w4 = reinterpret_cast<const float4*>(q_s + q * dim + at);
            const float4 lo = w4[0], hi = w4[1];
            const float w[8] = {lo.x, lo.y, lo.z, lo.w, hi.x, hi.y, hi.z, hi.w};
            #pragma unroll
            for (int i = 0; i < 8; ++i) acc[q] = fmaf(v[i], w[i], acc[q]);
        }
    }
}

// The same over a row stored in FP16 or BF16 (half the bytes to stream; H is unsigned
// short or HvBf16): 16-byte loads of eight values when dim is a multiple of 8, products
// and sums in f32.
template <class H>
__device__ __forceinline__ void hv_row_dots(const float* q_s, int nq, int dim,
                                            const H* __restrict__ xr, int lane,
                                            float (&acc)[HV_SMALL_Q]) {
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q) acc[q] = 0.0f;
    if ((dim & 7) == 0) {
        const uint4* x8 = reinterpret_cast<const uint4*>(xr);
        const int d8 = dim / 8;
        // Two 16-byte loads (16 values) in flight per lane before their FMAs.
        int j = lane;
        for (; j + HV_WARP < d8; j += 2 * HV_WARP) {
            uint4 p[2];
            #pragma unroll
            for (int u = 0; u < 2; ++u) p[u] = __ldg(x8 + j + u * HV_WARP);
            #pragma unroll
            for (int u = 0; u < 2; ++u) hv_half8_dots(xr, q_s, nq, dim, 8 * (j + u * HV_WARP), p[u], acc);
        }
        for (; j < d8; j += HV_WARP) hv_half8_dots(xr, q_s, nq, dim, 8 * j, __ldg(x8 + j), acc);
    } else {
        for (int j = lane; j < dim; j += HV_WARP) {
            float v = hv_bits_to_float(xr, hv_ldg_bits(xr, j));
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q)
                if (q < nq) acc[q] = fmaf(v, q_s[q * dim + j], acc[q]);
        }
    }
    // nq is uniform over the warp: only the queries present pay for a warp sum.
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q)
        if (q < nq) acc[q] = hv_warp_sum(acc[q]);
}
