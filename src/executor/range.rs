//! Range search: every row within a threshold, best first, up to a limit.
//!
//! It runs on top of exact top-k, so it keeps top-k's exactness and filters. Each query
//! starts with a few candidates ([`FIRST_ROUND`], or `limit + 1` if smaller). A query
//! whose candidates all pass the threshold may have more rows that pass, so it is
//! searched again with eight times as many. The loop ends at `limit + 1` candidates or
//! at the whole corpus. A threshold that admits a few rows per query therefore costs
//! about one top-k of that size. A threshold that admits most of the corpus costs a few
//! top-k passes, ending in one that selects `limit + 1` rows.

use super::{ExecutionReport, HybridExecutor, SearchOptions};
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::metric::Metric;

/// Candidates per query in the first round.
const FIRST_ROUND: usize = 32;

/// One query's rows within the threshold.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RangeResult {
    /// The rows, best first (ties: lower index first), at most the limit.
    pub hits: Vec<Hit>,
    /// Whether more rows were within the threshold than the limit let through.
    pub truncated: bool,
}

/// Whether a hit's reported score is within `threshold` under `metric`.
fn within(metric: Metric, score: f32, threshold: f32) -> bool {
    if metric.higher_is_better() {
        score >= threshold
    } else {
        score <= threshold
    }
}

impl HybridExecutor {
    /// For each query, every corpus row scoring at least `threshold` (cosine, inner
    /// product) or at a squared L2 distance of at most `threshold`, best first, at most
    /// `limit` of them. Each result says whether `limit` cut it. `options` gives the
    /// metric and an optional filter, as for [`search`](Self::search). Scores are
    /// compared as reported: inner product and L2 exactly, cosine in f32.
    ///
    /// ```
    /// use hybridvec::{Corpus, ExecutorConfig, HybridExecutor, MatrixRef, Metric, SearchOptions};
    ///
    /// let corpus = Corpus::new(vec![0.0, 0.0,   3.0, 4.0,   1.0, 1.0,   0.5, 0.0], 2)?;
    /// let exec = HybridExecutor::new(ExecutorConfig::default())?;
    /// let q = [0.0, 0.0];
    /// let l2 = SearchOptions::new(Metric::L2);
    /// let r = exec.range(MatrixRef::new(&q, 1, 2)?, &corpus, 2.0, 10, &l2)?;
    /// assert_eq!(r[0].hits.iter().map(|h| h.index).collect::<Vec<_>>(), [0, 3, 2]);
    /// assert!(!r[0].truncated);
    /// let r = exec.range(MatrixRef::new(&q, 1, 2)?, &corpus, 2.0, 2, &l2)?;
    /// assert_eq!((r[0].hits.len(), r[0].truncated), (2, true));
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    ///
    /// Errors: those of [`search`](Self::search); [`Error::InvalidConfig`] for a NaN
    /// threshold or a `limit` of 0.
    pub fn range<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        threshold: f32,
        limit: usize,
        options: &SearchOptions,
    ) -> Result<Vec<RangeResult>> {
        self.range_with_report(queries, corpus, threshold, limit, options)
            .map(|(r, _)| r)
    }

    /// [`range`](Self::range), with the [`ExecutionReport`] of its first round, whose
    /// `corpus_passes` counts every round's passes.
    pub fn range_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        threshold: f32,
        limit: usize,
        options: &SearchOptions,
    ) -> Result<(Vec<RangeResult>, ExecutionReport)> {
        let start = std::time::Instant::now();
        let corpus = corpus.into();
        if threshold.is_nan() {
            return Err(Error::InvalidConfig("range threshold is NaN".into()));
        }
        if limit == 0 {
            return Err(Error::InvalidConfig(
                "range limit must be at least 1".into(),
            ));
        }
        let (q, d, n) = (queries.rows(), queries.cols(), corpus.rows());
        if let Some(super::Filter::PerQuery(fs)) = &options.filter {
            if fs.len() != q {
                return Err(Error::InvalidConfig(format!(
                    "{} per-query filters for {q} queries",
                    fs.len()
                )));
            }
        }
        let most = limit.saturating_add(1).min(n);
        let mut out = vec![RangeResult::default(); q];
        let mut pending: Vec<usize> = (0..q).collect();
        let mut asked = FIRST_ROUND.min(most);
        let mut report: Option<ExecutionReport> = None;
        while !pending.is_empty() {
            let sub: Vec<f32> = pending
                .iter()
                .flat_map(|&i| queries.row(i).iter().copied())
                .collect();
            let sub = MatrixRef::new(&sub, pending.len(), d)?;
            let (hits, rep) =
                self.search_with_report(sub, corpus, asked, &subset(options, &pending))?;
            match &mut report {
                Some(first) => first.corpus_passes += rep.corpus_passes,
                None => report = Some(rep),
            }
            let mut again = Vec::new();
            for (&i, mut hs) in pending.iter().zip(hits) {
                let passed = hs
                    .iter()
                    .take_while(|h| within(options.metric, h.score, threshold))
                    .count();
                if passed == asked && asked < most {
                    again.push(i);
                    continue;
                }
                hs.truncate(passed);
                let truncated = passed > limit;
                hs.truncate(limit);
                out[i] = RangeResult {
                    hits: hs,
                    truncated,
                };
            }
            pending = again;
            asked = asked.saturating_mul(8).min(most);
        }
        let mut report = report.unwrap_or_else(ExecutionReport::nothing_run);
        report.elapsed = start.elapsed();
        Ok((out, report))
    }
}

/// `options` for the queries `idx` of the batch: per-query filters keep theirs.
fn subset(options: &SearchOptions, idx: &[usize]) -> SearchOptions {
    match &options.filter {
        Some(super::Filter::PerQuery(fs)) => SearchOptions {
            filter: Some(super::Filter::PerQuery(
                idx.iter().filter_map(|&i| fs.get(i).cloned()).collect(),
            )),
            ..options.clone()
        },
        _ => options.clone(),
    }
}
