// One block's 64 × 64 tile of cosine scores (64 queries × 64 corpus rows), computed into
// shared memory by 256 threads. Shared by the full-score kernels (score.cu), which copy the
// tile out, and the fused top-k kernels (fused.cu), which select from it in place.
#pragma once
#include "common.cuh"

#define HV_TM 64
#define HV_TN 64
#define HV_TK 16
#define HV_TILE_THREADS 256

// Arithmetic of a tile (Precision on the host side).
#define HV_FP32 0  // exact FP32 FMA
#define HV_TF32 1  // tensor cores, operands rounded to TF32
#define HV_FP16 2  // tensor cores, operands rounded to FP16 (the corpus is stored so)

// The operand slices of one K step, in the layout each arithmetic reads fastest.
// FP32: K-major, [k][query or row], so that a thread's four queries (rows) at one k are
// one 128-bit load; the +8 padding keeps each row 16-byte aligned.
struct HvKMajor {
    float a[HV_TK][HV_TM + 8];
    float b[HV_TK][HV_TN + 8];
};
// TF32: row-major, [query or row][k], the k of a row permuted so that the four a thread's
// fragments take (t, t + 4, t + 8, t + 12) lie in one 16-byte chunk, and the chunks of a
// row swizzled (chunk ^ (row / 2 % 4)): the fragment reads and the staging stores are
// conflict-free (hv_mma_index).
struct HvMmaTf32 {
    float a[HV_TM][HV_TK];
    float b[HV_TN][HV_TK];
};
// FP16: row-major pairs of halves ([query or row][k / 2], a u32 each), pairs t and t + 4
// adjacent so that one 64-bit load gives a thread's two fragment words, words swizzled
// (^ 2 · (row / 4 % 2)) against conflicts (hv_mma_word).
struct HvMmaF16 {
    unsigned int a[HV_TM][HV_TK / 2];
    unsigned int b[HV_TN][HV_TK / 2];
};

// 16-byte aligned, so that the operand reads can be 128-bit loads.
struct alignas(16) HvTileSmem {
    union {
        HvKMajor k;
        HvMmaTf32 f;
        HvMmaF16 h;
    } op;
    // The finished tile: s[query][row], +1 against bank conflicts on the column reads.
    float s[HV_TM][HV_TN + 1];
};

// Where value k of row r sits in an HvMmaTf32 row (see there).
__device__ __forceinline__ int hv_mma_index(int r, int k) {
    return 4 * ((k & 3) ^ ((r >> 1) & 3)) + (k >> 2);
}
// Where pair j (k = 2j, 2j + 1) of row r sits in an HvMmaF16 row (see there).
__device__ __forceinline__ int hv_mma_word(int r, int j) {
    return (2 * (j & 3) + (j >> 2)) ^ (2 * ((r >> 2) & 1));
}

// Four consecutive values of a row from column kk (zero past `dim`, and for a null row):
// one 16-byte load (FP32) or 8-byte load (FP16 bits) when every row starts aligned (dim a
// multiple of 4, buffers 256-byte aligned), else four bounded scalar loads.
__device__ __forceinline__ void hv_load4(float (&v)[4], const float* __restrict__ row, int kk,
                                         int dim) {
    if (row != nullptr && (dim & 3) == 0 && kk < dim) {
        const float4 w = __ldg(reinterpret_cast<const float4*>(row + kk));
        v[0] = w.x, v[1] = w.y, v[2] = w.z, v[3] = w.w;
        return;
    }
    #pragma unroll
    for (int c = 0; c < 4; ++c) v[c] = (row != nullptr && kk + c < dim) ? __ldg(row + kk + c) : 0.0f;
}
__device__ __forceinline__ void hv_load4(float (&v)[4], const unsigned short* __restrict__ row,
                                         int kk, int dim) {
    if (row != nullptr && (dim & 3) == 0 && kk < dim) {
        const uint2 w = __ldg(reinterpret_cast<const uint2*>(row + kk));
        v[0] = hv_half_to_float(static_cast<unsigned short>(w.x & 0xffffu));
        v[1] = hv_half_to_float(static_cast<unsigned short>(w.x >> 16));
        v[2] = hv_half_to_float(static_cast<unsigned short>(w.y & 0xffffu));
        v[3] = hv_half_to_float(static_cast<unsigned short>(w.y >> 16));
        return;
    }
    #pragma unroll
    for (int c = 0; c < 4; ++c)
        v[c] = (row != nullptr && kk + c < dim) ? hv_half_to_float(__ldg(row + kk + c)) : 0.0f;
}

