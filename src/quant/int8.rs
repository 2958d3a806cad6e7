//! Rows quantised to int8 with a certified error bound, and the interval each int8 dot
//! product proves for the exact one.
//!
//! A row `x` is stored as codes `c = round(x / s)` in −127..=127 with the scale
//! `s = max|xᵢ| / 127`, so `x = s·c + r` with a residual `r` whose norm is at most the
//! stored bound `e` (computed in f64 and rounded up). A query is quantised the same way:
//! `q = t·d + p`, `‖p‖ ≤ f`. Then, exactly,
//!
//! `q·x = s·t·(c·d) + t·d·r + p·x`,
//!
//! where `c·d` is an integer summed exactly in i32, and Cauchy–Schwarz bounds the other two
//! terms by `‖t·d‖·e` and `f·‖x‖`. [`Int8Query::interval`] evaluates the centre and that
//! radius in f64 and widens both by the relative error of the few f64 operations, so the
//! interval it returns contains the exact `q·x` (real arithmetic over the f32 inputs), for
//! every finite input, however large or small.
//!
//! The bound is tight: a query whose residual is parallel to a row's reaches it up to
//! rounding (tested), so a certificate built on it loses nothing to slack it could avoid.
//!
//! When not to use it: rows whose values span many orders of magnitude quantise badly (one
//! scale per row), so their intervals are wide and a certified search re-scores many of
//! them; it stays exact, only slower.

/// Largest code magnitude.
const LEVELS: f64 = 127.0;

/// f64's unit roundoff.
const U64: f64 = 1.0 / (1u64 << 53) as f64;

/// The quantisation of one vector: its codes (written to `codes`), its scale, and upper
/// bounds on its residual's norm and on its own norm.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Quantised {
    /// `s`: the vector is about `s·c`.
    pub(crate) scale: f32,
    /// `e ≥ ‖x − s·c‖`.
    pub(crate) residual: f32,
    /// `≥ ‖x‖`.
    pub(crate) norm: f32,
    /// `≥ ‖s·c‖`.
    pub(crate) coded_norm: f32,
}

/// One row's bounds as a tier keeps them: its [`Quantised`] record and a check word, in
/// 32 bytes. In memory the check is 0; the warm store keeps the same records in its tier
/// files, with the row's checksum in `check` (see `warm::tier`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct TierBounds {
    pub(crate) q: Quantised,
    pub(crate) check: u32,
    pub(crate) reserved: [u32; 3],
}

impl TierBounds {
    pub(crate) fn new(q: Quantised) -> Self {
        Self {
            q,
            check: 0,
            reserved: [0; 3],
        }
    }
}

// SAFETY: `repr(C)`, 32 bytes of f32 and u32 fields with no padding (4 + 1 + 3 words of
// 4 bytes, align 4); every bit pattern is a valid value and all-zero is one.
unsafe impl bytemuck::Zeroable for TierBounds {}
// SAFETY: as above; the type is `Copy` and holds no pointers.
unsafe impl bytemuck::Pod for TierBounds {}

/// `v`, a non-negative f64, as an f32 at least as large (the next one up when rounding
/// went down; infinity past f32's range).
fn f32_up(v: f64) -> f32 {
    let f = v as f32;
    if (f as f64) < v {
        f.next_up()
    } else {
        f
    }
}

/// `√(Σ vᵢ²)` of f64 values, rounded up: the sum of `n` squares carries a relative error of
/// at most `(n + 2)·u` and the root halves it, so the result is scaled by `1 + (n + 4)·u`
/// before rounding up to f32.
fn norm_up(n: usize, squares: f64) -> f32 {
    f32_up(squares.sqrt() * (1.0 + (n as f64 + 4.0) * U64))
}

/// Quantises `x` into `codes` (same length). Every input is finite (the callers check).
/// With AVX2 four values a step (`quantise_avx2`), else one (`quantise_portable`): the
/// same codes and bounds, bit for bit (tested).
pub(crate) fn quantise(x: &[f32], codes: &mut [i8]) -> Quantised {
    debug_assert_eq!(x.len(), codes.len());
    #[cfg(target_arch = "x86_64")]
    if std::is_x86_feature_detected!("avx2") {
        // SAFETY: the CPU has AVX2 (checked above).
        return unsafe { quantise_avx2(x, codes) };
    }
    quantise_portable(x, codes)
}

