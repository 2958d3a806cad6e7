//! The AVX2+FMA score-tile kernel: `MR` = 6 corpus rows × 16 queries (two ymm vectors) on
//! 12 accumulators, and the 8-lane threshold scan of a tile row.

use super::COMPRESS;
use std::arch::x86_64::*;

/// Queries per panel (two 8-lane vectors).
pub(super) const NR: usize = 16;
/// Corpus rows per kernel call.
pub(super) const MR: usize = 6;

/// `c[i * ldc + j] (+)= Σ_p a[i * a_row + p * a_depth] * b[p * NR + j]` for `i < M`,
/// `j < NR`, `p < kc`; adds to `c` when `accumulate`, overwrites it otherwise. Rows read
/// in place have `(a_row, a_depth) = (d, 1)`; rows interleaved depth-major `(1, MR)`.
///
/// # Safety
/// * The CPU supports AVX2 and FMA.
/// * `a` is valid for reads at `i * a_row + p * a_depth` for `i < M <= MR`, `p < kc`.
/// * `b` is valid for reads of `kc * NR` floats.
/// * `c` is valid for reads and writes at `i * ldc + j` for `i < M`, `j < NR`, and
///   nothing else accesses those elements during the call.
///
/// `(pf, lines)`: `lines` cache lines from `pf` to hint into L2 over the call (none
/// when 0), as the AVX-512 kernel does; a hint never faults, so any address will do.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn kernel<const M: usize>(
    kc: usize,
    a: *const f32,
    (a_row, a_depth): (usize, usize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
    (pf, pf_lines): (*const u8, usize),
) {
    let mut lo = [_mm256_setzero_ps(); M];
    let mut hi = [_mm256_setzero_ps(); M];
    // The hints are spread over the depth loop, one every `stride` steps: a burst of them
    // would wait on the line-fill buffers instead.
    let stride = kc.checked_div(pf_lines).map_or(usize::MAX, |s| s.max(1));
    let (mut next, mut hinted) = (0, 0);
    for p in 0..kc {
        if p == next && hinted < pf_lines {
            // A hint never faults and has no architectural effect; `wrapping_add` makes
            // no claim about the address.
            _mm_prefetch::<_MM_HINT_T1>(pf.wrapping_add(64 * hinted) as *const i8);
            hinted += 1;
            next += stride;
        }
        // SAFETY: `p < kc`, so `b + p*NR + [0, 16)` and `a + i*a_row + p*a_depth` are in bounds
        // by the function's contract.
        unsafe {
            let b0 = _mm256_loadu_ps(b.add(p * NR));
            let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
            for i in 0..M {
                let ai = _mm256_broadcast_ss(&*a.add(i * a_row + p * a_depth));
                lo[i] = _mm256_fmadd_ps(ai, b0, lo[i]);
                hi[i] = _mm256_fmadd_ps(ai, b1, hi[i]);
            }
        }
    }
    for i in 0..M {
        // SAFETY: `c + i*ldc + [0, 16)` is in bounds by the function's contract.
        unsafe {
            let ci = c.add(i * ldc);
            if accumulate {
                lo[i] = _mm256_add_ps(lo[i], _mm256_loadu_ps(ci));
                hi[i] = _mm256_add_ps(hi[i], _mm256_loadu_ps(ci.add(8)));
            }
            _mm256_storeu_ps(ci, lo[i]);
            _mm256_storeu_ps(ci.add(8), hi[i]);
        }
    }
}

/// The vector part of [`super::scan_row`], 8 lanes at a time: appends to `lanes` (from 0)
/// the position `q` of every score `row[q] * w` that reaches `thresholds[q]`, in
/// increasing order, for `q` below the multiple of 8 it returns (the caller scans the
/// rest); returns that multiple and the number of positions appended.
///
/// A vector without a passing lane (almost every one) is skipped; the others' passing
/// lanes are compressed through a table of permutations without a branch per lane, so a
/// row with a few passes scattered over it costs at most one mispredicted branch per
/// vector that holds any.
///
/// # Safety
/// The CPU supports AVX2, `row.len() >= thresholds.len()`, and
/// `lanes.len() >= thresholds.len() + 8`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn scan_row(
    row: &[f32],
    w: f32,
    thresholds: &[f32],
    lanes: &mut [u32],
) -> (usize, usize) {
    let n = thresholds.len() / 8 * 8;
    let wv = _mm256_set1_ps(w);
    let mut count = 0;
    let mut q = 0;
    while q < n {
        // SAFETY: `q + 8 <= n <= thresholds.len() <= row.len()`; `count <= q`, so the 8
        // lanes stored at `count` are inside `lanes` (`thresholds.len() + 8` long); the
        // table row is 8 `u32`.
        unsafe {
            let s = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(q)), wv);
            let t = _mm256_loadu_ps(thresholds.as_ptr().add(q));
            let mask = _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(s, t)) as usize & 0xFF;
            if mask == 0 {
                q += 8;
                continue;
            }
            let perm = _mm256_loadu_si256(COMPRESS[mask].as_ptr().cast());
            let at = _mm256_add_epi32(perm, _mm256_set1_epi32(q as i32));
            _mm256_storeu_si256(lanes.as_mut_ptr().add(count).cast(), at);
            count += mask.count_ones() as usize;
        }
        q += 8;
    }
    (n, count)
}