// Stages the K slice k0 .. k0 + 15 of the tile's queries and rows into the operand
// layout of MODE. FP32: thread t loads four consecutive k of query / row t % 64
// (k0 + 4·(t / 64)), and a warp's stores go to 32 consecutive columns. Tensor cores:
// thread t loads four consecutive k (k0 + 4·(t % 4)) of query / row t / 4, so four
// threads read 64 contiguous bytes of a row, and the layouts' swizzles spread a warp's
// stores over 32 banks.
template <int MODE, class T>
__device__ __forceinline__ void hv_stage_slice(HvTileSmem& sm, const float* __restrict__ queries,
                                               int nq, int dim, const T* __restrict__ x,
                                               long long row0, long long rows, int q0,
                                               long long n0, int k0) {
    static_assert(HV_TM == HV_TN && HV_TM * HV_TK == 4 * HV_TILE_THREADS,
                  "one quad of the slice per thread");
    const bool kmajor = MODE == HV_FP32;
    const int m = kmajor ? threadIdx.x % HV_TM : threadIdx.x / 4;
    const int kq = kmajor ? 4 * (threadIdx.x / HV_TM) : 4 * (threadIdx.x % 4);
    const int q = q0 + m;
    const long long n = n0 + m;
    float av[4], bv[4];
    hv_load4(av, q < nq ? queries + (long long)q * dim : nullptr, k0 + kq, dim);
    hv_load4(bv, n < rows ? x + (row0 + n) * dim : nullptr, k0 + kq, dim);
    if (MODE == HV_FP32) {
        #pragma unroll
        for (int c = 0; c < 4; ++c) {
            sm.op.k.a[kq + c][m] = av[c];
            sm.op.k.b[kq + c][m] = bv[c];
        }
    } else if (MODE == HV_TF32) {
        #pragma unroll
        for (int c = 0; c < 4; ++c) {
            sm.op.f.a[m][hv_mma_index(m, kq + c)] = __uint_as_float(hv_to_tf32(av[c]));
            sm.op.f.b[m][hv_mma_index(m, kq + c)] = __uint_as_float(hv_to_tf32(bv[c]));
        }
    } else {
        // The queries round to FP16 here; the rows are FP16 already (exact round trip).
        #pragma unroll
        for (int c = 0; c < 2; ++c) {
            const int w = hv_mma_word(m, kq / 2 + c);
            sm.op.h.a[m][w] = hv_pack_half2(av[2 * c], av[2 * c + 1]);
            sm.op.h.b[m][w] = hv_pack_half2(bv[2 * c], bv[2 * c + 1]);
        }
    }
}

