// The certified int8 scan on the device (see src/quant/int8.rs for the bounds, and
// src/cuda/program/int8.rs for the program): each live row's int8 dot product with each
// query, exact in i32, becomes an interval that provably holds the row's FP32 score
// (cosine, inner product or L2, as the FP32 kernels compute it, in any summation order);
// the k-th best lower bound of a query is its floor, and only rows whose upper bound
// reaches some query's floor are re-scored. The interval is computed in f64 with every
// operation rounded to nearest on its own (no contraction into FMAs, which the error
// analysis does not assume), then stored outward as f32: lower bounds rounded down, upper
// bounds rounded up.
#include "common.cuh"

// Words of a query as the program uploads it: its four bounds (scale, residual bound,
// norm bound, coded-norm bound, as f32), then its codes, four to a word, zero-padded.
__device__ __forceinline__ int hv_int8_query_words(int dim) { return 4 + (dim + 3) / 4; }

// f32's unit roundoff, and half the smallest subnormal's spacing doubled (2^-149).
#define HV_U32 5.9604644775390625e-08
#define HV_F32_TINY 1.401298464324817e-45
// f64's unit roundoff, and its smallest normal.
#define HV_U64 1.1102230246251565e-16
#define HV_F64_MIN 2.2250738585072014e-308

// c + the four signed-byte products of a and b.
#ifndef HV_EMULATION
__device__ __forceinline__ int hv_dp4a(int a, int b, int c) {
    int d;
    asm("dp4a.s32.s32 %0, %1, %2, %3;" : "=r"(d) : "r"(a), "r"(b), "r"(c));
    return d;
}
#else
__device__ __forceinline__ int hv_dp4a(int a, int b, int c) { return __dp4a(a, b, c); }
#endif

