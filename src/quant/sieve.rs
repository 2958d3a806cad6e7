//! What the int8 scans share: the bound on the f32 scan's error ([`ScanBounds`]), the
//! per-chunk selection of candidates ([`Sieve`]) with the floors its chunks share
//! ([`Floors`]), and the score interval every scan computes (`score_interval`).

use super::int8::{Int8Query, Quantised, TierBounds};
use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicU64, Ordering};

/// f32's unit roundoff.
pub(super) const U32: f64 = 1.0 / (1u64 << 24) as f64;

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
        dot: i64,
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
pub(super) fn score_interval((lo, hi): (f64, f64), dot_err: f64, s: f64, b: f64) -> (f64, f64) {
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
pub(super) fn ordered(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 {
        !b
    } else {
        b | 1 << 63
    }
}

/// The inverse of [`ordered`].
pub(super) fn unordered(b: u64) -> f64 {
    f64::from_bits(if b >> 63 == 1 { b & !(1 << 63) } else { !b })
}

/// A tier's rows: the dimension, every row's codes (row-major) and bounds.
#[derive(Clone, Copy)]
pub(super) struct Rows<'a> {
    pub(super) dim: usize,
    pub(super) codes: &'a [i8],
    pub(super) bounds: &'a [TierBounds],
}

impl Rows<'_> {
    pub(super) fn rows(&self) -> usize {
        self.bounds.len()
    }
}

/// The metric's per-row scale and bias (see `TierRef::candidates`).
pub(super) type Metric<'a> = (&'a [f32], Option<&'a [f32]>);

/// What a scan offers its sieve for one pair, from the pair's exact int8 dot product.
pub(super) struct Pairs<'s> {
    pub(super) tier: Rows<'s>,
    pub(super) qs: &'s [Int8Query],
    pub(super) bounds: &'s ScanBounds,
    pub(super) metric: Metric<'s>,
}

impl Pairs<'_> {
    /// Query `j` against row `r` (of int8 dot product `dot`): its exact interval, offered
    /// to `sieve` (nothing for a row not live).
    #[inline]
    pub(super) fn offer(&self, j: usize, r: usize, dot: i64, sieve: &mut Sieve) {
        let (scale, bias) = self.metric;
        let s = scale[r];
        if s.is_nan() {
            return; // not live: never a candidate
        }
        let b = bias.map_or(0.0, |b| b[r] as f64);
        let row = &self.tier.bounds[r].q;
        let (lo, hi) = self.bounds.score(j, &self.qs[j], dot, row, s as f64, b);
        sieve.offer(j, r, lo, hi);
    }

    /// Each query's terms of [`quick_upper`].
    #[cfg(target_arch = "x86_64")]
    pub(super) fn terms(&self) -> Vec<QueryTerms> {
        self.qs
            .iter()
            .zip(&self.bounds.grow)
            .map(|(q, grow)| QueryTerms {
                scale: q.q.scale as f64,
                coded_norm: q.q.coded_norm as f64,
                per_norm: q.q.residual as f64 + grow,
            })
            .collect()
    }
}

/// Per query: its scale, the bound on its coded norm, and the sum of its residual bound
/// and its f32 dot error per unit of row norm (see [`quick_upper`]).
#[cfg(target_arch = "x86_64")]
#[derive(Clone, Copy, Default)]
pub(super) struct QueryTerms {
    pub(super) scale: f64,
    pub(super) coded_norm: f64,
    pub(super) per_norm: f64,
}

/// An upper bound, never below the exact one (`ScanBounds::score`), on the f32 scan's
/// score of a query (`t`) against a row of code scale, residual and norm bounds
/// `(cs, e, n)`, metric scale `sc` and bias `b`, from their int8 dot product: the
/// centre `t·cs·dot` plus the radius `‖t·d‖·e + (f + γ‖q‖)·n` and the underflow slack,
/// scaled and biased, plus `4u₃₂` of the magnitude (the exact bound adds `3u₃₂` for the
/// scan's roundings; the extra `u₃₂` covers this sum's own f64 roundings and the exact
/// interval's slack many times over). NaN when a bound is infinite against a zero.
#[cfg(target_arch = "x86_64")]
#[inline(always)]
pub(super) fn quick_upper(
    dot: f64,
    t: QueryTerms,
    (cs, e, n): (f64, f64, f64),
    (sc, b): (f64, f64),
    underflow: f64,
) -> f64 {
    let centre = dot * (t.scale * cs);
    let radius = t.coded_norm * e + t.per_norm * n + underflow;
    let magnitude = (centre.abs() + radius) * sc + b.abs();
    (centre + radius) * sc + b + 4.0 * U32 * magnitude + 3.0 * F32_TINY
}
