//! A register-blocked AVX2+FMA kernel for score tiles: `MR` corpus rows × 16 queries.
//!
//! The general-purpose `gemm` crate repacks both operands on every call. For top-k the
//! queries are fixed for the whole call while the corpus streams past, so we pack the
//! queries once ([`PackedQueries`]: panels of 16, `d`-major) and read the corpus rows in
//! place: the kernel broadcasts one corpus value per row and multiplies it with two
//! 8-lane vectors of the query panel, 12 FMAs per depth step on 12 accumulators.

/// Queries per panel (two AVX2 vectors).
pub(crate) const NR: usize = 16;
/// Corpus rows per kernel call.
pub(crate) const MR: usize = 6;

/// Unit-norm queries packed as panels of [`NR`] queries: element `(q, p)` lives at
/// `(q / NR) * d * NR + p * NR + q % NR`. Missing queries of the last panel are zero.
pub(crate) struct PackedQueries {
    buf: AlignedBuf,
    panels: usize,
    d: usize,
}

impl PackedQueries {
    pub(crate) fn new(queries: &[f32], q: usize, d: usize) -> Self {
        let panels = q.div_ceil(NR);
        let mut buf = AlignedBuf::zeroed(panels * d * NR);
        let dst = buf.as_mut_slice();
        for qi in 0..q {
            let (panel, lane) = (qi / NR, qi % NR);
            let base = panel * d * NR + lane;
            for (p, &v) in queries[qi * d..(qi + 1) * d].iter().enumerate() {
                dst[base + p * NR] = v;
            }
        }
        Self { buf, panels, d }
    }

    /// Query panels (each [`NR`] queries wide, padded with zero queries).
    pub(crate) fn panels(&self) -> usize {
        self.panels
    }

    /// Queries in the tile, padding included.
    pub(crate) fn padded(&self) -> usize {
        self.panels * NR
    }

    fn panel(&self, i: usize) -> &[f32] {
        &self.buf.as_slice()[i * self.d * NR..(i + 1) * self.d * NR]
    }
}

/// Depth block. With D ≤ 768 one pass covers the whole dot product, so the tile is written
/// once instead of read and rewritten per block; measured best on Zen 3 for D = 768.
const KC: usize = 768;

/// Scores the corpus rows `rows` (row-major, `d` values each, `rows.len() / d` of them)
/// against every packed query: `tile[r * ldt + q] = rows[r] · query[q]` for
/// `q < queries.padded()`. `packed_rows` is scratch space, reused between calls.
///
/// `ldt` must be at least `queries.padded()` and `tile` must hold `nrows * ldt` values.
pub(crate) fn score_tile(
    rows: &[f32],
    d: usize,
    queries: &PackedQueries,
    tile: &mut [f32],
    ldt: usize,
    packed_rows: &mut Vec<f32>,
) {
    let nrows = rows.len() / d;
    assert_eq!(rows.len(), nrows * d);
    assert_eq!(queries.d, d);
    assert!(
        ldt >= queries.padded() && tile.len() >= nrows * ldt,
        "tile too small"
    );
    assert!(is_avx2_fma(), "score_tile needs AVX2+FMA");
    // Interleave each group of MR rows depth-major, so the kernel's broadcasts read one
    // contiguous stream: group g, depth p, row i at `g * d * MR + p * MR + i`.
    let groups = nrows.div_ceil(MR);
    packed_rows.clear();
    packed_rows.resize(groups * d * MR, 0.0);
    for (g, dst) in packed_rows.chunks_exact_mut(d * MR).enumerate() {
        let m = MR.min(nrows - g * MR);
        if m == MR {
            // Contiguous writes, six sequential read streams.
            let src: [&[f32]; MR] =
                std::array::from_fn(|i| &rows[(g * MR + i) * d..(g * MR + i + 1) * d]);
            for (p, out) in dst.chunks_exact_mut(MR).enumerate() {
                for i in 0..MR {
                    out[i] = src[i][p];
                }
            }
        } else {
            for i in 0..m {
                let src = &rows[(g * MR + i) * d..(g * MR + i + 1) * d];
                for (p, &v) in src.iter().enumerate() {
                    dst[p * MR + i] = v;
                }
            }
        }
    }
    for k0 in (0..d).step_by(KC) {
        let kc = KC.min(d - k0);
        for pi in 0..queries.panels() {
            let b = &queries.panel(pi)[k0 * NR..(k0 + kc) * NR];
            for g in 0..groups {
                let mr = MR.min(nrows - g * MR);
                let a = &packed_rows[g * d * MR + k0 * MR..g * d * MR + (k0 + kc) * MR];
                let c = &mut tile[g * MR * ldt + pi * NR..];
                // SAFETY: AVX2+FMA checked above. `a` holds `kc × MR` values and `b` holds
                // `kc × NR`. `c` is written at `i * ldt + [0, NR)` for `i < mr`, inside
                // `tile` because `pi * NR + NR <= padded <= ldt` and row `g * MR + i < nrows`.
                unsafe { dispatch(mr, kc, a, b, c, ldt, k0 > 0) };
            }
        }
    }
}

