//! Certified top-k over a corpus's int8 tier: the candidates the tier proves may be in
//! the top-k (see [`crate::quant::tier`]), re-scored in place by the streaming kernels, so
//! each score is the full scan's, bit for bit, and so is the answer. Any metric: the view
//! scores `dot · scale + bias` (cosine, inner product, L2; see [`crate::metric`]), and the
//! executor's exact step for inner product and L2 then sees what the full scan gives.

use super::CpuBackend;
use crate::corpus::CorpusView;
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::quant::{note_rescored, ScanLevel, CERTIFIED_MAX_QUERIES, FEW_MAX_QUERIES};
use rayon::prelude::*;

impl CpuBackend {
    /// The top `k` of `queries` through the corpus's int8 tier, or `None` when the call is
    /// not one the certificate serves: the caller then scans in full. With AVX-512 VNNI
    /// (and `HYBRIDVEC_SIMD` not capping below AVX-512) it serves every batch: at 1M × 768
    /// on 2 cores, Q = 5 took 37 ms through the tier against 96 for the f32 scan, Q = 12
    /// 76 against 140, Q = 23 162 against 199 and Q = 64 296 against 469. At the AVX2
    /// level it serves up to [`FEW_MAX_QUERIES`] (capped to AVX2 on the same machine: Q = 4
    /// 35 against 121 ms, Q = 8 72 against 189, Q = 12 111 against 232, Q = 16 141 against
    /// 155, Q = 23 223 against 266). Elsewhere it serves up to [`CERTIFIED_MAX_QUERIES`]
    /// queries (the portable per-query scan, compute-bound past that).
    pub(super) fn certified_top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Option<Vec<Vec<Hit>>> {
        let tier = corpus.int8_tier()?;
        let q = queries.rows();
        let tiled = self.use_gemm(q);
        let level = self.scan_level(corpus.dim());
        if q == 0
            || (q > CERTIFIED_MAX_QUERIES && level == ScanLevel::Portable)
            || (q > FEW_MAX_QUERIES && level == ScanLevel::Avx2)
            || tier.rows() != corpus.rows()
            || k == 0
        {
            return None;
        }
        let (inv, bias) = (corpus.inv_norms(), corpus.row_bias());
        let candidates = self
            .pool
            .install(|| tier.candidates(queries.as_slice(), inv, bias, k, level));
        if tiled {
            return Some(self.rescore_tiled(queries, corpus, k, candidates));
        }
        let rows = union(&candidates);
        note_rescored(rows.len());
        // Runs of consecutive candidates, each scored in place: the rows keep the
        // addresses (and so the alignment) the full scan reads them at.
        let runs: Vec<(usize, usize)> = rows
            .chunk_by(|a, b| a + 1 == *b)
            .map(|run| (run[0], run[0] + run.len()))
            .collect();
        corpus.will_need_rows(&runs);
        let scored: Vec<Vec<f32>> = self.pool.install(|| {
            runs.par_iter()
                .map(|&(start, end)| {
                    let mut out = vec![0.0f32; q * (end - start)];
                    corpus.scaled_dots(
                        self.level,
                        start..end,
                        queries.as_slice(),
                        &inv[start..end],
                        &mut out,
                    );
                    if let Some(bias) = bias {
                        super::topk::add_bias_columns(&mut out, &bias[start..end]);
                    }
                    out
                })
                .collect()
        });
        Some(
            (0..q)
                .map(|i| {
                    let mut hits: Vec<Hit> = runs
                        .iter()
                        .zip(&scored)
                        .flat_map(|(&(start, end), out)| {
                            let n = end - start;
                            out[i * n..(i + 1) * n]
                                .iter()
                                .enumerate()
                                .map(move |(j, &s)| Hit {
                                    index: start + j,
                                    // -0 and +0 are one score, reported as +0 (as the
                                    // scan's selection does).
                                    score: s + 0.0,
                                })
                        })
                        .collect();
                    // Best first, ties to the lower index (live rows only: a masked-out
                    // row is never a candidate).
                    hits.sort_unstable_by(|a, b| {
                        b.score.total_cmp(&a.score).then(a.index.cmp(&b.index))
                    });
                    hits.truncate(k);
                    hits
                })
                .collect(),
        )
    }
}

impl CpuBackend {
    /// The int8 scan kernels this backend runs for rows of `dim` values: VNNI at the
    /// AVX-512 level (`HYBRIDVEC_SIMD` may cap it lower) on a CPU with it, AVX2 at either
    /// x86 level, else (and past `MAX_SCAN_DIM` values) the portable scan.
    fn scan_level(&self, dim: usize) -> ScanLevel {
        use crate::cpu::SimdLevel;
        match self.level {
            SimdLevel::Avx512 if crate::quant::batched_scan(dim) => ScanLevel::Avx512Vnni,
            SimdLevel::Avx512 | SimdLevel::Avx2Fma if dim <= crate::quant::MAX_SCAN_DIM => {
                ScanLevel::Avx2
            }
            _ => ScanLevel::Portable,
        }
    }

    /// Re-scores each query's `candidates` for a batch the score tiles serve, as the full
    /// scan does: each group of queries against the union of its candidates, gathered
    /// and scored by the same tile kernel. A tile's score of a query and a row depends on
    /// neither the other rows nor the other queries (one fused sum per pair, over the
    /// same depth blocks), so each query's scores of its candidates are the full scan's,
    /// bit for bit; rows in the union that are not its candidates score below its top
    /// `k` there as everywhere. Groups of 32 queries (one AVX-512 panel), all the queries
    /// in one group below 64 so every group packs as the full scan packs (a batch of 16
    /// or fewer takes the 16-wide kernel).
    fn rescore_tiled(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        candidates: Vec<Vec<usize>>,
    ) -> Vec<Vec<Hit>> {
        const GROUP: usize = 32;
        let q = queries.rows();
        let bounds: Vec<usize> = if q < 2 * GROUP {
            vec![0, q]
        } else {
            let mut b: Vec<usize> = (0..q / GROUP).map(|g| g * GROUP).collect();
            b.push(q); // the last group takes the remainder (32 to 63 queries)
            b
        };
        let mut rescored = 0;
        let mut hits = Vec::with_capacity(q);
        for w in bounds.windows(2) {
            let rows = union(&candidates[w[0]..w[1]]);
            rescored += rows.len();
            let part = queries.row_range(w[0]..w[1]);
            hits.extend(CpuBackend::top_k(self, part, corpus, k, Some(&rows)));
        }
        note_rescored(rescored);
        hits
    }
}

/// The rows of any of `lists`, ascending, each once.
fn union(lists: &[Vec<usize>]) -> Vec<usize> {
    let mut rows: Vec<usize> = lists.iter().flatten().copied().collect();
    rows.sort_unstable();
    rows.dedup();
    rows
}

#[cfg(test)]
mod tests;
