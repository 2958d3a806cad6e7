//! The executor: validates a call, picks a backend from one performance snapshot, runs
//! it (in chunks when the accelerator runs out of memory), falls back to the CPU when the
//! accelerator gives up, and reports what it did.
//!
//! This file holds the executor, its configuration and its public calls; `run` holds one
//! call's flow (dispatch, chunks, fallback, count checks), `report` what a call reports
//! and the per-backend counters, `policy` how `Auto` chooses, `tracker` the measurements
//! it chooses from, and `telemetry` the optional `metrics` feed. The executor sits on top:
//! it sees the backends only through the [`Backend`] trait, and nothing below it knows it.

mod exact;
mod filter;
mod per_query;
mod policy;
mod range;
mod report;
mod run;
mod shard;
mod telemetry;
mod tracker;

pub use filter::{Filter, FilterPlan};
pub use policy::{Decision, DispatchPolicy, Reason};
pub use range::RangeResult;
use report::Counters;
pub use report::{BackendCallStats, ExecutionReport, ExecutorStats, FallbackAction, FallbackStep};
pub use tracker::{
    BackendMetrics, BreakerState, Bucket, MetricsSnapshot, Op, PerformanceTracker, Shape,
    TrackerConfig,
};

use crate::backend::{Backend, BackendKind};
use crate::corpus::CorpusView;
use crate::cpu::select::selection_bytes;
use crate::cpu::topk::queries_per_pass;
use crate::cpu::{CpuBackend, CpuConfig, CpuFeatures, SimdLevel};
use crate::cuda::{self, CudaConfig, CudaStatus};
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{normalize, MatrixRef, Scores};
use crate::metric::{Metric, RowScoring};
use crate::warm::{StoreHit, WarmStore};
use rayon::prelude::*;
use std::sync::Arc;
use std::time::Instant;

/// Which backend may serve calls.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum DevicePolicy {
    /// The GPU when it is usable and worth it, the CPU otherwise.
    #[default]
    Auto,
    /// Always the CPU.
    Cpu,
    /// Always the GPU; without a usable one, [`HybridExecutor::new`] fails with
    /// [`Error::CudaUnavailable`] instead of falling back.
    Cuda,
}

/// How to build a [`HybridExecutor`].
#[derive(Clone, Debug, Default)]
pub struct ExecutorConfig {
    /// Which backend may serve.
    pub device: DevicePolicy,
    /// CPU backend settings.
    pub cpu: CpuConfig,
    /// The rules of [`DevicePolicy::Auto`].
    pub dispatch: DispatchPolicy,
    /// How measurements are smoothed.
    pub tracker: TrackerConfig,
    /// CUDA backend settings (memory margin, an optional memory budget).
    pub cuda: CudaConfig,
}

/// What this executor can use.
#[derive(Clone, Debug)]
pub struct Capabilities {
    /// CPU model name, as the OS reports it.
    pub cpu_model: String,
    /// Kernels the CPU backend uses.
    pub simd: SimdLevel,
    /// The CPU's extensions beyond that level (VNNI, BF16, ...).
    pub cpu_features: CpuFeatures,
    /// CPU worker threads.
    pub threads: usize,
    /// GPU status, with the reason when it is unavailable.
    pub cuda: CudaStatus,
    /// The accelerator backend in use, by name, if any.
    pub accelerator: Option<String>,
}

/// The entry point: cosine similarity and exact top-k between a query batch and a corpus.
///
/// Build one and reuse it: it owns the CPU thread pool. It is `Send + Sync`; concurrent
/// calls share the pool.
#[derive(Debug)]
pub struct HybridExecutor {
    cpu: CpuBackend,
    accel: Option<Arc<dyn Backend>>,
    cuda: CudaStatus,
    policy: DevicePolicy,
    dispatch: DispatchPolicy,
    tracker: PerformanceTracker,
    counters: [Counters; 2],
}

impl HybridExecutor {
    /// Starts the backends allowed by `config`.
    ///
    /// Errors: [`Error::CudaUnavailable`] (with the reason) for [`DevicePolicy::Cuda`] when no
    /// usable GPU is present; [`Error::InvalidConfig`] for unusable settings.
    pub fn new(config: ExecutorConfig) -> Result<Self> {
        Self::build(config, None)
    }

