//! The int8 scan tier of a matrix, and the certified candidates of a top-k under any
//! metric the backends score as `dot · scale + bias` (see [`crate::metric`]).
//!
//! A certified search scans the tier, gets for every row an interval that provably holds
//! the score the f32 scan would compute for it, and keeps only the rows whose upper bound
//! reaches the `k`-th best lower bound: every other row scores strictly below `k` kept
//! rows in the f32 scan, so it is in no top-k of it, ties included. Re-scoring the kept
//! rows with the f32 kernels (the CPU backend's gather path, which computes each row's
//! score exactly as the full scan does) then gives the full scan's answer, bit for bit.

use super::int8::{dot_i8, quantise, Int8Query, Quantised};
use rayon::prelude::*;
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};

/// f32's unit roundoff.
pub(super) const U32: f64 = 1.0 / (1u64 << 24) as f64;

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

/// Every row of a matrix as int8 codes with its bounds ([`quantise`]), in memory.
#[derive(Clone, Debug)]
pub(crate) struct Int8Tier {
    dim: usize,
    codes: Vec<i8>,
    bounds: Vec<TierBounds>,
}

impl Int8Tier {
    /// Quantises every row of `data` (row-major, `dim` values a row, all finite), on all
    /// cores.
    pub(crate) fn build(data: &[f32], dim: usize) -> Self {
        let dim = dim.max(1);
        // On huge pages, as the corpora are: the scan streams the codes.
        let mut codes = crate::mem::zeroed_i8(data.len() / dim * dim);
        let bounds = codes
            .par_chunks_mut(dim)
            .zip(data.par_chunks_exact(dim))
            .map(|(c, row)| TierBounds::new(quantise(row, c)))
            .collect();
        Self { dim, codes, bounds }
    }

    /// Quantises `rows` rows of `dim` values that `row` writes into its buffer (finite
    /// values), on all cores.
    pub(crate) fn build_rows(
        rows: usize,
        dim: usize,
        row: impl Fn(usize, &mut [f32]) + Sync,
    ) -> Self {
        let dim = dim.max(1);
        let mut codes = crate::mem::zeroed_i8(rows * dim);
        let bounds = codes
            .par_chunks_mut(dim)
            .enumerate()
            .map_init(
                || vec![0.0f32; dim],
                |buf, (r, c)| {
                    row(r, buf);
                    TierBounds::new(quantise(buf, c))
                },
            )
            .collect();
        Self { dim, codes, bounds }
    }

    /// The tier as a view, which the searches read.
    pub(crate) fn view(&self) -> TierRef<'_> {
        TierRef {
            dim: self.dim,
            codes: &self.codes,
            bounds: &self.bounds,
        }
    }

    /// Bytes the tier holds: the codes and each row's bounds.
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + std::mem::size_of_val(self.bounds.as_slice())
    }
}

/// An int8 tier's rows where they lie: in memory ([`Int8Tier`]) or in a warm store's
/// mapped tier files.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TierRef<'a> {
    pub(super) dim: usize,
    pub(super) codes: &'a [i8],
    pub(super) bounds: &'a [TierBounds],
}

impl<'a> TierRef<'a> {
    /// The tier of `bounds.len()` rows of `dim` codes each (`codes` holds them row-major).
    pub(crate) fn new(dim: usize, codes: &'a [i8], bounds: &'a [TierBounds]) -> Self {
        debug_assert_eq!(codes.len(), bounds.len() * dim);
        Self { dim, codes, bounds }
    }

    /// Rows in the tier.
    pub(crate) fn rows(&self) -> usize {
        self.bounds.len()
    }

