//! What a call reports ([`ExecutionReport`]) and what an executor counts per backend
//! ([`ExecutorStats`]).

use super::Reason;
use crate::backend::BackendKind;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// What one call did: where it ran, why, in how many chunks, and what it gave up on.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionReport {
    /// The backend that produced the result.
    pub backend: BackendKind,
    /// Why the first attempt went where it went (a fallback keeps the original reason).
    pub reason: Reason,
    /// Query chunks the successful backend ran (1 unless out-of-memory forced splitting).
    pub chunks: usize,
    /// The most passes over the corpus that one query chunk took: the device splits the
    /// corpus when the scores of every row do not fit its free memory at once (1 when
    /// they do, and on the CPU). A search that searched again (an inner-product or L2
    /// certificate that failed, or one query after another under per-query filters) adds
    /// the passes of each search.
    pub corpus_passes: usize,
    /// Every step away from the plan, in order.
    pub fallbacks: Vec<FallbackStep>,
    /// Rows a certified search re-scored with the f32 kernels after scanning the corpus's
    /// int8 tier ([`Corpus::with_int8_tier`](crate::Corpus::with_int8_tier)), summed over
    /// the call's queries' candidates; `None` when no tier was used.
    pub rescored: Option<usize>,
    /// Wall time of the whole call, validation included.
    pub elapsed: Duration,
}

impl ExecutionReport {
    /// The report of a call that had nothing to run (an empty allow-list): no chunks, no
    /// passes.
    pub(super) fn nothing_run() -> Self {
        Self {
            backend: BackendKind::Cpu,
            reason: Reason::Forced,
            chunks: 0,
            corpus_passes: 0,
            fallbacks: Vec::new(),
            rescored: None,
            elapsed: Duration::ZERO,
        }
    }
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

/// [`HybridExecutor::stats`](crate::HybridExecutor::stats): calls, fallbacks and time per backend.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExecutorStats {
    /// The CPU.
    pub cpu: BackendCallStats,
    /// The accelerator.
    pub gpu: BackendCallStats,
}

/// One backend's counters, behind [`BackendCallStats`].
#[derive(Debug, Default)]
pub(super) struct Counters {
    pub(super) calls: AtomicU64,
    pub(super) fallbacks: AtomicU64,
    nanos: AtomicU64,
}

impl Counters {
    pub(super) fn read(&self) -> BackendCallStats {
        BackendCallStats {
            calls: self.calls.load(Ordering::Relaxed),
            fallbacks: self.fallbacks.load(Ordering::Relaxed),
            time: Duration::from_nanos(self.nanos.load(Ordering::Relaxed)),
        }
    }
    pub(super) fn add_time(&self, d: Duration) {
        self.nanos.fetch_add(d.as_nanos() as u64, Ordering::Relaxed);
    }
}
