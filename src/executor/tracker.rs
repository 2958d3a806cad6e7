//! Measured performance per (operation, size bucket, backend), and the circuit breaker.
//!
//! Throughput is kept as work per second (work = `Q·N·D`), an exponentially weighted
//! moving average per bucket, so calls of different sizes are never averaged together as
//! raw latencies. A bucket is the work rounded up to a power of two, split by query-batch
//! class ([`Bucket`]): one query against a million rows streams memory while a thousand
//! queries against a thousand rows is arithmetic, and the two do the same work at speeds
//! ten times apart on a CPU. Success, failure and out-of-memory counts decay by a constant
//! factor per recorded call, so old history fades.
//!
//! Each (operation, bucket) pair holds both backends' figures in one immutable value
//! behind an atomically swapped pointer. A [`MetricsSnapshot`] is a copy of that one
//! value, so its rates, speedup and counts all come from the same instant, and taking it
//! never waits: a recorder builds the next value under a writers-only lock and swaps it
//! in, so dispatch never blocks behind a recorder, however many there are.

use crate::backend::BackendKind;
use crate::error::{Error, Result};
use crate::metric::Metric;
use arc_swap::ArcSwap;
use parking_lot::Mutex;
use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The operations the executor measures separately. Each metric's top-k has buckets of
/// its own: the backends run other kernels for it (L2 adds the row biases), and the exact
/// metrics pay for a re-score on the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Cosine top-k: [`HybridExecutor::top_k`](crate::HybridExecutor::top_k), and
    /// [`search`](crate::HybridExecutor::search) and
    /// [`range`](crate::HybridExecutor::range) with [`Metric::Cosine`].
    TopK,
    /// [`HybridExecutor::cosine_similarity`](crate::HybridExecutor::cosine_similarity).
    Cosine,
    /// Top-k candidates under [`Metric::InnerProduct`] (`search`, `range`).
    TopKInnerProduct,
    /// Top-k candidates under [`Metric::L2`] (`search`, `range`).
    TopKL2,
    /// The inner-product score matrix, which
    /// [`similarity`](crate::HybridExecutor::similarity) computes for inner product and
    /// L2.
    InnerProduct,
}

impl Op {
    /// Every operation, in a stable order.
    pub const ALL: [Op; 5] = [
        Op::TopK,
        Op::Cosine,
        Op::TopKInnerProduct,
        Op::TopKL2,
        Op::InnerProduct,
    ];

    /// The top-k operation of `metric`.
    pub fn top_k(metric: Metric) -> Op {
        match metric {
            Metric::Cosine => Op::TopK,
            Metric::InnerProduct => Op::TopKInnerProduct,
            Metric::L2 => Op::TopKL2,
        }
    }

    /// `"top_k"`, `"cosine"`, `"top_k_ip"`, `"top_k_l2"` or `"inner_product"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::TopK => "top_k",
            Op::Cosine => "cosine",
            Op::TopKInnerProduct => "top_k_ip",
            Op::TopKL2 => "top_k_l2",
            Op::InnerProduct => "inner_product",
        }
    }

    fn from_str(s: &str) -> Option<Self> {
        Op::ALL.into_iter().find(|op| op.as_str() == s)
    }

    fn index(self) -> usize {
        match self {
            Op::TopK => 0,
            Op::Cosine => 1,
            Op::TopKInnerProduct => 2,
            Op::TopKL2 => 3,
            Op::InnerProduct => 4,
        }
    }
}

/// The shape of a call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shape {
    /// Query rows.
    pub queries: usize,
    /// Corpus rows.
    pub rows: usize,
    /// Dimension.
    pub dim: usize,
}

impl Shape {
    /// `Q·N·D`, the unit throughput is normalised by.
    pub fn work(&self) -> u64 {
        (self.queries as u64)
            .saturating_mul(self.rows as u64)
            .saturating_mul(self.dim as u64)
    }

