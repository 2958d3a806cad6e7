//! The few-query int8 scan: the certified candidates of up to 24 queries, their int8
//! dot products by AVX-512 VNNI or AVX2 straight from the row-major codes.
//!
//! Per row, the per-query scan (`tier`) spends more on the f64 interval and the sieve than
//! on the dot product itself, so one query cannot keep up with the memory bus. Here a
//! kernel call takes `R` consecutive rows as they lie, and one load of a row's codes
//! serves every query:
//! - **AVX-512 VNNI**, 64 codes a step: `vpdpbusd` of the query's offset codes `d + 128 ∈
//!   [1, 255]` with the row's signed codes, and of ones with them (the row's code sum
//!   `Σc`), so the dot product is `Σ(d + 128)·c − 128·Σc`, exact in i32 up to
//!   `batch::MAX_DIM` values.
//! - **AVX2**, 32 codes a step: `vpmaddubsw` of the row's magnitudes (taken once for all
//!   the queries) with the query's codes carrying the row's signs (`vpsignb`), `vpmaddwd`
//!   by ones into i32 lanes. The queries' codes are interleaved, so each query's next 32
//!   codes sit at a constant offset from one pointer.
//!
//! The pairs then get the batched scan's quick upper bound (`sieve::quick_upper`) on f64
//! lanes (a lane per query, or per row when a call has fewer queries than rows); only
//! those that reach the query's running floor (or are not a number) go through the exact
//! interval and the sieve, as in the per-query scan, whose candidates these therefore
//! are, exactly (tested).
//!
//! Past eight queries the queries take turns in groups of up to eight over sub-blocks of
//! rows that stay in L2, so the codes are still read from memory once.
//!
//! When not to use it: without AVX2 (the per-query scan serves), and past
//! [`MAX_QUERIES`]: with AVX-512 VNNI the batched scan's packed panels, which reuse each
//! load of row codes for eight queries without a query load beside it, win there; with
//! AVX2 alone the f32 score tiles do (see the README's "Why not AVX2 batches").

use super::sieve::{quick_upper, Floors, Pairs, QueryTerms, Sieve, CHUNK_ROWS};
use rayon::prelude::*;
use std::arch::x86_64::*;
use std::ops::Range;

/// The most queries a kernel call takes; more take turns in groups over each sub-block.
const GROUP: usize = 8;
/// The most queries this scan serves; the batched scan takes more. At 1M × 768 (2 cores)
/// this scan took 104, 166 and 213 ms for 16, 23 and 32 queries, the batched one 151, 178
/// and 192 (96 KiB sub-blocks; 24 and 384 KiB measured no better).
pub(super) const MAX_QUERIES: usize = super::FEW_MAX_QUERIES;
/// Codes of a sub-block of rows, at most, when the queries take turns in groups: the rows
/// stay in L2 while every group passes over them.
const SUB_BLOCK_BYTES: usize = 96 << 10;

/// The kernels a scan runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Isa {
    /// AVX-512 VNNI (`batch::available`).
    Avx512Vnni,
    /// AVX2.
    Avx2,
}