    /// Like [`new`](Self::new), with `accelerator` as the GPU side: the CUDA backend, or
    /// any other [`Backend`] (tests use one that injects speed and faults).
    pub fn with_accelerator(config: ExecutorConfig, accelerator: Arc<dyn Backend>) -> Result<Self> {
        Self::build(config, Some(accelerator))
    }

    fn build(config: ExecutorConfig, accel: Option<Arc<dyn Backend>>) -> Result<Self> {
        let (cuda, accel) = match accel {
            Some(a) => (
                CudaStatus::Available {
                    device: a.name().to_string(),
                    total_memory: 0,
                    kernels: String::new(),
                    call_overhead: None,
                    gemm: String::new(),
                    devices: 1,
                },
                Some(a),
            ),
            // The CPU alone serves; the probe only fills in `capabilities()`.
            None if config.device == DevicePolicy::Cpu => (cuda::probe(), None),
            None if config.cuda.devices == Some(0) => {
                return Err(Error::InvalidConfig(
                    "CudaConfig::devices is Some(0); use DevicePolicy::Cpu for no device".into(),
                ))
            }
            None => match cuda::start(&config.cuda) {
                Ok(started) => (started.status, Some(started.backend)),
                Err(reason) => (CudaStatus::Unavailable { reason }, None),
            },
        };
        if let (DevicePolicy::Cuda, CudaStatus::Unavailable { reason }) = (config.device, &cuda) {
            return Err(Error::CudaUnavailable {
                reason: reason.clone(),
            });
        }
        let d = &config.dispatch;
        if d.min_speedup.is_nan()
            || d.min_speedup <= 0.0
            || !(0.0..=1.0).contains(&d.min_success_rate)
            || d.min_chunk_queries == 0
            || d.breaker_failures == 0
            || !(0.0..=1.0).contains(&d.remeasure_budget)
        {
            return Err(Error::InvalidConfig(
                "dispatch policy: min_speedup > 0, min_success_rate and remeasure_budget \
                 in [0, 1], min_chunk_queries ≥ 1 and breaker_failures ≥ 1"
                    .into(),
            ));
        }
        let cpu = CpuBackend::new(&config.cpu)?;
        Ok(Self {
            cpu,
            accel,
            cuda,
            policy: config.device,
            dispatch: config.dispatch,
            tracker: PerformanceTracker::new(config.tracker)?,
            counters: Default::default(),
        })
    }

    /// What this executor runs on.
    pub fn capabilities(&self) -> Capabilities {
        let mut cuda = self.cuda.clone();
        if let (CudaStatus::Available { gemm, .. }, Some(accel)) = (&mut cuda, &self.accel) {
            if let Some(now) = accel.gemm_description() {
                *gemm = now;
            }
        }
        Capabilities {
            cpu_model: cpu_model(),
            simd: self.cpu.simd_level(),
            cpu_features: CpuFeatures::detect(),
            threads: self.cpu.threads(),
            cuda,
            accelerator: self.accel.as_ref().map(|a| a.name().to_string()),
        }
    }

    /// The policy this executor was built with.
    pub fn policy(&self) -> DevicePolicy {
        self.policy
    }

    /// The rules `Auto` follows.
    pub fn dispatch_policy(&self) -> &DispatchPolicy {
        &self.dispatch
    }

    /// The measurements dispatch decides from (export them to start the next run warm).
    pub fn tracker(&self) -> &PerformanceTracker {
        &self.tracker
    }

    /// Frees the device memory the accelerator keeps between calls to make the next one
    /// cheap (the CUDA backend keeps, per idle stream, one scratch allocation of up to
    /// 1/256 of the device and a pinned host buffer), for another process that shares the
    /// GPU. The resident corpus stays; a later call allocates its scratch again. Calls in
    /// flight keep theirs until they end.
    ///
    /// ```
    /// # use hybridvec::{ExecutorConfig, HybridExecutor};
    /// let ex = HybridExecutor::new(ExecutorConfig::default())?;
    /// ex.release_cached_memory();
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    pub fn release_cached_memory(&self) {
        if let Some(accel) = &self.accel {
            accel.release_cached_memory();
        }
    }

