// Row norms of the device-resident corpus, computed once per uploaded row.
#include "common.cuh"

// inv[r] = 1 / ||x[r]|| (0 for a zero row), one warp per row; x is rows × dim, row-major.
extern "C" __global__ void hv_row_inv_norms(const float* __restrict__ x, long long rows, int dim,
                                            float* __restrict__ inv) {
    long long row = ((long long)blockIdx.x * blockDim.x + threadIdx.x) / HV_WARP;
    int lane = threadIdx.x % HV_WARP;
    if (row >= rows) return;
    const float* r = x + row * dim;
    float acc = 0.0f;
    for (int i = lane; i < dim; i += HV_WARP) acc = fmaf(r[i], r[i], acc);
    acc = hv_warp_sum(acc);
    if (lane == 0) inv[row] = acc > 0.0f ? 1.0f / sqrtf(acc) : 0.0f;
}

// A 16-bit value of f: FP16 bits, or BF16 bits when `bf16` is set (round to nearest even).
__device__ __forceinline__ unsigned short hv_to_16(float f, int bf16) {
    return bf16 ? hv_float_to_bf16(f) : hv_float_to_half(f);
}

// The 16-bit copy of the corpus (Precision::Fp16, or Bf16 when `bf16` is set):
// out[r][i] = x[r][i] * inv[r] rounded, so every row is unit-norm and every value within
// [-1, 1], far inside the FP16 range.
extern "C" __global__ void hv_rows_to_half(const float* __restrict__ x, long long rows, int dim,
                                           const float* __restrict__ inv, int bf16,
                                           unsigned short* __restrict__ out) {
    long long total = rows * dim;
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step)
        out[e] = hv_to_16(x[e] * inv[e / dim], bf16);
}

// 16-bit copies of the (unit-norm) queries, for a GEMM against the corpus's 16-bit copy.
extern "C" __global__ void hv_queries_to_half(const float* __restrict__ q, long long count,
                                              int bf16, unsigned short* __restrict__ out) {
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += step)
        out[e] = hv_to_16(q[e], bf16);
}
