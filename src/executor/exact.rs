//! Exact top-k for inner product and L2: f32 candidates, an f64 re-score, and a
//! certificate that no row left out could beat the answer.
//!
//! The backends rank rows by `q·c − ‖c‖²/2` for L2 and by `q̂·c` for inner product, where
//! `q̂ = q/‖q‖` has the same ranking. Both are f32 dot products. Each approximate score
//! `a` is within `ε` of its exact value. `ε` is the worst-case bound of an f32 dot
//! product over `D` terms, `(D + 8)·u·(‖q‖·M + M²/2)` (`u = 2⁻²⁴`, `M` the largest row
//! norm), and it holds whatever order a kernel sums in.
//!
//! L2's expanded form cancels: for rows `1e-4` apart, the error is far larger than the
//! distances between them. So the backend returns `k' > k` candidates, and each one is
//! re-scored in f64, L2 as the direct difference `Σ (q − c)²`. The `k` best of them are
//! the answer only if the `k`-th best exact score is above `a_min + ε`, where `a_min` is
//! the worst candidate's approximate score. Every row left out has `a ≤ a_min`, so its
//! exact score is at most `a_min + ε`. A query whose certificate fails is searched again
//! with four times the candidates. At `k' = N` (every live row a candidate) the answer is
//! exact by construction, so the loop ends. Well-spread data certifies on the first pass.
//! Clusters of near-duplicates and exact ties need more candidates.

use super::filter::{self, Allowed, FilterPlan, Source};
use super::{ExecutionReport, HybridExecutor};
use crate::backend::Backend;
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::metric::{Metric, RowScoring};
use rayon::prelude::*;
use std::time::Instant;

/// f32's unit roundoff.
const U: f64 = 1.0 / (1u64 << 24) as f64;

/// The first candidate count for `k` hits among `n` rows: a margin past `k` so that the
/// boundary between kept and left out rarely falls inside a run of near-equal scores.
pub(super) fn first_candidates(k: usize, n: usize) -> usize {
    k.saturating_add(16 + k / 4).min(n)
}

/// The most candidates a query the accelerator selects in one call, where it has such a
/// limit and may serve the call.
#[derive(Clone, Copy, Debug)]
pub(super) struct DeviceLimit<'a> {
    /// The most candidates a query ([`Backend::max_k`]).
    pub(super) most: usize,
    /// Whether the device must serve ([`DevicePolicy::Cuda`](super::DevicePolicy::Cuda)):
    /// a round that needs more then fails, where otherwise the CPU serves it.
    pub(super) forced: bool,
    /// The device's name, for that error.
    pub(super) name: &'a str,
}

impl HybridExecutor {
    /// The accelerator's [`DeviceLimit`], unless the CPU is forced or nothing limits.
    pub(super) fn device_limit(&self) -> Option<DeviceLimit<'_>> {
        if self.policy == super::DevicePolicy::Cpu {
            return None;
        }
        let accel = self.accel.as_ref()?;
        Some(DeviceLimit {
            most: accel.max_k()?,
            forced: self.policy == super::DevicePolicy::Cuda,
            name: accel.name(),
        })
    }
}

/// `Σ a·b` in f64.
pub(super) fn dot64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            acc[l] += x[l] as f64 * y[l] as f64;
        }
    }
    let tail: f64 = ra.iter().zip(rb).map(|(&x, &y)| x as f64 * y as f64).sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// `Σ (a − b)²` in f64 (each difference is exact in f64).
pub(super) fn l2_64(a: &[f32], b: &[f32]) -> f64 {
    let mut acc = [0.0f64; 4];
    let (ca, cb) = (a.chunks_exact(4), b.chunks_exact(4));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..4 {
            let t = x[l] as f64 - y[l] as f64;
            acc[l] += t * t;
        }
    }
    let tail: f64 = ra
        .iter()
        .zip(rb)
        .map(|(&x, &y)| {
            let t = x as f64 - y as f64;
            t * t
        })
        .sum();
    (acc[0] + acc[1]) + (acc[2] + acc[3]) + tail
}

/// The largest magnitude L2 accepts for a query or row norm: squared distances then stay
/// below `4e36`, inside f32's range, and so do the expanded scores.
const L2_MAX_NORM: f64 = 1e18;

