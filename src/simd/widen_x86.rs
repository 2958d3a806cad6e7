//! x86-64 streaming dot products of 16-bit rows (see `widen`): AVX-512F widens 16
//! values per instruction (`vcvtph2ps`, or a zero-extension and a 16-bit shift for
//! bf16), AVX2 eight (F16C's `vcvtph2ps`, or the same shift).
//!
//! One row at a time meets a group of up to eight queries (AVX-512; four on AVX2); each
//! step widens 32 (AVX-512) or 16 (AVX2) values once for every query of the group, into
//! two accumulators per query, so even one query keeps two FMA chains going. Groups of
//! eight against four: Q = 5 28.6–30.0 ms against 34.3, Q = 8 44.2 against 51.5 (300k ×
//! 768, 2 cores).

use std::arch::x86_64::*;

/// Queries per group on AVX-512: 16 accumulators, and the row's pieces, in 32 registers.
const G: usize = 8;
/// Queries per group on AVX2, whose 16 registers hold 8 accumulators and the pieces.
const G_AVX2: usize = 4;
/// How far ahead (values, 8 KiB) the AVX2 kernels hint the rows' lines (`group256`).
const PREFETCH_VALUES: usize = 4096;

/// Calls `$f` with `$g` as a constant group size of 1 to 4; the sums, padded to four.
macro_rules! by_group {
    ($g:expr, $f:ident::<$bf:ident>($($arg:expr),*)) => {
        match $g {
            1 => pad($f::<1, $bf>($($arg),*)),
            2 => pad($f::<2, $bf>($($arg),*)),
            3 => pad($f::<3, $bf>($($arg),*)),
            4 => pad($f::<4, $bf>($($arg),*)),
            5 => pad($f::<5, $bf>($($arg),*)),
            6 => pad($f::<6, $bf>($($arg),*)),
            7 => pad($f::<7, $bf>($($arg),*)),
            _ => pad($f::<8, $bf>($($arg),*)),
        }
    };
}