/// `TierRef::candidates` for the queries of `pairs` (one to [`MAX_QUERIES`]) by the
/// kernels of `isa`, which the CPU has; the same result.
pub(super) fn candidates(pairs: &Pairs<'_>, k: usize, isa: Isa) -> Vec<Vec<usize>> {
    let tier = pairs.tier;
    let (dim, nq) = (tier.dim, pairs.qs.len());
    // Per query, padded to whole 64-byte groups (padding an offset zero): AVX-512 VNNI's
    // offset codes, query by query.
    let stride = dim.next_multiple_of(64);
    let mut codes = vec![
        128u8;
        if isa == Isa::Avx512Vnni {
            nq * stride
        } else {
            0
        }
    ];
    if isa == Isa::Avx512Vnni {
        for (j, q) in pairs.qs.iter().enumerate() {
            for (p, &c) in q.codes.iter().enumerate() {
                codes[j * stride + p] = (c as i16 + 128) as u8;
            }
        }
    }
    let terms = pairs.terms();
    // Groups of at most GROUP queries, as even as they go.
    let count = nq.div_ceil(GROUP);
    let bounds: Vec<usize> = (0..=count).map(|g| g * nq / count).collect();
    let sub_rows = if count == 1 {
        CHUNK_ROWS
    } else {
        // A multiple of every kernel's rows (3, 4 or 8).
        (SUB_BLOCK_BYTES / dim.max(1))
            .next_multiple_of(24)
            .min(CHUNK_ROWS)
    };
    // AVX2's signed codes, interleaved a group at a time (`interleave`).
    let interleaved: Vec<Vec<i8>> = match isa {
        Isa::Avx2 => bounds
            .windows(2)
            .map(|w| interleave(pairs.qs[w[0]..w[1]].iter().map(|q| &q.codes[..]), stride))
            .collect(),
        Isa::Avx512Vnni => Vec::new(),
    };
    let n = tier.rows();
    let floors = Floors::new(nq);
    let chunks: Vec<Sieve> = (0..n.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| {
            let (start, end) = (c * CHUNK_ROWS, ((c + 1) * CHUNK_ROWS).min(n));
            let mut sieve = Sieve::new(nq, k, &floors);
            for sub in (start..end).step_by(sub_rows) {
                let rows = sub..(sub + sub_rows).min(end);
                for (at, w) in bounds.windows(2).enumerate() {
                    let group = Group {
                        pairs,
                        codes: match isa {
                            Isa::Avx512Vnni => &codes[w[0] * stride..w[1] * stride],
                            Isa::Avx2 => bytemuck::cast_slice(&interleaved[at]),
                        },
                        stride,
                        terms: &terms[w[0]..w[1]],
                        first_query: w[0],
                    };
                    match isa {
                        // SAFETY: the caller checked the CPU's features for `isa` (this
                        // function's contract).
                        Isa::Avx512Vnni => unsafe { group.vnni(rows.clone(), &mut sieve) },
                        // SAFETY: as above.
                        Isa::Avx2 => unsafe { group.avx2(rows.clone(), &mut sieve) },
                    }
                }
            }
            sieve
        })
        .collect();
    Sieve::merge(chunks, nq, k)
}

/// One group of queries: their codes (`stride` bytes each, as the kernel reads them),
/// their terms of the quick bound, and the index of the first.
struct Group<'g> {
    pairs: &'g Pairs<'g>,
    codes: &'g [u8],
    stride: usize,
    terms: &'g [QueryTerms],
    first_query: usize,
}