    /// The size bucket: the work rounded up to a power of two, and the query class.
    pub fn bucket(&self) -> Bucket {
        let w = self.work().max(1);
        Bucket {
            work_log2: 64 - (w - 1).leading_zeros(),
            query_class: QUERY_CLASS_MAX
                .iter()
                .position(|&max| self.queries <= max)
                .unwrap_or(QUERY_CLASSES - 1) as u8,
        }
    }
}

/// Upper bounds (inclusive) of the query classes. A class spans 8× in batch size, so the
/// arithmetic intensity (about `Q/2` FLOP per corpus byte) varies 8× at most within it;
/// the CPU and GPU ridge points (≈10 and ≈20 FLOP/byte) fall in classes 1 and 2.
const QUERY_CLASS_MAX: [usize; QUERY_CLASSES] = [2, 16, 128, usize::MAX];
const QUERY_CLASSES: usize = 4;

/// Where a call's measurements live.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Bucket {
    /// `ceil(log2(Q·N·D))`: bucket `b` holds work in `(2^(b-1), 2^b]`.
    pub work_log2: u32,
    /// Query batch class: 0 for `Q ≤ 2`, 1 for `Q ≤ 16`, 2 for `Q ≤ 128`, 3 above.
    pub query_class: u8,
}

impl Bucket {
    /// Every bucket, in order.
    fn all() -> impl Iterator<Item = Bucket> {
        (0..WORK_BUCKETS as u32).flat_map(|work_log2| {
            (0..QUERY_CLASSES as u8).map(move |query_class| Bucket {
                work_log2,
                query_class,
            })
        })
    }
}

impl fmt::Display for Bucket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "2^{}/q{}", self.work_log2, self.query_class)
    }
}

/// How measurements are smoothed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrackerConfig {
    /// Weight of a new throughput sample in the moving average (0..=1). Default 0.3.
    pub ewma_alpha: f64,
    /// Factor applied to both backends' success/failure/OOM counts in a bucket at each call
    /// recorded there. Default 0.95: an event's weight halves after about 14 more calls.
    pub count_decay: f64,
}

impl Default for TrackerConfig {
    fn default() -> Self {
        Self {
            ewma_alpha: 0.3,
            count_decay: 0.95,
        }
    }
}

/// One backend's figures in one bucket.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct BackendMetrics {
    /// Work per second (moving average); 0 before the first successful sample.
    pub rate: f64,
    /// Successful calls timed (not decayed).
    pub samples: u64,
    /// Calls that failed (not decayed).
    pub failures_total: u64,
    /// Decayed success count.
    pub successes: f64,
    /// Decayed failure count (out-of-memory included).
    pub failures: f64,
    /// Decayed out-of-memory count.
    pub ooms: f64,
    /// Calls recorded in this bucket (for either backend) since this backend's last
    /// successful sample: how stale its rate is. 0 before the first sample.
    pub since_sample: u64,
}

impl BackendMetrics {
    /// Decayed outcomes: how much evidence the success rate rests on.
    pub fn evidence(&self) -> f64 {
        self.successes + self.failures
    }

    /// Decayed successes over decayed outcomes; 1 with no outcomes yet.
    pub fn success_rate(&self) -> f64 {
        let total = self.successes + self.failures;
        if total > 0.0 {
            self.successes / total
        } else {
            1.0
        }
    }
}

/// Every figure of one (operation, bucket), copied out at one instant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MetricsSnapshot {
    /// The operation.
    pub op: Op,
    /// The size bucket.
    pub bucket: Bucket,
    /// The CPU's figures.
    pub cpu: BackendMetrics,
    /// The accelerator's figures.
    pub gpu: BackendMetrics,
    /// `gpu.rate / cpu.rate`; NaN until both have a sample.
    pub speedup: f64,
}

