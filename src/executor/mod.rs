//! The executor: validates a call, picks a backend from one performance snapshot, runs
//! it (in chunks when the accelerator runs out of memory), falls back to the CPU when the
//! accelerator gives up, and reports what it did.

mod backend;
mod policy;
mod telemetry;
mod tracker;

pub use backend::{Backend, BackendError, BackendKind, Rates};
pub use policy::{Decision, DispatchPolicy, Reason};
pub use tracker::{
    BackendMetrics, BreakerState, Bucket, MetricsSnapshot, Op, PerformanceTracker, Shape,
    TrackerConfig,
};

use crate::cpu::{CpuBackend, CpuConfig, SimdLevel};
use crate::cuda::{self, CudaConfig, CudaStatus};
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{normalize, CorpusView, MatrixRef, Scores};
use crate::warm::{StoreHit, WarmStore};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// CPU worker threads.
    pub threads: usize,
    /// GPU status, with the reason when it is unavailable.
    pub cuda: CudaStatus,
    /// The accelerator backend in use, by name, if any.
    pub accelerator: Option<String>,
}

/// What one call did: where it ran, why, in how many chunks, and what it gave up on.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionReport {
    /// The backend that produced the result.
    pub backend: BackendKind,
    /// Why the first attempt went where it went (a fallback keeps the original reason).
    pub reason: Reason,
    /// Query chunks the successful backend ran (1 unless out-of-memory forced splitting).
    pub chunks: usize,
    /// Every step away from the plan, in order.
    pub fallbacks: Vec<FallbackStep>,
    /// Wall time of the whole call, validation included.
    pub elapsed: Duration,
}

/// One step away from the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct FallbackStep {
    /// The backend that failed.
    pub from: BackendKind,
    /// Query rows per chunk when it failed.
    pub chunk_queries: usize,
    /// What it reported.
    pub error: String,
    /// What the executor did next.
    pub action: FallbackAction,
}

/// What the executor did after a failure.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FallbackAction {
    /// Retried on the same backend with chunks of half as many queries.
    ShrinkChunks,
    /// Re-ran the whole call on the CPU.
    RerunOnCpu,
}

/// Per-backend counters since the executor was built.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BackendCallStats {
    /// Calls this backend answered.
    pub calls: u64,
    /// Calls it gave up on (which then ran elsewhere, or failed).
    pub fallbacks: u64,
    /// Time spent in it, failed attempts included.
    pub time: Duration,
}

/// [`HybridExecutor::stats`]: calls, fallbacks and time per backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    /// The CPU.
    pub cpu: BackendCallStats,
    /// The accelerator.
    pub gpu: BackendCallStats,
}

#[derive(Debug, Default)]
struct Counters {
    calls: AtomicU64,
    fallbacks: AtomicU64,
    nanos: AtomicU64,
}