impl Group<'_> {
    /// The group against `rows` by the AVX-512 VNNI kernel.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn vnni(&self, rows: Range<usize>, sieve: &mut Sieve) {
        // SAFETY: the CPU has the features (this function's contract).
        unsafe { self.by_size::<true>(rows, sieve) }
    }

    /// The group against `rows` by the AVX2 kernel.
    ///
    /// # Safety
    /// The CPU supports AVX2.
    #[target_feature(enable = "avx2")]
    unsafe fn avx2(&self, rows: Range<usize>, sieve: &mut Sieve) {
        // SAFETY: the CPU has AVX2 (this function's contract).
        unsafe { self.by_size::<false>(rows, sieve) }
    }

    /// [`scan`](Self::scan) with the rows a call (`R`) that fill the registers for the
    /// group's size: AVX-512 VNNI holds `Q·R` dot products and `R` code sums in 32 zmm,
    /// AVX2 `Q·R` dot products in 16 ymm beside the row and a query's codes. Inlined into
    /// the callers above.
    ///
    /// # Safety
    /// As [`scan`](Self::scan).
    #[inline(always)]
    unsafe fn by_size<const VNNI: bool>(&self, rows: Range<usize>, sieve: &mut Sieve) {
        macro_rules! scan {
            ($q:literal: VNNI $vnni:literal, AVX2 $avx2:literal) => {
                // SAFETY: the caller's contract is `scan`'s.
                unsafe {
                    if VNNI {
                        self.scan::<$q, $vnni, true>(rows, sieve)
                    } else {
                        self.scan::<$q, $avx2, false>(rows, sieve)
                    }
                }
            };
        }
        match self.terms.len() {
            1 => scan!(1: VNNI 8, AVX2 4),
            2 => scan!(2: VNNI 8, AVX2 4),
            3 => scan!(3: VNNI 4, AVX2 3),
            4 => scan!(4: VNNI 4, AVX2 2),
            5 => scan!(5: VNNI 4, AVX2 2),
            6 => scan!(6: VNNI 4, AVX2 1),
            7 => scan!(7: VNNI 3, AVX2 1),
            _ => scan!(8: VNNI 3, AVX2 1),
        }
    }

    /// The group's queries (`Q` of them) against `rows`, `R` rows a kernel call, by the
    /// AVX-512 VNNI kernel (`VNNI`) or the AVX2 one. Inlined into the callers above, so
    /// the bounds, on `Q` lanes, are compiled for their features.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI (`VNNI`), or AVX2.
    #[inline(always)]
    unsafe fn scan<const Q: usize, const R: usize, const VNNI: bool>(
        &self,
        rows: Range<usize>,
        sieve: &mut Sieve,
    ) {
        debug_assert_eq!(self.terms.len(), Q);
        let tier = self.pairs.tier;
        let dim = tier.dim;
        let terms = Lanes::<Q>::new(self.terms);
        let mut dots = [[0i32; Q]; R];
        let mut first = rows.start;
        while first < rows.end {
            let valid = (rows.end - first).min(R);
            let padded;
            let codes = if valid == R {
                &tier.codes[first * dim..(first + R) * dim]
            } else {
                // The last rows, with zero rows after them.
                let mut buf = vec![0i8; R * dim];
                buf[..valid * dim].copy_from_slice(&tier.codes[first * dim..rows.end * dim]);
                padded = buf;
                &padded[..]
            };
            if VNNI {
                // SAFETY: `self.codes` holds `Q` queries of `stride ≥ dim` bytes, a
                // multiple of 64, and `codes` `R` rows of `dim` codes; the caller checked
                // the CPU's features (`candidates`' contract).
                unsafe { kernel::<Q, R>(self.codes, self.stride, codes, dim, &mut dots) };
            } else {
                let signed: &[i8] = bytemuck::cast_slice(self.codes);
                // SAFETY: `signed` holds `Q` queries' codes interleaved (`interleave`),
                // `stride ≥ dim` bytes each, and `codes` `R` rows of `dim` codes; the CPU
                // has AVX2 (`candidates`' contract).
                unsafe { kernel_avx2::<Q, R>(signed, self.stride, codes, dim, &mut dots) };
            }
            let (pairs, at) = (self.pairs, self.first_query);
            // The bounds' lanes run along the longer side of the call.
            if Q < R {
                sift_rows(pairs, &terms, at, first, &dots, valid, sieve);
            } else {
                sift(pairs, &terms, at, first, &dots, valid, sieve);
            }
            first += valid;
        }
    }
}

/// A group's [`QueryTerms`], one array a term, so the bounds of a row against every
/// query of the group run on SIMD lanes.
struct Lanes<const Q: usize> {
    scale: [f64; Q],
    coded_norm: [f64; Q],
    per_norm: [f64; Q],
}

impl<const Q: usize> Lanes<Q> {
    fn new(terms: &[QueryTerms]) -> Self {
        debug_assert_eq!(terms.len(), Q);
        Self {
            scale: std::array::from_fn(|m| terms[m].scale),
            coded_norm: std::array::from_fn(|m| terms[m].coded_norm),
            per_norm: std::array::from_fn(|m| terms[m].per_norm),
        }
    }
}

