//! Filtered search: an allow-list of rows for the whole batch or for each query, and the
//! plan that searches it.
//!
//! How selective the filter is decides the plan:
//! * **Gather**: the filter allows at most [`GATHER_MAX_FRACTION`] of the rows. The CPU
//!   reads only the allowed rows, by index ([`Backend::top_k_rows`]). Each thread copies
//!   a block of them into a buffer that stays in cache and scores it with the kernels of
//!   an unfiltered search. The cost follows the allowed count, not `N`.
//! * **Mask**: the filter allows more. The whole corpus is scanned with the kernels of
//!   an unfiltered search. Each row's factor is NaN where the filter leaves the row out,
//!   and no selection takes a NaN.
//!
//! Both plans give the same answers; `tests/search_filters.rs` checks it at every
//! selectivity. Rows deleted from a store are never returned either way: their factor is
//! NaN already, and their live bit clear.
//!
//! On the CUDA backend both plans are a masked scan: the host ANDs the allow-list with
//! the store's live mask into one bit per row, and the kernels skip the rows it clears. A
//! device streams the whole corpus faster than it could gather rows by index, so there
//! cost follows `N` either way. Per-query filters: see `per_query.rs`.

use super::{ExecutionReport, HybridExecutor, Op};
use crate::backend::Backend;
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use rayon::prelude::*;
use std::time::Instant;

/// The largest share of the rows a filter may allow for the gather plan (see the module
/// docs). Measured at 1 × 1M × 768, k = 10, 2 cores: gather against mask 82 against 169 ms
/// at 20 %, 124 against 155 at 35 %, 195 against 190 at 50 %.
pub(super) const GATHER_MAX_FRACTION: f64 = 0.4;

/// How a filtered search reads the corpus (see [`Filter`]); `Auto` chooses by how many
/// rows the filter allows.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FilterPlan {
    /// Gather when the filter allows at most 40 % of the rows, mask otherwise.
    #[default]
    Auto,
    /// Read only the allowed rows, by index: cost follows the allowed count.
    Gather,
    /// Scan the whole corpus, with the rows the filter leaves out masked: cost follows
    /// the corpus.
    Mask,
}

/// Which rows a search may return.
///
/// ```
/// use hybridvec::{Corpus, ExecutorConfig, Filter, HybridExecutor, MatrixRef, SearchOptions};
///
/// let corpus = Corpus::new(vec![1.0, 0.0,   0.9, 0.1,   0.0, 1.0], 2)?;
/// let exec = HybridExecutor::new(ExecutorConfig::default())?;
/// let q = [1.0, 0.0,   0.0, 1.0];
/// // One allow-list per query: the first may only return rows 1 and 2, the second row 0.
/// let options = SearchOptions::default().with_filter(Filter::PerQuery(vec![
///     Filter::Rows(vec![1, 2]),
///     Filter::Rows(vec![0]),
/// ]));
/// let hits = exec.search(MatrixRef::new(&q, 2, 2)?, &corpus, 2, &options)?;
/// assert_eq!(hits[0].iter().map(|h| h.index).collect::<Vec<_>>(), [1, 2]);
/// assert_eq!(hits[1].iter().map(|h| h.index).collect::<Vec<_>>(), [0]);
/// # Ok::<(), hybridvec::Error>(())
/// ```
///
/// Rules:
/// * An allow-list with no rows gives empty results, not an error.
/// * `k` larger than the allowed set returns every allowed row.
/// * A row past the corpus is [`Error::FilterOutOfRange`].
/// * An id that is not in the store (never put, or deleted) is [`Error::UnknownId`].
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Filter {
    /// A bitmap of allowed rows: bit `i % 64` of word `i / 64` allows row `i`. It may be
    /// shorter than the corpus, and rows past it are then left out. A set bit past the
    /// corpus is [`Error::FilterOutOfRange`].
    Bitmap(Vec<u64>),
    /// The allowed row indices, in any order; duplicates count once.
    Rows(Vec<usize>),
    /// The allowed record ids, for a store search
    /// ([`HybridExecutor::search_store`]); on a bare corpus it is
    /// [`Error::InvalidConfig`].
    Ids(Vec<String>),
    /// One allow-list per query, in query order. There must be as many as there are
    /// queries, and none may be `PerQuery` itself.
    PerQuery(Vec<Filter>),
}