// Fills sm.s with the scores of queries q0..q0+63 against corpus rows row0+n0 .. +63:
// hv_row_score(Q[q] · X[r]) (inv null: the rows are unit-norm already, as the FP16 copy
// is, or the metric does not scale);
// a row past `rows` or cleared in the mask scores absent (key 0). Queries past nq score 0
// and must be ignored by the caller. MODE is HV_FP32, HV_TF32 or HV_FP16; T is the corpus
// element (float, or unsigned short holding FP16 bits). Ends with a barrier, so sm.s is
// ready for every thread.
template <int MODE, class T>
__device__ __forceinline__ void hv_tile_scores(HvTileSmem& sm, const float* __restrict__ queries,
                                               int nq, int dim, const T* __restrict__ x,
                                               const float* __restrict__ inv,
                                               const float* __restrict__ bias,
                                               const unsigned int* __restrict__ mask,
                                               long long row0, long long rows, int q0,
                                               long long n0) {
    const int tid = threadIdx.x;
    // FP32: thread (tx, ty) owns queries ty*4+i and rows tx*4+j. Tensor cores: warp w owns
    // the 16 × 32 block at queries 16*(w%4), rows 32*(w/4), as four m16n8 accumulators.
    float acc[4][4];
    #pragma unroll
    for (int i = 0; i < 4; ++i)
        #pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (int k0 = 0; k0 < dim; k0 += HV_TK) {
        hv_stage_slice<MODE>(sm, queries, nq, dim, x, row0, rows, q0, n0, k0);
        __syncthreads();
        if (MODE == HV_FP16) {
            // One m16n8k16 step covers the slice: per thread one 64-bit load per row of
            // A (pairs t and t + 4) and of B.
            const int lane = tid % HV_WARP, w = tid / HV_WARP;
            const int g = lane / 4, t = lane % 4, qm = 16 * (w % 4), rn = 32 * (w / 4);
            const uint2 lo = *reinterpret_cast<const uint2*>(&sm.op.h.a[qm + g][hv_mma_word(qm + g, t)]);
            const uint2 hi =
                *reinterpret_cast<const uint2*>(&sm.op.h.a[qm + g + 8][hv_mma_word(qm + g + 8, t)]);
            const unsigned int a[4] = {lo.x, hi.x, lo.y, hi.y};
            #pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = rn + 8 * j + g;
                const uint2 bw = *reinterpret_cast<const uint2*>(&sm.op.h.b[c][hv_mma_word(c, t)]);
                const unsigned int b[2] = {bw.x, bw.y};
                hv_mma_f16(acc[j], a, b);
            }
        } else if (MODE == HV_TF32) {
            // Two m16n8k8 steps: per thread one 128-bit load per row of A (k = t, t + 4,
            // t + 8, t + 12) and of B serves both.
            const int lane = tid % HV_WARP, w = tid / HV_WARP;
            const int g = lane / 4, t = lane % 4, qm = 16 * (w % 4), rn = 32 * (w / 4);
            const float4 lo = *reinterpret_cast<const float4*>(&sm.op.f.a[qm + g][hv_mma_index(qm + g, t)]);
            const float4 hi =
                *reinterpret_cast<const float4*>(&sm.op.f.a[qm + g + 8][hv_mma_index(qm + g + 8, t)]);
            float4 bq[4];
            #pragma unroll
            for (int j = 0; j < 4; ++j) {
                const int c = rn + 8 * j + g;
                bq[j] = *reinterpret_cast<const float4*>(&sm.op.f.b[c][hv_mma_index(c, t)]);
            }
            {
                const unsigned int a[4] = {__float_as_uint(lo.x), __float_as_uint(hi.x),
                                           __float_as_uint(lo.y), __float_as_uint(hi.y)};
                #pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const unsigned int b[2] = {__float_as_uint(bq[j].x), __float_as_uint(bq[j].y)};
                    hv_mma_tf32(acc[j], a, b);
                }
            }
            {
                const unsigned int a[4] = {__float_as_uint(lo.z), __float_as_uint(hi.z),
                                           __float_as_uint(lo.w), __float_as_uint(hi.w)};
                #pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const unsigned int b[2] = {__float_as_uint(bq[j].z), __float_as_uint(bq[j].w)};
                    hv_mma_tf32(acc[j], a, b);
                }
            }
        } else {
            const int tx = tid % 16, ty = tid / 16;
            #pragma unroll
            for (int k = 0; k < HV_TK; ++k) {
                // One 128-bit load each: a warp reads two query quads (a broadcast) and
                // 16 row quads, 256 contiguous bytes (conflict-free).
                const float4 a4 = *reinterpret_cast<const float4*>(&sm.op.k.a[k][ty * 4]);
                const float4 b4 = *reinterpret_cast<const float4*>(&sm.op.k.b[k][tx * 4]);
                const float a[4] = {a4.x, a4.y, a4.z, a4.w};
                const float b[4] = {b4.x, b4.y, b4.z, b4.w};
                #pragma unroll
                for (int i = 0; i < 4; ++i)
                    #pragma unroll
                    for (int j = 0; j < 4; ++j) acc[i][j] = fmaf(a[i], b[j], acc[i][j]);
            }
        }
        __syncthreads();
    }
    #pragma unroll
    for (int i = 0; i < 4; ++i) {
        #pragma unroll
        for (int j = 0; j < 4; ++j) {
            int qm, rn;
            if (MODE != HV_FP32) {
                const int lane = tid % HV_WARP, w = tid / HV_WARP;
                qm = 16 * (w % 4) + lane / 4 + 8 * (j >> 1);
                rn = 32 * (w / 4) + 8 * i + 2 * (lane % 4) + (j & 1);
            } else {
                qm = (tid / 16) * 4 + i;
                rn = (tid % 16) * 4 + j;
            }
            long long n = n0 + rn;
            float v = __uint_as_float(HV_ABSENT_BITS);
            if (n < rows && hv_live(mask, row0 + n)) v = inv ? acc[i][j] * inv[row0 + n] : acc[i][j];
            sm.s[qm][rn] = v;
        }
    }
    __syncthreads();
    if (bias) {  // L2: a pass of its own, once the accumulators are dead (no spills)
        for (int e = tid; e < HV_TM * HV_TN; e += HV_TILE_THREADS) {
            int qm = e / HV_TN, rn = e % HV_TN;
            long long n = n0 + rn;
            if (n < rows && hv_live(mask, row0 + n)) sm.s[qm][rn] += bias[row0 + n];
        }
        __syncthreads();
    }
}

