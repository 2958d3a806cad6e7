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
        int d4 = dim / 4;
        for (int j = lane; j < d4; j += HV_WARP) {
            float4 v = __ldg(x4 + j);
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q) {
                if (q < nq) {
                    float4 w = reinterpret_cast<const float4*>(q_s + q * dim)[j];
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

// The same over a row stored in FP16 (half the bytes to stream): 16-byte loads of eight
// values when dim is a multiple of 8, products and sums in f32.
__device__ __forceinline__ void hv_row_dots(const float* q_s, int nq, int dim,
                                            const unsigned short* __restrict__ xr, int lane,
                                            float (&acc)[HV_SMALL_Q]) {
    #pragma unroll
    for (int q = 0; q < HV_SMALL_Q; ++q) acc[q] = 0.0f;
    if ((dim & 7) == 0) {
        const uint4* x8 = reinterpret_cast<const uint4*>(xr);
        int d8 = dim / 8;
        for (int j = lane; j < d8; j += HV_WARP) {
            uint4 p = __ldg(x8 + j);
            unsigned int words[4] = {p.x, p.y, p.z, p.w};
            float v[8];
            #pragma unroll
            for (int i = 0; i < 4; ++i) {
                v[2 * i] = hv_half_to_float(static_cast<unsigned short>(words[i] & 0xffffu));
                v[2 * i + 1] = hv_half_to_float(static_cast<unsigned short>(words[i] >> 16));
            }
            #pragma unroll
            for (int q = 0; q < HV_SMALL_Q; ++q) {
                if (q < nq) {
                    const float* w = q_s + q * dim + 8 * j;
                    #pragma unroll
                    for (int i = 0; i < 8; ++i) acc[q] = fmaf(v[i], w[i], acc[q]);
                }
            }
        }
    } else {
        for (int j = lane; j < dim; j += HV_WARP) {
            float v = hv_half_to_float(__ldg(xr + j));
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
