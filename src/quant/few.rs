//! The few-query int8 scan: the certified candidates of up to 24 queries, their int8
//! dot products by AVX-512 VNNI straight from the row-major codes.
//!
//! Per row, the per-query scan (`tier`) spends more on the f64 interval and the sieve than
//! on the dot product itself, so one query cannot keep up with the memory bus. Here a
//! kernel call takes `R` consecutive rows as they lie. For each 64-code group one load of
//! a row serves every query: `vpdpbusd` of the query's offset codes `d + 128 ∈ [1, 255]`
//! with the row's signed codes, and of ones with them (the row's code sum `Σc`), so the dot
//! product is `Σ(d + 128)·c − 128·Σc`, exact in i32 up to `batch::MAX_DIM` values. The
//! pairs then get the batched scan's quick upper bound (`sieve::quick_upper`), on f64
//! lanes; only those that reach the query's running floor (or are not a number) go through
//! the exact interval and the sieve, as in the per-query scan, whose candidates these
//! therefore are, exactly (tested).
//!
//! Past eight queries the queries take turns in groups of up to eight over sub-blocks of
//! rows that stay in L2, so the codes are still read from memory once.
//!
//! When not to use it: without AVX-512 VNNI (the per-query scan serves), and past
//! [`MAX_QUERIES`], where the batched scan's packed panels, which reuse each load of row
//! codes for eight queries without a query load beside it, win.

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
    // Per query, padded to whole 64-byte groups: AVX-512 VNNI's offset codes (padding
    // 128, an offset zero), or AVX2's signed codes and their magnitudes (padding 0).
    let stride = dim.next_multiple_of(64);
    let mut codes = vec![if isa == Isa::Avx512Vnni { 128u8 } else { 0 }; nq * stride];
    let mut magnitudes = vec![0u8; if isa == Isa::Avx2 { nq * stride } else { 0 }];
    for (j, q) in pairs.qs.iter().enumerate() {
        for (p, &c) in q.codes.iter().enumerate() {
            codes[j * stride + p] = match isa {
                Isa::Avx512Vnni => (c as i16 + 128) as u8,
                Isa::Avx2 => c as u8,
            };
            if isa == Isa::Avx2 {
                magnitudes[j * stride + p] = c.unsigned_abs();
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
    let n = tier.rows();
    let floors = Floors::new(nq);
    let chunks: Vec<Sieve> = (0..n.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| {
            let (start, end) = (c * CHUNK_ROWS, ((c + 1) * CHUNK_ROWS).min(n));
            let mut sieve = Sieve::new(nq, k, &floors);
            for sub in (start..end).step_by(sub_rows) {
                let rows = sub..(sub + sub_rows).min(end);
                for w in bounds.windows(2) {
                    let group = Group {
                        pairs,
                        codes: &codes[w[0] * stride..w[1] * stride],
                        magnitudes: magnitudes.get(w[0] * stride..w[1] * stride).unwrap_or(&[]),
                        stride,
                        terms: &terms[w[0]..w[1]],
                        first_query: w[0],
                    };
                    match isa {
                        Isa::Avx512Vnni => group.vnni(rows.clone(), &mut sieve),
                        Isa::Avx2 => group.avx2(rows.clone(), &mut sieve),
                    }
                }
            }
            sieve
        })
        .collect();
    Sieve::merge(chunks, nq, k)
}

/// One group of queries: their codes (`stride` bytes each; AVX2's magnitudes too), their
/// terms of the quick bound, and the index of the first.
struct Group<'g> {
    pairs: &'g Pairs<'g>,
    codes: &'g [u8],
    magnitudes: &'g [u8],
    stride: usize,
    terms: &'g [QueryTerms],
    first_query: usize,
}

impl Group<'_> {
    /// The group against `rows` by the AVX-512 VNNI kernel; accumulators: `Q·R` dot
    /// products and `R` code sums in the 32 zmm registers.
    fn vnni(&self, rows: Range<usize>, sieve: &mut Sieve) {
        match self.terms.len() {
            1 => self.scan::<1, 8, true>(rows, sieve),
            2 => self.scan::<2, 8, true>(rows, sieve),
            3 => self.scan::<3, 4, true>(rows, sieve),
            4 => self.scan::<4, 4, true>(rows, sieve),
            5 => self.scan::<5, 4, true>(rows, sieve),
            6 => self.scan::<6, 4, true>(rows, sieve),
            7 => self.scan::<7, 3, true>(rows, sieve),
            _ => self.scan::<8, 3, true>(rows, sieve),
        }
    }

    /// The group against `rows` by the AVX2 kernel; accumulators: `Q·R` dot products in
    /// the 16 ymm registers, beside the row and a query's codes.
    fn avx2(&self, rows: Range<usize>, sieve: &mut Sieve) {
        match self.terms.len() {
            1 => self.scan::<1, 4, false>(rows, sieve),
            2 => self.scan::<2, 4, false>(rows, sieve),
            3 => self.scan::<3, 3, false>(rows, sieve),
            4 => self.scan::<4, 2, false>(rows, sieve),
            5 => self.scan::<5, 2, false>(rows, sieve),
            6 => self.scan::<6, 1, false>(rows, sieve),
            7 => self.scan::<7, 1, false>(rows, sieve),
            _ => self.scan::<8, 1, false>(rows, sieve),
        }
    }

    /// The group's queries (`Q` of them) against `rows`, `R` rows a kernel call, by the
    /// AVX-512 VNNI kernel (`VNNI`) or the AVX2 one.
    fn scan<const Q: usize, const R: usize, const VNNI: bool>(
        &self,
        rows: Range<usize>,
        sieve: &mut Sieve,
    ) {
        debug_assert_eq!(self.terms.len(), Q);
        let tier = self.pairs.tier;
        let dim = tier.dim;
        let mut dots = [[0i32; R]; Q];
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
                // SAFETY: as above, with `magnitudes` as long as `codes`; the CPU has AVX2
                // (`candidates`' contract).
                unsafe {
                    kernel_avx2::<Q, R>(signed, self.magnitudes, self.stride, codes, dim, &mut dots)
                };
            }
            sift(
                self.pairs,
                self.terms,
                self.first_query,
                first,
                &dots,
                valid,
                sieve,
            );
            first += valid;
        }
    }
}

