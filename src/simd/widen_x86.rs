//! x86-64 streaming dot products of 16-bit rows (see `widen`): AVX-512F widens 16
//! values per instruction (`vcvtph2ps`, or a zero-extension and a 16-bit shift for
//! bf16), AVX2 eight (F16C's `vcvtph2ps`, or the same shift).
//!
//! One row at a time meets a group of up to four queries; each step widens 32 (AVX-512)
//! or 16 (AVX2) values once for every query of the group, into two accumulators per query,
//! so even one query keeps two FMA chains going. The first group's pass over a row
//! prefetches the row eight rows ahead.

use std::arch::x86_64::*;

/// Queries per group.
const G: usize = 4;
/// Rows prefetched ahead.
const AHEAD_ROWS: usize = 8;

/// Calls `$body` with `$g` as a constant group size of 1 to 4.
macro_rules! by_group {
    ($g:expr, $f:ident::<$bf:ident>($($arg:expr),*)) => {
        match $g {
            1 => $f::<1, $bf>($($arg),*).to_vec(),
            2 => $f::<2, $bf>($($arg),*).to_vec(),
            3 => $f::<3, $bf>($($arg),*).to_vec(),
            _ => $f::<4, $bf>($($arg),*).to_vec(),
        }
    };
}

/// `out[q * n + r] = (widen(rows[r]) · queries[q]) * scale[r]`, AVX-512F.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dots_rows_avx512<const BF16: bool>(
    rows: &[u16],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len() / d;
    assert!(rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq);
    for (r, (row, &w)) in rows.chunks_exact(d).zip(scale).enumerate() {
        let ahead = rows.as_ptr().wrapping_add((r + AHEAD_ROWS) * d);
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(G);
            let qs = &queries[q * d..(q + g) * d];
            if q == 0 {
                prefetch_row(ahead, 2 * d);
            }
            let sums = by_group!(g, group512::<BF16>(row, qs));
            for (j, s) in sums.into_iter().enumerate() {
                out[(q + j) * n + r] = s * w;
            }
            q += g;
        }
    }
}

/// `out[q * n + r] = (widen(rows[r]) · queries[q]) * scale[r]`, AVX2 (F16C for f16).
///
/// # Safety
/// The CPU must support AVX2 and FMA, and F16C unless `BF16`.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn dots_rows_avx2<const BF16: bool>(
    rows: &[u16],
    d: usize,
    queries: &[f32],
    scale: &[f32],
    out: &mut [f32],
) {
    let n = scale.len();
    let nq = queries.len() / d;
    assert!(rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq);
    for (r, (row, &w)) in rows.chunks_exact(d).zip(scale).enumerate() {
        let ahead = rows.as_ptr().wrapping_add((r + AHEAD_ROWS) * d);
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(G);
            let qs = &queries[q * d..(q + g) * d];
            if q == 0 {
                prefetch_row(ahead, 2 * d);
            }
            let sums = by_group!(g, group256::<BF16>(row, qs));
            for (j, s) in sums.into_iter().enumerate() {
                out[(q + j) * n + r] = s * w;
            }
            q += g;
        }
    }
}

/// Hints the `bytes` from `at` into L1, a line at a time. A hint never faults, and
/// `wrapping_add` computes the addresses without any claim about bounds.
#[inline]
#[target_feature(enable = "sse")]
fn prefetch_row(at: *const u16, bytes: usize) {
    let at = at as *const i8;
    for line in (0..bytes).step_by(64) {
        _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(line));
    }
}

/// One value widened to f32.
#[inline]
fn widen1<const BF16: bool>(bits: u16) -> f32 {
    if BF16 {
        f32::from_bits((bits as u32) << 16)
    } else {
        half::f16::from_bits(bits).to_f32()
    }
}

/// Sixteen values of `s[i..i + 16]`, widened; the slice index is the bounds check.
#[inline]
#[target_feature(enable = "avx512f")]
fn widen16<const BF16: bool>(s: &[u16], i: usize) -> __m512 {
    let chunk = &s[i..i + 16];
    // SAFETY: `chunk` holds exactly 16 initialised u16 (32 bytes); `loadu` has no
    // alignment need.
    let raw = unsafe { _mm256_loadu_si256(chunk.as_ptr() as *const __m256i) };
    if BF16 {
        _mm512_castsi512_ps(_mm512_slli_epi32::<16>(_mm512_cvtepu16_epi32(raw)))
    } else {
        _mm512_cvtph_ps(raw)
    }
}