    /// Calls, fallbacks and time per backend since the executor was built.
    pub fn stats(&self) -> ExecutorStats {
        ExecutorStats {
            cpu: self.counters[0].read(),
            gpu: self.counters[1].read(),
        }
    }

    /// What dispatch would choose for a call of `shape` now (the choice a call makes,
    /// without running it; a half-open breaker's probe is not claimed).
    pub fn decide(&self, op: Op, shape: Shape) -> Decision {
        match self.policy {
            DevicePolicy::Cpu => Decision {
                backend: BackendKind::Cpu,
                reason: Reason::Forced,
                snapshot: None,
            },
            DevicePolicy::Cuda => Decision {
                backend: BackendKind::Gpu,
                reason: Reason::Forced,
                snapshot: None,
            },
            DevicePolicy::Auto => self.dispatch.decide(
                &self.tracker,
                op,
                shape,
                self.cpu.rates(),
                self.accel.as_ref().map(|a| a.rates()),
            ),
        }
    }

    /// Cosine similarity of every query with every corpus row: a `Q × N` row-major matrix.
    ///
    /// Errors: [`Error::DimensionMismatch`] when the query dimension differs from the
    /// corpus's, [`Error::NonFinite`] for NaN/inf in `queries`.
    pub fn cosine_similarity<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
    ) -> Result<Scores> {
        self.cosine_similarity_with_report(queries, corpus)
            .map(|(s, _)| s)
    }

    /// [`cosine_similarity`](Self::cosine_similarity), with the [`ExecutionReport`].
    pub fn cosine_similarity_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
    ) -> Result<(Scores, ExecutionReport)> {
        let start = Instant::now();
        let corpus = corpus.into();
        let unit = prepare_queries(queries, corpus)?;
        let unit = MatrixRef::new(&unit, queries.rows(), queries.cols())?;
        let out_bytes = queries
            .rows()
            .checked_mul(corpus.rows())
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
        crate::mem::check_available(out_bytes, "the Q × N score matrix")?;
        self.run(Op::Cosine, unit, corpus, start, |b, q| b.cosine(q, corpus))
    }

    /// The `k` corpus rows most similar to each query, best first (ties: lower index first).
    /// `k` larger than the corpus returns every row.
    ///
    /// Errors: [`Error::InvalidK`] for `k = 0`, plus those of
    /// [`cosine_similarity`](Self::cosine_similarity).
    pub fn top_k<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>> {
        self.top_k_with_report(queries, corpus, k).map(|(h, _)| h)
    }

    /// [`top_k`](Self::top_k), with the [`ExecutionReport`].
    pub fn top_k_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let start = Instant::now();
        let corpus = corpus.into();
        if k == 0 {
            return Err(Error::InvalidK {
                k,
                rows: corpus.rows(),
            });
        }
        let unit = prepare_queries(queries, corpus)?;
        let unit = MatrixRef::new(&unit, queries.rows(), queries.cols())?;
        let k = k.min(corpus.rows());
        check_top_k_memory(queries.rows(), queries.cols(), k, corpus.rows())?;
        self.run(Op::TopK, unit, corpus, start, |b, q| b.top_k(q, corpus, k))
    }

    /// The `k` best corpus rows per query under `options` (its [`Metric`]), best first:
    /// the highest cosine or inner product, the smallest squared L2 distance; ties go to
    /// the lower index. Inner product and L2 are exact (see [`Metric`]): candidates are
    /// re-scored in f64 and certified, L2 by the direct difference, and ordered by that
    /// exact value (two hits whose f32 scores round to the same value keep their exact
    /// order, whatever their indices).
    ///
    /// ```
    /// use hybridvec::{Corpus, ExecutorConfig, HybridExecutor, MatrixRef, Metric, SearchOptions};
    ///
    /// let corpus = Corpus::new(vec![0.0, 0.0,   3.0, 4.0,   1.0, 1.0], 2)?;
    /// let exec = HybridExecutor::new(ExecutorConfig::default())?;
    /// let q = [1.0, 0.0];
    /// let near = exec.search(MatrixRef::new(&q, 1, 2)?, &corpus, 2, &SearchOptions::new(Metric::L2))?;
    /// // Rows 0 and 2 are both at squared distance 1: a tie, the lower index first.
    /// assert_eq!((near[0][0].index, near[0][0].score), (0, 1.0));
    /// assert_eq!((near[0][1].index, near[0][1].score), (2, 1.0));
    /// let ip = exec.search(MatrixRef::new(&q, 1, 2)?, &corpus, 1, &SearchOptions::new(Metric::InnerProduct))?;
    /// assert_eq!((ip[0][0].index, ip[0][0].score), (1, 3.0));
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    ///
    /// Errors: those of [`top_k`](Self::top_k), and [`Error::ScoreOutOfRange`] when a score
    /// does not fit f32 (L2 takes norms up to 1e18).
    pub fn search<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<Hit>>> {
        self.search_with_report(queries, corpus, k, options)
            .map(|(h, _)| h)
    }

    /// [`search`](Self::search), with the [`ExecutionReport`]: that of its first pass,
    /// whose `corpus_passes` also counts the passes of any search again (see [`Metric`]).
    pub fn search_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
        options: &SearchOptions,
    ) -> Result<(Vec<Vec<Hit>>, ExecutionReport)> {
        let corpus = corpus.into();
        let metric = options.metric;
        if metric == Metric::Cosine && options.filter.is_none() {
            return self.top_k_with_report(queries, corpus, k);
        }
        let start = Instant::now();
        if k == 0 {
            return Err(Error::InvalidK {
                k,
                rows: corpus.rows(),
            });
        }
        check_queries(queries, corpus)?;
        let k = k.min(corpus.rows());
        let Some(filter) = &options.filter else {
            return self.search_in(queries, corpus, k, metric, start, None);
        };
        let allowed = filter::resolve(filter, queries.rows(), corpus.rows())?;
        if let [one] = &allowed[..] {
            if one.is_empty() {
                return Ok((
                    vec![Vec::new(); queries.rows()],
                    ExecutionReport::nothing_run(),
                ));
            }
            let plan = Some((one, options.filter_plan));
            return self.search_in(queries, corpus, k, metric, start, plan);
        }
        self.search_per_query(
            queries,
            corpus,
            k,
            metric,
            start,
            (&allowed, options.filter_plan),
        )
    }

    /// Every query against every corpus row under `metric`: a `Q × N` row-major matrix of
    /// cosines, inner products or squared L2 distances. [`cosine_similarity`] for
    /// [`Metric::Cosine`].
    ///
    /// Scores are f32 dot products: within about `D·2⁻²⁴·‖q‖‖c‖` of the exact value. L2
    /// is `‖q‖² + ‖c‖² − 2q·c` here, which for near-duplicate rows can be far from the
    /// true small distance; [`search`](Self::search) ranks them exactly.
    ///
    /// Errors: those of [`cosine_similarity`], and [`Error::ScoreOutOfRange`] when
    /// `‖q‖·‖c‖` (or L2's squared norms) could pass f32's range.
    ///
    /// [`cosine_similarity`]: Self::cosine_similarity
    pub fn similarity<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        metric: Metric,
    ) -> Result<Scores> {
        self.similarity_with_report(queries, corpus, metric)
            .map(|(s, _)| s)
    }

    /// [`similarity`](Self::similarity), with the [`ExecutionReport`].
    pub fn similarity_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        metric: Metric,
    ) -> Result<(Scores, ExecutionReport)> {
        let corpus = corpus.into();
        if metric == Metric::Cosine {
            return self.cosine_similarity_with_report(queries, corpus);
        }
        let start = Instant::now();
        check_queries(queries, corpus)?;
        let (q, n) = (queries.rows(), corpus.rows());
        let out_bytes = q
            .checked_mul(n)
            .and_then(|n| n.checked_mul(std::mem::size_of::<f32>()));
        crate::mem::check_available(out_bytes, "the Q × N score matrix")?;
        let owned;
        let scoring: &RowScoring = match corpus.scoring_cache() {
            Some(cache) => cache.get(Metric::InnerProduct, corpus.inv_norms()),
            None => {
                owned = RowScoring::new(Metric::InnerProduct, corpus.inv_norms());
                owned.as_ref()
            }
        }
        .ok_or(Error::InvalidConfig("cosine is not scored here".into()))?;
        let query_norms: Vec<f64> = (0..q)
            .map(|i| crate::simd::sum_squares_f64(queries.row(i)).sqrt())
            .collect();
        let largest = query_norms.iter().copied().fold(0.0, f64::max);
        let bound = match metric {
            Metric::L2 => (largest + scoring.max_norm).powi(2),
            _ => largest * scoring.max_norm,
        };
        if bound > f32::MAX as f64 / 2.0 {
            return Err(Error::ScoreOutOfRange {
                metric: metric.as_str(),
                reason: format!(
                    "query norm up to {largest:e} and row norm up to {:e}",
                    scoring.max_norm
                ),
            });
        }
        let view = corpus.scored_by(Metric::InnerProduct, scoring);
        let (mut scores, report) = self.run_where(
            Op::InnerProduct,
            queries,
            view.rows(),
            start,
            |b| exact::refuses_metric(b, Metric::InnerProduct),
            |b, part| b.cosine(part, view),
        )?;
        if metric == Metric::L2 {
            let inv = corpus.inv_norms();
            let cols = scores.cols();
            scores
                .as_mut_slice()
                .par_chunks_mut(cols.max(1))
                .zip(&query_norms)
                .for_each(|(row, &qn)| {
                    for (s, &w) in row.iter_mut().zip(inv) {
                        let cn2 = if w > 0.0 {
                            1.0 / (w as f64 * w as f64)
                        } else {
                            0.0
                        };
                        let dist = qn * qn + cn2 - 2.0 * *s as f64;
                        // NaN (a row masked out) stays NaN.
                        *s = if w.is_nan() {
                            f32::NAN
                        } else {
                            dist.max(0.0) as f32
                        };
                    }
                });
        }
        Ok((scores, report))
    }
}

