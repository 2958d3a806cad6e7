//! The batched int8 scan: the certified candidates of many queries in one pass, their
//! int8 dot products by AVX-512 VNNI.
//!
//! `vpdpbusd` multiplies unsigned by signed bytes, four at a time into each i32 lane. The
//! query codes `d ∈ [−127, 127]` are stored offset, `d + 128 ∈ [1, 255]`, so a lane sums
//! `(d + 128)·c` and the dot product is that minus `128·Σc`, the row's code sum: exact in
//! i32 up to [`MAX_DIM`] values. A kernel call multiplies [`MQ`] queries (each four codes
//! broadcast from L1) with [`NR`] rows packed four codes per lane, sixteen rows a vector,
//! on sixteen accumulators: one load of row codes serves eight queries.
//!
//! Each `(query, row)` pair then gets a quick upper bound on its score, in f64 on eight
//! lanes: the exact interval's centre and radius (`quant::int8`) and the f32 scan's error
//! (`quant::tier`), widened by `u₃₂` more of the magnitude than the exact bound takes, so
//! it is never below it. Only a pair whose quick bound reaches the query's running floor
//! (or is not a number) goes through the exact bound and the query's sieve, as in the
//! per-query scan; once the floors have risen that is a few pairs in a thousand. The
//! candidates are therefore exactly those of the per-query scan.
//!
//! When not to use it: without AVX-512 VNNI (the per-query scan serves), for dimensions
//! past [`MAX_DIM`], and for up to `few::MAX_QUERIES` queries, where the few-query scan
//! (no packing, and no padding to eight queries) is faster.

use super::sieve::{quick_upper, Floors, Metric, Pairs, QueryTerms, Rows, Sieve};
use rayon::prelude::*;
use std::arch::x86_64::*;

/// The largest dimension: `255·127·D` must fit an i32 lane.
pub(super) const MAX_DIM: usize = super::MAX_SCAN_DIM;
/// Queries per kernel call.
const MQ: usize = 8;
/// Rows per kernel call: two vectors of sixteen.
const NR: usize = 32;
/// Rows packed at a time: their codes (192 KiB at 768 dimensions) stay in L2 while every
/// query passes over them.
const BLOCK_ROWS: usize = 256;
/// Rows per task.
const TASK_ROWS: usize = 16 * BLOCK_ROWS;

/// Whether this CPU runs the batched scan for rows of `dim` codes.
pub(super) fn available(dim: usize) -> bool {
    dim <= MAX_DIM
        && std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("avx512bw")
        && std::is_x86_feature_detected!("avx512vnni")
}

/// A block of rows packed for the kernel, with what the quick bound needs of each row.
struct Block {
    groups: usize,
    /// Panels of 16 rows: panel `p`, group `g` (codes `4g..4g+4`), row `i` of the panel
    /// at `(p·groups + g)·64 + 4i`.
    packed: Vec<u8>,
    rows: usize,
    code_sum: Vec<i32>,
    code_scale: Vec<f64>,
    residual: Vec<f64>,
    norm: Vec<f64>,
    /// The metric's scale (0 for a row not live) and bias (−10³⁰⁰ for one not live, so
    /// its quick bound never reaches a floor).
    scale: Vec<f64>,
    bias: Vec<f64>,
}

impl Block {
    fn new(groups: usize) -> Self {
        Self {
            groups,
            packed: vec![0; BLOCK_ROWS * groups * 4],
            rows: 0,
            code_sum: vec![0; BLOCK_ROWS],
            code_scale: vec![0.0; BLOCK_ROWS],
            residual: vec![0.0; BLOCK_ROWS],
            norm: vec![0.0; BLOCK_ROWS],
            scale: vec![0.0; BLOCK_ROWS],
            bias: vec![0.0; BLOCK_ROWS],
        }
    }