/// Sixteen floats of `s[i..i + 16]`.
#[inline]
#[target_feature(enable = "avx512f")]
fn load16(s: &[f32], i: usize) -> __m512 {
    let chunk = &s[i..i + 16];
    // SAFETY: `chunk` holds exactly 16 initialised floats; `loadu` has no alignment need.
    unsafe { _mm512_loadu_ps(chunk.as_ptr()) }
}

/// Dot products of one 16-bit row with `G2` queries (`qs`, `G2 × d`), AVX-512F.
#[inline]
#[target_feature(enable = "avx512f")]
fn group512<const G2: usize, const BF16: bool>(row: &[u16], qs: &[f32]) -> [f32; G2] {
    let d = row.len();
    assert_eq!(qs.len(), G2 * d);
    let q: [&[f32]; G2] = std::array::from_fn(|j| &qs[j * d..(j + 1) * d]);
    let mut acc = [[_mm512_setzero_ps(); 2]; G2];
    let mut i = 0;
    while i + 32 <= d {
        let x0 = widen16::<BF16>(row, i);
        let x1 = widen16::<BF16>(row, i + 16);
        for j in 0..G2 {
            acc[j][0] = _mm512_fmadd_ps(x0, load16(q[j], i), acc[j][0]);
            acc[j][1] = _mm512_fmadd_ps(x1, load16(q[j], i + 16), acc[j][1]);
        }
        i += 32;
    }
    if i + 16 <= d {
        let x0 = widen16::<BF16>(row, i);
        for j in 0..G2 {
            acc[j][0] = _mm512_fmadd_ps(x0, load16(q[j], i), acc[j][0]);
        }
        i += 16;
    }
    let mut out = [0.0f32; G2];
    for j in 0..G2 {
        out[j] = _mm512_reduce_add_ps(_mm512_add_ps(acc[j][0], acc[j][1]));
    }
    for (k, &bits) in row[i..].iter().enumerate() {
        let x = widen1::<BF16>(bits);
        for j in 0..G2 {
            out[j] = x.mul_add(q[j][i + k], out[j]);
        }
    }
    out
}

/// Eight values of `s[i..i + 8]`, widened.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn widen8<const BF16: bool>(s: &[u16], i: usize) -> __m256 {
    let chunk = &s[i..i + 8];
    // SAFETY: `chunk` holds exactly 8 initialised u16 (16 bytes); `loadu` has no
    // alignment need.
    let raw = unsafe { _mm_loadu_si128(chunk.as_ptr() as *const __m128i) };
    if BF16 {
        _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(raw)))
    } else {
        _mm256_cvtph_ps(raw)
    }
}

/// Eight floats of `s[i..i + 8]`.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn load8(s: &[f32], i: usize) -> __m256 {
    let chunk = &s[i..i + 8];
    // SAFETY: `chunk` holds exactly 8 initialised floats; `loadu` has no alignment need.
    unsafe { _mm256_loadu_ps(chunk.as_ptr()) }
}

/// The sum of a vector's eight lanes.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn hsum8(v: __m256) -> f32 {
    let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    let s = _mm_add_ss(s, _mm_shuffle_ps::<0b01>(s, s));
    _mm_cvtss_f32(s)
}

/// Dot products of one 16-bit row with `G2` queries (`qs`, `G2 × d`), AVX2.
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group256<const G2: usize, const BF16: bool>(row: &[u16], qs: &[f32]) -> [f32; G2] {
    let d = row.len();
    assert_eq!(qs.len(), G2 * d);
    let q: [&[f32]; G2] = std::array::from_fn(|j| &qs[j * d..(j + 1) * d]);
    let mut acc = [[_mm256_setzero_ps(); 2]; G2];
    let mut i = 0;
    while i + 16 <= d {
        let x0 = widen8::<BF16>(row, i);
        let x1 = widen8::<BF16>(row, i + 8);
        for j in 0..G2 {
            acc[j][0] = _mm256_fmadd_ps(x0, load8(q[j], i), acc[j][0]);
            acc[j][1] = _mm256_fmadd_ps(x1, load8(q[j], i + 8), acc[j][1]);
        }
        i += 16;
    }
    if i + 8 <= d {
        let x0 = widen8::<BF16>(row, i);
        for j in 0..G2 {
            acc[j][0] = _mm256_fmadd_ps(x0, load8(q[j], i), acc[j][0]);
        }
        i += 8;
    }
    let mut out = [0.0f32; G2];
    for j in 0..G2 {
        out[j] = hsum8(_mm256_add_ps(acc[j][0], acc[j][1]));
    }
    for (k, &bits) in row[i..].iter().enumerate() {
        let x = widen1::<BF16>(bits);
        for j in 0..G2 {
            out[j] = x.mul_add(q[j][i + k], out[j]);
        }
    }
    out
}
