//! One validated call, start to end: decide, run on the accelerator in query chunks
//! (halving them on out-of-memory, checking each chunk's result count), fall back to the
//! CPU when the accelerator gives up, record the outcome, report.

use super::report::{ExecutionReport, FallbackAction, FallbackStep};
use super::{telemetry, DevicePolicy, HybridExecutor, Op, Reason, Shape};
use crate::backend::{Backend, BackendError, BackendKind};
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::{MatrixRef, Scores};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// What a backend returns, seen generically: its result count, and how chunks join.
pub(super) trait Output: Sized {
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
    /// Decides, runs, falls back, records and reports one validated call.
    pub(super) fn run<T: Output>(
        &self,
        op: Op,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        start: Instant,
        call: impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
    ) -> Result<(T, ExecutionReport)> {
        self.run_where(op, queries, corpus.rows(), start, |_| None, call)
    }

    /// [`run`](Self::run) for a call that some accelerators do not serve: `refuses`
    /// says why the accelerator cannot (`None`: it can). A refused call runs on the CPU
    /// ([`Reason::Unsupported`]) without trying the accelerator, or fails under
    /// [`DevicePolicy::Cuda`].
    pub(super) fn run_where<T: Output>(
        &self,
        op: Op,
        queries: MatrixRef<'_>,
        rows: usize,
        start: Instant,
        refuses: impl Fn(&dyn Backend) -> Option<String>,
        call: impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
    ) -> Result<(T, ExecutionReport)> {
        let out = self.dispatch_and_run(op, queries, rows, start, refuses, call);
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
        rows: usize,
        start: Instant,
        refuses: impl Fn(&dyn Backend) -> Option<String>,
        call: impl Fn(&dyn Backend, MatrixRef<'_>) -> std::result::Result<T, BackendError>,
    ) -> Result<(T, ExecutionReport)> {
        let shape = Shape {
            queries: queries.rows(),
            rows,
            dim: queries.cols(),
        };
        let mut decision = self.decide(op, shape);
        if let (BackendKind::Gpu, Some(accel)) = (decision.backend, &self.accel) {
            if let Some(reason) = refuses(accel.as_ref()) {
                if self.policy == DevicePolicy::Cuda {
                    return Err(Error::BackendFailed {
                        backend: accel.name().to_string(),
                        reason,
                    });
                }
                decision.backend = BackendKind::Cpu;
                decision.reason = Reason::Unsupported;
            }
        }
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
            corpus_passes: 1,
            fallbacks: Vec::new(),
            rescored: None,
            elapsed: Duration::ZERO,
        };
        if let (BackendKind::Gpu, Some(accel)) = (decision.backend, &self.accel) {
            let t = Instant::now();
            crate::quant::take_rescored(); // forget an earlier call's
            let attempt = self.run_chunked(accel.as_ref(), queries, &call, &mut report);
            report.rescored = crate::quant::take_rescored();
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
        crate::quant::take_rescored(); // forget an earlier call's
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
        report.corpus_passes = 1;
        report.rescored = crate::quant::take_rescored();
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
            accel.take_corpus_passes(); // forget a failed call's
            match call(accel, part) {
                Ok(out) => {
                    check_count(&out, chunks_run, rows).map_err(GaveUp::Fatal)?;
                    let passes = accel.take_corpus_passes().unwrap_or(1);
                    report.corpus_passes = report.corpus_passes.max(passes);
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
