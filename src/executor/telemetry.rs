//! The optional `metrics` feature: counters and a latency histogram fed to the `metrics`
//! facade. The application installs the recorder; without one (or without the feature)
//! these calls cost nothing.
//!
//! - `hybridvec_calls_total{op, backend, reason}`: calls answered, by the backend that
//!   answered and why the first attempt went where it went.
//! - `hybridvec_call_seconds{op, backend}`: wall time of answered calls.
//! - `hybridvec_fallbacks_total{op, from, action}`: steps away from the plan
//!   (`shrink_chunks`, `rerun_on_cpu`).
//! - `hybridvec_errors_total{op}`: calls that returned an error after dispatch.

use super::{ExecutionReport, FallbackAction, Op};

impl FallbackAction {
    /// `"shrink_chunks"` or `"rerun_on_cpu"`.
    pub fn as_str(self) -> &'static str {
        match self {
            FallbackAction::ShrinkChunks => "shrink_chunks",
            FallbackAction::RerunOnCpu => "rerun_on_cpu",
        }
    }
}

/// Records one answered call.
#[cfg(feature = "metrics")]
pub(super) fn answered(op: Op, report: &ExecutionReport) {
    let (op, backend) = (op.as_str(), report.backend.as_str());
    metrics::counter!(
        "hybridvec_calls_total",
        "op" => op,
        "backend" => backend,
        "reason" => report.reason.as_str(),
    )
    .increment(1);
    metrics::histogram!("hybridvec_call_seconds", "op" => op, "backend" => backend)
        .record(report.elapsed.as_secs_f64());
    for step in &report.fallbacks {
        metrics::counter!(
            "hybridvec_fallbacks_total",
            "op" => op,
            "from" => step.from.as_str(),
            "action" => step.action.as_str(),
        )
        .increment(1);
    }
}

/// Records a call that failed after dispatch.
#[cfg(feature = "metrics")]
pub(super) fn failed(op: Op) {
    metrics::counter!("hybridvec_errors_total", "op" => op.as_str()).increment(1);
}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(super) fn answered(_: Op, _: &ExecutionReport) {}

#[cfg(not(feature = "metrics"))]
#[inline(always)]
pub(super) fn failed(_: Op) {}
