// Exact top-k selection, k ≤ HV_MAX_K, by radix select in one block per (segment, query).
//
// Each block owns a segment of up to HV_SEG candidates of one query (16 per thread, in
// registers). It finds the k-th largest order key bit by bit (32 block-wide counts), then
// among candidates equal to it keeps those with the lowest corpus index, and writes exactly
// min(k, present) candidates, unordered, to its k output slots (the rest absent). Passes
// repeat over the candidates until one segment per query remains; hv_sort_topk then
// orders it. Every pass divides the candidates by HV_SEG / k (≥ 4).
#include "common.cuh"
#include "list.cuh"

#define HV_THREADS 256
#define HV_PER_THREAD 16
#define HV_SEG (HV_THREADS * HV_PER_THREAD)
#define HV_MAX_K 1024

// Sum over the block of each thread's `v`; every thread gets the total. The warp's sum is
// one redux.sync (sm_80 and newer) instead of five shuffles.
__device__ __forceinline__ unsigned int hv_block_sum(unsigned int v, unsigned int* scratch) {
    v = __reduce_add_sync(0xffffffffu, v);
    int warp = threadIdx.x / HV_WARP, lane = threadIdx.x % HV_WARP;
    __syncthreads();  // scratch is free again
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    unsigned int total = 0;
    #pragma unroll
    for (int w = 0; w < HV_THREADS / HV_WARP; ++w) total += scratch[w];
    return total;
}

// The corpus index of candidate p of a row: from `indices`, or index_base + p.
__device__ __forceinline__ long long hv_candidate_index(const long long* __restrict__ indices,
                                                        long long row_start, long long index_base,
                                                        long long p) {
    return indices ? indices[row_start + p] : index_base + p;
}

// A candidate's score as selected: as stored, or (SCORED: the first pass over a GEMM's dot
// products, whose candidates are corpus rows index_base + p) the row's score from its dot
// product, absent for a row the mask clears.
template <bool SCORED>
__device__ __forceinline__ float hv_candidate_score(const float* __restrict__ row, long long p,
                                                    long long index_base,
                                                    const float* __restrict__ inv,
                                                    const float* __restrict__ bias,
                                                    const unsigned int* __restrict__ mask) {
    float v = row[p];
    if (!SCORED) return v;
    long long r = index_base + p;
    return hv_live(mask, r) ? hv_row_score(v, inv, bias, r) : __uint_as_float(HV_ABSENT_BITS);
}

// scores: per query a row of `len` candidates at stride `ld` (or counts[q] of them when
// counts is non-null and that is fewer); indices: same layout, or null, meaning candidate
// i of the row is corpus row index_base + i. The output for
// (query, segment) lands at out_*[query * out_ld + (seg_offset + segment) * k].
template <bool SCORED>
__device__ __forceinline__ void hv_select_topk_impl(
    const float* __restrict__ scores, const long long* __restrict__ indices,
    const unsigned int* __restrict__ counts, long long ld, long long len, long long index_base,
    int k, float* __restrict__ out_scores, long long* __restrict__ out_indices, long long out_ld,
    long long seg_offset, const float* __restrict__ inv, const float* __restrict__ bias,
    const unsigned int* __restrict__ mask) {
    __shared__ unsigned int scratch[HV_THREADS / HV_WARP];
    __shared__ unsigned int slot;
    long long q = blockIdx.y;
    long long seg0 = (long long)blockIdx.x * HV_SEG;
    const float* row = scores + q * ld;
    // Per-query lengths (hv_filter_*'s counts, which may exceed the row) cut rows short.
    if (counts != nullptr && (long long)counts[q] < len) len = counts[q];
    unsigned int key[HV_PER_THREAD];
    #pragma unroll
    for (int j = 0; j < HV_PER_THREAD; ++j) {
        long long p = seg0 + j * HV_THREADS + threadIdx.x;
        // Absent candidates map to 0 as well.
        key[j] = p < len ? hv_key(hv_candidate_score<SCORED>(row, p, index_base, inv, bias, mask))
                         : 0u;
    }
    // The k-th largest key: the largest t with count(key >= t) >= k (0 when fewer than k
    // candidates are present, so every present one is kept).
    unsigned int t = 0;
    for (int bit = 31; bit >= 0; --bit) {
        unsigned int probe = t | (1u << bit);
        unsigned int c = 0;
        #pragma unroll
        for (int j = 0; j < HV_PER_THREAD; ++j) c += key[j] >= probe;
        if (hv_block_sum(c, scratch) >= (unsigned int)k) t = probe;
    }
    unsigned int gt = 0;
    #pragma unroll
    for (int j = 0; j < HV_PER_THREAD; ++j) gt += key[j] > t;
    gt = hv_block_sum(gt, scratch);
    // Ties at the k-th key: when more candidates hold it than the `need` places left,
    // keep those with the lowest corpus index (positions need not follow indices: merged
    // candidates come in part order), found by bisection on the index.
    unsigned int need = (unsigned int)k - gt;
    long long last_index = HV_NO_INDEX;
    if (t != 0) {
        unsigned int eq = 0;
        #pragma unroll
        for (int j = 0; j < HV_PER_THREAD; ++j) eq += key[j] == t;
        if (hv_block_sum(eq, scratch) > need) {
            // The smallest i with count(key == t && index <= i) >= need. Indices < 2^48.
            long long lo = 0, hi = (1LL << 48) - 1;
            while (lo < hi) {
                long long mid = lo + (hi - lo) / 2;
                unsigned int c = 0;
                #pragma unroll
                for (int j = 0; j < HV_PER_THREAD; ++j) {
                    long long p = seg0 + j * HV_THREADS + threadIdx.x;
                    c += key[j] == t && hv_candidate_index(indices, q * ld, index_base, p) <= mid;
                }
                if (hv_block_sum(c, scratch) >= need) hi = mid; else lo = mid + 1;
            }
            last_index = lo;
        }
    }
    if (threadIdx.x == 0) slot = 0;
    __syncthreads();
    float* os = out_scores + q * out_ld + (seg_offset + blockIdx.x) * k;
    long long* oi = out_indices + q * out_ld + (seg_offset + blockIdx.x) * k;
    #pragma unroll
    for (int j = 0; j < HV_PER_THREAD; ++j) {
        long long p = seg0 + j * HV_THREADS + threadIdx.x;
        bool keep = key[j] != 0u &&
                    (key[j] > t || (key[j] == t && (last_index == HV_NO_INDEX ||
                                                     hv_candidate_index(indices, q * ld, index_base, p) <= last_index)));
        if (keep) {
            unsigned int s = atomicAdd(&slot, 1u);
            os[s] = hv_candidate_score<SCORED>(row, p, index_base, inv, bias, mask);
            oi[s] = hv_candidate_index(indices, q * ld, index_base, p);
        }
    }
    __syncthreads();
    for (unsigned int s = slot + threadIdx.x; s < (unsigned int)k; s += HV_THREADS) {
        os[s] = __uint_as_float(HV_ABSENT_BITS);
        oi[s] = -1;
    }
}

