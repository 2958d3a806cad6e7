//! The NEON score-tile kernel: `MR` = 6 corpus rows × 16 queries (four 4-lane vectors) on
//! 24 accumulators, and the 4-lane threshold scan of a tile row.
//!
//! Why 6 × 16: aarch64 has 32 vector registers of 4 floats. The kernel keeps `4 · MR`
//! accumulators, the four query vectors of one depth step and a broadcast corpus value
//! live, 29 registers at `MR` = 6, so nothing spills (7 rows would need 33). Each depth
//! step then loads 4 query vectors and 6 corpus values for 24 FMAs, 2.4 FMAs per load,
//! more than the 8 × 12 shape that also fits (2.2) or 4 × 16 (2.0). A 16-wide panel also
//! packs batches of 16, 32, 64, ... queries with no padding, where a 12-wide one would
//! score a third more queries at the tiled path's default threshold of 16.

use std::arch::aarch64::*;

/// Queries per panel (four 4-lane vectors).
pub(super) const NR: usize = 16;
/// Corpus rows per kernel call: 24 accumulators, four query vectors and a broadcast fit the
/// 32 vector registers.
pub(super) const MR: usize = 6;

/// `c[i * ldc + j] (+)= Σ_p a[i * a_row + p * a_depth] * b[p * NR + j]` for `i < M`,
/// `j < NR`, `p < kc`; adds to `c` when `accumulate`, overwrites it otherwise. Rows read
/// in place have `(a_row, a_depth) = (d, 1)`; rows interleaved depth-major `(1, MR)`.
///
/// # Safety
/// * The CPU supports NEON.
/// * `a` is valid for reads at `i * a_row + p * a_depth` for `i < M <= MR`, `p < kc`.
/// * `b` is valid for reads of `kc * NR` floats.
/// * `c` is valid for reads and writes at `i * ldc + j` for `i < M`, `j < NR`, and
///   nothing else accesses those elements during the call.
#[inline]
#[target_feature(enable = "neon")]
pub(super) unsafe fn kernel<const M: usize>(
    kc: usize,
    a: *const f32,
    (a_row, a_depth): (usize, usize),
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    accumulate: bool,
) {
    let mut acc = [[vdupq_n_f32(0.0); 4]; M];
    for p in 0..kc {
        // SAFETY: `p < kc`, so `b + p*NR + [0, 16)` and `a + i*a_row + p*a_depth` are in
        // bounds by the function's contract; `vld1q*` need only the alignment of `f32`.
        unsafe {
            let bp = b.add(p * NR);
            let bv = [
                vld1q_f32(bp),
                vld1q_f32(bp.add(4)),
                vld1q_f32(bp.add(8)),
                vld1q_f32(bp.add(12)),
            ];
            for (i, acc) in acc.iter_mut().enumerate() {
                let ai = vld1q_dup_f32(a.add(i * a_row + p * a_depth));
                for (acc, &bj) in acc.iter_mut().zip(&bv) {
                    *acc = vfmaq_f32(*acc, ai, bj);
                }
            }
        }
    }
    for (i, acc) in acc.iter().enumerate() {
        // SAFETY: `c + i*ldc + [0, 16)` is in bounds by the function's contract.
        unsafe {
            let ci = c.add(i * ldc);
            for (j, &v) in acc.iter().enumerate() {
                let cj = ci.add(4 * j);
                let v = if accumulate {
                    vaddq_f32(v, vld1q_f32(cj))
                } else {
                    v
                };
                vst1q_f32(cj, v);
            }
        }
    }
}

/// The vector part of [`super::scan_row`], 4 lanes at a time: writes the passing queries
/// to `lanes` from 0 and returns how many queries it covered (a multiple of 4) and how
/// many passed, leaving the rest to the caller.
///
/// # Safety
/// The CPU supports NEON, `row.len() >= thresholds.len()` and
/// `lanes.len() >= thresholds.len()`.
#[target_feature(enable = "neon")]
pub(super) unsafe fn scan_row(
    row: &[f32],
    w: f32,
    thresholds: &[f32],
    lanes: &mut [u32],
) -> (usize, usize) {
    let n = thresholds.len() / 4 * 4;
    let wv = vdupq_n_f32(w);
    // One bit per lane, so a horizontal add of the masked compare is a movemask.
    const LANE_BITS: [u32; 4] = [1, 2, 4, 8];
    // SAFETY: `LANE_BITS` holds exactly 4 `u32`s.
    let bits = unsafe { vld1q_u32(LANE_BITS.as_ptr()) };
    let mut count = 0;
    let mut q = 0;
    while q < n {
        // SAFETY: `q + 4 <= n <= thresholds.len() <= row.len()`.
        let mask = unsafe {
            let s = vmulq_f32(vld1q_f32(row.as_ptr().add(q)), wv);
            let t = vld1q_f32(thresholds.as_ptr().add(q));
            // `>=` is false when either side is NaN, as `_CMP_GE_OQ` on x86.
            vaddvq_u32(vandq_u32(vcgeq_f32(s, t), bits))
        };
        let mut m = mask;
        while m != 0 {
            // `count <= q < lanes.len()`: one entry per passing query.
            lanes[count] = q as u32 + m.trailing_zeros();
            count += 1;
            m &= m - 1;
        }
        q += 4;
    }
    (n, count)
}
