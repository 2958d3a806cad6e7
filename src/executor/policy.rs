//! How `DevicePolicy::Auto` chooses a backend for one call, from one snapshot.

use super::tracker::{BreakerState, MetricsSnapshot, PerformanceTracker, Shape};
use crate::backend::{BackendKind, Rates};
use std::fmt;
use std::time::Duration;

/// The rules of [`DevicePolicy::Auto`](crate::DevicePolicy::Auto). Every field has a
/// documented default; see the README section "How the executor chooses".
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DispatchPolicy {
    /// Calls with less work (`Q·N·D`) than this stay on the CPU: a kernel launch, the
    /// query upload and the synchronisation (tens of µs) cost more than the CPU takes.
    /// Default 2^18 (1 query × 341 rows × 768: about 1 MiB of corpus, tens of µs on a core).
    pub min_gpu_work: u64,
    /// The accelerator is used only when its measured throughput is at least this many
    /// times the CPU's. Default 1.05 (a little hysteresis, well inside a 10% loss).
    pub min_speedup: f64,
    /// ... and only when its decayed success rate is at least this (while at least one
    /// call's worth of evidence remains). Default 0.9.
    pub min_success_rate: f64,
    /// Timed calls each backend gets in a bucket before measurements decide. Default 2.
    pub explore_samples: u64,
    /// Accelerator failures in a row that open the circuit breaker. Default 3.
    pub breaker_failures: u32,
    /// How long the breaker stays open before one probe call is let through. Default 5 s.
    pub breaker_cooldown: Duration,
    /// Share of a bucket's time spent re-measuring the backend that lost, so a verdict
    /// that went stale (a busy GPU became free, a CPU got loaded) is found out. The loser
    /// gets one call once the winner has had `slowdown / remeasure_budget` calls since
    /// the loser's last sample, where `slowdown` is the measured ratio of their times;
    /// the expected cost is at most this share. 0 turns re-measurement off. Default 0.02
    /// (a close call every 50 calls, a 10× slower backend every 500).
    pub remeasure_budget: f64,
    /// Out-of-memory retries halve the query chunk down to this many rows before the call
    /// falls back. Default 1.
    pub min_chunk_queries: usize,
}

impl Default for DispatchPolicy {
    fn default() -> Self {
        Self {
            min_gpu_work: 1 << 18,
            min_speedup: 1.05,
            min_success_rate: 0.9,
            explore_samples: 2,
            breaker_failures: 3,
            breaker_cooldown: Duration::from_secs(5),
            remeasure_budget: 0.02,
            min_chunk_queries: 1,
        }
    }
}

/// Why a call ran where it ran.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// `DevicePolicy::Cpu` or `DevicePolicy::Cuda` named the backend.
    Forced,
    /// No usable accelerator.
    NoAccelerator,
    /// Less work than `min_gpu_work`.
    BelowMinBatch,
    /// The breaker is open after recent accelerator failures.
    BreakerOpen,
    /// The breaker's cool-down is over: this call probes the accelerator.
    BreakerProbe,
    /// No measurement in this bucket yet: the roofline estimate from the advertised rates
    /// picked the backend.
    Roofline,
    /// The other backend has fewer than `explore_samples` measurements here.
    Explore,
    /// The accelerator's success rate is under `min_success_rate`.
    Unreliable,
    /// Measured: the accelerator is at least `min_speedup` times faster.
    MeasuredFaster,
    /// Measured: the accelerator is not `min_speedup` times faster.
    MeasuredSlower,
    /// The backend that lost has not been measured for a while (see
    /// [`DispatchPolicy::remeasure_budget`]): this call measures it again.
    Remeasure,
    /// The accelerator does not serve this kind of call (its metric or filter): the CPU
    /// runs it.
    Unsupported,
}

