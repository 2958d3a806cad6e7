// Shared by every kernel file. Device code only; compiled by nvcc or NVRTC (no host headers).
#pragma once

// An absent candidate: a score whose order key is 0, below every real score (-inf
// included). Scores are never NaN (inputs are finite and norms bounded), so nothing real
// maps to it.
#define HV_ABSENT_BITS 0xFFFFFFFFu
#define HV_WARP 32

// Order-preserving map from f32 to u32: a larger score gives a larger key.
__device__ __forceinline__ unsigned int hv_key(float f) {
    unsigned int b = __float_as_uint(f);
    return (b & 0x80000000u) ? ~b : (b | 0x80000000u);
}

__device__ __forceinline__ float hv_warp_sum(float v) {
    #pragma unroll
    for (int o = HV_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Row r is live unless the mask (one bit per row, may be null) clears it.
__device__ __forceinline__ bool hv_live(const unsigned int* __restrict__ mask, long long r) {
    return mask == nullptr || ((mask[r >> 5] >> (r & 31)) & 1u);
}