/// Offers to `sieve` each pair of a query (of `terms`, the first query `first_query`) and
/// one of the `valid` rows from `first` (of int8 dot products `dots`) whose quick upper
/// bound reaches the query's floor.
#[inline(always)]
fn sift<const Q: usize, const R: usize>(
    pairs: &Pairs<'_>,
    terms: &[QueryTerms],
    first_query: usize,
    first: usize,
    dots: &[[i32; R]; Q],
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
    for (m, (t, dots)) in terms.iter().zip(dots).enumerate() {
        let j = first_query + m;
        let floor = sieve.floor(j);
        let mut pass = 0u32;
        for i in 0..R {
            let u = quick_upper(
                dots[i] as f64,
                *t,
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
            pairs.offer(j, first + i, dots[i].into(), sieve);
        }
    }
}

/// `dots[m][i] = Σ_p (queries[m·stride + p] − 128) · rows[i·dim + p]` over `p < dim`: the
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
    dots: &mut [[i32; R]; Q],
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
            dots[m][i] = _mm512_reduce_add_epi32(acc[m][i]) - 128 * sum;
        }
    }
}

/// `dots[m][i] = Σ_p signed[m·stride + p] · rows[i·dim + p]` over `p < dim`: the int8
/// dot products of `Q` queries with `R` rows of `dim` codes. `vpmaddubsw` multiplies a
/// query's magnitudes (unsigned) by the row's codes with the query's signs (`vpsignb`),
/// pairs summed in i16 (at most 2·127² < 2¹⁵: no saturation), and `vpmaddwd` by ones
/// widens the pairs into i32 lanes.
///
/// # Safety
/// The CPU supports AVX2; `stride` is at least `dim`; `signed` and `magnitudes` hold `Q ·
/// stride` bytes (each magnitude that of its signed code) and `rows` `R · dim`.
#[target_feature(enable = "avx2")]
unsafe fn kernel_avx2<const Q: usize, const R: usize>(
    signed: &[i8],
    magnitudes: &[u8],
    stride: usize,
    rows: &[i8],
    dim: usize,
    dots: &mut [[i32; R]; Q],
) {
    debug_assert!(stride >= dim && signed.len() >= Q * stride);
    debug_assert!(magnitudes.len() >= Q * stride && rows.len() >= R * dim);
    let ones = _mm256_set1_epi16(1);
    let mut acc = [[_mm256_setzero_si256(); R]; Q];
    let (s, u, x) = (signed.as_ptr(), magnitudes.as_ptr(), rows.as_ptr());
    let whole = dim / 32;
    for i in 0..R {
        for g in 0..whole {
            // SAFETY: `32·g + 32 ≤ dim`: inside row `i`.
            let xv = unsafe { _mm256_loadu_si256(x.add(i * dim + 32 * g).cast()) };
            for (m, acc) in acc.iter_mut().enumerate() {
                let at = m * stride + 32 * g;
                // SAFETY: `32·g + 32 ≤ dim ≤ stride`: inside query `m`'s bytes.
                let (sv, uv) = unsafe {
                    (
                        _mm256_loadu_si256(s.add(at).cast()),
                        _mm256_loadu_si256(u.add(at).cast()),
                    )
                };
                let pairs = _mm256_maddubs_epi16(uv, _mm256_sign_epi8(xv, sv));
                acc[i] = _mm256_add_epi32(acc[i], _mm256_madd_epi16(pairs, ones));
            }
        }
    }
    for i in 0..R {
        let row = &rows[i * dim..(i + 1) * dim];
        for (m, acc) in acc.iter().enumerate() {
            let mut lanes = [0i32; 8];
            // SAFETY: `lanes` is 32 bytes, what an unaligned 256-bit store writes.
            unsafe { _mm256_storeu_si256(lanes.as_mut_ptr().cast(), acc[i]) };
            let query = &signed[m * stride..m * stride + dim];
            let tail: i32 = (32 * whole..dim)
                .map(|p| query[p] as i32 * row[p] as i32)
                .sum();
            dots[m][i] = lanes.iter().sum::<i32>() + tail;
        }
    }
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
            let stride = dim.next_multiple_of(64);
            let qs: Vec<Vec<i8>> = (0..4)
                .map(|_| (0..dim).map(|_| code().max(-127)).collect())
                .collect();
            let rows: Vec<i8> = (0..8 * dim).map(|_| code().max(-127)).collect();
            let mut want = [[0i32; 8]; 4];
            for (m, q) in qs.iter().enumerate() {
                for i in 0..8 {
                    want[m][i] = dot_i8_scalar(q, &rows[i * dim..(i + 1) * dim]);
                }
            }
            if vnni {
                let mut offset = vec![128u8; 4 * stride];
                for (m, q) in qs.iter().enumerate() {
                    for (p, &c) in q.iter().enumerate() {
                        offset[m * stride + p] = (c as i16 + 128) as u8;
                    }
                }
                let mut dots = [[0i32; 8]; 4];
                // SAFETY: checked above: the CPU has the features; the buffers hold 4
                // queries of `stride` bytes and 8 rows of `dim` codes.
                unsafe { kernel::<4, 8>(&offset, stride, &rows, dim, &mut dots) };
                assert_eq!(dots, want, "D {dim}: the AVX-512 VNNI kernel");
            }
            let mut signed = vec![0i8; 4 * stride];
            let mut magnitudes = vec![0u8; 4 * stride];
            for (m, q) in qs.iter().enumerate() {
                signed[m * stride..m * stride + dim].copy_from_slice(q);
                for (p, &c) in q.iter().enumerate() {
                    magnitudes[m * stride + p] = c.unsigned_abs();
                }
            }
            let mut avx2 = [[0i32; 8]; 4];
            // SAFETY: checked above: the CPU has AVX2; the buffers hold 4 queries of
            // `stride` bytes (codes and magnitudes) and 8 rows of `dim` codes.
            unsafe { kernel_avx2::<4, 8>(&signed, &magnitudes, stride, &rows, dim, &mut avx2) };
            assert_eq!(avx2, want, "D {dim}: the AVX2 kernel");
        }
    }
}