    /// Packs rows `first..first + rows` of `tier` (at most [`BLOCK_ROWS`]); the rest of
    /// the block is zero codes of rows not live.
    fn fill(&mut self, tier: &Rows<'_>, first: usize, rows: usize, (scale, bias): Metric<'_>) {
        let dim = tier.dim;
        self.rows = rows;
        self.packed.fill(0);
        for i in 0..BLOCK_ROWS {
            let live = i < rows && !scale[first + i].is_nan();
            if !live {
                self.code_sum[i] = 0;
                self.code_scale[i] = 0.0;
                self.residual[i] = 0.0;
                self.norm[i] = 0.0;
                self.scale[i] = 0.0;
                self.bias[i] = -1e300;
                continue;
            }
            let r = first + i;
            let codes: &[u8] = bytemuck::cast_slice(&tier.codes[r * dim..(r + 1) * dim]);
            let (panel, lane) = (i / 16, i % 16);
            let base = panel * self.groups * 64 + lane * 4;
            // Four codes a move; the last group's missing codes stay zero.
            let whole = dim / 4;
            for g in 0..whole {
                self.packed[base + g * 64..base + g * 64 + 4]
                    .copy_from_slice(&codes[4 * g..4 * g + 4]);
            }
            for (b, &c) in codes[4 * whole..].iter().enumerate() {
                self.packed[base + whole * 64 + b] = c;
            }
            let sum: i32 = tier.codes[r * dim..(r + 1) * dim]
                .iter()
                .map(|&c| c as i32)
                .sum();
            let q = &tier.bounds[r].q;
            self.code_sum[i] = sum;
            self.code_scale[i] = q.scale as f64;
            self.residual[i] = q.residual as f64;
            self.norm[i] = q.norm as f64;
            self.scale[i] = scale[r] as f64;
            self.bias[i] = bias.map_or(0.0, |b| b[r] as f64);
        }
    }
}

/// `TierRef::candidates` for the queries of `pairs`, batched; the same result.
pub(super) fn candidates(pairs: &Pairs<'_>, k: usize) -> Vec<Vec<usize>> {
    let (tier, qs, metric) = (pairs.tier, pairs.qs, pairs.metric);
    let dim = tier.dim;
    let groups = dim.div_ceil(4);
    let nq = qs.len();
    let padded = nq.next_multiple_of(MQ);
    // Offset codes, four-byte groups; padding (codes past `dim`, queries past `nq`) is 128,
    // an offset zero.
    let mut codes = vec![128u8; padded * groups * 4];
    for (j, q) in qs.iter().enumerate() {
        for (p, &c) in q.codes.iter().enumerate() {
            codes[j * groups * 4 + p] = (c as i16 + 128) as u8;
        }
    }
    let mut terms = pairs.terms();
    terms.resize(padded, QueryTerms::default());
    let n = tier.rows();
    let floors = Floors::new(nq);
    let chunks: Vec<Sieve> = (0..n.div_ceil(TASK_ROWS))
        .into_par_iter()
        .map(|t| {
            let mut sieve = Sieve::new(nq, k, &floors);
            let mut block = Block::new(groups);
            let end = ((t + 1) * TASK_ROWS).min(n);
            for first in (t * TASK_ROWS..end).step_by(BLOCK_ROWS) {
                block.fill(&tier, first, (end - first).min(BLOCK_ROWS), metric);
                let scan = Scan {
                    pairs,
                    codes: &codes,
                    terms: &terms,
                };
                // SAFETY: `available` was checked by the caller (the only one, in
                // `TierRef::candidates`): the CPU has AVX-512F, BW and VNNI.
                unsafe { scan.block(&block, first, &mut sieve) };
            }
            sieve
        })
        .collect();
    Sieve::merge(chunks, nq, k)
}

/// What one block's scan reads besides the block.
struct Scan<'s> {
    pairs: &'s Pairs<'s>,
    /// The queries' offset codes, `groups · 4` bytes each, padded to a multiple of [`MQ`].
    codes: &'s [u8],
    terms: &'s [QueryTerms],
}