impl MetricsSnapshot {
    /// The figures of `kind`.
    pub fn of(&self, kind: BackendKind) -> &BackendMetrics {
        match kind {
            BackendKind::Cpu => &self.cpu,
            BackendKind::Gpu => &self.gpu,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Slot {
    per: [BackendMetrics; 2],
}

/// Work buckets: `ceil(log2)` of a `u64` is 0..=64.
const WORK_BUCKETS: usize = 65;
const OPS: usize = Op::ALL.len();

/// One (operation, bucket): the current figures, and the lock that orders writers.
/// Padded to its own cache lines, so recording one bucket never slows another.
#[repr(align(128))]
#[derive(Default)]
struct Cell {
    current: ArcSwap<Slot>,
    writer: Mutex<()>,
}

impl Cell {
    /// Applies `f` to a copy of the figures and publishes the result.
    fn update(&self, f: impl FnOnce(&mut Slot)) {
        let _writer = self.writer.lock();
        let mut next = **self.current.load();
        f(&mut next);
        self.current.store(Arc::new(next));
    }

    fn read(&self) -> Slot {
        **self.current.load()
    }
}

/// The state of the accelerator's circuit breaker.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BreakerState {
    /// Calls may go to the accelerator.
    Closed,
    /// Recent failures: calls go to the CPU until the cool-down ends.
    Open {
        /// Time left until a probe is allowed.
        remaining: Duration,
    },
    /// The cool-down is over: the next eligible call probes the accelerator.
    HalfOpen,
}

/// Measured performance, per (operation, size bucket, backend), plus the breaker.
pub struct PerformanceTracker {
    config: TrackerConfig,
    slots: Box<[Cell]>,
    epoch: Instant,
    /// Consecutive accelerator failures.
    gpu_failures_in_a_row: AtomicU32,
    /// While open: nanoseconds since `epoch` when the breaker may half-open; 0 when closed.
    gpu_open_until: AtomicU64,
    /// Nanoseconds since `epoch` before which an unreliable bucket is not re-probed.
    gpu_next_reprobe: AtomicU64,
}

impl std::fmt::Debug for PerformanceTracker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PerformanceTracker")
            .field("config", &self.config)
            .field("breaker", &self.breaker())
            .finish()
    }
}

impl PerformanceTracker {
    /// An empty tracker.
    pub fn new(config: TrackerConfig) -> Result<Self> {
        let unit = |x: f64| x > 0.0 && x <= 1.0; // false for NaN too
        if !unit(config.ewma_alpha) || !unit(config.count_decay) {
            return Err(Error::InvalidConfig(
                "ewma_alpha and count_decay must lie in (0, 1]".into(),
            ));
        }
        Ok(Self {
            config,
            slots: (0..OPS * WORK_BUCKETS * QUERY_CLASSES)
                .map(|_| Cell::default())
                .collect(),
            epoch: Instant::now(),
            gpu_failures_in_a_row: AtomicU32::new(0),
            gpu_open_until: AtomicU64::new(0),
            gpu_next_reprobe: AtomicU64::new(0),
        })
    }

    fn slot(&self, op: Op, bucket: Bucket) -> &Cell {
        let op = op.index();
        let work = (bucket.work_log2 as usize).min(WORK_BUCKETS - 1);
        let class = (bucket.query_class as usize).min(QUERY_CLASSES - 1);
        &self.slots[(op * WORK_BUCKETS + work) * QUERY_CLASSES + class]
    }

    /// Every figure for `shape`'s bucket, from one instant.
    pub fn snapshot(&self, op: Op, shape: Shape) -> MetricsSnapshot {
        self.snapshot_bucket(op, shape.bucket())
    }

    /// Every figure for `bucket`, from one instant.
    pub fn snapshot_bucket(&self, op: Op, bucket: Bucket) -> MetricsSnapshot {
        let [cpu, gpu] = self.slot(op, bucket).read().per;
        let speedup = if cpu.samples > 0 && gpu.samples > 0 {
            gpu.rate / cpu.rate
        } else {
            f64::NAN
        };
        MetricsSnapshot {
            op,
            bucket,
            cpu,
            gpu,
            speedup,
        }
    }