/// `sums` padded with zeros to a group's four.
#[inline(always)]
fn pad<const N: usize>(sums: [f32; N]) -> [f32; G] {
    std::array::from_fn(|j| if j < N { sums[j] } else { 0.0 })
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
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(G);
            let qs = &queries[q * d..(q + g) * d];
            let sums = by_group!(g, group512::<BF16>(row, qs));
            for (j, s) in sums.into_iter().take(g).enumerate() {
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
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(G_AVX2);
            let qs = &queries[q * d..(q + g) * d];
            // The first group hints the rows ahead; the others find them in cache.
            let sums = by_group!(g, group256::<BF16>(row, qs, q == 0));
            for (j, s) in sums.into_iter().take(g).enumerate() {
                out[(q + j) * n + r] = s * w;
            }
            q += g;
        }
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
    if G2 == 1 {
        // One query: eight accumulators over 128 values a step, so the loads run further
        // ahead of the FMA chains (1M × 768 f16 rows on 2 Zen-class cores: 26 ms, from 35
        // with two accumulators and 28 with four; 64-byte loads measured no better).
        let mut more = [_mm512_setzero_ps(); 6];
        while i + 128 <= d {
            let x: [__m512; 8] = std::array::from_fn(|j| widen16::<BF16>(row, i + 16 * j));
            acc[0][0] = _mm512_fmadd_ps(x[0], load16(q[0], i), acc[0][0]);
            acc[0][1] = _mm512_fmadd_ps(x[1], load16(q[0], i + 16), acc[0][1]);
            for (j, m) in more.iter_mut().enumerate() {
                *m = _mm512_fmadd_ps(x[j + 2], load16(q[0], i + 16 * (j + 2)), *m);
            }
            i += 128;
        }
        let (even, odd) = (
            _mm512_add_ps(more[0], _mm512_add_ps(more[2], more[4])),
            _mm512_add_ps(more[1], _mm512_add_ps(more[3], more[5])),
        );
        acc[0][0] = _mm512_add_ps(acc[0][0], even);
        acc[0][1] = _mm512_add_ps(acc[0][1], odd);
    }
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

/// Dot products of one 16-bit row with `G2` queries (`qs`, `G2 × d`), AVX2. With
/// `prefetch`, the lines of the rows that follow are hinted [`PREFETCH_VALUES`] ahead:
/// on a 2-core Zen 3 (AVX2) the hardware prefetcher alone left one query at 25–28 GB/s
/// against the f32 kernel's 31–35 (1M × 768: Q = 1 53–61 ms, now 43–49; Q = 2 96, now
/// 59–61).
#[inline]
#[target_feature(enable = "avx2,fma,f16c")]
fn group256<const G2: usize, const BF16: bool>(
    row: &[u16],
    qs: &[f32],
    prefetch: bool,
) -> [f32; G2] {
    let d = row.len();
    assert_eq!(qs.len(), G2 * d);
    let q: [&[f32]; G2] = std::array::from_fn(|j| &qs[j * d..(j + 1) * d]);
    let mut acc = [[_mm256_setzero_ps(); 2]; G2];
    let mut i = 0;
    let ahead = (2 * d).max(PREFETCH_VALUES);
    if G2 == 1 {
        // One query: eight accumulators over 64 values a step, as in `group512`.
        let mut more = [_mm256_setzero_ps(); 6];
        while i + 64 <= d {
            if prefetch {
                // Two lines a step; a hint never faults, and `wrapping_add` makes no
                // claim about bounds.
                let at = row.as_ptr().wrapping_add(i + ahead);
                _mm_prefetch::<_MM_HINT_T0>(at as *const i8);
                _mm_prefetch::<_MM_HINT_T0>(at.wrapping_add(32) as *const i8);
            }
            let x: [__m256; 8] = std::array::from_fn(|j| widen8::<BF16>(row, i + 8 * j));
            acc[0][0] = _mm256_fmadd_ps(x[0], load8(q[0], i), acc[0][0]);
            acc[0][1] = _mm256_fmadd_ps(x[1], load8(q[0], i + 8), acc[0][1]);
            for (j, m) in more.iter_mut().enumerate() {
                *m = _mm256_fmadd_ps(x[j + 2], load8(q[0], i + 8 * (j + 2)), *m);
            }
            i += 64;
        }
        let (even, odd) = (
            _mm256_add_ps(more[0], _mm256_add_ps(more[2], more[4])),
            _mm256_add_ps(more[1], _mm256_add_ps(more[3], more[5])),
        );
        acc[0][0] = _mm256_add_ps(acc[0][0], even);
        acc[0][1] = _mm256_add_ps(acc[0][1], odd);
    }
    while i + 16 <= d {
        if prefetch && i % 32 == 0 {
            _mm_prefetch::<_MM_HINT_T0>(row.as_ptr().wrapping_add(i + ahead) as *const i8);
        }
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

/// Widens `src` into `dst` (equal lengths), sixteen values per instruction.
///
/// # Safety
/// The CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn decode_avx512<const BF16: bool>(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let mut i = 0;
    while i + 16 <= src.len() {
        let v = widen16::<BF16>(src, i);
        let out = &mut dst[i..i + 16];
        // SAFETY: `out` holds exactly 16 floats; `storeu` has no alignment need.
        unsafe { _mm512_storeu_ps(out.as_mut_ptr(), v) };
        i += 16;
    }
    for (d, &s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = widen1::<BF16>(s);
    }
}

/// Widens `src` into `dst` (equal lengths), eight values per instruction.
///
/// # Safety
/// The CPU must support AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn decode_avx2<const BF16: bool>(src: &[u16], dst: &mut [f32]) {
    assert_eq!(src.len(), dst.len());
    let mut i = 0;
    while i + 8 <= src.len() {
        let v = widen8::<BF16>(src, i);
        let out = &mut dst[i..i + 8];
        // SAFETY: `out` holds exactly 8 floats; `storeu` has no alignment need.
        unsafe { _mm256_storeu_ps(out.as_mut_ptr(), v) };
        i += 8;
    }
    for (d, &s) in dst[i..].iter_mut().zip(&src[i..]) {
        *d = widen1::<BF16>(s);
    }
}
