//! Per-query filters. The queries whose lists are gathered are searched together, in one
//! pass over the union of their lists ([`Backend::top_k_rows_per_query`]): a row two
//! queries allow is read once. The others (masked scans, empty lists) run one query at a
//! time, each with its own plan.

use super::exact::{self, scoring_of, Rounds};
use super::filter::{Allowed, FilterPlan};
use super::{ExecutionReport, HybridExecutor, Op};
use crate::backend::{Backend, BackendError};
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::metric::Metric;
use std::time::Instant;

/// Queries one pass may take: the CPU packs a query index in 24 bits.
const MAX_BATCHED: usize = 1 << 24;

impl HybridExecutor {
    /// Exact top-k for checked `queries` and `1 <= k <= corpus.rows()`, query `i` among
    /// the rows `allowed[i]`.
    pub(super) fn search_per_query(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        metric: Metric,
        start: Instant,
        (allowed, choice): (&[Allowed], FilterPlan),
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let n = corpus.rows();
        let mut hits = vec![Vec::new(); queries.rows()];
        let mut report: Option<ExecutionReport> = None;
        let add = |r: ExecutionReport, report: &mut Option<ExecutionReport>| match report {
            Some(first) => first.corpus_passes += r.corpus_passes,
            None => *report = Some(r),
        };
        let (together, alone): (Vec<usize>, Vec<usize>) = (0..queries.rows())
            .filter(|&i| !allowed[i].is_empty())
            .partition(|&i| allowed[i].gathers(choice, n) && queries.rows() < MAX_BATCHED);
        if !together.is_empty() {
            let sub: Vec<f32> = together
                .iter()
                .flat_map(|&i| queries.row(i).iter().copied())
                .collect();
            let sub = MatrixRef::new(&sub, together.len(), queries.cols())?;
            let lists: Vec<&[usize]> = together.iter().map(|&i| allowed[i].rows()).collect();
            let (found, r) = self.search_lists(sub, corpus, k, metric, start, &lists)?;
            for (&i, h) in together.iter().zip(found) {
                hits[i] = h;
            }
            add(r, &mut report);
        }
        for i in alone {
            let one = queries.row_range(i..i + 1);
            let plan = Some((&allowed[i], choice));
            let (mut h, r) = self.search_in(one, corpus, k, metric, start, plan)?;
            hits[i] = h.pop().unwrap_or_default();
            add(r, &mut report);
        }
        let mut report = report.unwrap_or_else(ExecutionReport::nothing_run);
        report.elapsed = start.elapsed();
        Ok((hits, report))
    }

    /// Query `i`'s exact top-k among `lists[i]` (none empty), all queries in each pass;
    /// inner product and L2 are certified as in `search_in`, a query that fails searched
    /// again with more candidates.
    fn search_lists(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        metric: Metric,
        start: Instant,
        lists: &[&[usize]],
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let mut owned = None;
        let scoring = scoring_of(corpus, metric, &mut owned);
        let view = scoring.map_or(corpus, |s| corpus.scored_by(metric, s));
        let longest = lists.iter().map(|l| l.len()).max().unwrap_or(0);
        let rounds = Rounds::new(queries, corpus, metric, scoring, k)?;
        let fetch = |pending: &[usize], sub: MatrixRef<'_>, asked: usize| {
            let sub_lists: Vec<&[usize]> = pending.iter().map(|&i| lists[i]).collect();
            self.candidates_per_query(view, sub, &sub_lists, asked, start)
        };
        let limit = self.device_limit();
        let (hits, mut report) = rounds.run(longest, |i| lists[i].len(), limit, fetch)?;
        report.elapsed = start.elapsed();
        Ok((hits, report))
    }

    /// The `asked` best candidates of each query among its list (backends' scores), on
    /// a backend that serves the metric and filters. Measured as a top-k over the
    /// average list.
    fn candidates_per_query(
        &self,
        view: CorpusView<'_>,
        queries: MatrixRef<'_>,
        lists: &[&[usize]],
        asked: usize,
        start: Instant,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let pairs: usize = lists.iter().map(|l| l.len()).sum();
        let rows = pairs.div_ceil(lists.len().max(1));
        let metric = view.metric();
        self.run_where(
            Op::top_k(metric),
            queries,
            rows,
            start,
            |b: &dyn Backend| {
                exact::refuses_metric(b, metric).or_else(|| super::filter::refuses_filter(b))
            },
            |b, part| {
                // A chunk of the batch (`run_where` passes sub-slices of `queries`) takes
                // its own queries' lists.
                let bytes = (part.as_slice().as_ptr() as usize)
                    .wrapping_sub(queries.as_slice().as_ptr() as usize);
                let first = bytes / (4 * queries.cols().max(1));
                let chunk = first.checked_add(part.rows()).map(|end| first..end);
                let lists = chunk.and_then(|c| lists.get(c)).ok_or_else(|| {
                    BackendError::Fatal(Error::InvalidConfig(
                        "a query chunk outside its batch".into(),
                    ))
                })?;
                b.top_k_rows_per_query(part, view, lists, asked)
            },
        )
    }
}
