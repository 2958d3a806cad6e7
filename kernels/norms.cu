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