/// One query's candidates, re-scored and certified: its `k` hits, or `None` when a row
/// left out might beat them.
pub(super) fn certify(
    metric: Metric,
    query: &[f32],
    corpus: CorpusView<'_>,
    candidates: &[Hit],
    (asked, available): (usize, usize),
    k: usize,
    max_norm: f64,
) -> Result<Option<Vec<Hit>>> {
    let d = query.len();
    let qn2 = dot64(query, query);
    let qn = qn2.sqrt();
    // Exact values: the reported score and, in the approximate score's units, its rank
    // score.
    let mut wide = Vec::new();
    let mut exact: Vec<(f64, f64, usize)> = candidates
        .iter()
        .map(|h| {
            let row = corpus.rows_f32(h.index..h.index + 1, &mut wide);
            match metric {
                Metric::L2 => {
                    let dist = l2_64(query, row);
                    (dist, (qn2 - dist) / 2.0, h.index)
                }
                _ => {
                    let dot = dot64(query, row);
                    (dot, if qn > 0.0 { dot / qn } else { 0.0 }, h.index)
                }
            }
        })
        .collect();
    // Best first: the rank score, then the lower index. L2 sorts on the distance itself,
    // which keeps its precision where `‖q‖²` dwarfs it.
    match metric {
        Metric::L2 => exact.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.2.cmp(&b.2))),
        _ => exact.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.2.cmp(&b.2))),
    }
    // All live rows held, or a zero query, whose inner products are all exactly 0: the
    // candidates are then the lowest indices, as the ties order them.
    let complete = candidates.len() < asked
        || candidates.len() == available
        || (metric == Metric::InnerProduct && qn2 == 0.0);
    if !complete {
        let scale = match metric {
            Metric::L2 => qn * max_norm + max_norm * max_norm / 2.0,
            _ => max_norm,
        };
        let eps = ((d + 8) as f64 * U * scale + d as f64 * f32::MIN_POSITIVE as f64) * 1.01;
        let a_min = candidates
            .last()
            .map_or(f64::NEG_INFINITY, |h| h.score as f64);
        let kth = exact
            .get(k.saturating_sub(1))
            .map_or(f64::NEG_INFINITY, |e| e.1);
        if kth <= a_min + eps {
            return Ok(None);
        }
    }
    exact.truncate(k);
    exact
        .into_iter()
        .map(|(value, _, index)| {
            let score = value as f32;
            if score.is_finite() {
                Ok(Hit { index, score })
            } else {
                Err(Error::ScoreOutOfRange {
                    metric: metric.as_str(),
                    reason: format!("row {index} scores {value:e}"),
                })
            }
        })
        .collect::<Result<Vec<_>>>()
        .map(Some)
}

impl HybridExecutor {
    /// Exact top-k under `metric` for checked `queries` (finite, of the corpus's width)
    /// and `1 <= k <= corpus.rows()`, among the rows `allowed` (all when `None`). Cosine
    /// takes the backends' f32 ranking; inner product and L2 are re-scored and certified
    /// (see the module docs).
    pub(super) fn search_in(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        metric: Metric,
        start: Instant,
        allowed: Option<(&Allowed, FilterPlan)>,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let d = queries.cols();
        let mut owned = None;
        let scoring = scoring_of(corpus, metric, &mut owned);
        let view = scoring.map_or(corpus, |s| corpus.scored_by(metric, s));
        let mut mask = filter::MaskBuffers::default();
        let source = match allowed {
            None => Source::Scan {
                view,
                masked: false,
            },
            Some((a, choice)) => filter::plan(view, a, choice, &mut mask),
        };
        let available = source.available();
        let refuses = |b: &dyn Backend| refuses_metric(b, metric);
        let fetch = |_: &[usize], sub: MatrixRef<'_>, asked: usize| {
            super::check_top_k_memory(sub.rows(), d, asked, available)?;
            self.candidates(&source, sub, asked, start, &refuses)
        };
        let rounds = Rounds::new(queries, corpus, metric, scoring, k)?;
        let limit = self.device_limit();
        let (hits, mut report) = rounds.run(available, |_| available, limit, fetch)?;
        report.elapsed = start.elapsed();
        Ok((hits, report))
    }
}