// A tiled kernel's block: its first query and its part (a row tile, or a segment of
// them). The grid is one-dimensional with the query tiles fastest, so the blocks of one
// part run side by side: the rows they share come from DRAM once, and from L2 for the
// other query tiles, and the corpus is streamed about once however many queries there
// are. `nq` is the launch's query count (the grid has ceil(nq / 64) blocks per part).
struct HvTileBlock {
    int q0;
    long long part;
};
__device__ __forceinline__ HvTileBlock hv_tile_block(int nq) {
    const long long q_tiles = (nq + HV_TM - 1) / HV_TM;
    const long long b = blockIdx.x;
    return HvTileBlock{static_cast<int>(b % q_tiles) * HV_TM, b / q_tiles};
}

// Walks segment `part` of rows row0 .. row0 + rows: tiles at row0 + (part · seg_tiles + t)
// · 64 for t < seg_tiles, stopping at the end. Each tile is scored into sm.s, then
// visit(n0) runs (n0 its first row, absolute), then a barrier, so visit may read all of
// sm.s and the next tile may rewrite it.
template <int MODE, class T, class Visit>
__device__ __forceinline__ void hv_walk_segment(HvTileSmem& sm, const float* __restrict__ queries,
                                                int nq, int dim, const T* __restrict__ x,
                                                const float* __restrict__ inv,
                                                const float* __restrict__ bias,
                                                const unsigned int* __restrict__ mask,
                                                long long row0, long long rows, int seg_tiles,
                                                int q0, long long part, Visit visit) {
    const long long first = row0 + part * seg_tiles * HV_TN, end = row0 + rows;
    for (int t = 0; t < seg_tiles; ++t) {
        long long n0 = first + (long long)t * HV_TN;
        if (n0 >= end) break;  // block-uniform
        hv_tile_scores<MODE>(sm, queries, nq, dim, x, inv, bias, mask, 0, end, q0, n0);
        visit(n0);
        __syncthreads();  // sm.s is rewritten by the next tile
    }
}