__device__ __forceinline__ double hv_mul(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ double hv_add(double a, double b) { return __dadd_rn(a, b); }
__device__ __forceinline__ double hv_sub(double a, double b) { return __dsub_rn(a, b); }
// a·b of two non-negative bounds, exactly 0 when either is 0 (even beside an infinite one).
__device__ __forceinline__ double hv_term(float a, float b) {
    return (a == 0.0f || b == 0.0f) ? 0.0 : hv_mul((double)a, (double)b);
}

// The interval of the FP32 score of a query (bounds qb, dot error per unit of row norm
// `grow`) against a row (bounds rb) from their int8 dot product: Int8Query::interval,
// then ScanBounds::score and score_interval (src/quant), step by step.
__device__ __forceinline__ void hv_int8_interval(const float (&qb)[4], const float (&rb)[4], int dot,
                                                 double grow, double underflow, double s, double b,
                                                 double& lo, double& hi) {
    const double centre = hv_mul(hv_mul((double)qb[0], (double)rb[0]), (double)dot);
    const double radius = hv_add(hv_term(qb[3], rb[1]), hv_term(qb[1], rb[2]));
    const double slack = hv_add(hv_mul(4.0 * HV_U64, hv_add(fabs(centre), radius)), HV_F64_MIN);
    const double elo = hv_sub(hv_sub(centre, radius), slack);
    const double ehi = hv_add(hv_add(centre, radius), slack);
    const double dot_err = hv_add(hv_mul(grow, (double)rb[2]), underflow);
    if (s == 0.0) {
        const double e = hv_add(hv_mul(3.0 * HV_U32, fabs(b)), 2.0 * HV_F32_TINY);
        lo = hv_sub(b, e);
        hi = hv_add(b, e);
        return;
    }
    const double a = hv_mul(hv_add(fmax(fabs(elo), fabs(ehi)), dot_err), s);
    const double e = hv_add(hv_add(hv_mul(dot_err, s), hv_mul(3.0 * HV_U32, hv_add(a, fabs(b)))),
                            2.0 * HV_F32_TINY);
    lo = hv_sub(hv_add(hv_mul(elo, s), b), e);
    hi = hv_add(hv_add(hv_mul(ehi, s), b), e);
}

// Bounds of nq ≤ 8 queries (packed as hv_int8_query_words says, staged in shared memory)
// against rows 0 .. rows of the tier (codes row-major, dim bytes a row; rb: four f32
// bounds a row): lo[q · ld + r] and hi[q · ld + r], absent for a row the mask clears.
// One warp per row, rows strided over the warps; the scale is inv[r] (cosine) or 1, the
// bias bias[r] (L2) or 0.
extern "C" __global__ void __launch_bounds__(256)
hv_int8_bounds(const float* __restrict__ queries, int nq, int dim, const signed char* __restrict__ codes,
               const float* __restrict__ rb, const float* __restrict__ inv,
               const float* __restrict__ bias, const unsigned int* __restrict__ mask, long long rows,
               float* __restrict__ lo, float* __restrict__ hi, long long ld) {
    HV_DYNAMIC_SMEM(float, q_s);
    const int words = hv_int8_query_words(dim);
    for (int i = threadIdx.x; i < nq * words; i += blockDim.x) q_s[i] = queries[i];
    __syncthreads();
    const int lane = threadIdx.x % HV_WARP;
    // The FP32 scan's error per unit of row norm, γ·‖q‖ (γ = n·u/(1 − n·u), n = dim + 2),
    // and D subnormal spacings for products that underflow (quant::sieve::ScanBounds).
    const double n_ops = (double)dim + 2.0;
    const double gamma = n_ops * HV_U32 < 0.5 ? n_ops * HV_U32 / (1.0 - n_ops * HV_U32)
                                               : __longlong_as_double(0x7ff0000000000000LL);
    const double underflow = (double)dim * HV_F32_TINY;
    const long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    for (long long r = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP; r < rows;
         r += warps) {
        if (!hv_live(mask, r)) {
            if (lane < nq) {
                lo[lane * ld + r] = __uint_as_float(HV_ABSENT_BITS);
                hi[lane * ld + r] = __uint_as_float(HV_ABSENT_BITS);
            }
            continue;
        }
        const signed char* row = codes + r * dim;
        int acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
        if ((dim & 3) == 0) {
            const int* row4 = reinterpret_cast<const int*>(row);
            for (int j = lane; j < dim / 4; j += HV_WARP) {
                const int x = __ldg(row4 + j);
                #pragma unroll
                for (int q = 0; q < 8; ++q)
                    if (q < nq) acc[q] = hv_dp4a(x, __float_as_int(q_s[q * words + 4 + j]), acc[q]);
            }
        } else {
            for (int j = lane; j < dim; j += HV_WARP) {
                const int x = __ldg(row + j);
                #pragma unroll
                for (int q = 0; q < 8; ++q) {
                    if (q < nq) {
                        const signed char* qc = reinterpret_cast<const signed char*>(q_s + q * words + 4);
                        acc[q] += x * qc[j];
                    }
                }
            }
        }
        #pragma unroll
        for (int q = 0; q < 8; ++q) {
            if (q < nq) {
                #pragma unroll
                for (int o = HV_WARP / 2; o > 0; o >>= 1) acc[q] += __shfl_xor_sync(0xffffffffu, acc[q], o);
            }
        }
        // Lane q < nq finishes query q.
        int dot = acc[0];
        #pragma unroll
        for (int q = 1; q < 8; ++q) dot = lane == q ? acc[q] : dot;
        if (lane < nq) {
            const float* qw = q_s + lane * words;
            const float qb[4] = {qw[0], qw[1], qw[2], qw[3]};
            const float rbr[4] = {rb[4 * r], rb[4 * r + 1], rb[4 * r + 2], rb[4 * r + 3]};
            const double s = inv ? (double)inv[r] : 1.0, b = bias ? (double)bias[r] : 0.0;
            double l, h;
            hv_int8_interval(qb, rbr, dot, hv_mul(gamma, (double)qb[2]), underflow, s, b, l, h);
            lo[lane * ld + r] = __double2float_rd(l);
            hi[lane * ld + r] = __double2float_ru(h);
        }
    }
}

// The candidate mask: bit r set when row r's upper bound for some query q < nq reaches
// that query's floor, the k-th of its best lower bounds (floors[q · k + k − 1], sorted
// best first; absent when fewer than k rows are live, and then every live row passes).
// One warp per 32 rows: lane 0 writes the word, so every word is written.
extern "C" __global__ void __launch_bounds__(256)
hv_int8_mask(const float* __restrict__ hi, long long ld, int nq, const float* __restrict__ floors, int k,
             long long rows, unsigned int* __restrict__ out) {
    const int lane = threadIdx.x % HV_WARP;
    const long long words = (rows + 31) / 32;
    const long long warps = (long long)gridDim.x * (blockDim.x / HV_WARP);
    for (long long w = (long long)blockIdx.x * (blockDim.x / HV_WARP) + threadIdx.x / HV_WARP; w < words;
         w += warps) {
        const long long r = w * 32 + lane;
        bool pass = false;
        if (r < rows) {
            for (int q = 0; q < nq && !pass; ++q) {
                const unsigned int key = hv_key(hi[q * ld + r]);
                pass = key != 0u && key >= hv_key(floors[(long long)q * k + k - 1]);
            }
        }
        const unsigned int bits = __ballot_sync(0xffffffffu, pass);
        if (lane == 0) out[w] = bits;
    }
}
