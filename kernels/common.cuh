// Shared by every kernel file. Device code only; compiled by nvcc or NVRTC (no host headers),
// or for tests by a C++ compiler over emu/cuda_emu.h (HV_EMULATION).
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

// The score of an order key (the inverse of hv_key).
__device__ __forceinline__ float hv_unkey(unsigned int b) {
    return __uint_as_float((b & 0x80000000u) ? (b & 0x7fffffffu) : ~b);
}

__device__ __forceinline__ float hv_warp_sum(float v) {
    #pragma unroll
    for (int o = HV_WARP / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// Dynamic shared memory as a T*. Every kernel names the same extern array (one per
// module), so it is declared once as float4 (16-byte aligned) and cast.
#ifndef HV_EMULATION
#define HV_DYNAMIC_SMEM(T, name) \
    extern __shared__ float4 hv_smem4[]; \
    T* name = reinterpret_cast<T*>(hv_smem4)

// f32 → tf32 (10 mantissa bits), round to nearest, ties away from zero.
__device__ __forceinline__ unsigned int hv_to_tf32(float f) {
    unsigned int r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(f));
    return r;
}

// d += a · b on the tensor cores, one warp: A 16×8 (row), B 8×8 (col), fp32 accumulate.
// Fragments (g = lane / 4, t = lane % 4): a = {A[g][t], A[g+8][t], A[g][t+4], A[g+8][t+4]},
// b = {B[t][g], B[t+4][g]}, d = {D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1]}.
__device__ __forceinline__ void hv_mma_tf32(float (&d)[4], const unsigned int (&a)[4],
                                            const unsigned int (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

#ifndef HV_EMULATION
// FP16 bits → f32 (exact).
__device__ __forceinline__ float hv_half_to_float(unsigned short h) {
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}

// f32 → FP16 bits, round to nearest even.
__device__ __forceinline__ unsigned short hv_float_to_half(float f) {
    unsigned short h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two f32 → one f16x2 register: `lo` in the low half (the lower column or k index).
__device__ __forceinline__ unsigned int hv_pack_half2(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// d += a · b on the tensor cores, one warp: A 16×16 (row), B 16×8 (col), FP16 operands,
// fp32 accumulate. Fragments (g = lane / 4, t = lane % 4), each register two halves, the
// lower index low: a = {A[g][2t..], A[g+8][2t..], A[g][2t+8..], A[g+8][2t+8..]},
// b = {B[2t..][g], B[2t+8..][g]}, d as for hv_mma_tf32.
__device__ __forceinline__ void hv_mma_f16(float (&d)[4], const unsigned int (&a)[4],
                                           const unsigned int (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// BF16 bits → f32 (exact: BF16 is the upper half of an f32).
__device__ __forceinline__ float hv_bf16_to_float(unsigned short b) {
    return __uint_as_float(static_cast<unsigned int>(b) << 16);
}

#ifndef HV_EMULATION
// f32 → BF16 bits, round to nearest even.
__device__ __forceinline__ unsigned short hv_float_to_bf16(float f) {
    unsigned short h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
}

// Two f32 → one bf16x2 register: `lo` in the low half (the lower column or k index).
__device__ __forceinline__ unsigned int hv_pack_bf162(float lo, float hi) {
    unsigned int r;
    asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
    return r;
}

// hv_mma_f16 from BF16 operands (the same fragment layout).
__device__ __forceinline__ void hv_mma_bf16(float (&d)[4], const unsigned int (&a)[4],
                                            const unsigned int (&b)[2]) {
    asm volatile(
        "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
        "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
        : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
}
#endif

// A BF16 corpus element: its bits, in a type of its own so that the element overloads
// (hv_bits_to_float, hv_load4, hv_row_dots) tell it from FP16's unsigned short.
struct HvBf16 {
    unsigned short bits;
};

// One 16-bit corpus value → f32; the row pointer names the element type.
__device__ __forceinline__ float hv_bits_to_float(const unsigned short*, unsigned short b) {
    return hv_half_to_float(b);
}
__device__ __forceinline__ float hv_bits_to_float(const HvBf16*, unsigned short b) {
    return hv_bf16_to_float(b);
}

// Element i of a 16-bit row, read through the read-only cache.
template <class H>
__device__ __forceinline__ unsigned short hv_ldg_bits(const H* __restrict__ row, long long i) {
    return __ldg(reinterpret_cast<const unsigned short*>(row) + i);
}

// Two 16-bit corpus values (the lower index in the low half) → f32; the row pointer
// names the element type.
__device__ __forceinline__ void hv_unpack2(const unsigned short*, unsigned int w, float& lo,
                                           float& hi) {
    lo = hv_half_to_float(static_cast<unsigned short>(w & 0xffffu));
    hi = hv_half_to_float(static_cast<unsigned short>(w >> 16));
}
__device__ __forceinline__ void hv_unpack2(const HvBf16*, unsigned int w, float& lo, float& hi) {
    lo = __uint_as_float(w << 16);
    hi = __uint_as_float(w & 0xffff0000u);
}

// A row's score from its dot product with a query: dot · inv[r] + bias[r]. A null inv
// scales by 1 (unit-norm rows, inner product, L2); a null bias adds nothing (all but L2,
// whose bias is -||row||^2 / 2).
__device__ __forceinline__ float hv_row_score(float dot, const float* __restrict__ inv,
                                              const float* __restrict__ bias, long long r) {
    float s = inv ? dot * inv[r] : dot;
    return bias ? s + bias[r] : s;
}

// Row r is live unless the mask (one bit per row, may be null) clears it.
__device__ __forceinline__ bool hv_live(const unsigned int* __restrict__ mask, long long r) {
    return mask == nullptr || ((mask[r >> 5] >> (r & 31)) & 1u);
}

// Asynchronous 16-byte copies from global to shared memory (cp.async, sm_80 and newer):
// `bytes` is 16, or 0 to fill the 16 bytes with zeros (the source is then not read). A
// group of copies is committed, and waited for with all but the newest N groups done.
#ifndef HV_EMULATION
__device__ __forceinline__ void hv_cp_async16(void* smem, const void* gmem, int bytes) {
    unsigned int s = static_cast<unsigned int>(__cvta_generic_to_shared(smem));
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem), "r"(bytes)
                 : "memory");
}
__device__ __forceinline__ void hv_cp_async_commit() {
    asm volatile("cp.async.commit_group;\n" ::: "memory");
}
template <int N>
__device__ __forceinline__ void hv_cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}
#endif