/// The search-and-certify loop of a batch: each round asks a backend for `asked`
/// candidates of the queries still pending, certifies each (inner product, L2), and
/// searches the uncertified again with four times as many. Cosine takes the first
/// round's ranking.
pub(super) struct Rounds<'a> {
    /// The queries as given: the exact re-score reads them.
    queries: MatrixRef<'a>,
    /// What the backends see ([`approx_queries`]), row-major like `queries`.
    approx: Vec<f32>,
    /// The corpus the candidates index.
    corpus: CorpusView<'a>,
    /// The metric of the answer.
    metric: Metric,
    /// `metric`'s row factors; `None` for cosine.
    scoring: Option<&'a RowScoring>,
    /// Hits per query.
    k: usize,
}

impl<'a> Rounds<'a> {
    /// The loop for `k` hits of each of `queries` under `metric` (with its `scoring`,
    /// from [`scoring_of`]); fails where L2's norms are out of range.
    pub(super) fn new(
        queries: MatrixRef<'a>,
        corpus: CorpusView<'a>,
        metric: Metric,
        scoring: Option<&'a RowScoring>,
        k: usize,
    ) -> Result<Self> {
        Ok(Self {
            queries,
            approx: approx_queries(queries, metric, scoring)?,
            corpus,
            metric,
            scoring,
            k,
        })
    }

    /// Runs the loop. `cap` bounds the candidates asked of any query; `available(i)` is
    /// how many rows query `i` may get. `fetch(pending, sub, asked)` returns the best
    /// `asked` candidates of each query `pending[j]`, whose backend query is row `j` of
    /// `sub`. The report's passes add up over the rounds. The first round asks at most
    /// what the device selects (`limit`; but never fewer than `k`), so a `k` the device
    /// serves is served there; a later round that needs more runs on the CPU, or fails
    /// when the device is forced.
    pub(super) fn run(
        &self,
        cap: usize,
        available: impl Fn(usize) -> usize + Sync,
        limit: Option<DeviceLimit<'_>>,
        mut fetch: impl FnMut(
            &[usize],
            MatrixRef<'_>,
            usize,
        ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)>,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let (q, d) = (self.queries.rows(), self.queries.cols());
        let mut hits: Vec<Vec<Hit>> = vec![Vec::new(); q];
        let mut pending: Vec<usize> = (0..q).collect();
        let mut asked = match self.scoring {
            Some(_) => first_candidates(self.k, cap),
            None => self.k.min(cap),
        };
        if let Some(limit) = limit {
            asked = asked.min(limit.most.max(self.k));
        }
        // What the last round asked (for the error past the device's limit).
        let mut previous = asked;
        let mut report: Option<ExecutionReport> = None;
        while !pending.is_empty() {
            let gathered: Vec<f32>;
            let sub = if pending.len() == q {
                MatrixRef::new(&self.approx, q, d)?
            } else {
                gathered = pending
                    .iter()
                    .flat_map(|&i| self.approx[i * d..(i + 1) * d].iter().copied())
                    .collect();
                MatrixRef::new(&gathered, pending.len(), d)?
            };
            if let Some(limit) = limit.filter(|l| l.forced && asked > l.most.max(self.k)) {
                // The first round asked exactly `k` only when the device's limit held
                // it there; the certificate needs a candidate past the k-th.
                let why = if previous <= self.k {
                    "at least one past the k-th"
                } else {
                    "ties or near-ties at the k-th score"
                };
                return Err(Error::BackendFailed {
                    backend: limit.name.to_string(),
                    reason: format!(
                        "the exact {} top-{} of {} of the queries needs more than {} \
                         candidates a query to certify ({why}), past the {} the device \
                         selects; DevicePolicy::Auto finishes such queries on the CPU",
                        self.metric,
                        self.k,
                        pending.len(),
                        previous,
                        limit.most
                    ),
                });
            }
            let (candidates, rep) = fetch(&pending, sub, asked)?;
            if candidates.len() != pending.len() {
                return Err(Error::ChunkResultMismatch {
                    chunk: 0,
                    expected: pending.len(),
                    got: candidates.len(),
                });
            }
            match &mut report {
                // Each search again is more passes over the corpus.
                Some(first) => first.corpus_passes += rep.corpus_passes,
                None => report = Some(rep),
            }
            let Some(scoring) = self.scoring else {
                // Cosine: the backends' ranking is the answer.
                for (&i, c) in pending.iter().zip(candidates) {
                    hits[i] = c;
                }
                break;
            };
            let done: Vec<Option<Vec<Hit>>> = pending
                .par_iter()
                .zip(&candidates)
                .map(|(&i, cands)| {
                    certify(
                        self.metric,
                        self.queries.row(i),
                        self.corpus,
                        cands,
                        (asked, available(i)),
                        self.k,
                        scoring.max_norm,
                    )
                })
                .collect::<Result<_>>()?;
            let mut again = Vec::new();
            for (&i, result) in pending.iter().zip(done) {
                match result {
                    Some(h) => hits[i] = h,
                    None => again.push(i),
                }
            }
            if !again.is_empty() {
                tracing::debug!(
                    queries = again.len(),
                    candidates = asked,
                    "{} candidates not certified; searching again with more",
                    self.metric
                );
            }
            pending = again;
            previous = asked;
            asked = asked.saturating_mul(4).min(cap);
        }
        let report = report.ok_or(Error::EmptyInput { what: "no queries" })?;
        Ok((hits, report))
    }
}

