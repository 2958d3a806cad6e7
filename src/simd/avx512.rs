//! AVX-512F streaming dot products: four corpus rows × up to six queries per step.
//!
//! Each 16-float piece of four rows is loaded once and multiplied into up to 24
//! accumulators (4 rows × 6 queries), so a step issues ten loads per twenty-four FMAs and
//! the FMA units, not the load ports, set the pace. Larger batches take the queries in
//! groups over a sub-block of rows small enough to stay in L1, so the corpus is still read
//! from memory once. With many queries a row is consumed slowly, and the hardware
//! prefetcher alone left the loads waiting on DRAM (Q = 8, D = 768: half the bandwidth), so
//! the first group prefetches the rows ahead.
//!
//! The dimension's tail is a masked load, so no scalar loop runs, and the sums leave the
//! accumulators eight at a time through one transposed reduction, which matters at small D.
//!
//! A single query streams faster through the AVX2 kernel (one row at a time, as the
//! hardware prefetcher likes it), so `super::dots_rows` sends `Q = 1` there.

use std::arch::x86_64::*;

/// Rows per step.
const R: usize = 4;
/// Queries per step, at most: `R × G` accumulators, `R` row pieces and a query piece fit
/// the 32 zmm registers.
const G: usize = 6;
/// Rows of one sub-block, in bytes: the queries' groups take turns over it while it is in
/// L1.
const SUB_BLOCK_BYTES: usize = 32 << 10;
/// The least prefetch distance, in floats (8 KiB).
const PREFETCH_FLOATS: usize = 2048;

/// `out[q * n + r] = (rows[r] · queries[q]) * scale[r]` for the `n = scale.len()` rows
/// (`d > 0` values each) and every query.
///
/// # Safety
/// The CPU must support AVX-512F, AVX2 and FMA.
#[target_feature(enable = "avx512f,avx2,fma")]
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
        d > 0 && rows.len() == n * d && queries.len() == nq * d && out.len() == n * nq,
        "rows, queries, scale and output do not agree"
    );
    // Queries in even groups of at most `G`, so no step runs with one or two when more
    // are waiting.
    let groups = nq.div_ceil(G).max(1);
    let per_group = nq.div_ceil(groups);
    let sub = (SUB_BLOCK_BYTES / (4 * d)).max(R) / R * R;
    let mut r0 = 0;
    while r0 < n {
        let r1 = (r0 + sub).min(n);
        let mut q = 0;
        while q < nq {
            let g = (nq - q).min(per_group);
            let block = Block {
                rows: &rows[r0 * d..r1 * d],
                scale: &scale[r0..r1],
                queries: &queries[q * d..(q + g) * d],
                d,
            };
            let at = Out {
                n,
                row: r0,
                query: q,
            };
            // SAFETY: this function's target features are the callee's; `Block` and `Out`
            // check their own bounds.
            unsafe { block.run(g, q == 0, at, out) };
            q += g;
        }
        r0 = r1;
    }
}

/// Rows and a group of queries for one run of [`Block::run`].
struct Block<'a> {
    /// Whole rows of `d` values.
    rows: &'a [f32],
    /// One multiplier per row.
    scale: &'a [f32],
    /// `1..=G` whole query rows of `d` values.
    queries: &'a [f32],
    d: usize,
}

/// Where a block's scores go: `out[(query + j) * n + row + i]` for block row `i`, query `j`.
#[derive(Clone, Copy)]
struct Out {
    n: usize,
    row: usize,
    query: usize,
}

impl Block<'_> {
    /// Scores every row of the block against its `g` queries, prefetching the rows ahead
    /// when `prefetch`.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA; `g == queries.len() / d`, `1 <= g <= G`.
    #[inline]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn run(&self, g: usize, prefetch: bool, at: Out, out: &mut [f32]) {
        // SAFETY: the caller's contract, with `NQ = g`.
        unsafe {
            match (g, prefetch) {
                (1, false) => self.steps::<1, false>(at, out),
                (1, true) => self.steps::<1, true>(at, out),
                (2, false) => self.steps::<2, false>(at, out),
                (2, true) => self.steps::<2, true>(at, out),
                (3, false) => self.steps::<3, false>(at, out),
                (3, true) => self.steps::<3, true>(at, out),
                (4, false) => self.steps::<4, false>(at, out),
                (4, true) => self.steps::<4, true>(at, out),
                (5, false) => self.steps::<5, false>(at, out),
                (5, true) => self.steps::<5, true>(at, out),
                (_, false) => self.steps::<6, false>(at, out),
                (_, true) => self.steps::<6, true>(at, out),
            }
        }
    }

    /// [`run`](Self::run) with the query count and the prefetch as constants, so every
    /// accumulator is a register.
    ///
    /// # Safety
    /// The CPU supports AVX-512F, AVX2 and FMA; the block holds `NQ` queries.
    // Not inlined: each instance gets the register allocator to itself, which keeps all
    // `R × NQ` accumulators in registers (inlined into the dispatch, some were spilled).
    #[inline(never)]
    #[target_feature(enable = "avx512f,avx2,fma")]
    unsafe fn steps<const NQ: usize, const PF: bool>(&self, at: Out, out: &mut [f32]) {
        let d = self.d;
        let n = self.scale.len();
        assert!(
            self.rows.len() == n * d && self.queries.len() == NQ * d,
            "block shape"
        );
        assert!(
            (at.query + NQ - 1) * at.n + at.row + n <= out.len(),
            "block outside the output"
        );
        let mut r = 0;
        while r < n {
            let mut sums = [0.0f32; 32];
            let rows = &self.rows[r * d..];
            let qs = self.queries.as_ptr();
            let taken = if n - r >= R {
                // SAFETY: `rows` holds `R` rows from `r`, `qs` holds `NQ` queries.
                unsafe { step::<R, NQ, PF>(rows.as_ptr(), qs, d, &mut sums) };
                R
            } else {
                // SAFETY: `rows` holds one row from `r`, `qs` holds `NQ` queries.
                unsafe { step::<1, NQ, PF>(rows.as_ptr(), qs, d, &mut sums) };
                1
            };
            for i in 0..taken {
                let w = self.scale[r + i];
                for j in 0..NQ {
                    out[(at.query + j) * at.n + at.row + r + i] = sums[i * NQ + j] * w;
                }
            }
            r += taken;
        }
    }
}