/// Offers to `sieve` each pair of a query (of `terms`, the first query `first_query`) and
/// one of the `valid` rows from `first` (of int8 dot products `dots`, a row's against
/// each query) whose quick upper bound reaches the query's floor. Row by row, each
/// query's bound on its own lane; the floors are read once a call (a floor only rises,
/// so an older one passes more pairs to the exact check, never fewer).
#[inline(always)]
fn sift<const Q: usize, const R: usize>(
    pairs: &Pairs<'_>,
    terms: &Lanes<Q>,
    first_query: usize,
    first: usize,
    dots: &[[i32; Q]; R],
    valid: usize,
    sieve: &mut Sieve,
) {
    let (scale, bias) = pairs.metric;
    let underflow = pairs.bounds.underflow;
    let floors: [f64; Q] = std::array::from_fn(|m| sieve.floor(first_query + m));
    for (i, dots) in dots.iter().enumerate().take(valid) {
        let r = first + i;
        if scale[r].is_nan() {
            continue; // not live: never a candidate
        }
        let q = &pairs.tier.bounds[r].q;
        let row = (q.scale as f64, q.residual as f64, q.norm as f64);
        let metric = (scale[r] as f64, bias.map_or(0.0, |b| b[r] as f64));
        let mut upper = [0.0f64; Q];
        for m in 0..Q {
            let t = QueryTerms {
                scale: terms.scale[m],
                coded_norm: terms.coded_norm[m],
                per_norm: terms.per_norm[m],
            };
            upper[m] = quick_upper(dots[m] as f64, t, row, metric, underflow);
        }
        // A NaN bound goes to the exact check too.
        let mut pass = 0u32;
        for m in 0..Q {
            pass |= u32::from(upper[m] >= floors[m] || upper[m].is_nan()) << m;
        }
        while pass != 0 {
            let m = pass.trailing_zeros() as usize;
            pass &= pass - 1;
            pairs.offer(first_query + m, r, dots[m].into(), sieve);
        }
    }
}

/// [`sift`] with the bounds of each query against the `R` rows on SIMD lanes instead: for
/// calls of fewer queries than rows (the lanes of one query, say, would be empty).
#[inline(always)]
fn sift_rows<const Q: usize, const R: usize>(
    pairs: &Pairs<'_>,
    terms: &Lanes<Q>,
    first_query: usize,
    first: usize,
    dots: &[[i32; Q]; R],
    valid: usize,
    sieve: &mut Sieve,
) {
    let (scale, bias) = pairs.metric;
    let (mut cs, mut e, mut n) = ([0.0f64; R], [0.0f64; R], [0.0f64; R]);
    // A row not live (or past `valid`) gets scale 0 and a bias of −10³⁰⁰: its quick
    // bound stays below any finite floor, and the exact check leaves it out.
    let (mut sc, mut b) = ([0.0f64; R], [-1e300f64; R]);
    for i in 0..valid {
        let r = first + i;
        let q = &pairs.tier.bounds[r].q;
        (cs[i], e[i], n[i]) = (q.scale as f64, q.residual as f64, q.norm as f64);
        if !scale[r].is_nan() {
            sc[i] = scale[r] as f64;
            b[i] = bias.map_or(0.0, |b| b[r] as f64);
        }
    }
    let underflow = pairs.bounds.underflow;
    let in_range = if valid >= 32 {
        u32::MAX
    } else {
        (1u32 << valid) - 1
    };
    #[allow(clippy::needless_range_loop)] // `m` picks a lane of every term and of `dots`
    for m in 0..Q {
        let j = first_query + m;
        let t = QueryTerms {
            scale: terms.scale[m],
            coded_norm: terms.coded_norm[m],
            per_norm: terms.per_norm[m],
        };
        let floor = sieve.floor(j);
        let mut pass = 0u32;
        for i in 0..R {
            let u = quick_upper(
                dots[i][m] as f64,
                t,
                (cs[i], e[i], n[i]),
                (sc[i], b[i]),
                underflow,
            );
            // A NaN bound goes to the exact check too.
            pass |= u32::from(u >= floor || u.is_nan()) << i;
        }
        pass &= in_range;
        while pass != 0 {
            let i = pass.trailing_zeros() as usize;
            pass &= pass - 1;
            pairs.offer(j, first + i, dots[i][m].into(), sieve);
        }
    }
}

