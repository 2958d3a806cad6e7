// A best-first list of up to 32 candidates spread over one warp: lane j holds entry j.
// "Better" is a higher order key, then a lower index, so results are deterministic and
// ties keep the lowest corpus rows. Every function here is warp-collective and
// warp-uniform in its arguments.
#pragma once
#include "common.cuh"

#define HV_FULL 0xffffffffu
#define HV_LIST_MAX_K 32
#define HV_NO_INDEX 0x7fffffffffffffffLL

struct HvList {
    unsigned int key;  // 0: empty
    long long idx;
};

__device__ __forceinline__ bool hv_better(unsigned int ka, long long ia, unsigned int kb,
                                          long long ib) {
    return ka > kb || (ka == kb && ia < ib);
}

__device__ __forceinline__ void hv_list_clear(HvList& l) {
    l.key = 0u;
    l.idx = HV_NO_INDEX;
}

// Entry k-1, the one a newcomer must beat.
__device__ __forceinline__ void hv_list_last(const HvList& l, int k, unsigned int& key,
                                             long long& idx) {
    key = __shfl_sync(HV_FULL, l.key, k - 1);
    idx = __shfl_sync(HV_FULL, l.idx, k - 1);
}

// Inserts (key, idx), which beats entry k-1, at its rank; entry k-1 falls off.
__device__ __forceinline__ void hv_list_insert(HvList& l, int k, unsigned int key, long long idx) {
    const int lane = threadIdx.x % HV_WARP;
    int pos = __popc(__ballot_sync(HV_FULL, lane < k && hv_better(l.key, l.idx, key, idx)));
    unsigned int up_key = __shfl_up_sync(HV_FULL, l.key, 1);
    long long up_idx = __shfl_up_sync(HV_FULL, l.idx, 1);
    if (lane == pos) {
        l.key = key;
        l.idx = idx;
    } else if (lane > pos && lane < k) {
        l.key = up_key;
        l.idx = up_idx;
    }
}

// Offers each lane's own candidate (key 0: none); the admitted ones are inserted in lane
// order, each checked against the list as it is by then.
__device__ __forceinline__ void hv_list_offer(HvList& l, int k, unsigned int key, long long idx) {
    unsigned int lk;
    long long li;
    hv_list_last(l, k, lk, li);
    unsigned int pending = __ballot_sync(HV_FULL, key != 0u && hv_better(key, idx, lk, li));
    while (pending) {
        int src = __ffs(pending) - 1;
        pending &= pending - 1;
        unsigned int ck = __shfl_sync(HV_FULL, key, src);
        long long ci = __shfl_sync(HV_FULL, idx, src);
        hv_list_last(l, k, lk, li);
        if (hv_better(ck, ci, lk, li)) hv_list_insert(l, k, ck, ci);
    }
}

// Writes the list's k entries to out_s/out_i[0..k): scores best first, absent ones as
// (HV_ABSENT_BITS, -1).
__device__ __forceinline__ void hv_list_store(const HvList& l, int k, float* __restrict__ out_s,
                                              long long* __restrict__ out_i) {
    const int lane = threadIdx.x % HV_WARP;
    if (lane < k) {
        bool in = l.key != 0u;
        out_s[lane] = in ? hv_unkey(l.key) : __uint_as_float(HV_ABSENT_BITS);
        out_i[lane] = in ? l.idx : -1;
    }
}