impl Filter {
    /// `Filter::Ids` resolved to rows with `row_of` (inside `PerQuery` too). An id it
    /// does not know is [`Error::UnknownId`].
    pub(super) fn resolve_ids(&self, row_of: &dyn Fn(&str) -> Option<usize>) -> Result<Filter> {
        Ok(match self {
            Filter::Ids(ids) => Filter::Rows(
                ids.iter()
                    .map(|id| row_of(id).ok_or_else(|| Error::UnknownId { id: id.clone() }))
                    .collect::<Result<_>>()?,
            ),
            Filter::PerQuery(fs) => Filter::PerQuery(
                fs.iter()
                    .map(|f| f.resolve_ids(row_of))
                    .collect::<Result<_>>()?,
            ),
            other => other.clone(),
        })
    }
}

/// An allow-list resolved against a view of `n` rows: the allowed rows, ascending.
pub(super) struct Allowed(Vec<usize>);

impl Allowed {
    /// Whether no row is allowed.
    pub(super) fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The allowed rows, ascending.
    pub(super) fn rows(&self) -> &[usize] {
        &self.0
    }

    /// Whether `choice` gathers these rows out of `n` (see [`FilterPlan::Auto`]).
    pub(super) fn gathers(&self, choice: FilterPlan, n: usize) -> bool {
        match choice {
            FilterPlan::Auto => (self.0.len() as f64) <= GATHER_MAX_FRACTION * n as f64,
            FilterPlan::Gather => true,
            FilterPlan::Mask => false,
        }
    }
}

impl Allowed {
    /// Resolves one (not per-query) filter against `n` rows.
    fn new(filter: &Filter, n: usize) -> Result<Allowed> {
        let mut rows = match filter {
            Filter::Rows(rows) => {
                if let Some(&index) = rows.iter().find(|&&r| r >= n) {
                    return Err(Error::FilterOutOfRange { index, rows: n });
                }
                let mut rows = rows.clone();
                rows.par_sort_unstable();
                rows.dedup();
                rows
            }
            Filter::Bitmap(words) => {
                let mut rows = Vec::new();
                for (w, &word) in words.iter().enumerate() {
                    let mut bits = word;
                    while bits != 0 {
                        let index = w * 64 + bits.trailing_zeros() as usize;
                        if index >= n {
                            return Err(Error::FilterOutOfRange { index, rows: n });
                        }
                        rows.push(index);
                        bits &= bits - 1;
                    }
                }
                rows
            }
            Filter::Ids(_) => {
                return Err(Error::InvalidConfig(
                    "a filter by ids needs a store: use search_store, or filter by rows".into(),
                ))
            }
            Filter::PerQuery(_) => {
                return Err(Error::InvalidConfig(
                    "a per-query filter cannot hold another per-query filter".into(),
                ))
            }
        };
        rows.shrink_to_fit();
        Ok(Allowed(rows))
    }
}

/// A filter resolved for a batch of `q` queries against `n` rows: one allow-list for the
/// whole batch, or one per query.
pub(super) fn resolve(filter: &Filter, q: usize, n: usize) -> Result<Vec<Allowed>> {
    match filter {
        Filter::PerQuery(fs) => {
            if fs.len() != q {
                return Err(Error::InvalidConfig(format!(
                    "{} per-query filters for {q} queries",
                    fs.len()
                )));
            }
            fs.iter().map(|f| Allowed::new(f, n)).collect()
        }
        one => Ok(vec![Allowed::new(one, n)?]),
    }
}

