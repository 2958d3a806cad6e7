//! The int8 scan tier of a matrix, and the certified candidates of a top-k under any
//! metric the backends score as `dot · scale + bias` (see [`crate::metric`]).
//!
//! A certified search scans the tier, gets for every row an interval that provably holds
//! the score the f32 scan would compute for it, and keeps only the rows whose upper bound
//! reaches the `k`-th best lower bound: every other row scores strictly below `k` kept
//! rows in the f32 scan, so it is in no top-k of it, ties included. Re-scoring the kept
//! rows with the f32 kernels (the CPU backend's gather path, which computes each row's
//! score exactly as the full scan does) then gives the full scan's answer, bit for bit.

pub(crate) use super::int8::TierBounds;
use super::int8::{dot_i8, quantise, Int8Query};
use super::sieve::{Floors, Pairs, Rows, ScanBounds, Sieve, CHUNK_ROWS};
use rayon::prelude::*;

/// Every row of a matrix as int8 codes with its bounds ([`quantise`]), in memory.
#[derive(Clone, Debug)]
pub(crate) struct Int8Tier {
    dim: usize,
    codes: crate::mem::LineCodes,
    bounds: Vec<TierBounds>,
}

impl Int8Tier {
    /// Quantises every row of `data` (row-major, `dim` values a row, all finite), on all
    /// cores.
    pub(crate) fn build(data: &[f32], dim: usize) -> Self {
        let dim = dim.max(1);
        // On huge pages, as the corpora are, and on cache lines: the scan streams them.
        let mut codes = crate::mem::LineCodes::zeroed(data.len() / dim * dim);
        let bounds = codes
            .as_mut_slice()
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
        let mut codes = crate::mem::LineCodes::zeroed(rows * dim);
        let bounds = codes
            .as_mut_slice()
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
            codes: self.codes.as_slice(),
            bounds: &self.bounds,
        }
    }

    /// Bytes the tier holds: the codes and each row's bounds.
    pub(crate) fn bytes(&self) -> usize {
        self.codes.as_slice().len() + std::mem::size_of_val(self.bounds.as_slice())
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

    /// The tier of rows `range` alone.
    pub(crate) fn rows_range(&self, range: std::ops::Range<usize>) -> Self {
        Self {
            dim: self.dim,
            codes: &self.codes[range.start * self.dim..range.end * self.dim],
            bounds: &self.bounds[range],
        }
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
        level: super::ScanLevel,
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
        let pairs = Pairs {
            tier: self.as_rows(),
            qs: &qs,
            bounds: &bounds,
            metric: (scale, bias),
        };
        #[cfg(target_arch = "x86_64")]
        {
            use super::{batch, few, ScanLevel};
            let few_queries = nq <= few::MAX_QUERIES && dim <= batch::MAX_DIM;
            if level == ScanLevel::Avx512Vnni && batch::available(dim) {
                return if few_queries {
                    few::candidates(&pairs, k, few::Isa::Avx512Vnni)
                } else {
                    batch::candidates(&pairs, k)
                };
            }
            if level != ScanLevel::Portable && few_queries && std::is_x86_feature_detected!("avx2")
            {
                return few::candidates(&pairs, k, few::Isa::Avx2);
            }
        }
        let _ = level;
        scan_each(&pairs, k)
    }

    /// The codes, row-major (`dim` a row).
    pub(crate) fn codes(&self) -> &'a [i8] {
        self.codes
    }

    /// Each row's bounds as the device keeps them: four f32 a row (scale, residual bound,
    /// norm bound, coded-norm bound).
    pub(crate) fn bounds_f32(&self) -> Vec<f32> {
        self.bounds
            .iter()
            .flat_map(|b| [b.q.scale, b.q.residual, b.q.norm, b.q.coded_norm])
            .collect()
    }

    /// The interval [`candidates`](Self::candidates) proves for the f32 scan's score of
    /// `query` against row `r` under scale `s` and bias `b`: the oracle of other
    /// implementations of the bounds.
    #[cfg(test)]
    pub(crate) fn interval_of(&self, query: &[f32], r: usize, s: f32, b: f32) -> (f64, f64) {
        let q = [Int8Query::new(query)];
        let codes = &self.codes[r * self.dim..(r + 1) * self.dim];
        let dot = dot_i8(&q[0].codes, codes);
        ScanBounds::new(self.dim, &q).score(0, &q[0], dot, &self.bounds[r].q, s as f64, b as f64)
    }

    fn as_rows(&self) -> Rows<'a> {
        Rows {
            dim: self.dim,
            codes: self.codes,
            bounds: self.bounds,
        }
    }
}

/// The portable scan: per row, each query's int8 dot product and exact interval.
fn scan_each(pairs: &Pairs<'_>, k: usize) -> Vec<Vec<usize>> {
    let (dim, nq) = (pairs.tier.dim, pairs.qs.len());
    let n = pairs.tier.rows();
    let floors = Floors::new(nq);
    let chunks: Vec<Sieve> = (0..n.div_ceil(CHUNK_ROWS))
        .into_par_iter()
        .map(|c| {
            let rows = c * CHUNK_ROWS..((c + 1) * CHUNK_ROWS).min(n);
            let mut sieve = Sieve::new(nq, k, &floors);
            for r in rows {
                if pairs.metric.0[r].is_nan() {
                    continue; // not live: never a candidate
                }
                let codes = &pairs.tier.codes[r * dim..(r + 1) * dim];
                for (j, q) in pairs.qs.iter().enumerate() {
                    pairs.offer(j, r, dot_i8(&q.codes, codes), &mut sieve);
                }
            }
            sieve
        })
        .collect();
    Sieve::merge(chunks, nq, k)
}

#[cfg(test)]
mod tests;
