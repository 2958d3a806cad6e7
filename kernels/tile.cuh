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
#define HV_BF16 3  // the same in BF16

// The operand slices of one K step, in the layout each arithmetic reads fastest.
// FP32: K-major, [k][query or row], so that a thread's four queries (rows) at one k are
// one 128-bit load; the +8 padding keeps each row 16-byte aligned.
struct HvKMajor {
    float a[HV_TK][HV_TM + 8];
    float b[HV_TK][HV_TN + 8];
};
// Tensor cores: two buffers (the next K slice is copied in, with cp.async where rows are
// 16-byte aligned, while this one is multiplied), each row-major, [query or row][k].
// The k order of a row is the memory's: the fragment slots a thread feeds (k = t, t + 4,
// t + 8, t + 12 of the two m16n8k8 steps; pairs t and t + 4 of the m16n8k16 step) are
// mapped to the four consecutive values 4t .. 4t + 3, the same for both operands, so one
// vector load gives a thread all of them (a dot product does not care about the order of
// its terms).
// TF32: raw f32 (rounded to TF32 when the fragments are loaded), the 16-byte chunks of a
// row swizzled (chunk ^ (row / 2 % 4)) so that a quarter-warp's 128-bit loads hit 32
// distinct banks.
#define HV_STAGES 2
struct HvMmaTf32 {
    float a[HV_STAGES][HV_TM][HV_TK];
    float b[HV_STAGES][HV_TN][HV_TK];
};
// FP16 and BF16: pairs of 16-bit values (a u32 each), 32 bytes a row; a half-warp's
// 64-bit loads read 4 whole rows, so no swizzle is needed.
struct HvMmaF16 {
    unsigned int a[HV_STAGES][HV_TM][HV_TK / 2];
    unsigned int b[HV_STAGES][HV_TN][HV_TK / 2];
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

// The float index of 16-byte chunk c of row r in an HvMmaTf32 row (see there).
__device__ __forceinline__ int hv_tf32_chunk(int r, int c) { return 4 * (c ^ ((r >> 1) & 3)); }

// Four consecutive values of a row from column kk (zero past `dim`, and for a null row):
// one 16-byte load (FP32) or 8-byte load (FP16 or BF16 bits) when every row starts aligned (dim a
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
template <class H>  // unsigned short (FP16 bits) or HvBf16
__device__ __forceinline__ void hv_load4(float (&v)[4], const H* __restrict__ row, int kk,
                                         int dim) {
    if (row != nullptr && (dim & 3) == 0 && kk < dim) {
        const uint2 w = __ldg(reinterpret_cast<const uint2*>(row + kk));
        hv_unpack2(row, w.x, v[0], v[1]);
        hv_unpack2(row, w.y, v[2], v[3]);
        return;
    }
    #pragma unroll
    for (int c = 0; c < 4; ++c)
        v[c] = (row != nullptr && kk + c < dim) ? hv_bits_to_float(row, hv_ldg_bits(row, kk + c)) : 0.0f;
}

// Stages the K slice k0 .. k0 + 15 of the tile's queries and rows for the FP32 tile
// (K-major): thread t loads four consecutive k of query / row t % 64 (k0 + 4·(t / 64)),
// and a warp's stores go to 32 consecutive columns, so to 32 distinct banks.
template <class T>
__device__ __forceinline__ void hv_stage_slice(HvTileSmem& sm, const float* __restrict__ queries,
                                               int nq, int dim, const T* __restrict__ x,
                                               long long row0, long long rows, int q0,
                                               long long n0, int k0) {
    static_assert(HV_TM == HV_TN && HV_TM * HV_TK == 4 * HV_TILE_THREADS,
                  "one quad of the slice per thread");
    const int m = threadIdx.x % HV_TM, kq = 4 * (threadIdx.x / HV_TM);
    const int q = q0 + m;
    const long long n = n0 + m;
    float av[4], bv[4];
    hv_load4(av, q < nq ? queries + (long long)q * dim : nullptr, k0 + kq, dim);
    hv_load4(bv, n < rows ? x + (row0 + n) * dim : nullptr, k0 + kq, dim);
    #pragma unroll
    for (int c = 0; c < 4; ++c) {
        sm.op.k.a[kq + c][m] = av[c];
        sm.op.k.b[kq + c][m] = bv[c];
    }
}

// Two f32 → the 16-bit pair register of a tensor-core MODE (FP16 or BF16).
template <int MODE>
__device__ __forceinline__ unsigned int hv_pack2(float lo, float hi) {
    return MODE == HV_BF16 ? hv_pack_bf162(lo, hi) : hv_pack_half2(lo, hi);
}

// Queues the K slice k0 .. k0 + 15 of the tile's queries and rows into buffer `buf` of
// the tensor-core layouts (see HvMmaTf32, HvMmaF16), then commits the copies as one
// group. Thread t takes 16 bytes of row t / 4: 16-byte-aligned rows (dim a multiple of 4
// for f32, of 8 for 16-bit rows) are copied by cp.async, zero-filled past the ends; the
// others, and the 16-bit tiles' queries (rounded here), go through registers.
template <int MODE, class T>
__device__ __forceinline__ void hv_stage_mma(HvTileSmem& sm, int buf,
                                             const float* __restrict__ queries, int nq, int dim,
                                             const T* __restrict__ x, long long row0,
                                             long long rows, int q0, long long n0, int k0) {
    const int r = threadIdx.x / 4, c = threadIdx.x % 4;
    const int q = q0 + r;
    const long long n = n0 + r;
    const float* qrow = q < nq ? queries + (long long)q * dim : nullptr;
    const T* xrow = n < rows ? x + (row0 + n) * dim : nullptr;
    if (MODE == HV_TF32) {
        float* da = &sm.op.f.a[buf][r][hv_tf32_chunk(r, c)];
        float* db = &sm.op.f.b[buf][r][hv_tf32_chunk(r, c)];
        const int k = k0 + 4 * c;
        if ((dim & 3) == 0) {
            hv_cp_async16(da, qrow && k < dim ? qrow + k : queries, qrow && k < dim ? 16 : 0);
            hv_cp_async16(db, xrow && k < dim ? (const void*)(xrow + k) : (const void*)x,
                          xrow && k < dim ? 16 : 0);
        } else {
            float av[4], bv[4];
            hv_load4(av, qrow, k, dim);
            hv_load4(bv, xrow, k, dim);
            *reinterpret_cast<float4*>(da) = float4{av[0], av[1], av[2], av[3]};
            *reinterpret_cast<float4*>(db) = float4{bv[0], bv[1], bv[2], bv[3]};
        }
    } else {
        // Queries: four values, two half2 words, one 64-bit store (a half-warp's stores
        // cover four whole rows: conflict-free).
        float av[4];
        hv_load4(av, qrow, k0 + 4 * c, dim);
        *reinterpret_cast<uint2*>(&sm.op.h.a[buf][r][2 * c]) =
            uint2{hv_pack2<MODE>(av[0], av[1]), hv_pack2<MODE>(av[2], av[3])};
        if ((dim & 7) == 0) {
            // Rows: 16 halves, two 16-byte chunks; threads 0 .. 127 take one each.
            if (threadIdx.x < 2 * HV_TN) {
                const int rr = threadIdx.x / 2, cc = threadIdx.x % 2, k = k0 + 8 * cc;
                const long long nn = n0 + rr;
                const bool ok = nn < rows && k < dim;
                hv_cp_async16(&sm.op.h.b[buf][rr][4 * cc],
                              ok ? (const void*)(x + (row0 + nn) * dim + k) : (const void*)x,
                              ok ? 16 : 0);
            }
        } else {
            float bv[4];
            hv_load4(bv, xrow, k0 + 4 * c, dim);
            *reinterpret_cast<uint2*>(&sm.op.h.b[buf][r][2 * c]) =
                uint2{hv_pack2<MODE>(bv[0], bv[1]), hv_pack2<MODE>(bv[2], bv[3])};
        }
    }
    hv_cp_async_commit();
}

// Fills sm.s with the scores of queries q0..q0+63 against corpus rows row0+n0 .. +63:
// hv_row_score(Q[q] · X[r]) (inv null: the rows are unit-norm already, as the FP16
// and BF16 copies are, or the metric does not scale);
// a row past `rows` or cleared in the mask scores absent (key 0). Queries past nq score 0
// and must be ignored by the caller. MODE is HV_FP32, HV_TF32, HV_FP16 or HV_BF16; T is
// the corpus element (float, unsigned short holding FP16 bits, or HvBf16). Ends with a barrier, so sm.s is
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
    if (MODE == HV_FP32) {
        for (int k0 = 0; k0 < dim; k0 += HV_TK) {
            hv_stage_slice(sm, queries, nq, dim, x, row0, rows, q0, n0, k0);
            __syncthreads();
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
            __syncthreads();
        }
    } else {
        // Double-buffered: slice i + 1 is in flight while slice i is multiplied.
        const int slices = (dim + HV_TK - 1) / HV_TK;
        const int lane = tid % HV_WARP, w = tid / HV_WARP;
        const int g = lane / 4, t = lane % 4, qm = 16 * (w % 4), rn = 32 * (w / 4);
        hv_stage_mma<MODE>(sm, 0, queries, nq, dim, x, row0, rows, q0, n0, 0);
        for (int i = 0; i < slices; ++i) {
            const int buf = i & 1;
            if (i + 1 < slices) {
                hv_stage_mma<MODE>(sm, buf ^ 1, queries, nq, dim, x, row0, rows, q0, n0,
                                   (i + 1) * HV_TK);
                hv_cp_async_wait<1>();
            } else {
                hv_cp_async_wait<0>();
            }
            __syncthreads();
            if (MODE == HV_FP16 || MODE == HV_BF16) {
                // One m16n8k16 step: one 64-bit load per fragment row gives pairs t and
                // t + 4 (memory pairs 2t, 2t + 1).
                const uint2 lo = *reinterpret_cast<const uint2*>(&sm.op.h.a[buf][qm + g][2 * t]);
                const uint2 hi = *reinterpret_cast<const uint2*>(&sm.op.h.a[buf][qm + g + 8][2 * t]);
                const unsigned int a[4] = {lo.x, hi.x, lo.y, hi.y};
                #pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const uint2 bw = *reinterpret_cast<const uint2*>(&sm.op.h.b[buf][rn + 8 * j + g][2 * t]);
                    const unsigned int b[2] = {bw.x, bw.y};
                    if (MODE == HV_BF16) {
                        hv_mma_bf16(acc[j], a, b);
                    } else {
                        hv_mma_f16(acc[j], a, b);
                    }
                }
            } else {
                // Two m16n8k8 steps: one 128-bit load per fragment row serves both (k =
                // t, t + 4, t + 8, t + 12 are memory values 4t .. 4t + 3), each value
                // rounded to TF32 here.
                const int ra = qm + g, rb = qm + g + 8;
                const float4 lo = *reinterpret_cast<const float4*>(&sm.op.f.a[buf][ra][hv_tf32_chunk(ra, t)]);
                const float4 hi = *reinterpret_cast<const float4*>(&sm.op.f.a[buf][rb][hv_tf32_chunk(rb, t)]);
                float4 bq[4];
                #pragma unroll
                for (int j = 0; j < 4; ++j) {
                    const int c = rn + 8 * j + g;
                    bq[j] = *reinterpret_cast<const float4*>(&sm.op.f.b[buf][c][hv_tf32_chunk(c, t)]);
                }
                {
                    const unsigned int a[4] = {hv_to_tf32(lo.x), hv_to_tf32(hi.x), hv_to_tf32(lo.y),
                                               hv_to_tf32(hi.y)};
                    #pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const unsigned int b[2] = {hv_to_tf32(bq[j].x), hv_to_tf32(bq[j].y)};
                        hv_mma_tf32(acc[j], a, b);
                    }
                }
                {
                    const unsigned int a[4] = {hv_to_tf32(lo.z), hv_to_tf32(hi.z), hv_to_tf32(lo.w),
                                               hv_to_tf32(hi.w)};
                    #pragma unroll
                    for (int j = 0; j < 4; ++j) {
                        const unsigned int b[2] = {hv_to_tf32(bq[j].z), hv_to_tf32(bq[j].w)};
                        hv_mma_tf32(acc[j], a, b);
                    }
                }
            }
            __syncthreads();  // the buffer is refilled two slices on
        }
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