/// Where a search's candidates come from.
pub(super) enum Source<'a> {
    /// Every row of this view (one whose factors are NaN scores nothing).
    Scan {
        /// The scored view.
        view: CorpusView<'a>,
        /// Whether a filter masks rows out of it: only backends that serve filters
        /// ([`Backend::serves_filters`]) may see it.
        masked: bool,
    },
    /// Only these rows (ascending) of the scored `view`, copied a chunk at a time.
    Gather {
        view: CorpusView<'a>,
        rows: &'a [usize],
    },
}

impl Source<'_> {
    /// How many rows could be returned (live or not).
    pub(super) fn available(&self) -> usize {
        match self {
            Source::Scan { view, .. } => view.rows(),
            Source::Gather { rows, .. } => rows.len(),
        }
    }
}

/// Why backend `b` cannot serve a filtered search, or `None` when it can.
pub(super) fn refuses_filter(b: &dyn Backend) -> Option<String> {
    (!b.serves_filters()).then(|| format!("{} does not serve filtered search", b.name()))
}

/// The mask plan's factors and live bits, owned by the caller of [`plan`].
#[derive(Default)]
pub(super) struct MaskBuffers {
    scale: Vec<f32>,
    live: Vec<u32>,
}

/// The plan for `allowed` over the scored `view`; the mask plan writes its factors and
/// live bits to `mask`.
pub(super) fn plan<'a>(
    view: CorpusView<'a>,
    allowed: &'a Allowed,
    choice: FilterPlan,
    mask: &'a mut MaskBuffers,
) -> Source<'a> {
    let n = view.rows();
    if allowed.gathers(choice, n) {
        return Source::Gather {
            view,
            rows: &allowed.0,
        };
    }
    let MaskBuffers { scale, live } = mask;
    scale.clear();
    scale.resize(n, f32::NAN);
    live.clear();
    live.resize(n.div_ceil(32), 0);
    let factors = view.inv_norms();
    let was_live = |r: usize| {
        view.live_mask()
            .is_none_or(|l| l[r / 32] >> (r % 32) & 1 == 1)
    };
    for &r in &allowed.0 {
        scale[r] = factors[r];
        if was_live(r) {
            live[r / 32] |= 1 << (r % 32);
        }
    }
    Source::Scan {
        view: view.masked(scale, live),
        masked: true,
    }
}

impl HybridExecutor {
    /// The `asked` best candidates per query from `source` (global row indices, the
    /// backends' scores: higher is better), for `queries` as the backends take them.
    pub(super) fn candidates(
        &self,
        source: &Source<'_>,
        queries: MatrixRef<'_>,
        asked: usize,
        start: Instant,
        refuses: &dyn Fn(&dyn Backend) -> Option<String>,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        match *source {
            Source::Scan { view, masked } => self.run_where(
                Op::top_k(view.metric()),
                queries,
                view.rows(),
                start,
                |b| refuses(b).or_else(|| if masked { refuses_filter(b) } else { None }),
                |b, part| b.top_k(part, view, asked.min(view.rows())),
            ),
            Source::Gather { view, rows } => {
                self.gather(view, rows, queries, asked, start, refuses)
            }
        }
    }

    /// [`candidates`](Self::candidates) for the gather plan: the CPU reads the allowed
    /// rows by index; a device scans the corpus with the other rows masked out.
    fn gather(
        &self,
        view: CorpusView<'_>,
        rows: &[usize],
        queries: MatrixRef<'_>,
        asked: usize,
        start: Instant,
        refuses: &dyn Fn(&dyn Backend) -> Option<String>,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let k = asked.min(rows.len());
        self.run_where(
            Op::top_k(view.metric()),
            queries,
            rows.len(),
            start,
            |b| refuses(b).or_else(|| refuses_filter(b)),
            |b, q| b.top_k_rows(q, view, rows, k),
        )
    }
}