/// What a search takes besides `k`: the [`Metric`] (cosine by default) and an optional
/// [`Filter`] (none by default).
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct SearchOptions {
    /// What to rank by.
    pub metric: Metric,
    /// Which rows may be returned; `None` allows all.
    pub filter: Option<Filter>,
    /// How a filter is searched ([`FilterPlan::Auto`]: by its selectivity).
    pub filter_plan: FilterPlan,
}

impl SearchOptions {
    /// Options ranking by `metric`, without a filter.
    pub fn new(metric: Metric) -> Self {
        Self {
            metric,
            ..Self::default()
        }
    }

    /// These options with `filter`.
    pub fn with_filter(mut self, filter: Filter) -> Self {
        self.filter = Some(filter);
        self
    }

    /// These options with the filter searched by `plan`.
    pub fn with_filter_plan(mut self, plan: FilterPlan) -> Self {
        self.filter_plan = plan;
        self
    }
}

/// Fails with [`Error::InsufficientMemory`] unless the hits of `q` queries × `k` and one
/// pass's selections over `n` rows fit the memory available.
fn check_top_k_memory(q: usize, d: usize, k: usize, n: usize) -> Result<()> {
    // The hits, and the selections of one pass that they are sorted out of.
    let per_pass = queries_per_pass(q, d, k, n);
    let out_bytes = q
        .checked_mul(k)
        .and_then(|n| n.checked_mul(std::mem::size_of::<Hit>()))
        .zip(selection_bytes(per_pass, k, n))
        .and_then(|(hits, selection)| hits.checked_add(selection));
    crate::mem::check_available(out_bytes, "the top-k hits and their selection")
}