    /// Records a successful call that took `elapsed`.
    pub fn record_success(&self, op: Op, shape: Shape, kind: BackendKind, elapsed: Duration) {
        let rate = shape.work() as f64 / elapsed.as_secs_f64().max(1e-9);
        let alpha = self.config.ewma_alpha;
        self.slot(op, shape.bucket()).update(|slot| {
            self.decay(slot);
            let m = &mut slot.per[kind.index()];
            m.rate = if m.samples == 0 {
                rate
            } else {
                m.rate + alpha * (rate - m.rate)
            };
            m.samples += 1;
            m.successes += 1.0;
            m.since_sample = 0;
        });
        // Written only when set: a store per success would bounce the cache line every
        // decision reads.
        if kind == BackendKind::Gpu {
            if self.gpu_failures_in_a_row.load(Ordering::Relaxed) != 0 {
                self.gpu_failures_in_a_row.store(0, Ordering::Relaxed);
            }
            if self.gpu_open_until.load(Ordering::Relaxed) != 0 {
                self.gpu_open_until.store(0, Ordering::Release);
            }
        }
    }

    /// Every call in a bucket fades the evidence of both backends there, so a backend that
    /// failed a while ago is eventually tried again even if nothing else brings it back,
    /// and ages both rates (`since_sample`), so a verdict gets re-measured.
    fn decay(&self, slot: &mut Slot) {
        let d = self.config.count_decay;
        for m in &mut slot.per {
            m.successes *= d;
            m.failures *= d;
            m.ooms *= d;
            if m.samples > 0 {
                m.since_sample += 1;
            }
        }
    }

    /// Records a failed call (`oom`: it ran out of device memory). For the accelerator,
    /// `breaker.0` failures other than OOM in a row open the breaker for `breaker.1`.
    pub fn record_failure(
        &self,
        op: Op,
        shape: Shape,
        kind: BackendKind,
        oom: bool,
        breaker: (u32, Duration),
    ) {
        self.slot(op, shape.bucket()).update(|slot| {
            self.decay(slot);
            let m = &mut slot.per[kind.index()];
            m.failures_total += 1;
            m.failures += 1.0;
            if oom {
                m.ooms += 1.0;
            }
        });
        // Running out of memory says the call was too big, not that the device is broken:
        // it lowers the bucket's success rate but never opens the breaker.
        if kind == BackendKind::Gpu && !oom {
            let (threshold, cooldown) = breaker;
            self.gpu_next_reprobe.store(
                self.now_nanos() + cooldown.as_nanos() as u64,
                Ordering::Release,
            );
            let n = self.gpu_failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
            let half_open = self.gpu_open_until.load(Ordering::Acquire) != 0;
            // A failed probe re-opens at once; otherwise the threshold decides.
            if half_open || n >= threshold {
                let until = self.now_nanos() + cooldown.as_nanos() as u64;
                self.gpu_open_until.store(until.max(1), Ordering::Release);
            }
        }
    }

    fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// The accelerator's breaker, now.
    pub fn breaker(&self) -> BreakerState {
        let until = self.gpu_open_until.load(Ordering::Acquire);
        if until == 0 {
            return BreakerState::Closed; // the common case reads no clock
        }
        let now = self.now_nanos();
        match until {
            u if u > now => BreakerState::Open {
                remaining: Duration::from_nanos(u - now),
            },
            _ => BreakerState::HalfOpen,
        }
    }