/// `dots[i][m] = Σ_p (queries[m·stride + p] − 128) · rows[i·dim + p]` over `p < dim`: the
/// int8 dot products of `Q` queries (offset codes) with `R` rows of `dim` signed codes.
///
/// # Safety
/// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI; `stride` is a multiple of 64 and
/// at least `dim`, at most [`batch::MAX_DIM`](super::batch::MAX_DIM); `queries` holds
/// `Q · stride` bytes and `rows` `R · dim`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel<const Q: usize, const R: usize>(
    queries: &[u8],
    stride: usize,
    rows: &[i8],
    dim: usize,
    dots: &mut [[i32; Q]; R],
) {
    debug_assert!(stride.is_multiple_of(64) && stride >= dim);
    debug_assert!(queries.len() >= Q * stride && rows.len() >= R * dim);
    let ones = _mm512_set1_epi8(1);
    let mut acc = [[_mm512_setzero_si512(); R]; Q];
    let mut sums = [_mm512_setzero_si512(); R];
    let (q, x) = (queries.as_ptr(), rows.as_ptr());
    let whole = dim / 64;
    let rest = dim % 64;
    let mask: __mmask64 = (1u64 << rest) - 1;
    // Row by row, so the codes stream in order (the queries' stay in L1).
    for i in 0..R {
        for g in 0..whole {
            // SAFETY: `64·g + 64 ≤ dim`: inside row `i`.
            let xv = unsafe { _mm512_loadu_si512(x.add(i * dim + 64 * g).cast()) };
            sums[i] = _mm512_dpbusd_epi32(sums[i], ones, xv);
            for (m, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `64·g + 64 ≤ dim ≤ stride`: inside query `m`'s bytes.
                let qv = unsafe { _mm512_loadu_si512(q.add(m * stride + 64 * g).cast()) };
                acc[i] = _mm512_dpbusd_epi32(acc[i], qv, xv);
            }
        }
        if rest != 0 {
            // SAFETY: the mask reads only the row's last `rest` codes, inside `rows`; a
            // masked-out byte is not accessed (nor can it fault).
            let xv = unsafe { _mm512_maskz_loadu_epi8(mask, x.add(i * dim + 64 * whole)) };
            sums[i] = _mm512_dpbusd_epi32(sums[i], ones, xv);
            for (m, acc) in acc.iter_mut().enumerate() {
                // SAFETY: `stride` is `dim` rounded up to 64: the last group lies in
                // query `m`.
                let qv = unsafe { _mm512_loadu_si512(q.add(m * stride + 64 * whole).cast()) };
                acc[i] = _mm512_dpbusd_epi32(acc[i], qv, xv);
            }
        }
    }
    for i in 0..R {
        let sum = _mm512_reduce_add_epi32(sums[i]);
        for m in 0..Q {
            dots[i][m] = _mm512_reduce_add_epi32(acc[m][i]) - 128 * sum;
        }
    }
}

/// `queries`' codes (`stride` bytes each, a multiple of 32, zeros past a query's end) as
/// [`kernel_avx2`] reads them: 32-code chunk `g` of query `m` at `(g·Q + m)·32`, so one
/// pointer and constant offsets reach every query's chunk.
fn interleave<'q>(queries: impl ExactSizeIterator<Item = &'q [i8]>, stride: usize) -> Vec<i8> {
    debug_assert!(stride.is_multiple_of(32));
    let q = queries.len();
    let mut out = vec![0i8; q * stride];
    for (m, codes) in queries.enumerate() {
        debug_assert!(codes.len() <= stride);
        for (g, chunk) in codes.chunks(32).enumerate() {
            let at = (g * q + m) * 32;
            out[at..at + chunk.len()].copy_from_slice(chunk);
        }
    }
    out
}

