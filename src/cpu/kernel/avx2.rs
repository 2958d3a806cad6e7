//! The AVX2+FMA score-tile kernel: `MR` = 6 corpus rows × 16 queries (two ymm vectors) on
//! 12 accumulators, and the 8-lane threshold scan of a tile row.

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
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn kernel<const M: usize>(
    kc: usize,
    a: *const f32,
    (a_row, a_depth): (usize, usize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut lo = [_mm256_setzero_ps(); M];
    let mut hi = [_mm256_setzero_ps(); M];
    for p in 0..kc {
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

/// The vector part of [`super::fold_row`]; returns how many queries it covered (a
/// multiple of 8), leaving the rest to the caller.
///
/// # Safety
/// The CPU supports AVX2, and `row.len() >= thresholds.len()`.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fold_row(
    row: &[f32],
    w: f32,
    thresholds: &mut [f32],
    offer: &mut impl FnMut(usize, f32) -> f32,
) -> usize {
    let n = thresholds.len() / 8 * 8;
    let wv = _mm256_set1_ps(w);
    let mut q = 0;
    while q < n {
        // SAFETY: `q + 8 <= n <= thresholds.len() <= row.len()`.
        let mask = unsafe {
            let s = _mm256_mul_ps(_mm256_loadu_ps(row.as_ptr().add(q)), wv);
            let t = _mm256_loadu_ps(thresholds.as_ptr().add(q));
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(s, t))
        };
        let mut m = mask as u32;
        while m != 0 {
            let lane = q + m.trailing_zeros() as usize;
            // Same product as the vector lane, so the pass/fail decision agrees.
            thresholds[lane] = offer(lane, row[lane] * w);
            m &= m - 1;
        }
        q += 8;
    }
    n
}

/// The vector part of [`super::fold_column`]: returns how many scores it covered (a
/// multiple of 8) and the threshold after them.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn fold_column(
    scores: &[f32],
    mut threshold: f32,
    offer: &mut impl FnMut(usize, f32) -> f32,
) -> (usize, f32) {
    let n = scores.len() / 8 * 8;
    let mut i = 0;
    while i < n {
        // SAFETY: `i + 8 <= n <= scores.len()`.
        let v = unsafe { _mm256_loadu_ps(scores.as_ptr().add(i)) };
        let mut m =
            _mm256_movemask_ps(_mm256_cmp_ps::<_CMP_GE_OQ>(v, _mm256_set1_ps(threshold))) as u32;
        while m != 0 {
            let lane = i + m.trailing_zeros() as usize;
            // The threshold may have risen since the compare.
            if scores[lane] >= threshold {
                threshold = offer(lane, scores[lane]);
            }
            m &= m - 1;
        }
        i += 8;
    }
    (n, threshold)
}