impl Scan<'_> {
    /// Every query against the rows of `block` (which start at row `first`), offering the
    /// pairs whose quick bound reaches a floor to `sieve`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI.
    #[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
    unsafe fn block(&self, block: &Block, first: usize, sieve: &mut Sieve) {
        let groups = block.groups;
        let stride = groups * 4;
        let nq = self.pairs.qs.len();
        let pairs = block.rows.div_ceil(NR);
        let underflow = self.pairs.bounds.underflow;
        let mut dots = [[0i32; NR]; MQ];
        let mut upper = [0.0f64; NR];
        for tile in (0..nq).step_by(MQ) {
            let queries = &self.codes[tile * stride..(tile + MQ) * stride];
            for pair in 0..pairs {
                let rows = &block.packed[pair * 2 * groups * 64..(pair + 1) * 2 * groups * 64];
                // SAFETY: `queries` holds MQ queries of `stride` bytes and `rows` two
                // panels of `groups` 64-byte groups; the CPU has the features (this
                // function's contract).
                unsafe { kernel(queries, stride, rows, groups, &mut dots) };
                let at = pair * NR;
                let lanes =
                    |v: &[f64]| -> [f64; NR] { v[at..at + NR].try_into().expect("NR rows") };
                let (cs, e, n) = (
                    lanes(&block.code_scale),
                    lanes(&block.residual),
                    lanes(&block.norm),
                );
                let (sc, b) = (lanes(&block.scale), lanes(&block.bias));
                let sums: [i32; NR] = block.code_sum[at..at + NR].try_into().expect("NR rows");
                let valid = (block.rows - at).min(NR);
                for (m, dots) in dots.iter().enumerate().take(nq - tile) {
                    let j = tile + m;
                    let t = self.terms[j];
                    let floor = sieve.floor(j);
                    // Fixed-size lanes, no bounds checks: the compiler keeps this in zmm.
                    for i in 0..NR {
                        let dot = (dots[i] - 128 * sums[i]) as f64;
                        upper[i] =
                            quick_upper(dot, t, (cs[i], e[i], n[i]), (sc[i], b[i]), underflow);
                    }
                    // A NaN bound goes to the exact check too.
                    let mut pass = 0u32;
                    for (i, &u) in upper.iter().enumerate() {
                        pass |= u32::from(u >= floor || u.is_nan()) << i;
                    }
                    pass &= if valid == NR {
                        u32::MAX
                    } else {
                        (1u32 << valid) - 1
                    };
                    while pass != 0 {
                        let i = pass.trailing_zeros() as usize;
                        pass &= pass - 1;
                        let dot = dots[i] - 128 * sums[i];
                        self.pairs.offer(j, first + at + i, dot.into(), sieve);
                    }
                }
            }
        }
    }
}

/// `dots[m][i] = Σ_p queries[m·stride + p] · rows(i, p)` (unsigned query bytes, signed
/// row codes) for `MQ` queries and the `NR` rows of two packed panels.
///
/// # Safety
/// The CPU supports AVX-512F, AVX-512BW and AVX-512 VNNI; `queries` holds `MQ · stride`
/// bytes with `stride = 4 · groups`, and `rows` `2 · groups · 64`.
#[target_feature(enable = "avx512f,avx512bw,avx512vnni")]
unsafe fn kernel(
    queries: &[u8],
    stride: usize,
    rows: &[u8],
    groups: usize,
    dots: &mut [[i32; NR]; MQ],
) {
    debug_assert!(queries.len() >= MQ * stride && rows.len() >= 2 * groups * 64);
    let mut acc = [[_mm512_setzero_si512(); 2]; MQ];
    let (q, r) = (queries.as_ptr(), rows.as_ptr());
    for g in 0..groups {
        // SAFETY: `g < groups`, so both 64-byte loads lie in `rows` (two panels of
        // `groups · 64` bytes) and each 4-byte read in its query's `stride` bytes.
        unsafe {
            let r0 = _mm512_loadu_si512(r.add(g * 64).cast());
            let r1 = _mm512_loadu_si512(r.add((groups + g) * 64).cast());
            for (m, acc) in acc.iter_mut().enumerate() {
                let word = q.add(m * stride + 4 * g).cast::<i32>().read_unaligned();
                let b = _mm512_set1_epi32(word);
                acc[0] = _mm512_dpbusd_epi32(acc[0], b, r0);
                acc[1] = _mm512_dpbusd_epi32(acc[1], b, r1);
            }
        }
    }
    for (out, acc) in dots.iter_mut().zip(&acc) {
        // SAFETY: each row of `dots` holds 32 i32, two 64-byte stores.
        unsafe {
            _mm512_storeu_si512(out.as_mut_ptr().cast(), acc[0]);
            _mm512_storeu_si512(out.as_mut_ptr().add(16).cast(), acc[1]);
        }
    }
}