/// `dots[i][m] = Σ_p query_m[p] · rows[i·dim + p]` over `p < dim`: the int8 dot products
/// of `Q` queries (interleaved by [`interleave`]) with `R` rows of `dim` codes.
/// `vpmaddubsw` multiplies the row's magnitudes (unsigned, taken once for every query)
/// by the query's codes with the row's signs (`vpsignb`), pairs summed in i16 (at most
/// 2·128·127 < 2¹⁵, so no saturation, even for a row code of −128), and `vpmaddwd` by
/// ones widens the pairs into i32 lanes.
///
/// # Safety
/// The CPU supports AVX2; `stride` is a multiple of 32 and at least `dim`; `signed` holds
/// `Q · stride` bytes, codes in −127..=127; `rows` holds `R · dim` codes.
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2<const Q: usize, const R: usize>(
    signed: &[i8],
    stride: usize,
    rows: &[i8],
    dim: usize,
    dots: &mut [[i32; Q]; R],
) {
    debug_assert!(stride >= dim && stride.is_multiple_of(32) && signed.len() >= Q * stride);
    debug_assert!(rows.len() >= R * dim);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); R]; Q];
    let (s, x) = (signed.as_ptr(), rows.as_ptr());
    let whole = dim / 32;
    for i in 0..R {
        for g in 0..whole {
            // SAFETY: `32·g + 32 ≤ dim`: inside row `i`.
            let xv = unsafe { _mm256_loadu_si256(x.add(i * dim + 32 * g).cast()) };
            let magnitudes = _mm256_abs_epi8(xv);
            // SAFETY: `g < whole ≤ stride / 32`: chunk `g` of the `Q` queries lies in
            // `signed`.
            let chunk = unsafe { s.add(g * Q * 32) };
            for (m, acc) in acc.iter_mut().enumerate() {
                // SAFETY: query `m`'s 32 codes of chunk `g`, inside `signed` (above).
                let qv = unsafe { _mm256_loadu_si256(chunk.add(m * 32).cast()) };
                let pairs = _mm256_maddubs_epi16(magnitudes, _mm256_sign_epi8(qv, xv));
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    for i in 0..R {
        let mut lanes = [0i32; 8];
        let mut pad = [_mm256_setzero_si256(); 8];
        pad[..Q].copy_from_slice(&std::array::from_fn::<_, Q, _>(|m| acc[m][i]));
        // SAFETY: `lanes` is 32 bytes, what an unaligned 256-bit store writes; the CPU
        // has AVX2 (this function's contract).
        unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), sum_lanes(pad)) };
        let row = &rows[i * dim..(i + 1) * dim];
        for (m, dot) in dots[i].iter_mut().enumerate() {
            *dot = lanes[m];
            if dim > 32 * whole {
                // The last codes, past the whole chunks: chunk `whole` of query `m`.
                let tail = &signed[(whole * Q + m) * 32..][..dim - 32 * whole];
                *dot += tail
                    .iter()
                    .zip(&row[32 * whole..])
                    .map(|(&q, &x)| q as i32 * x as i32)
                    .sum::<i32>();
            }
        }
    }
}