    /// For each query of `queries` (`Q × D`, row-major), the rows (ascending) that may be
    /// in its top `k` (highest scores) under the f32 scan, which scores row `r` as
    /// `fl(fl(q·x_r)·scale[r]) + bias[r]`, the dot product in any summation order, fused or
    /// not: cosine (`scale` the inverse norms, no bias), inner product (`scale` 1) or L2
    /// (`bias` −‖x‖²/2). `scale` has one entry per tier row, non-negative; a NaN marks a
    /// row that is not live, which is left out.
    ///
    /// One pass over the codes for all the queries (each row's codes are read once, the
    /// queries' stay in L1): per chunk of rows and query, a min-heap of the k best lower
    /// bounds, whose top is a running floor; a row whose upper bound reaches it is kept
    /// (with that bound). The floor only rises and never passes the final k-th best lower
    /// bound over all rows, so what is kept holds every candidate; the final floor then
    /// filters it.
    pub(crate) fn candidates(
        self,
        queries: &[f32],
        scale: &[f32],
        bias: Option<&[f32]>,
        k: usize,
    ) -> Vec<Vec<usize>> {
        debug_assert_eq!(scale.len(), self.bounds.len());
        debug_assert!(bias.is_none_or(|b| b.len() == scale.len()));
        let dim = self.dim;
        let qs: Vec<Int8Query> = queries.chunks_exact(dim).map(Int8Query::new).collect();
        let nq = qs.len();
        if k == 0 || nq == 0 {
            return vec![Vec::new(); nq];
        }
        let bounds = ScanBounds::new(dim, &qs);
        #[cfg(target_arch = "x86_64")]
        if nq >= super::batch::BATCH_MIN_QUERIES && super::batch::available(dim) {
            return super::batch::candidates(self, &qs, &bounds, (scale, bias), k);
        }
        let n = self.bounds.len();
        let floors = Floors::new(nq);
        let chunks: Vec<Sieve> = (0..n.div_ceil(CHUNK_ROWS))
            .into_par_iter()
            .map(|c| {
                let rows = c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(n);
                let mut sieve = Sieve::new(nq, k, &floors);
                for r in rows {
                    let s = scale[r];
                    if s.is_nan() {
                        continue; // not live: never a candidate
                    }
                    let row = &self.bounds[r].q;
                    let codes = &self.codes[r * dim..(r + 1) * dim];
                    let (s, b) = (s as f64, bias.map_or(0.0, |b| b[r] as f64));
                    for (j, q) in qs.iter().enumerate() {
                        let (lo, hi) = bounds.score(j, q, dot_i8(&q.codes, codes), row, s, b);
                        sieve.offer(j, r, lo, hi);
                    }
                }
                sieve
            })
            .collect();
        Sieve::merge(chunks, nq, k)
    }
}

/// What bounds the f32 scan's error for a call's queries: `|fl(q·x) − q·x| ≤ γ·Σ|qᵢxᵢ|
/// ≤ γ·‖q‖·‖x‖` for an f32 dot product of D terms in any order, fused or not, with
/// `γ = n·u/(1 − n·u)` for `n = D + 2`, plus D times the spacing of subnormals for
/// products that underflow. Infinite when D·u nears 1: every row is then a candidate.
pub(super) struct ScanBounds {
    /// Per query: `γ·‖q‖` (its norm bound).
    pub(super) grow: Vec<f64>,
    pub(super) underflow: f64,
}

impl ScanBounds {
    pub(super) fn new(dim: usize, qs: &[Int8Query]) -> Self {
        let n_ops = dim as f64 + 2.0;
        let gamma = if n_ops * U32 < 0.5 {
            n_ops * U32 / (1.0 - n_ops * U32)
        } else {
            f64::INFINITY
        };
        Self {
            grow: qs.iter().map(|q| gamma * q.q.norm as f64).collect(),
            underflow: dim as f64 * F32_TINY,
        }
    }

    /// The interval of query `j`'s f32-scan score for a row of bounds `row`, metric scale
    /// `s` and bias `b`, from their exact int8 dot product `dot`.
    #[inline]
    pub(super) fn score(
        &self,
        j: usize,
        q: &Int8Query,
        dot: i32,
        row: &Quantised,
        s: f64,
        b: f64,
    ) -> (f64, f64) {
        let exact = q.interval(dot, row);
        let dot_err = self.grow[j] * row.norm as f64 + self.underflow;
        score_interval(exact, dot_err, s, b)
    }
}

/// Per query of a chunk of rows: a min-heap of the `k` best lower bounds seen, whose top
/// is a running floor, and the rows whose upper bound reached the floor when seen (with
/// that bound). The floor only rises and never passes the final k-th best lower bound
/// over all rows, so what is kept holds every candidate; [`Sieve::merge`] then filters it
/// by the final floor.
///
/// The chunks of a scan share their floors ([`Floors`]): any chunk's k-th best lower bound
/// is at most the final one, so every chunk may skip what falls below the best of them.
/// What that skips could neither enter the final k best lower bounds (the chunk that set
/// the floor holds k at or above it) nor pass the final floor.
pub(super) struct Sieve<'f> {
    k: usize,
    heaps: Vec<BinaryHeap<Reverse<u64>>>,
    kept: Vec<Vec<(usize, f64)>>,
    shared: &'f Floors,
}

/// The best floor any chunk of a scan has reached, per query (as [`ordered`] keys).
pub(super) struct Floors(Vec<AtomicU64>);

impl Floors {
    pub(super) fn new(queries: usize) -> Self {
        Self(
            (0..queries)
                .map(|_| AtomicU64::new(ordered(f64::NEG_INFINITY)))
                .collect(),
        )
    }
}