impl Counters {
    fn read(&self) -> BackendCallStats {
        BackendCallStats {
            calls: self.calls.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            time: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        }
    }
    fn add_time(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
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

/// What a backend returns, seen generically: its result count, and how chunks join.
trait Output: Sized {
    fn results(&self) -> usize;
    fn concat(parts: Vec<Self>) -> Result<Self>;
}

impl Output for Vec<Vec<Hit>> {
    fn results(&self) -> usize {
        self.len()
    }
    fn concat(parts: Vec<Self>) -> Result<Self> {
        Ok(parts.into_iter().flatten().collect())
    }
}

impl Output for Scores {
    fn results(&self) -> usize {
        self.rows()
    }
    fn concat(mut parts: Vec<Self>) -> Result<Self> {
        if parts.len() == 1 {
            return Ok(parts.remove(0));
        }
        let cols = parts.first().map_or(0, |p| p.cols());
        let rows = parts.iter().map(|p| p.rows()).sum();
        let data = parts.into_iter().flat_map(|p| p.into_vec()).collect();
        // A chunk of another width makes the total length wrong, which `new` refuses.
        Scores::new(data, rows, cols)
    }
}

/// How the accelerator attempt ended, when it did not produce a result.
enum GaveUp {
    /// Try the CPU (the error is in the report's last step).
    Elsewhere {
        oom: bool,
        error: BackendError,
        /// Query rows per chunk at the failure.
        chunk_queries: usize,
    },
    /// Return this error.
    Fatal(Error),
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
                },
                Some(a),
            ),
            // The CPU alone serves; the probe only fills in `capabilities()`.
            None if config.device == DevicePolicy::Cpu => (cuda::probe(), None),
            None => match cuda::start(&config.cuda) {
                Ok(b) => (
                    CudaStatus::Available {
                        device: b.device_name().to_string(),
                        total_memory: b.total_memory(),
                    },
                    Some(b as Arc<dyn Backend>),
                ),
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
        Capabilities {
            cpu_model: cpu_model(),
            simd: self.cpu.simd_level(),
            threads: self.cpu.threads(),
            cuda: self.cuda.clone(),
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
        let out_bytes = queries
            .rows()
            .checked_mul(k)
            .and_then(|n| n.checked_mul(std::mem::size_of::<Hit>()));
        crate::mem::check_available(out_bytes, "the top-k hits")?;
        self.run(Op::TopK, unit, corpus, start, |b, q| b.top_k(q, corpus, k))
    }

    /// Decides, runs, falls back, records and reports one validated call.
    fn run<T: Output>(
        &self,
        op: Op,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        start: Instant,
        call: impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
    ) -> Result<(T, ExecutionReport)> {
        let out = self.dispatch_and_run(op, queries, corpus, start, call);
        match &out {
            Ok((_, report)) => telemetry::answered(op, report),
            Err(_) => telemetry::failed(op),
        }
        out
    }

    fn dispatch_and_run<T: Output>(
        &self,
        op: Op,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        start: Instant,
        call: impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
    ) -> Result<(T, ExecutionReport)> {
        let shape = Shape {
            queries: queries.rows(),
            rows: corpus.rows(),
            dim: corpus.dim(),
        };
        let decision = self.decide(op, shape);
        let span = tracing::debug_span!(
            "call",
            op = op.as_str(),
            backend = decision.backend.as_str(),
            reason = decision.reason.as_str(),
            q = shape.queries,
            n = shape.rows,
            d = shape.dim,
        );
        let _entered = span.enter();
        let mut report = ExecutionReport {
            backend: decision.backend,
            reason: decision.reason,
            chunks: 1,
            fallbacks: Vec::new(),
            elapsed: Duration::ZERO,
        };
        if let (BackendKind::Gpu, Some(accel)) = (decision.backend, &self.accel) {
            let t = Instant::now();
            let attempt = self.run_chunked(accel.as_ref(), queries, &call, &mut report);
            let spent = t.elapsed();
            let gpu = &self.counters[BackendKind::Gpu.index()];
            gpu.add_time(spent);
            let breaker = (
                self.dispatch.breaker_failures,
                self.dispatch.breaker_cooldown,
            );
            match attempt {
                Ok(out) => {
                    gpu.calls.fetch_add(1, Ordering::Relaxed);
                    self.tracker
                        .record_success(op, shape, BackendKind::Gpu, spent);
                    if report.reason == Reason::BreakerProbe {
                        self.tracker.forgive(op, shape);
                    }
                    report.elapsed = start.elapsed();
                    return Ok((out, report));
                }
                Err(GaveUp::Fatal(e)) => {
                    gpu.fallbacks.fetch_add(1, Ordering::Relaxed);
                    self.tracker
                        .record_failure(op, shape, BackendKind::Gpu, false, breaker);
                    return Err(e);
                }
                Err(GaveUp::Elsewhere {
                    oom,
                    error,
                    chunk_queries,
                }) => {
                    gpu.fallbacks.fetch_add(1, Ordering::Relaxed);
                    // A call the device does not serve says nothing about its health.
                    if !matches!(error, BackendError::Unsupported { .. }) {
                        self.tracker
                            .record_failure(op, shape, BackendKind::Gpu, oom, breaker);
                    }
                    if self.policy == DevicePolicy::Cuda {
                        return Err(self.accel_error(accel.as_ref(), error));
                    }
                    tracing::warn!(error = %error, "accelerator gave up; re-running on the CPU");
                    report.fallbacks.push(FallbackStep {
                        from: BackendKind::Gpu,
                        chunk_queries,
                        error: error.to_string(),
                        action: FallbackAction::RerunOnCpu,
                    });
                }
            }
        }
        let t = Instant::now();
        let out = call(&self.cpu, queries).map_err(|e| match e {
            BackendError::Fatal(e) => e,
            other => Error::BackendFailed {
                backend: "cpu".into(),
                reason: other.to_string(),
            },
        })?;
        check_count(&out, 0, queries.rows())?;
        let spent = t.elapsed();
        let cpu = &self.counters[BackendKind::Cpu.index()];
        cpu.calls.fetch_add(1, Ordering::Relaxed);
        cpu.add_time(spent);
        self.tracker
            .record_success(op, shape, BackendKind::Cpu, spent);
        report.backend = BackendKind::Cpu;
        report.chunks = 1;
        report.elapsed = start.elapsed();
        Ok((out, report))
    }

    /// Runs `call` on the accelerator in query chunks, halving the chunk on each
    /// out-of-memory down to `min_chunk_queries`. Every chunk must return one result per
    /// query: a wrong count is a fatal, typed error.
    fn run_chunked<T: Output>(
        &self,
        accel: &dyn Backend,
        queries: MatrixRef<'_>,
        call: &impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
        report: &mut ExecutionReport,
    ) -> std::result::Result<T, GaveUp> {
        let (q, d) = (queries.rows(), queries.cols());
        let mut chunk = q;
        let mut parts: Vec<T> = Vec::new();
        let mut done = 0;
        let mut chunks_run = 0;
        while done < q {
            let rows = chunk.min(q - done);
            let slice = &queries.as_slice()[done * d..(done + rows) * d];
            let part = MatrixRef::new(slice, rows, d).map_err(GaveUp::Fatal)?;
            match call(accel, part) {
                Ok(out) => {
                    check_count(&out, chunks_run, rows).map_err(GaveUp::Fatal)?;
                    parts.push(out);
                    done += rows;
                    chunks_run += 1;
                }
                Err(BackendError::OutOfMemory { requested })
                    if chunk > self.dispatch.min_chunk_queries =>
                {
                    let next = chunk.div_ceil(2).max(self.dispatch.min_chunk_queries);
                    report.fallbacks.push(FallbackStep {
                        from: BackendKind::Gpu,
                        chunk_queries: chunk,
                        error: BackendError::OutOfMemory { requested }.to_string(),
                        action: FallbackAction::ShrinkChunks,
                    });
                    tracing::debug!(
                        from = chunk,
                        to = next,
                        "out of device memory; smaller chunks"
                    );
                    chunk = next;
                }
                Err(BackendError::Fatal(e)) => return Err(GaveUp::Fatal(e)),
                Err(error) => {
                    let oom = matches!(
                        error,
                        BackendError::OutOfMemory { .. } | BackendError::CorpusTooLarge { .. }
                    );
                    return Err(GaveUp::Elsewhere {
                        oom,
                        error,
                        chunk_queries: chunk.min(q),
                    });
                }
            }
        }
        report.chunks = chunks_run;
        T::concat(parts).map_err(GaveUp::Fatal)
    }

    fn accel_error(&self, accel: &dyn Backend, e: BackendError) -> Error {
        match e {
            BackendError::Unavailable { reason } => Error::CudaUnavailable { reason },
            BackendError::OutOfMemory { requested }
            | BackendError::CorpusTooLarge { requested } => Error::DeviceOutOfMemory {
                backend: accel.name().to_string(),
                requested,
            },
            BackendError::LaunchFailed { reason } | BackendError::Unsupported { reason } => {
                Error::BackendFailed {
                    backend: accel.name().to_string(),
                    reason,
                }
            }
            BackendError::Fatal(e) => e,
        }
    }
}

/// One result per query, or a typed error naming the chunk.
fn check_count<T: Output>(out: &T, chunk: usize, expected: usize) -> Result<()> {
    let got = out.results();
    if got != expected {
        return Err(Error::ChunkResultMismatch {
            chunk,
            expected,
            got,
        });
    }
    Ok(())
}

impl Backend for CpuBackend {
    fn name(&self) -> &str {
        "cpu"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }
    fn rates(&self) -> Rates {
        CpuBackend::rates(self)
    }
    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> std::result::Result<Scores, BackendError> {
        Ok(CpuBackend::cosine(self, queries, corpus))
    }
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> std::result::Result<Vec<Vec<Hit>>, BackendError> {
        Ok(CpuBackend::top_k(self, queries, corpus, k))
    }
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
        let corpus = store.corpus();
        let view = corpus.view().ok_or(Error::EmptyInput {
            what: "store has no records",
        })?;
        let (hits, report) = self.top_k_with_report(queries, view, k)?;
        let hits = hits
            .into_iter()
            .map(|hs| {
                hs.into_iter()
                    .map(|h| {
                        Ok(StoreHit {
                            id: store.id_of(h.index as u64)?,
                            row: h.index as u64,
                            score: h.score,
                        })
                    })
                    .collect()
            })
            .collect::<Result<_>>()?;
        Ok((hits, report))
    }
}

/// Checks the queries against the corpus and returns them scaled to unit norm (zero rows
/// stay zero, so they score 0 against everything).
fn prepare_queries(queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Result<Vec<f32>> {
    if queries.cols() != corpus.dim() {
        return Err(Error::DimensionMismatch {
            expected: corpus.dim(),
            got: queries.cols(),
        });
    }
    queries.check_finite()?;
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