impl Reason {
    /// A short snake_case name, as in `bench --json`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Forced => "forced",
            Reason::NoAccelerator => "no_accelerator",
            Reason::BelowMinBatch => "below_min_batch",
            Reason::BreakerOpen => "breaker_open",
            Reason::BreakerProbe => "breaker_probe",
            Reason::Roofline => "roofline",
            Reason::Explore => "explore",
            Reason::Unreliable => "unreliable",
            Reason::MeasuredFaster => "measured_faster",
            Reason::MeasuredSlower => "measured_slower",
            Reason::Remeasure => "remeasure",
            Reason::Unsupported => "unsupported",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decision and the snapshot it was made from.
#[derive(Clone, Copy, Debug)]
pub struct Decision {
    /// Where to run.
    pub backend: BackendKind,
    /// Why.
    pub reason: Reason,
    /// The figures it was decided from (absent when no snapshot was needed).
    pub snapshot: Option<MetricsSnapshot>,
}

impl DispatchPolicy {
    /// Chooses for `Auto`. `gpu` holds the accelerator's advertised rates when one is
    /// usable; `cpu_rates` are the CPU's.
    pub fn decide(
        &self,
        tracker: &PerformanceTracker,
        op: super::tracker::Op,
        shape: Shape,
        cpu_rates: Rates,
        gpu: Option<Rates>,
    ) -> Decision {
        let pick = |backend, reason, snapshot| Decision {
            backend,
            reason,
            snapshot,
        };
        let Some(gpu_rates) = gpu else {
            return pick(BackendKind::Cpu, Reason::NoAccelerator, None);
        };
        if shape.work() < self.min_gpu_work {
            return pick(BackendKind::Cpu, Reason::BelowMinBatch, None);
        }
        match tracker.breaker() {
            BreakerState::Closed => {}
            BreakerState::Open { .. } => return pick(BackendKind::Cpu, Reason::BreakerOpen, None),
            BreakerState::HalfOpen => {
                return if tracker.claim_probe(self.breaker_cooldown) {
                    pick(BackendKind::Gpu, Reason::BreakerProbe, None)
                } else {
                    pick(BackendKind::Cpu, Reason::BreakerOpen, None)
                };
            }
        }
        let s = tracker.snapshot(op, shape);
        let (c, g) = (s.cpu.samples, s.gpu.samples);
        if c == 0 && g == 0 {
            let est = |r: Rates| r.estimate(shape.queries, shape.rows, shape.dim);
            let backend = if est(gpu_rates) < est(cpu_rates) {
                BackendKind::Gpu
            } else {
                BackendKind::Cpu
            };
            return pick(backend, Reason::Roofline, Some(s));
        }
        // Failures fade with every call in the bucket; once less than one call's worth of
        // evidence is left, the accelerator is explored again instead of shut out forever.
        if s.gpu.evidence() >= 1.0 && s.gpu.success_rate() < self.min_success_rate {
            // One probe per cool-down, as for the breaker: a GPU that recovered is not
            // kept out until its old failures fade.
            return if tracker.claim_reprobe(self.breaker_cooldown) {
                pick(BackendKind::Gpu, Reason::BreakerProbe, Some(s))
            } else {
                pick(BackendKind::Cpu, Reason::Unreliable, Some(s))
            };
        }
        if c < self.explore_samples || g < self.explore_samples {
            let backend = if g < c {
                BackendKind::Gpu
            } else {
                BackendKind::Cpu
            };
            return pick(backend, Reason::Explore, Some(s));
        }
        let (winner, loser, reason) = if s.speedup >= self.min_speedup {
            (BackendKind::Gpu, BackendKind::Cpu, Reason::MeasuredFaster)
        } else {
            (BackendKind::Cpu, BackendKind::Gpu, Reason::MeasuredSlower)
        };
        if self.remeasure_due(&s, loser) {
            return pick(loser, Reason::Remeasure, Some(s));
        }
        pick(winner, reason, Some(s))
    }

    /// Whether `loser`'s rate is old enough that one call to it costs at most
    /// `remeasure_budget` of the winner's calls since then.
    fn remeasure_due(&self, s: &MetricsSnapshot, loser: BackendKind) -> bool {
        if self.remeasure_budget <= 0.0 {
            return false;
        }
        // Both rates are positive here (both backends have samples); a non-finite ratio
        // (a zero rate) never triggers.
        let slowdown = s.speedup.max(1.0 / s.speedup);
        let due = slowdown / self.remeasure_budget;
        due.is_finite() && s.of(loser).since_sample as f64 >= due
    }
}