/// A row's scale `s` from its largest magnitude (not zero), in f32 and f64, and `1/s`.
/// The division runs in f64: a subnormal max still gives a usable (if subnormal) scale,
/// and codes never exceed 127 in magnitude.
fn scale_of(max: f32) -> (f32, f64, f64) {
    let scale = ((max as f64) / LEVELS) as f32;
    let scale = if scale == 0.0 {
        f32::from_bits(1)
    } else {
        scale
    };
    let s = scale as f64;
    (scale, s, 1.0 / s)
}

/// The record of a zero row: zero codes, scale and bounds.
fn zero_row(codes: &mut [i8]) -> Quantised {
    codes.fill(0);
    Quantised {
        scale: 0.0,
        residual: 0.0,
        norm: 0.0,
        coded_norm: 0.0,
    }
}

/// The record of a row of `n` values, scale `scale`, from its four lanes of squared
/// residuals, squared values and squared coded values.
fn finish(scale: f32, n: usize, [rr, xx, cc]: [[f64; 4]; 3]) -> Quantised {
    let sum = |a: [f64; 4]| (a[0] + a[1]) + (a[2] + a[3]);
    Quantised {
        scale,
        // The difference's rounding is at most u·|r| per element: inside the slack.
        residual: norm_up(n + 1, sum(rr)),
        norm: norm_up(n, sum(xx)),
        coded_norm: norm_up(n, sum(cc)),
    }
}

/// The code nearest `v / s` (ties away from zero) from `inv = 1/s`, within ±127.
#[inline]
fn nearest_code(v: f32, inv: f64) -> i64 {
    let t = v as f64 * inv;
    ((t + 0.5f64.copysign(t)) as i64).clamp(-127, 127)
}

/// Adds value `v`, coded as `coded = s·code` (exact in f64: 24 by 8 significant bits), to
/// lane `lane` of the squared residuals, values and coded values; the difference rounds
/// once.
#[inline]
fn add_value(sums: &mut [[f64; 4]; 3], lane: usize, v: f32, coded: f64) {
    let r = v as f64 - coded;
    sums[0][lane] += r * r;
    sums[1][lane] += v as f64 * v as f64;
    sums[2][lane] += coded * coded;
}

/// [`quantise`], a value at a time. Any code is sound (the residual is measured, not
/// assumed), so the nearest one is found with a reciprocal and a truncating cast (no
/// division, no libm `round`). Four independent sums of each kind, value `i` in lane
/// `i % 4` and the values past the last whole four in lane 0 (the bounds of `norm_up`
/// hold for any order; the AVX2 path keeps this one).
fn quantise_portable(x: &[f32], codes: &mut [i8]) -> Quantised {
    let max = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return zero_row(codes);
    }
    let (scale, s, inv) = scale_of(max);
    let mut sums = [[0.0f64; 4]; 3];
    let mut chunks = codes.chunks_exact_mut(4).zip(x.chunks_exact(4));
    for (c4, x4) in &mut chunks {
        for lane in 0..4 {
            let code = nearest_code(x4[lane], inv);
            c4[lane] = code as i8;
            add_value(&mut sums, lane, x4[lane], s * code as f64);
        }
    }
    let done = x.len() / 4 * 4;
    for (c, &v) in codes[done..].iter_mut().zip(&x[done..]) {
        let code = nearest_code(v, inv);
        *c = code as i8;
        add_value(&mut sums, 0, v, s * code as f64);
    }
    finish(scale, x.len(), sums)
}