/// Scans one tile row: for each query `q < thresholds.len()` whose score `row[q] * w`
/// reaches `thresholds[q]`, calls `offer(q, score)` and stores the threshold it returns.
///
/// Almost every score misses, so eight lanes are compared at once and only a lane that
/// passes leaves the vector loop. Lanes are distinct queries, so one compare per lane is
/// exact even when an offer raises that query's threshold.
pub(crate) fn fold_row(
    row: &[f32],
    w: f32,
    thresholds: &mut [f32],
    mut offer: impl FnMut(usize, f32) -> f32,
) {
    assert!(row.len() >= thresholds.len());
    let mut start = 0;
    #[cfg(target_arch = "x86_64")]
    if is_avx2_fma() {
        // SAFETY: AVX2 was just detected; lengths are asserted above.
        start = unsafe { avx2::fold_row(row, w, thresholds, &mut offer) };
    }
    for q in start..thresholds.len() {
        let s = row[q] * w;
        if s >= thresholds[q] {
            thresholds[q] = offer(q, s);
        }
    }
}

fn is_avx2_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// # Safety
/// The CPU supports AVX2+FMA; slice bounds as stated at the call in [`score_tile`].
#[allow(clippy::too_many_arguments)]
unsafe fn dispatch(
    mr: usize,
    kc: usize,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    ldc: usize,
    acc: bool,
) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: forwarded from the caller.
    unsafe {
        let (a, b, c) = (a.as_ptr(), b.as_ptr(), c.as_mut_ptr());
        match mr {
            6 => avx2::kernel::<6>(kc, a, b, c, ldc, acc),
            5 => avx2::kernel::<5>(kc, a, b, c, ldc, acc),
            4 => avx2::kernel::<4>(kc, a, b, c, ldc, acc),
            3 => avx2::kernel::<3>(kc, a, b, c, ldc, acc),
            2 => avx2::kernel::<2>(kc, a, b, c, ldc, acc),
            _ => avx2::kernel::<1>(kc, a, b, c, ldc, acc),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (mr, kc, a, b, c, ldc, acc);
        unreachable!("score_tile checked for AVX2");
    }
}

#[cfg(target_arch = "x86_64")]
mod avx2 {
    use super::{MR, NR};
    use std::arch::x86_64::*;

    /// `c[i * ldc + j] (+)= Σ_p a[p * MR + i] * b[p * NR + j]` for `i < M`, `j < NR`,
    /// `p < kc`; adds to `c` when `accumulate`, overwrites it otherwise.
    ///
    /// # Safety
    /// * The CPU supports AVX2 and FMA.
    /// * `a` is valid for reads of `kc * MR` floats (`M <= MR`).
    /// * `b` is valid for reads of `kc * NR` floats.
    /// * `c` is valid for reads and writes at `i * ldc + j` for `i < M`, `j < NR`, and
    ///   nothing else accesses those elements during the call.
    #[inline]
    #[target_feature(enable = "avx2,fma")]
    pub(super) unsafe fn kernel<const M: usize>(
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        accumulate: bool,
    ) {
        let mut lo = [_mm256_setzero_ps(); M];
        let mut hi = [_mm256_setzero_ps(); M];
        for p in 0..kc {
            // SAFETY: `p < kc`, so `b + p*NR + [0, 16)` and `a + p*MR + i` are in bounds
            // by the function's contract.
            unsafe {
                let b0 = _mm256_loadu_ps(b.add(p * NR));
                let b1 = _mm256_loadu_ps(b.add(p * NR + 8));
                for i in 0..M {
                    let ai = _mm256_broadcast_ss(&*a.add(p * MR + i));
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
}

/// A zeroed `f32` buffer whose first element is 64-byte aligned, so the kernel's 32-byte
/// loads never straddle a cache line.
pub(crate) struct AlignedBuf {
    raw: Vec<f32>,
    offset: usize,
    len: usize,
}

impl AlignedBuf {
    pub(crate) fn zeroed(len: usize) -> Self {
        let raw = crate::mem::zeroed_f32(len + 16);
        let offset = raw.as_ptr().align_offset(64).min(16);
        Self { raw, offset, len }
    }

    pub(crate) fn as_slice(&self) -> &[f32] {
        &self.raw[self.offset..self.offset + self.len]
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.raw[self.offset..self.offset + self.len]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tile_matches_f64_for_every_row_and_panel_remainder() {
        if !is_avx2_fma() {
            eprintln!("skip: no AVX2+FMA on this CPU");
            return;
        }
        for (nrows, q, d) in [
            (1, 1, 1),
            (7, 17, 3),
            (13, 33, 300),
            (6, 16, 257),
            (20, 5, 700),
        ] {
            let rows = crate::data::random_vec(nrows * d, 11, 0);
            let qs = crate::data::random_vec(q * d, 12, 0);
            let packed = PackedQueries::new(&qs, q, d);
            let ldt = packed.padded() + 3;
            let mut tile = vec![f32::NAN; nrows * ldt];
            score_tile(&rows, d, &packed, &mut tile, ldt, &mut Vec::new());
            for r in 0..nrows {
                for j in 0..q {
                    let exact: f64 = (0..d)
                        .map(|p| rows[r * d + p] as f64 * qs[j * d + p] as f64)
                        .sum();
                    let got = tile[r * ldt + j] as f64;
                    assert!(
                        (got - exact).abs() <= 1e-4 * (d as f64).sqrt(),
                        "r={r} q={j} d={d}"
                    );
                }
                for j in q..packed.padded() {
                    assert_eq!(tile[r * ldt + j], 0.0, "padding queries score 0");
                }
            }
        }
    }
}
