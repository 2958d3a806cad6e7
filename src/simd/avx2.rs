//! AVX2+FMA streaming dot products: four queries per pass over a row.

use std::arch::x86_64::*;

/// The least prefetch distance, in floats (8 KiB).
const PREFETCH_FLOATS: usize = 2048;

/// `out[q * n + r] = (rows[r] · queries[q]) * scale[r]` for the `n = scale.len()` rows
/// (`d > 0` values each) and every query.
///
/// # Safety
/// The CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn dots_rows(
    rows: &[f32],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len() / d;
    assert!(
        rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    for (r, (row, &w)) in rows.chunks_exact(d).zip(scale).enumerate() {
        let mut q = 0;
        while q + 4 <= nq {
            let qs = &queries[q * d..(q + 4) * d];
            let s = if q == 0 {
                dot4::<true>(row, qs)
            } else {
                dot4::<false>(row, qs)
            };
            for (j, s) in s.into_iter().enumerate() {
                out[(q + j) * n + r] = s * w;
            }
            q += 4;
        }
        while q < nq {
            out[q * n + r] = dot1(row, &queries[q * d..(q + 1) * d]) * w;
            q += 1;
        }
    }
}

#[inline]
#[target_feature(enable = "avx2,fma")]
fn hsum(v: __m256) -> f32 {
    let lo = _mm256_castps256_ps128(v);
    let hi = _mm256_extractf128_ps::<1>(v);
    let s = _mm_add_ps(lo, hi);
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Eight floats from `s[i..i + 8]`; the slice index is the bounds check, so callers
/// need no unsafe code (the check folds away inside the loops' own bounds).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn load8(s: &[f32], i: usize) -> __m256 {
    let chunk = &s[i..i + 8];
    // SAFETY: `chunk` holds exactly 8 initialised floats; `loadu` has no alignment need.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

/// One dot product with four accumulators (32 floats per iteration).
#[inline]
#[target_feature(enable = "avx2,fma")]
pub(super) fn dot1(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    assert_eq!(b.len(), n);
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (u, acc) in acc.iter_mut().enumerate() {
            let o = i + 8 * u;
            *acc = _mm256_fmadd_ps(load8(a, o), load8(b, o), *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(load8(a, i), load8(b, i), acc[0]);
        i += 8;
    }
    let v = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut s = hsum(v);
    while i < n {
        s = a[i].mul_add(b[i], s);
        i += 1;
    }
    s
}

/// Four dot products of `row` against four consecutive query rows, two accumulators each,
/// so each 8-float piece of `row` is loaded once for four FMAs. With `PREFETCH` (the first
/// four queries of a row), the rows ahead are prefetched: four or more queries consume a row
/// slowly enough that the hardware prefetcher alone left the loads waiting on DRAM.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn dot4<const PREFETCH: bool>(row: &[f32], q: &[f32]) -> [f32; 4] {
    let d = row.len();
    assert_eq!(q.len(), 4 * d);
    let qs = [&q[..d], &q[d..2 * d], &q[2 * d..3 * d], &q[3 * d..]];
    let mut a0 = [_mm256_setzero_ps(); 4];
    let mut a1 = [_mm256_setzero_ps(); 4];
    let ahead = (2 * d).max(PREFETCH_FLOATS);
    let mut i = 0;
    while i + 16 <= d {
        if PREFETCH {
            // One line per 16 floats; a hint that never faults, at an address
            // `wrapping_add` computes without any claim about bounds.
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(i + ahead) as *const i8);
        }
        let r0 = load8(row, i);
        let r1 = load8(row, i + 8);
        for j in 0..4 {
            a0[j] = _mm256_fmadd_ps(r0, load8(qs[j], i), a0[j]);
            a1[j] = _mm256_fmadd_ps(r1, load8(qs[j], i + 8), a1[j]);
        }
        i += 16;
    }
    while i + 8 <= d {
        let r0 = load8(row, i);
        for j in 0..4 {
            a0[j] = _mm256_fmadd_ps(r0, load8(qs[j], i), a0[j]);
        }
        i += 8;
    }
    let mut out = [0.0f32; 4];
    for j in 0..4 {
        let mut s = hsum(_mm256_add_ps(a0[j], a1[j]));
        for t in i..d {
            s = row[t].mul_add(qs[j][t], s);
        }
        out[j] = s;
    }
    out
}