/// Lane `m` of the result is the sum of the eight i32 lanes of `v[m]`: three rounds of
/// pairwise sums instead of eight stores and 56 scalar additions.
///
/// # Safety
/// The CPU supports AVX2.
#[target_feature(enable = "avx2")]
#[inline]
unsafe fn sum_lanes(v: [__m256i; 8]) -> __m256i {
    // [v0 01, v0 23, v1 01, v1 23 | v0 45, v0 67, v1 45, v1 67], and so on.
    let a = _mm256_hadd_epi32(v[0], v[1]);
    let b = _mm256_hadd_epi32(v[2], v[3]);
    let c = _mm256_hadd_epi32(v[4], v[5]);
    let d = _mm256_hadd_epi32(v[6], v[7]);
    // [v0 0123, v1 0123, v2 0123, v3 0123 | v0 4567, v1 4567, v2 4567, v3 4567].
    let lo = _mm256_hadd_epi32(a, b);
    let hi = _mm256_hadd_epi32(c, d);
    _mm256_add_epi32(
        _mm256_permute2x128_si256(lo, hi, 0x20),
        _mm256_permute2x128_si256(lo, hi, 0x31),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::int8::dot_i8_scalar;

    /// The kernels' dot products are the exact ones, at the extreme codes and for
    /// dimensions around the 32- and 64-code groups: the AVX2 kernel's wherever the CPU
    /// has AVX2, the AVX-512 VNNI one's where it has that too.
    #[test]
    fn kernel_dots_are_exact() {
        if !std::is_x86_feature_detected!("avx2") {
            eprintln!("skipped: no AVX2");
            return;
        }
        let vnni = super::super::batch::available(1);
        let mut seed = 7u64;
        let mut code = || {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            match seed >> 61 {
                0 => 127,
                1 => -127,
                _ => ((seed >> 33) % 255) as i8 as i16 as i8,
            }
        };
        for dim in [1usize, 3, 31, 32, 33, 63, 64, 65, 128, 200, 768, 4099] {
            let qs: Vec<Vec<i8>> = (0..8)
                .map(|_| (0..dim).map(|_| code().max(-127)).collect())
                .collect();
            let rows: Vec<i8> = (0..8 * dim).map(|_| code().max(-127)).collect();
            let case = Case { dim, qs, rows };
            if vnni {
                case.vnni::<4, 8>();
                case.vnni::<8, 3>();
            }
            // The shapes the AVX2 scan runs (`Group::avx2`), and the sums' zero padding.
            case.avx2::<1, 4>();
            case.avx2::<3, 3>();
            case.avx2::<5, 2>();
            case.avx2::<8, 1>();
            case.avx2::<4, 8>();
        }
    }

    /// Up to eight queries' codes and eight rows, `dim` codes each.
    struct Case {
        dim: usize,
        qs: Vec<Vec<i8>>,
        rows: Vec<i8>,
    }

    impl Case {
        fn want<const Q: usize, const R: usize>(&self) -> [[i32; Q]; R] {
            let d = self.dim;
            std::array::from_fn(|i| {
                std::array::from_fn(|m| dot_i8_scalar(&self.qs[m], &self.rows[i * d..][..d]))
            })
        }

        fn vnni<const Q: usize, const R: usize>(&self) {
            let stride = self.dim.next_multiple_of(64);
            let mut offset = vec![128u8; Q * stride];
            for (m, q) in self.qs.iter().take(Q).enumerate() {
                for (p, &c) in q.iter().enumerate() {
                    offset[m * stride + p] = (c as i16 + 128) as u8;
                }
            }
            let mut dots = [[0i32; Q]; R];
            // SAFETY: the caller checked the CPU's features; the buffers hold Q queries of
            // `stride` bytes and at least R rows of `dim` codes.
            unsafe { kernel::<Q, R>(&offset, stride, &self.rows, self.dim, &mut dots) };
            let dim = self.dim;
            assert_eq!(
                dots,
                self.want(),
                "D {dim}, {Q} x {R}: the AVX-512 VNNI kernel"
            );
        }

        fn avx2<const Q: usize, const R: usize>(&self) {
            let stride = self.dim.next_multiple_of(64);
            let signed = interleave(self.qs[..Q].iter().map(|q| &q[..]), stride);
            let mut dots = [[0i32; Q]; R];
            // SAFETY: the caller checked that the CPU has AVX2; `signed` holds Q queries
            // of `stride` bytes, interleaved, and `rows` at least R rows of `dim` codes.
            unsafe { kernel_avx2::<Q, R>(&signed, stride, &self.rows, self.dim, &mut dots) };
            let dim = self.dim;
            assert_eq!(dots, self.want(), "D {dim}, {Q} x {R}: the AVX2 kernel");
        }
    }
}