/// [`quantise_portable`] four values a step on f64 lanes, lane `l` taking the values the
/// portable path's lane `l` takes, in the same order and by the same operations (a
/// product and a sum each, never fused), so the codes and sums are the same bits. The
/// rounding clamps before it truncates (`t + ½·sign t` to ±127, then toward zero), which
/// gives the portable path's truncate-then-clamp for every finite `t`.
///
/// # Safety
/// The CPU supports AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn quantise_avx2(x: &[f32], codes: &mut [i8]) -> Quantised {
    use std::arch::x86_64::*;
    let n = x.len();
    let whole8 = n / 8 * 8;
    let magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fff_ffff));
    let mut top = _mm256_setzero_ps();
    for i in (0..whole8).step_by(8) {
        let chunk = &x[i..i + 8];
        // SAFETY: `chunk` holds eight floats; `loadu` has no alignment need.
        let v = unsafe { _mm256_loadu_ps(chunk.as_ptr()) };
        top = _mm256_max_ps(top, _mm256_and_ps(v, magnitude));
    }
    let mut lanes = [0.0f32; 8];
    // SAFETY: `lanes` holds eight floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), top) };
    // The maximum of finite magnitudes is exact, whatever the order.
    let max = lanes
        .iter()
        .chain(&x[whole8..])
        .fold(0.0f32, |m, v| m.max(v.abs()));
    if max == 0.0 {
        return zero_row(codes);
    }
    let (scale, s, inv) = scale_of(max);
    let (sv, invv) = (_mm256_set1_pd(s), _mm256_set1_pd(inv));
    let (sign, half) = (_mm256_set1_pd(-0.0), _mm256_set1_pd(0.5));
    let (lo, hi) = (_mm256_set1_pd(-127.0), _mm256_set1_pd(127.0));
    let zero = _mm256_setzero_pd();
    let (mut rr, mut xx, mut cc) = (zero, zero, zero);
    let whole4 = n / 4 * 4;
    for i in (0..whole4).step_by(4) {
        let chunk = &x[i..i + 4];
        // SAFETY: `chunk` holds four floats; `loadu` has no alignment need.
        let v = _mm256_cvtps_pd(unsafe { _mm_loadu_ps(chunk.as_ptr()) });
        let t = _mm256_mul_pd(v, invv);
        let u = _mm256_add_pd(t, _mm256_or_pd(_mm256_and_pd(t, sign), half));
        let c = _mm256_min_pd(_mm256_max_pd(u, lo), hi);
        let c = _mm256_round_pd::<{ _MM_FROUND_TO_ZERO | _MM_FROUND_NO_EXC }>(c);
        let coded = _mm256_mul_pd(sv, c);
        let r = _mm256_sub_pd(v, coded);
        rr = _mm256_add_pd(rr, _mm256_mul_pd(r, r));
        xx = _mm256_add_pd(xx, _mm256_mul_pd(v, v));
        cc = _mm256_add_pd(cc, _mm256_mul_pd(coded, coded));
        // Whole numbers in −127..=127: exact in i32, then saturating packs that saturate
        // nothing.
        let c32 = _mm256_cvtpd_epi32(c);
        let c16 = _mm_packs_epi32(c32, c32);
        let c8 = _mm_packs_epi16(c16, c16);
        let word = _mm_cvtsi128_si32(c8).to_ne_bytes();
        for (out, b) in codes[i..i + 4].iter_mut().zip(word) {
            *out = b as i8;
        }
    }
    let mut sums = [[0.0f64; 4]; 3];
    for (out, v) in sums.iter_mut().zip([rr, xx, cc]) {
        // SAFETY: `out` holds four f64.
        unsafe { _mm256_storeu_pd(out.as_mut_ptr(), v) };
    }
    for (c, &v) in codes[whole4..].iter_mut().zip(&x[whole4..]) {
        let code = nearest_code(v, inv);
        *c = code as i8;
        add_value(&mut sums, 0, v, s * code as f64);
    }
    finish(scale, n, sums)
}

/// A query quantised for scanning int8 rows.
#[derive(Clone, Debug)]
pub(crate) struct Int8Query {
    pub(crate) codes: Vec<i8>,
    pub(crate) q: Quantised,
}

impl Int8Query {
    /// Quantises `query` (finite values).
    pub(crate) fn new(query: &[f32]) -> Self {
        let mut codes = vec![0i8; query.len()];
        let q = quantise(query, &mut codes);
        Self { codes, q }
    }

    /// An interval `[lo, hi]` that contains the exact `query · row`, from the int8 dot
    /// product `dot = codes · row_codes` and the row's [`Quantised`].
    #[inline]
    pub(crate) fn interval(&self, dot: i64, row: &Quantised) -> (f64, f64) {
        let centre = self.q.scale as f64 * row.scale as f64 * dot as f64;
        // Both terms are products of non-negative bounds; a zero factor (no residual, or a
        // zero vector) makes its term exactly zero even beside an infinite bound.
        let term = |a: f32, b: f32| {
            if a == 0.0 || b == 0.0 {
                0.0
            } else {
                a as f64 * b as f64
            }
        };
        let radius = term(self.q.coded_norm, row.residual) + term(self.q.residual, row.norm);
        // Three roundings in the centre (two products; `dot` is exact in f64), three in the
        // radius: widen by 4u of each, plus the smallest normal f64 against underflow.
        let slack = 4.0 * U64 * (centre.abs() + radius) + f64::MIN_POSITIVE;
        (centre - radius - slack, centre + radius + slack)
    }
}