impl<'f> Sieve<'f> {
    pub(super) fn new(queries: usize, k: usize, shared: &'f Floors) -> Self {
        Self {
            k,
            heaps: (0..queries)
                .map(|_| BinaryHeap::with_capacity(k + 1))
                .collect(),
            kept: vec![Vec::new(); queries],
            shared,
        }
    }

    /// Query `j`'s running floor: the k-th best lower bound so far here (−∞ before `k`),
    /// or the best floor of another chunk when higher.
    #[inline]
    pub(super) fn floor(&self, j: usize) -> f64 {
        let heap = &self.heaps[j];
        let own = match heap.peek() {
            Some(top) if heap.len() == self.k => top.0,
            _ => ordered(f64::NEG_INFINITY),
        };
        unordered(own.max(self.shared.0[j].load(Ordering::Relaxed)))
    }

    /// Row `r`, whose score for query `j` lies in `[lo, hi]`.
    #[inline]
    pub(super) fn offer(&mut self, j: usize, r: usize, lo: f64, hi: f64) {
        let heap = &mut self.heaps[j];
        let lo_key = ordered(lo);
        let changed = if heap.len() < self.k {
            heap.push(Reverse(lo_key));
            true
        } else if heap.peek().is_some_and(|top| lo_key > top.0) {
            heap.pop();
            heap.push(Reverse(lo_key));
            true
        } else {
            false
        };
        // Published only when it rose past the shared floor: a write to a line the other
        // threads read is rare.
        if changed && heap.len() == self.k {
            let shared = &self.shared.0[j];
            if let Some(&Reverse(top)) = heap.peek() {
                if top > shared.load(Ordering::Relaxed) {
                    shared.fetch_max(top, Ordering::Relaxed);
                }
            }
        }
        if hi >= self.floor(j) {
            self.kept[j].push((r, hi));
        }
    }

    /// Each query's candidates over all the chunks (in row order): the rows kept whose
    /// upper bound reaches the final floor, the k-th best lower bound of them all.
    pub(super) fn merge(chunks: Vec<Sieve<'_>>, queries: usize, k: usize) -> Vec<Vec<usize>> {
        (0..queries)
            .map(|j| {
                let mut lows: Vec<u64> = chunks
                    .iter()
                    .flat_map(|c| c.heaps[j].iter().map(|r| r.0))
                    .collect();
                if lows.is_empty() {
                    return Vec::new();
                }
                // The k-th best lower bound (the worst of them when fewer rows are live).
                let nth = k.min(lows.len()) - 1;
                let (_, floor, _) = lows.select_nth_unstable_by(nth, |a, b| b.cmp(a));
                let floor = unordered(*floor);
                chunks
                    .iter()
                    .flat_map(|c| c.kept[j].iter())
                    .filter(|&&(_, hi)| hi >= floor)
                    .map(|&(r, _)| r)
                    .collect()
            })
            .collect()
    }
}

/// Half the smallest f32 subnormal's spacing, doubled: the most one rounding into f32's
/// subnormal range is off by (2⁻¹⁴⁹), as an absolute slack.
pub(super) const F32_TINY: f64 = 1.401298464324817e-45;

/// The interval of the f32 scan's score `fl(fl(d)·s) + b` when the exact dot product is in
/// `[lo, hi]` and the f32 one `d` within `dot_err` of it (`s ≥ 0`): the product and the
/// sum round once each, by at most `u` of a magnitude below `a + |b|`, where `a` bounds
/// `|d·s|`; three times that covers both, and `F32_TINY` per step a result that lands
/// among the subnormals.
#[inline]
fn score_interval((lo, hi): (f64, f64), dot_err: f64, s: f64, b: f64) -> (f64, f64) {
    if s == 0.0 {
        // A zero row: `fl(d·0)` is exactly zero (d is finite).
        let e = 3.0 * U32 * b.abs() + 2.0 * F32_TINY;
        return (b - e, b + e);
    }
    let a = (lo.abs().max(hi.abs()) + dot_err) * s;
    let e = dot_err * s + 3.0 * U32 * (a + b.abs()) + 2.0 * F32_TINY;
    (lo * s + b - e, hi * s + b + e)
}

/// Rows per task of a scan: enough that the per-query heaps and merges cost little beside
/// the rows' dot products, few enough that the tasks spread over every thread.
pub(super) const CHUNK_ROWS: usize = 4096;

/// `v` as an unsigned integer in the order of the values (NaN never occurs here).
fn ordered(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The inverse of [`ordered`].
fn unordered(b: u64) -> f64 {
    f64::from_bits(if b >> 63 == 1 { b & !(1 << 63) } else { !b })
}

#[cfg(test)]
mod tests;