// At most 64 registers, so four blocks fit on an SM.
extern "C" __global__ void __launch_bounds__(HV_THREADS, 4)
hv_select_topk(const float* __restrict__ scores, const long long* __restrict__ indices,
               const unsigned int* __restrict__ counts, long long ld, long long len,
               long long index_base, int k,
               float* __restrict__ out_scores, long long* __restrict__ out_indices,
               long long out_ld, long long seg_offset) {
    hv_select_topk_impl<false>(scores, indices, counts, ld, len, index_base, k, out_scores,
                               out_indices, out_ld, seg_offset, nullptr, nullptr, nullptr);
}

// The first pass over dot products a GEMM wrote (`indices` and `counts` null): each row's
// factor (inv), bias and mask applied as the candidates are read, so the scores need no
// pass of their own. Three blocks per SM: the factors take registers that four would
// spill.
extern "C" __global__ void __launch_bounds__(HV_THREADS, 3)
hv_select_topk_scored(const float* __restrict__ scores, long long ld, long long len,
                      long long index_base, int k, float* __restrict__ out_scores,
                      long long* __restrict__ out_indices, long long out_ld,
                      long long seg_offset, const float* __restrict__ inv,
                      const float* __restrict__ bias, const unsigned int* __restrict__ mask) {
    hv_select_topk_impl<true>(scores, nullptr, nullptr, ld, len, index_base, k, out_scores,
                              out_indices, out_ld, seg_offset, inv, bias, mask);
}

// Orders each query's k candidates best first (ties: lower index first; absent last), in
// place, by a bitonic sort of 1024 slots in shared memory. One block of 512 threads per query.
extern "C" __global__ void __launch_bounds__(512)
hv_sort_topk(float* __restrict__ scores, long long* __restrict__ indices, int k) {
    __shared__ unsigned int key_s[HV_MAX_K];
    __shared__ long long idx_s[HV_MAX_K];
    long long q = blockIdx.x;
    for (int i = threadIdx.x; i < HV_MAX_K; i += blockDim.x) {
        bool in = i < k && indices[q * k + i] >= 0;
        key_s[i] = in ? hv_key(scores[q * k + i]) : 0u;
        idx_s[i] = in ? indices[q * k + i] : 0x7fffffffffffffffLL;
    }
    __syncthreads();
    // "a before b": higher key, then lower index.
    for (int size = 2; size <= HV_MAX_K; size <<= 1) {
        for (int stride = size / 2; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < HV_MAX_K / 2; i += blockDim.x) {
                int lo = 2 * i - (i & (stride - 1));
                int hi = lo + stride;
                bool descending_block = (lo & size) == 0;
                bool hi_first = key_s[hi] > key_s[lo] || (key_s[hi] == key_s[lo] && idx_s[hi] < idx_s[lo]);
                if (hi_first == descending_block) {
                    unsigned int tk = key_s[lo]; key_s[lo] = key_s[hi]; key_s[hi] = tk;
                    long long ti = idx_s[lo]; idx_s[lo] = idx_s[hi]; idx_s[hi] = ti;
                }
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < k; i += blockDim.x) {
        bool in = key_s[i] != 0u;
        scores[q * k + i] = in ? hv_unkey(key_s[i]) : __uint_as_float(HV_ABSENT_BITS);
        indices[q * k + i] = in ? idx_s[i] : -1;
    }
}