/// `Σ aᵢ·bᵢ` over int8 codes, exactly, for any length: pieces of 2¹⁶ codes are summed in
/// i32 (exact up to 133 143, as 127² · n < 2³¹), the pieces in i64.
pub(crate) fn dot_i8(a: &[i8], b: &[i8]) -> i64 {
    const PIECE: usize = 1 << 16;
    debug_assert_eq!(a.len(), b.len());
    a.chunks(PIECE)
        .zip(b.chunks(PIECE))
        .map(|(a, b)| dot_i8_piece(a, b) as i64)
        .sum()
}

/// [`dot_i8`] of at most 133 143 codes, in i32.
fn dot_i8_piece(a: &[i8], b: &[i8]) -> i32 {
    debug_assert_eq!(a.len(), b.len());
    #[cfg(target_arch = "x86_64")]
    {
        if std::is_x86_feature_detected!("avx512bw") {
            // SAFETY: AVX-512BW (with F) is present (checked just above).
            return unsafe { dot_i8_avx512(a, b) };
        }
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: AVX2 is present (checked just above).
            return unsafe { dot_i8_avx2(a, b) };
        }
    }
    dot_i8_scalar(a, b)
}

/// AVX-512BW: 64 codes a step, as [`dot_i8_avx2`] twice as wide.
///
/// # Safety
/// The CPU must support AVX-512F and AVX-512BW.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn dot_i8_avx512(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (mut acc0, mut acc1) = (_mm512_setzero_si512(), _mm512_setzero_si512());
    let mut i = 0;
    while i + 64 <= n {
        // SAFETY: i + 64 ≤ n, so the four 32-byte loads are inside the slices; unaligned
        // loads accept any address.
        let (a0, a1, b0, b1) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                _mm256_loadu_si256(a.as_ptr().add(i + 32).cast()),
                _mm256_loadu_si256(b.as_ptr().add(i).cast()),
                _mm256_loadu_si256(b.as_ptr().add(i + 32).cast()),
            )
        };
        acc0 = _mm512_add_epi32(
            acc0,
            _mm512_madd_epi16(_mm512_cvtepi8_epi16(a0), _mm512_cvtepi8_epi16(b0)),
        );
        acc1 = _mm512_add_epi32(
            acc1,
            _mm512_madd_epi16(_mm512_cvtepi8_epi16(a1), _mm512_cvtepi8_epi16(b1)),
        );
        i += 64;
    }
    let sum = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
    // SAFETY: the tail's AVX2 kernel needs AVX2, which AVX-512BW CPUs have.
    sum + unsafe { dot_i8_avx2(&a[i..n], &b[i..n]) }
}

/// The portable int8 dot product (the reference of the SIMD ones).
pub(crate) fn dot_i8_scalar(a: &[i8], b: &[i8]) -> i32 {
    a.iter().zip(b).map(|(&x, &y)| x as i32 * y as i32).sum()
}

/// AVX2: 32 codes a step, sign-extended to i16 and multiplied pairwise into i32 lanes
/// (`vpmovsxbw`, `vpmaddwd`: exact, as |127·127·2| fits i16 products summed in i32).
///
/// # Safety
/// The CPU must support AVX2.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn dot_i8_avx2(a: &[i8], b: &[i8]) -> i32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let mut acc = _mm256_setzero_si256();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: i + 32 ≤ n, so both 32-byte loads are inside the slices; unaligned
        // loads accept any address.
        let (va, vb) = unsafe {
            (
                _mm256_loadu_si256(a.as_ptr().add(i).cast()),
                _mm256_loadu_si256(b.as_ptr().add(i).cast()),
            )
        };
        let (alo, ahi) = (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(va)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(va)),
        );
        let (blo, bhi) = (
            _mm256_cvtepi8_epi16(_mm256_castsi256_si128(vb)),
            _mm256_cvtepi8_epi16(_mm256_extracti128_si256::<1>(vb)),
        );
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(alo, blo));
        acc = _mm256_add_epi32(acc, _mm256_madd_epi16(ahi, bhi));
        i += 32;
    }
    let mut lanes = [0i32; 8];
    // SAFETY: `lanes` is 32 bytes, what an unaligned 256-bit store writes.
    unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc) };
    lanes.iter().sum::<i32>() + dot_i8_scalar(&a[i..n], &b[i..n])
}

#[cfg(test)]
mod tests;