/// The factors of `metric` over `corpus`: cached with a [`Corpus`](crate::Corpus), else
/// computed into `owned`; `None` for cosine.
pub(super) fn scoring_of<'a>(
    corpus: CorpusView<'a>,
    metric: Metric,
    owned: &'a mut Option<RowScoring>,
) -> Option<&'a RowScoring> {
    match corpus.scoring_cache() {
        Some(cache) => cache.get(metric, corpus.inv_norms()),
        None => {
            *owned = RowScoring::new(metric, corpus.inv_norms());
            owned.as_ref()
        }
    }
}

/// The queries the backends see: as given for L2 (checked against its range),
/// unit-norm for cosine and inner product (the same ranking, and no overflow).
fn approx_queries(
    queries: MatrixRef<'_>,
    metric: Metric,
    scoring: Option<&RowScoring>,
) -> Result<Vec<f32>> {
    let mut approx = queries.as_slice().to_vec();
    match scoring {
        Some(s) if metric == Metric::L2 => check_l2_range(queries, s.max_norm)?,
        _ => approx
            .chunks_exact_mut(queries.cols().max(1))
            .for_each(crate::matrix::normalize),
    }
    Ok(approx)
}

/// Why backend `b` cannot score `metric`, or `None` when it can.
pub(super) fn refuses_metric(b: &dyn Backend, metric: Metric) -> Option<String> {
    (!b.supports_metric(metric))
        .then(|| format!("{} does not score the {metric} metric yet", b.name()))
}

/// L2 scores in f32 only where norms stay below [`L2_MAX_NORM`].
fn check_l2_range(queries: MatrixRef<'_>, max_norm: f64) -> Result<()> {
    if max_norm > L2_MAX_NORM {
        return Err(Error::ScoreOutOfRange {
            metric: "l2",
            reason: format!(
                "a corpus row has norm {max_norm:e}; L2 takes norms up to {L2_MAX_NORM:e}"
            ),
        });
    }
    for i in 0..queries.rows() {
        let norm = dot64(queries.row(i), queries.row(i)).sqrt();
        if norm > L2_MAX_NORM {
            return Err(Error::ScoreOutOfRange {
                metric: "l2",
                reason: format!(
                    "query {i} has norm {norm:e}; L2 takes norms up to {L2_MAX_NORM:e}"
                ),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f64_sums_match_a_plain_loop_at_every_tail_length() {
        for len in 0..13 {
            let a: Vec<f32> = (0..len).map(|i| i as f32 * 0.37 - 1.0).collect();
            let b: Vec<f32> = (0..len).map(|i| 2.0 - i as f32 * 0.11).collect();
            let dot: f64 = a.iter().zip(&b).map(|(&x, &y)| x as f64 * y as f64).sum();
            let l2: f64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
                .sum();
            assert!(
                (dot64(&a, &b) - dot).abs() <= 1e-12 * (1.0 + dot.abs()),
                "{len}"
            );
            assert!((l2_64(&a, &b) - l2).abs() <= 1e-12 * (1.0 + l2), "{len}");
        }
    }

    #[test]
    fn candidates_keep_a_margin_and_never_pass_the_corpus() {
        assert_eq!(first_candidates(10, 1_000_000), 28);
        assert_eq!(first_candidates(10, 20), 20);
        assert_eq!(first_candidates(usize::MAX, 5), 5);
    }
}