impl HybridExecutor {
    /// [`top_k`](Self::top_k) over the visible rows of a [`WarmStore`], read in place;
    /// deleted and superseded rows never appear. Hits carry the records' ids.
    ///
    /// Errors: those of `top_k`, and [`Error::EmptyInput`] when the store has no visible rows.
    pub fn top_k_store(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
    ) -> Result<Vec<Vec<StoreHit>>> {
        self.top_k_store_with_report(queries, store, k)
            .map(|(hits, _)| hits)
    }

    /// [`top_k_store`](Self::top_k_store), with the [`ExecutionReport`].
    pub fn top_k_store_with_report(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
    ) -> Result<(Vec<Vec<StoreHit>>, ExecutionReport)> {
        self.search_store_with_report(queries, store, k, &SearchOptions::default())
    }

    /// [`search`](Self::search) over the visible rows of a [`WarmStore`]: any metric,
    /// whatever the store was built for (a store records no metric: nothing in it depends
    /// on one). Deleted and superseded rows never appear.
    ///
    /// Errors: those of `search`, and [`Error::EmptyInput`] when the store has no visible
    /// rows.
    pub fn search_store(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
        options: &SearchOptions,
    ) -> Result<Vec<Vec<StoreHit>>> {
        self.search_store_with_report(queries, store, k, options)
            .map(|(hits, _)| hits)
    }

