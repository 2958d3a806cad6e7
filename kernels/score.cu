// Cosine scores of unit-norm queries against corpus rows: out[q][r] = (Q[q] · X[r]) * inv[r].
// Rows cleared in the live mask score HV_ABSENT (never selected by top-k).
#include "common.cuh"

// Memory-bound scorer for small batches (Q ≤ HV_SMALL_Q): the corpus is streamed once with
// coalesced 16-byte loads, one warp per row and many rows per block; the queries sit in
// shared memory (per launch, so concurrent calls never share them).
#define HV_SMALL_Q 8

extern "C" __global__ void hv_score_small_q(const float* __restrict__ queries, int nq, int dim,
                                            const float* __restrict__ x, const float* __restrict__ inv,
                                            const unsigned int* __restrict__ mask,
                                            long long row0, long long rows,
                                            float* __restrict__ out, long long ld) {
    extern __shared__ float4 hv_smem4[];
    float* q_s = (float*)hv_smem4;
    for (int i = threadIdx.x; i < nq * dim; i += blockDim.x) q_s[i] = queries[i];
    __syncthreads();
    int lane = threadIdx.x % HV_WARP;
    long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    long long first = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP;
    bool vec4 = (dim & 3) == 0;
    for (long long i = first; i < rows; i += warps) {
        long long r = row0 + i;
        float acc[HV_SMALL_Q];
        #pragma unroll
        for (int q = 0; q < HV_SMALL_Q; ++q) acc[q] = 0.0f;
        const float* xr = x + r * dim;
        if (vec4) {
            const float4* x4 = (const float4*)xr;
            int d4 = dim / 4;
            for (int j = lane; j < d4; j += HV_WARP) {
                float4 v = __ldg(x4 + j);
                #pragma unroll
                for (int q = 0; q < HV_SMALL_Q; ++q) {
                    if (q < nq) {
                        float4 w = ((const float4*)(q_s + q * dim))[j];
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
        bool live = hv_live(mask, r);
        float s = inv[r];
        #pragma unroll
        for (int q = 0; q < HV_SMALL_Q; ++q) {
            if (q < nq) {
                float t = hv_warp_sum(acc[q]);
                if (lane == 0)
                    out[q * ld + i] = live ? t * s : __uint_as_float(HV_ABSENT_BITS);
            }
        }
    }
}

// Compute-bound scorer for large batches: a 64 × 64 output tile per block of 256 threads,
// each thread 4 × 4 outputs, K slices of 16 staged through shared memory. Exact FP32.
#define HV_TM 64
#define HV_TN 64
#define HV_TK 16

extern "C" __global__ void __launch_bounds__(256)
hv_score_tiled(const float* __restrict__ queries, int nq, int dim,
               const float* __restrict__ x, const float* __restrict__ inv,
               const unsigned int* __restrict__ mask,
               long long row0, long long rows,
               float* __restrict__ out, long long ld) {
    __shared__ float a_s[HV_TK][HV_TM + 4];
    __shared__ float b_s[HV_TK][HV_TN + 4];
    int tx = threadIdx.x % 16, ty = threadIdx.x / 16;
    int q0 = blockIdx.y * HV_TM;
    long long n0 = (long long)blockIdx.x * HV_TN;
    float acc[4][4] = {};
    for (int k0 = 0; k0 < dim; k0 += HV_TK) {
        // 64 × 16 values of each operand, 4 per thread, stored K-major.
        for (int e = threadIdx.x; e < HV_TM * HV_TK; e += 256) {
            int m = e / HV_TK, k = e % HV_TK;
            int q = q0 + m, kk = k0 + k;
            a_s[k][m] = (q < nq && kk < dim) ? queries[(long long)q * dim + kk] : 0.0f;
            long long n = n0 + m;
            b_s[k][m] = (n < rows && kk < dim) ? x[(row0 + n) * dim + kk] : 0.0f;
        }
        __syncthreads();
        #pragma unroll
        for (int k = 0; k < HV_TK; ++k) {
            float a[4], b[4];
            #pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = a_s[k][ty * 4 + i];
            #pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = b_s[k][tx * 4 + j];
            #pragma unroll
            for (int i = 0; i < 4; ++i)
                #pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
        }
        __syncthreads();
    }
    #pragma unroll
    for (int j = 0; j < 4; ++j) {
        long long n = n0 + tx * 4 + j;
        if (n >= rows) continue;
        long long r = row0 + n;
        bool live = hv_live(mask, r);
        float s = inv[r];
        #pragma unroll
        for (int i = 0; i < 4; ++i) {
            int q = q0 + ty * 4 + i;
            if (q < nq) out[q * ld + n] = live ? acc[i][j] * s : __uint_as_float(HV_ABSENT_BITS);
        }
    }
}