/// The dot products of `RR` consecutive rows at `row` with `NQ` consecutive queries at `qs`
/// (both `d` values apart), into `sums[i * NQ + j]` for row `i`, query `j`.
///
/// # Safety
/// * The CPU supports AVX-512F, AVX2 and FMA.
/// * `row` is valid for reads of `RR * d` floats and `qs` of `NQ * d` floats;
///   `RR * NQ <= 32`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
#[allow(clippy::needless_range_loop)] // `acc[r][j]` by index reads as the math does
unsafe fn step<const RR: usize, const NQ: usize, const PF: bool>(
    row: *const f32,
    qs: *const f32,
    d: usize,
    sums: &mut [f32; 32],
) {
    let mut acc = [[_mm512_setzero_ps(); NQ]; RR];
    let full = d / 16 * 16;
    let tail: __mmask16 = (1u32 << (d % 16)) as u16 - 1;
    let ahead = (2 * RR * d).max(PREFETCH_FLOATS);
    let mut i = 0;
    while i < full {
        if PF {
            for r in 0..RR {
                // A hint that never faults; `wrapping_add` makes no claim about bounds.
                _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(r * d + i + ahead) as *const i8);
            }
        }
        // SAFETY: `i + 16 <= d`, so every load reads inside row `r < RR` and query `j < NQ`.
        unsafe {
            let mut rv = [_mm512_setzero_ps(); RR];
            for (r, v) in rv.iter_mut().enumerate() {
                *v = _mm512_loadu_ps(row.add(r * d + i));
            }
            for j in 0..NQ {
                let qv = _mm512_loadu_ps(qs.add(j * d + i));
                for r in 0..RR {
                    acc[r][j] = _mm512_fmadd_ps(rv[r], qv, acc[r][j]);
                }
            }
        }
        i += 16;
    }
    if tail != 0 {
        // SAFETY: the mask enables lanes `[i, d)` only; masked-off lanes are not read
        // (a masked load does not access, or fault on, disabled elements).
        unsafe {
            let mut rv = [_mm512_setzero_ps(); RR];
            for (r, v) in rv.iter_mut().enumerate() {
                *v = _mm512_maskz_loadu_ps(tail, row.add(r * d + i));
            }
            for j in 0..NQ {
                let qv = _mm512_maskz_loadu_ps(tail, qs.add(j * d + i));
                for r in 0..RR {
                    acc[r][j] = _mm512_fmadd_ps(rv[r], qv, acc[r][j]);
                }
            }
        }
    }
    // Eight sums per reduction, across rows: `RR × NQ` accumulators in flat order.
    let total = RR * NQ;
    let mut k = 0;
    while k < total {
        let mut eight = [_mm512_setzero_ps(); 8];
        for (t, e) in eight.iter_mut().enumerate() {
            if k + t < total {
                *e = acc[(k + t) / NQ][(k + t) % NQ];
            }
        }
        // SAFETY: `k + 8 <= 32`: `total <= 32` and `k` steps by 8 below `total`, and
        // `sums` holds 32 floats; `storeu` has no alignment need.
        unsafe { _mm256_storeu_ps(sums.as_mut_ptr().add(k), reduce8(&eight)) };
        k += 8;
    }
}

/// The sums of each of eight vectors, as one vector: `out[j] = Σ lanes of acc[j]`.
///
/// A transposed reduction in AVX-512 instructions only: the AVX `hadd` has no EVEX form,
/// and feeding it the accumulators confined them to the 16 VEX registers, which spilled.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
fn reduce8(a: &[__m512; 8]) -> __m256 {
    // Per 128-bit lane, pairs (x, y) → [x, y, x, y] partial sums.
    let pair =
        |x: __m512, y: __m512| _mm512_add_ps(_mm512_unpacklo_ps(x, y), _mm512_unpackhi_ps(x, y));
    // Per 128-bit lane, [x, y, x, y] and [z, w, z, w] → [x, y, z, w].
    let quad = |p: __m512, q: __m512| {
        let (p, q) = (_mm512_castps_pd(p), _mm512_castps_pd(q));
        _mm512_add_ps(
            _mm512_castpd_ps(_mm512_unpacklo_pd(p, q)),
            _mm512_castpd_ps(_mm512_unpackhi_pd(p, q)),
        )
    };
    let c0 = quad(pair(a[0], a[1]), pair(a[2], a[3])); // sums 0..4, per lane
    let c1 = quad(pair(a[4], a[5]), pair(a[6], a[7])); // sums 4..8, per lane
                                                       // Add the four 128-bit lanes: [c0.0 + c0.2, c0.1 + c0.3, c1.0 + c1.2, c1.1 + c1.3] ...
    let z = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x44>(c0, c1),
        _mm512_shuffle_f32x4::<0xEE>(c0, c1),
    );
    // ... then [c0 total, c1 total, ..].
    let t = _mm512_add_ps(
        _mm512_shuffle_f32x4::<0x88>(z, z),
        _mm512_shuffle_f32x4::<0xDD>(z, z),
    );
    _mm512_castps512_ps256(t)
}