    /// Claims the single probe of a half-open breaker: true for exactly one caller per
    /// cool-down (which pushes the next probe one `cooldown` away in case this one hangs).
    pub(crate) fn claim_probe(&self, cooldown: Duration) -> bool {
        let until = self.gpu_open_until.load(Ordering::Acquire);
        let now = self.now_nanos();
        if until == 0 || until > now {
            return false;
        }
        let next = now + cooldown.as_nanos() as u64;
        self.gpu_open_until
            .compare_exchange(until, next.max(1), Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
    }

    /// Claims a re-probe of an accelerator whose success rate is low in some bucket: true
    /// for one caller per `cooldown`, counted from its last failure.
    pub(crate) fn claim_reprobe(&self, cooldown: Duration) -> bool {
        let next = self.gpu_next_reprobe.load(Ordering::Acquire);
        let now = self.now_nanos();
        now >= next
            && self
                .gpu_next_reprobe
                .compare_exchange(
                    next,
                    now + cooldown.as_nanos() as u64,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                )
                .is_ok()
    }

    /// Forgets the accelerator's failures in `shape`'s bucket. The executor calls it after a
    /// successful probe, or the failures that prompted the probe would keep the GPU out.
    pub(crate) fn forgive(&self, op: Op, shape: Shape) {
        self.slot(op, shape.bucket()).update(|slot| {
            let m = &mut slot.per[BackendKind::Gpu.index()];
            m.failures = 0.0;
            m.ooms = 0.0;
        });
    }

    /// Every bucket with data, as JSON keyed by `device` and this crate's version, so a
    /// service can start warm with [`import`](Self::import).
    pub fn export(&self, device: &str) -> String {
        let mut entries = Vec::new();
        for op in Op::ALL {
            for bucket in Bucket::all() {
                let s = self.snapshot_bucket(op, bucket);
                for kind in [BackendKind::Cpu, BackendKind::Gpu] {
                    let m = s.of(kind);
                    if m.samples == 0 && m.failures_total == 0 {
                        continue;
                    }
                    entries.push(serde_json::json!({
                        "op": op.as_str(),
                        "work_log2": bucket.work_log2,
                        "query_class": bucket.query_class,
                        "backend": kind.as_str(),
                        "rate": m.rate,
                        "samples": m.samples,
                        "failures_total": m.failures_total,
                        "successes": m.successes,
                        "failures": m.failures,
                        "ooms": m.ooms,
                        "since_sample": m.since_sample,
                    }));
                }
            }
        }
        serde_json::json!({
            "crate_version": env!("CARGO_PKG_VERSION"),
            "device": device,
            "entries": entries,
        })
        .to_string()
    }

    /// Loads measurements written by [`export`](Self::export), replacing the buckets they
    /// name. Returns how many entries were loaded. Errors ([`Error::InvalidConfig`]) when the
    /// JSON is malformed or was written for another device or crate version: stale figures
    /// would mislead the policy.
    pub fn import(&self, json: &str, device: &str) -> Result<usize> {
        let bad = |why: &str| Error::InvalidConfig(format!("tracker import: {why}"));
        let v: serde_json::Value = serde_json::from_str(json).map_err(|e| bad(&e.to_string()))?;
        let version = v["crate_version"]
            .as_str()
            .ok_or_else(|| bad("no crate_version"))?;
        if version != env!("CARGO_PKG_VERSION") {
            return Err(bad(&format!(
                "written by hybridvec {version}, this is {}",
                env!("CARGO_PKG_VERSION")
            )));
        }
        let dev = v["device"].as_str().ok_or_else(|| bad("no device"))?;
        if dev != device {
            return Err(bad(&format!("written for device {dev:?}, not {device:?}")));
        }
        let entries = v["entries"].as_array().ok_or_else(|| bad("no entries"))?;
        let mut parsed = Vec::with_capacity(entries.len());
        for e in entries {
            let op = e["op"]
                .as_str()
                .and_then(Op::from_str)
                .ok_or_else(|| bad("bad op"))?;
            let work_log2 = e["work_log2"]
                .as_u64()
                .filter(|&b| b < WORK_BUCKETS as u64)
                .ok_or_else(|| bad("bad work_log2"))? as u32;
            let query_class = e["query_class"]
                .as_u64()
                .filter(|&c| c < QUERY_CLASSES as u64)
                .ok_or_else(|| bad("bad query_class"))? as u8;
            let bucket = Bucket {
                work_log2,
                query_class,
            };
            let kind = match e["backend"].as_str() {
                Some("cpu") => BackendKind::Cpu,
                Some("gpu") => BackendKind::Gpu,
                _ => return Err(bad("bad backend")),
            };
            let num = |k: &str| {
                e[k].as_f64()
                    .filter(|x| x.is_finite() && *x >= 0.0)
                    .ok_or_else(|| bad(&format!("bad {k}")))
            };
            let count = |k: &str| e[k].as_u64().ok_or_else(|| bad(&format!("bad {k}")));
            let m = BackendMetrics {
                rate: num("rate")?,
                samples: count("samples")?,
                failures_total: count("failures_total")?,
                successes: num("successes")?,
                failures: num("failures")?,
                ooms: num("ooms")?,
                since_sample: count("since_sample")?,
            };
            parsed.push((op, bucket, kind, m));
        }
        // Validated whole before anything changes: a bad file loads nothing.
        for &(op, bucket, kind, m) in &parsed {
            self.slot(op, bucket)
                .update(|slot| slot.per[kind.index()] = m);
        }
        Ok(parsed.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_power_of_two_ceilings() {
        let s = |q, n, d| Shape {
            queries: q,
            rows: n,
            dim: d,
        };
        let w = |q, n, d| s(q, n, d).bucket().work_log2;
        assert_eq!(w(1, 1, 1), 0);
        assert_eq!(w(1, 1, 2), 1);
        assert_eq!(w(1, 3, 1), 2);
        assert_eq!(w(1, 4, 1), 2);
        assert_eq!(w(1, 5, 1), 3);
        assert_eq!(w(1, 100_000, 768), 27); // 76.8M in (2^26, 2^27]
        assert_eq!(w(usize::MAX, usize::MAX, 2), 64);
        let c = |q| s(q, 1000, 768).bucket().query_class;
        assert_eq!(
            [c(1), c(2), c(3), c(16), c(17), c(128), c(129)],
            [0, 0, 1, 1, 2, 2, 3]
        );
        assert_eq!(c(usize::MAX), 3);
        // Same work, one streaming and one arithmetic-bound: kept apart.
        assert_ne!(s(1, 1 << 20, 768).bucket(), s(1024, 1 << 10, 768).bucket());
    }

    #[test]
    fn rates_are_normalised_by_work_and_averaged() {
        let t = PerformanceTracker::new(TrackerConfig::default()).unwrap();
        let shape = Shape {
            queries: 4,
            rows: 1000,
            dim: 250,
        }; // work 1e6
        t.record_success(Op::TopK, shape, BackendKind::Cpu, Duration::from_millis(1));
        let s = t.snapshot(Op::TopK, shape);
        assert!((s.cpu.rate - 1e9).abs() < 1.0, "{}", s.cpu.rate);
        assert!(s.speedup.is_nan(), "no GPU sample yet");
        t.record_success(Op::TopK, shape, BackendKind::Cpu, Duration::from_millis(2));
        let s = t.snapshot(Op::TopK, shape);
        // EWMA: 1e9 + 0.3 * (0.5e9 - 1e9)
        assert!((s.cpu.rate - 0.85e9).abs() < 1.0, "{}", s.cpu.rate);
        t.record_success(
            Op::TopK,
            shape,
            BackendKind::Gpu,
            Duration::from_micros(250),
        );
        let s = t.snapshot(Op::TopK, shape);
        assert!((s.speedup - 4e9 / 0.85e9).abs() < 1e-9);
        // Another op or bucket is untouched.
        assert_eq!(t.snapshot(Op::Cosine, shape).cpu.samples, 0);
    }

    #[test]
    fn counts_decay_and_one_failure_never_disables_forever() {
        let t = PerformanceTracker::new(TrackerConfig::default()).unwrap();
        let shape = Shape {
            queries: 1,
            rows: 1,
            dim: 1,
        };
        let breaker = (3, Duration::from_millis(20));
        t.record_failure(Op::TopK, shape, BackendKind::Gpu, true, breaker);
        t.record_failure(Op::TopK, shape, BackendKind::Gpu, true, breaker);
        t.record_failure(Op::TopK, shape, BackendKind::Gpu, true, breaker);
        assert_eq!(
            t.breaker(),
            BreakerState::Closed,
            "running out of memory opens nothing"
        );
        t.record_failure(Op::TopK, shape, BackendKind::Gpu, false, breaker);
        assert_eq!(
            t.breaker(),
            BreakerState::Closed,
            "one failure opens nothing"
        );
        for _ in 0..2 {
            t.record_failure(Op::TopK, shape, BackendKind::Gpu, false, breaker);
        }
        assert!(matches!(t.breaker(), BreakerState::Open { .. }));
        let s = t.snapshot(Op::TopK, shape);
        assert_eq!(s.gpu.failures_total, 6);
        // Three OOMs, then three more calls: 0.95^3 + 0.95^4 + 0.95^5.
        let want = 0.95f64.powi(3) + 0.95f64.powi(4) + 0.95f64.powi(5);
        assert!((s.gpu.ooms - want).abs() < 1e-12, "decayed: {}", s.gpu.ooms);
        std::thread::sleep(Duration::from_millis(25));
        assert_eq!(t.breaker(), BreakerState::HalfOpen);
        assert!(t.claim_probe(breaker.1));
        assert!(!t.claim_probe(breaker.1), "one probe per cool-down");
        t.record_success(Op::TopK, shape, BackendKind::Gpu, Duration::from_micros(1));
        assert_eq!(t.breaker(), BreakerState::Closed);
        for _ in 0..20 {
            t.record_success(Op::TopK, shape, BackendKind::Gpu, Duration::from_micros(1));
        }
        assert!(t.snapshot(Op::TopK, shape).gpu.success_rate() > 0.6);
    }

    #[test]
    fn export_import_round_trips_and_refuses_other_devices() {
        let t = PerformanceTracker::new(TrackerConfig::default()).unwrap();
        let shape = Shape {
            queries: 64,
            rows: 100_000,
            dim: 768,
        };
        t.record_success(Op::TopK, shape, BackendKind::Cpu, Duration::from_millis(70));
        t.record_success(Op::TopK, shape, BackendKind::Gpu, Duration::from_millis(2));
        t.record_failure(
            Op::Cosine,
            shape,
            BackendKind::Gpu,
            true,
            (3, Duration::from_secs(1)),
        );
        let json = t.export("H100");
        let u = PerformanceTracker::new(TrackerConfig::default()).unwrap();
        assert_eq!(u.import(&json, "H100").unwrap(), 3);
        for op in [Op::TopK, Op::Cosine] {
            let (a, b) = (t.snapshot(op, shape), u.snapshot(op, shape));
            assert_eq!(a.cpu, b.cpu);
            assert_eq!(a.gpu, b.gpu);
        }
        assert!(matches!(
            u.import(&json, "A100"),
            Err(Error::InvalidConfig(_))
        ));
        let other_version = json.replace(env!("CARGO_PKG_VERSION"), "0.0.0-other");
        assert!(matches!(
            u.import(&other_version, "H100"),
            Err(Error::InvalidConfig(_))
        ));
        let bad_rate = json.replacen("\"rate\":", "\"rate\":-", 1);
        let fresh = PerformanceTracker::new(TrackerConfig::default()).unwrap();
        assert!(fresh.import(&bad_rate, "H100").is_err());
        assert_eq!(
            fresh.snapshot(Op::TopK, shape).cpu.samples,
            0,
            "nothing loaded"
        );
    }
}
