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
        let bounds: Vec<Option<(f64, f64)>> = self
            .codes
            .par_chunks(self.dim.max(1))
            .zip(&self.rows)
            .zip(inv)
            .map(|((codes, row), &inv)| {
                if inv.is_nan() {
                    return None;
                }
                let (lo, hi) = q.interval(dot_i8(&q.codes, codes), row);
                let inv = inv as f64;
                let err = if inv == 0.0 {
                    0.0 // a zero row scores exactly 0
                } else {
                    grow * row.norm as f64 * inv
                };
                Some((lo * inv - err, hi * inv + err))
            })
            .collect();
        let mut lows: Vec<f64> = bounds.iter().flatten().map(|b| b.0).collect();
        if k == 0 || lows.is_empty() {
            return Vec::new();
        }
        // The k-th best lower bound (the worst of them when fewer rows are live).
        let nth = k.min(lows.len()) - 1;
        let (_, floor, _) = lows.select_nth_unstable_by(nth, |a, b| b.total_cmp(a));
        let floor = *floor;
        bounds
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_some_and(|(_, hi)| hi >= floor))
            .map(|(r, _)| r)
            .collect()
    }
}

#[cfg(test)]
mod tests;