    /// [`search_store`](Self::search_store), with the [`ExecutionReport`].
    pub fn search_store_with_report(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
        options: &SearchOptions,
    ) -> Result<(Vec<Vec<StoreHit>>, ExecutionReport)> {
        let corpus = store.corpus();
        let (view, options) = store_view(store, &corpus, options)?;
        let (hits, report) = self.search_with_report(queries, view, k, &options)?;
        let hits = hits
            .into_iter()
            .map(|hs| store_hits(store, hs))
            .collect::<Result<_>>()?;
        Ok((hits, report))
    }

    /// [`range`](Self::range) over the visible rows of a [`WarmStore`]: hits carry the
    /// records' ids; deleted and superseded rows never appear.
    ///
    /// Errors: those of `range` and of [`search_store`](Self::search_store).
    pub fn range_store(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        threshold: f32,
        limit: usize,
        options: &SearchOptions,
    ) -> Result<Vec<StoreRangeResult>> {
        let corpus = store.corpus();
        let (view, options) = store_view(store, &corpus, options)?;
        self.range(queries, view, threshold, limit, &options)?
            .into_iter()
            .map(|r| {
                Ok(StoreRangeResult {
                    hits: store_hits(store, r.hits)?,
                    truncated: r.truncated,
                })
            })
            .collect()
    }
}

/// One query's records within a range threshold ([`HybridExecutor::range_store`]).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct StoreRangeResult {
    /// The records, best first, at most the limit.
    pub hits: Vec<StoreHit>,
    /// Whether more records were within the threshold than the limit let through.
    pub truncated: bool,
}

/// The search view of a store's visible rows, and `options` with any ids resolved to
/// rows of that view (an id put after the view was taken is not in it).
fn store_view<'c>(
    store: &WarmStore,
    corpus: &'c crate::warm::StoreCorpus<'_>,
    options: &SearchOptions,
) -> Result<(CorpusView<'c>, SearchOptions)> {
    let view = corpus.view().ok_or(Error::EmptyInput {
        what: "store has no records",
    })?;
    let options = match &options.filter {
        Some(f) => {
            let row_of = |id: &str| {
                store
                    .row_of(id)
                    .map(|r| r as usize)
                    .filter(|&r| r < view.rows())
            };
            SearchOptions {
                filter: Some(f.resolve_ids(&row_of)?),
                ..options.clone()
            }
        }
        None => options.clone(),
    };
    Ok((view, options))
}

/// `hits` of a store's view with their records' ids.
fn store_hits(store: &WarmStore, hits: Vec<Hit>) -> Result<Vec<StoreHit>> {
    hits.into_iter()
        .map(|h| {
            Ok(StoreHit {
                id: store.id_of(h.index as u64)?,
                row: h.index as u64,
                score: h.score,
            })
        })
        .collect()
}

/// Checks the queries' width against the corpus, and their values.
fn check_queries(queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Result<()> {
    if queries.cols() != corpus.dim() {
        return Err(Error::DimensionMismatch {
            expected: corpus.dim(),
            got: queries.cols(),
        });
    }
    queries.check_finite()
}

/// Checks the queries against the corpus and returns them scaled to unit norm (zero rows
/// stay zero, so they score 0 against everything).
fn prepare_queries(queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Result<Vec<f32>> {
    check_queries(queries, corpus)?;
    let mut unit = queries.as_slice().to_vec();
    unit.chunks_exact_mut(queries.cols()).for_each(normalize);
    Ok(unit)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| std::env::consts::ARCH.to_string())
}
