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

// The FP16 copy of the corpus (Precision::Fp16): out[r][i] = fp16(x[r][i] * inv[r]), so
// every row is unit-norm and every value within [-1, 1], far inside the FP16 range.
extern "C" __global__ void hv_rows_to_half(const float* __restrict__ x, long long rows, int dim,
                                           const float* __restrict__ inv,
                                           unsigned short* __restrict__ out) {
    long long total = rows * dim;
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += step)
        out[e] = hv_float_to_half(x[e] * inv[e / dim]);
}

// FP16 copies of the (unit-norm) queries, for a GEMM against the FP16 corpus copy.
extern "C" __global__ void hv_queries_to_half(const float* __restrict__ q, long long count,
                                              unsigned short* __restrict__ out) {
    long long step = (long long)gridDim.x * blockDim.x;
    for (long long e = (long long)blockIdx.x * blockDim.x + threadIdx.x; e < count; e += step)
        out[e] = hv_float_to_half(q[e]);
}
