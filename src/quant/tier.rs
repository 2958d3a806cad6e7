//! The int8 scan tier of a matrix, and the certified candidates of a cosine top-k.
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

/// f32's unit roundoff.
const U32: f64 = 1.0 / (1u64 << 24) as f64;

/// Every row of a matrix as int8 codes with its bounds ([`quantise`]).
#[derive(Clone, Debug)]
pub(crate) struct Int8Tier {
    dim: usize,
    codes: Vec<i8>,
    rows: Vec<Quantised>,
}

impl Int8Tier {
    /// Quantises every row of `data` (row-major, `dim` values a row, all finite), on all
    /// cores.
    pub(crate) fn build(data: &[f32], dim: usize) -> Self {
        let dim = dim.max(1);
        let mut codes = vec![0i8; data.len() / dim * dim];
        let rows = codes
            .par_chunks_mut(dim)
            .zip(data.par_chunks_exact(dim))
            .map(|(c, row)| quantise(row, c))
            .collect();
        Self { dim, codes, rows }
    }

    /// Rows in the tier.
    pub(crate) fn rows(&self) -> usize {
        self.rows.len()
    }

    /// Bytes the tier holds: the codes and each row's bounds.
    pub(crate) fn bytes(&self) -> usize {
        self.codes.len() + self.rows.len() * std::mem::size_of::<Quantised>()
    }

    /// The rows (ascending) that may be in the top `k` of `query` under the f32 cosine
    /// scan, which scores row `r` as `fl(q·x_r)·inv[r]` (any summation order, fused or
    /// not). `query` is the unit-norm query the backends get, `inv` the corpus's inverse
    /// norms (one per tier row; a NaN marks a row that is not live, which is left out).
    pub(crate) fn cosine_candidates(&self, query: &[f32], inv: &[f32], k: usize) -> Vec<usize> {
        debug_assert_eq!(query.len(), self.dim);
        debug_assert_eq!(inv.len(), self.rows.len());
        let q = Int8Query::new(query);
        // |fl(q·x) − q·x| ≤ (D + 8)·u·‖q‖·‖x‖ for an f32 dot product in any order, and the
        // product with inv rounds once more: (D + 10)·u·‖q‖·‖x‖·inv covers both.
        let grow = (self.dim as f64 + 10.0) * U32 * q.q.norm as f64;
        // One pass: every row's upper bound, and each chunk's k best lower bounds (a
        // min-heap whose top is the chunk's running k-th best, which most rows fail to
        // beat with one comparison).
        let n = self.rows.len();
        // NaN for a row not live: no floor admits it.
        let mut his = vec![f64::NAN; n];
        let best: Vec<Vec<u64>> = his
            .par_chunks_mut(CHUNK_ROWS)
            .enumerate()
            .map(|(c, his)| {
                let first = c * CHUNK_ROWS;
                let mut heap: BinaryHeap<Reverse<u64>> = BinaryHeap::with_capacity(k + 1);
                for (i, hi_out) in his.iter_mut().enumerate() {
                    let r = first + i;
                    let inv = inv[r];
                    if inv.is_nan() {
                        continue; // not live: never a candidate
                    }
                    let row = &self.rows[r];
                    let codes = &self.codes[r * self.dim..(r + 1) * self.dim];
                    let (lo, hi) = q.interval(dot_i8(&q.codes, codes), row);
                    let inv = inv as f64;
                    let err = if inv == 0.0 {
                        0.0 // a zero row scores exactly 0
                    } else {
                        grow * row.norm as f64 * inv
                    };
                    *hi_out = hi * inv + err;
                    let lo = ordered(lo * inv - err);
                    if heap.len() < k {
                        heap.push(Reverse(lo));
                    } else if heap.peek().is_some_and(|top| lo > top.0) {
                        heap.pop();
                        heap.push(Reverse(lo));
                    }
                }
                heap.into_iter().map(|r| r.0).collect()
            })
            .collect();
        let mut lows: Vec<u64> = best.into_iter().flatten().collect();
        if k == 0 || lows.is_empty() {
            return Vec::new();
        }
        // The k-th best lower bound (the worst of them when fewer rows are live).
        let nth = k.min(lows.len()) - 1;
        let (_, floor, _) = lows.select_nth_unstable_by(nth, |a, b| b.cmp(a));
        let floor = unordered(*floor);
        his.iter()
            .enumerate()
            .filter(|(_, &hi)| hi >= floor)
            .map(|(r, _)| r)
            .collect()
    }
}

/// Rows per task of a scan: a chunk's codes stay in L2 while its bounds are computed.
const CHUNK_ROWS: usize = 4096;

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
