//! The performance tracker and the dispatch policy through the public API: snapshots are
//! consistent under concurrent recording, and on a grid of shapes with injected speeds the
//! policy's choice costs within 10% of the faster backend in every bucket.

use hybridvec::{
    BackendKind, Bucket, DispatchPolicy, MetricsSnapshot, Op, PerformanceTracker, Rates, Reason,
    Shape, TrackerConfig,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

/// xorshift64*: seeded, so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// Uniform in [lo, hi).
    fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// `Σ_{i<n} d^i`: the decayed outcome count after `n` calls in a bucket, each of which
/// decays every count by `d` and adds one outcome.
fn decayed_total(n: u64, d: f64) -> f64 {
    (0..n).fold(0.0, |acc, _| acc * d + 1.0)
}

/// Every figure of a snapshot must come from one instant. Each recorded call decays all
/// four decayed counts (both backends' successes and failures) and adds 1 to one of them,
/// and adds 1 to one of the four raw totals, so after `n` calls the decayed counts sum to
/// `Σ_{i<n} d^i` exactly where `n` is the sum of the raw totals. A snapshot that read the
/// backends, or the raw and decayed counts, at different moments breaks that identity.
fn check_consistent(s: &MetricsSnapshot, decay: f64, rate_range: (f64, f64)) -> u64 {
    let n = s.cpu.samples + s.cpu.failures_total + s.gpu.samples + s.gpu.failures_total;
    let decayed = s.cpu.evidence() + s.gpu.evidence();
    let want = decayed_total(n, decay);
    assert!(
        (decayed - want).abs() <= 1e-6 * want.max(1.0),
        "n = {n}: decayed counts sum to {decayed}, {want} expected: {s:?}"
    );
    for m in [&s.cpu, &s.gpu] {
        assert!(m.ooms <= m.failures + 1e-9, "{s:?}");
        if m.samples > 0 {
            assert!(
                m.rate >= rate_range.0 * (1.0 - 1e-9) && m.rate <= rate_range.1 * (1.0 + 1e-9),
                "rate {} outside the injected range: {s:?}",
                m.rate
            );
        } else {
            assert_eq!(m.rate, 0.0, "{s:?}");
        }
    }
    if s.cpu.samples > 0 && s.gpu.samples > 0 {
        assert_eq!(
            s.speedup.to_bits(),
            (s.gpu.rate / s.cpu.rate).to_bits(),
            "speedup must be the ratio of the snapshot's own rates: {s:?}"
        );
    } else {
        assert!(s.speedup.is_nan(), "{s:?}");
    }
    n
}

#[test]
fn snapshots_are_consistent_while_16_threads_record() {
    const RECORDERS: usize = 16;
    const SNAPSHOTTERS: usize = 16;
    const CALLS: u64 = 2_000;
    const TOTAL: u64 = RECORDERS as u64 * CALLS;
    // Snapshots that must fall strictly inside the recording (0 < n < TOTAL).
    const MIN_MID_RUN: u64 = 100;
    // On a loaded machine the scheduler can run all the recording in one time slice and
    // the snapshotters only before or after it. So each recorder pauses at GATES points
    // spread over its calls, gate g at call g·CALLS/(GATES+1), until the snapshotters
    // together have seen g·MIN_MID_RUN/GATES mid-run snapshots. The last gate comes
    // before the last calls, so those snapshots all have n < TOTAL, and MIN_MID_RUN of
    // them are guaranteed, unless snapshot() cannot return while recording is under way:
    // then the gates give up at the deadline and the assertion below fails.
    const GATES: u64 = 4;
    const GATE_TIMEOUT: Duration = Duration::from_secs(60);
    // Close to 1 so that the decayed sum still changes measurably after all 32 000 calls
    // (d^32000 ≈ 0.04): a torn snapshot cannot hide in a converged sum.
    let decay = 0.9999;
    let tracker = PerformanceTracker::new(TrackerConfig {
        ewma_alpha: 0.3,
        count_decay: decay,
    })
    .unwrap();
    let shape = Shape {
        queries: 16,
        rows: 10_000,
        dim: 128,
    };
    let work = shape.work() as f64;
    let micros = [100u64, 250, 1_000, 4_000];
    let rate_range = (work / 4_000e-6, work / 100e-6);
    let done = AtomicBool::new(false);
    // Mid-run snapshots seen so far by all snapshotters together; opens the gates.
    let seen_mid_run = AtomicU64::new(0);
    let gate_timed_out = AtomicBool::new(false);
    let start = Barrier::new(RECORDERS + SNAPSHOTTERS);
    let deadline = Instant::now() + GATE_TIMEOUT;
    let (snapshots, mid_run) = std::thread::scope(|scope| {
        let recorders: Vec<_> = (0..RECORDERS)
            .map(|t| {
                let (tracker, start) = (&tracker, &start);
                let (seen_mid_run, gate_timed_out) = (&seen_mid_run, &gate_timed_out);
                scope.spawn(move || {
                    let mut rng = Rng(0x9e37_79b9_7f4a_7c15 ^ t as u64);
                    start.wait();
                    let mut gate = 1;
                    for call in 0..CALLS {
                        if gate <= GATES && call == gate * CALLS / (GATES + 1) {
                            let want = gate * MIN_MID_RUN / GATES;
                            while seen_mid_run.load(Ordering::Acquire) < want {
                                if Instant::now() >= deadline {
                                    // Record the rest anyway: the totals still check,
                                    // and the mid-run assertion reports the shortfall.
                                    gate_timed_out.store(true, Ordering::Relaxed);
                                    break;
                                }
                                std::thread::sleep(Duration::from_micros(200));
                            }
                            gate += 1;
                        }
                        let r = rng.next();
                        let elapsed = Duration::from_micros(micros[(r % 4) as usize]);
                        let kind = if r & 8 == 0 {
                            BackendKind::Cpu
                        } else {
                            BackendKind::Gpu
                        };
                        match (r >> 4) % 8 {
                            0 => tracker.record_failure(
                                Op::TopK,
                                shape,
                                kind,
                                true,
                                (3, Duration::from_millis(1)),
                            ),
                            1 => tracker.record_failure(
                                Op::TopK,
                                shape,
                                kind,
                                false,
                                (3, Duration::from_millis(1)),
                            ),
                            _ => tracker.record_success(Op::TopK, shape, kind, elapsed),
                        }
                    }
                })
            })
            .collect();
        let snapshotters: Vec<_> = (0..SNAPSHOTTERS)
            .map(|_| {
                let (tracker, start, done) = (&tracker, &start, &done);
                let seen_mid_run = &seen_mid_run;
                scope.spawn(move || {
                    start.wait();
                    let (mut taken, mut mid_run, mut last_n) = (0u64, 0u64, 0u64);
                    loop {
                        let finished = done.load(Ordering::Acquire);
                        let s = tracker.snapshot(Op::TopK, shape);
                        let n = check_consistent(&s, decay, rate_range);
                        assert!(n >= last_n, "calls went backwards: {last_n} then {n}");
                        assert!(n <= TOTAL, "{n} calls seen, only {TOTAL} recorded");
                        last_n = n;
                        taken += 1;
                        if n > 0 && n < TOTAL {
                            mid_run += 1;
                            seen_mid_run.fetch_add(1, Ordering::Release);
                        }
                        if finished {
                            return (taken, mid_run);
                        }
                    }
                })
            })
            .collect();
        for r in recorders {
            r.join().unwrap();
        }
        done.store(true, Ordering::Release);
        snapshotters
            .into_iter()
            .map(|s| s.join().unwrap())
            .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1))
    });
    let last = tracker.snapshot(Op::TopK, shape);
    assert_eq!(check_consistent(&last, decay, rate_range), TOTAL);
    assert!(
        mid_run >= MIN_MID_RUN,
        "only {mid_run} of {snapshots} snapshots overlapped the recording{}",
        if gate_timed_out.load(Ordering::Relaxed) {
            format!(
                " (the recorders waited {GATE_TIMEOUT:?} for {MIN_MID_RUN} and gave up: \
                 does snapshot() block while recording?)"
            )
        } else {
            String::new()
        }
    );
}

/// Injected speeds: a fixed cost per call plus the slower of streaming the corpus and the
/// arithmetic (the roofline), and the time to move queries and results.
#[derive(Clone, Copy)]
struct Model {
    overhead_us: f64,
    bytes_per_sec: f64,
    flops: f64,
    /// Host↔device transfer per query (0 for the CPU).
    link_bytes_per_sec: f64,
}

impl Model {
    fn secs(&self, s: Shape, k: usize) -> f64 {
        let (q, n, d) = (s.queries as f64, s.rows as f64, s.dim as f64);
        let stream = 4.0 * n * d / self.bytes_per_sec;
        let math = 2.0 * q * n * d / self.flops;
        let link = if self.link_bytes_per_sec > 0.0 {
            q * (4.0 * d + 8.0 * k as f64) / self.link_bytes_per_sec
        } else {
            0.0
        };
        self.overhead_us * 1e-6 + stream.max(math) + link
    }
    fn rates(&self) -> Rates {
        Rates {
            flops: self.flops,
            bytes_per_sec: self.bytes_per_sec,
            overhead: Duration::from_secs_f64(self.overhead_us * 1e-6),
        }
    }
}

/// Runs the grid through `decide` → injected time (±5% noise) → `record_success`, in
/// rounds that visit every cell (as a service would interleave them). After `warmup`
/// rounds, sums per bucket the true time of what was chosen and of the faster backend.
fn oracle(cpu: Model, gpu: Model, seed: u64) -> Vec<(Bucket, f64, Vec<String>)> {
    let policy = DispatchPolicy::default();
    let tracker = PerformanceTracker::new(TrackerConfig::default()).unwrap();
    let k = 10;
    let mut cells = Vec::new();
    for dim in [64, 768] {
        for queries in [1, 4, 16, 64, 256, 1024, 4096] {
            for rows in [1_000, 10_000, 100_000, 1_000_000] {
                cells.push(Shape { queries, rows, dim });
            }
        }
    }
    let mut rng = Rng(seed);
    let (warmup, rounds) = (20, 400);
    // bucket → (chosen time, best time, cells)
    let mut sums: BTreeMap<(u32, u8), (f64, f64, Vec<String>)> = BTreeMap::new();
    let mut reasons: BTreeMap<&'static str, u64> = BTreeMap::new();
    for round in 0..warmup + rounds {
        for &shape in &cells {
            let d = policy.decide(&tracker, Op::TopK, shape, cpu.rates(), Some(gpu.rates()));
            let (tc, tg) = (cpu.secs(shape, k), gpu.secs(shape, k));
            let t = match d.backend {
                BackendKind::Cpu => tc,
                BackendKind::Gpu => tg,
            };
            let noisy = t * rng.uniform(0.95, 1.05);
            tracker.record_success(Op::TopK, shape, d.backend, Duration::from_secs_f64(noisy));
            if round >= warmup {
                *reasons.entry(d.reason.as_str()).or_default() += 1;
                let b = shape.bucket();
                let e = sums
                    .entry((b.work_log2, b.query_class))
                    .or_insert_with(|| (0.0, 0.0, Vec::new()));
                e.0 += t;
                e.1 += tc.min(tg);
                let name = format!(
                    "Q={} N={} D={} (cpu {:.3} ms, gpu {:.3} ms)",
                    shape.queries,
                    shape.rows,
                    shape.dim,
                    tc * 1e3,
                    tg * 1e3
                );
                if !e.2.contains(&name) {
                    e.2.push(name);
                }
            }
        }
    }
    // The policy ran its whole repertoire, re-measurement included.
    let seen = |r: Reason| reasons.contains_key(r.as_str());
    assert!(seen(Reason::Remeasure), "{reasons:?}");
    assert!(
        seen(Reason::MeasuredFaster) || seen(Reason::MeasuredSlower),
        "{reasons:?}"
    );
    eprintln!("reasons after warm-up: {reasons:?}");
    sums.into_iter()
        .map(|((work_log2, query_class), (chosen, best, cells))| {
            let bucket = Bucket {
                work_log2,
                query_class,
            };
            (bucket, chosen / best, cells)
        })
        .collect()
}

fn assert_within_10_percent(name: &str, result: &[(Bucket, f64, Vec<String>)]) {
    let worst = result.iter().map(|r| r.1).fold(0.0f64, f64::max);
    let bad: Vec<_> = result.iter().filter(|r| r.1 > 1.10).collect();
    assert!(
        bad.is_empty(),
        "{name}: chosen/best over 1.10 in {} of {} buckets (worst {worst:.3}): {bad:#?}",
        bad.len(),
        result.len()
    );
}

#[test]
fn the_choice_is_within_10_percent_of_the_faster_backend_in_every_bucket() {
    // A data-centre GPU with the corpus resident, against a 2-socket host.
    let big_cpu = Model {
        overhead_us: 20.0,
        bytes_per_sec: 100e9,
        flops: 2e12,
        link_bytes_per_sec: 0.0,
    };
    let h100 = Model {
        overhead_us: 30.0,
        bytes_per_sec: 2.5e12,
        flops: 40e12,
        link_bytes_per_sec: 20e9,
    };
    // A small GPU against a laptop CPU: the crossover falls inside the grid.
    let laptop_cpu = Model {
        overhead_us: 10.0,
        bytes_per_sec: 20e9,
        flops: 200e9,
        link_bytes_per_sec: 0.0,
    };
    let small_gpu = Model {
        overhead_us: 400.0,
        bytes_per_sec: 150e9,
        flops: 3e12,
        link_bytes_per_sec: 5e9,
    };
    // A GPU behind a slow link that loses at every size to the CPU.
    let slow_gpu = Model {
        overhead_us: 2_000.0,
        bytes_per_sec: 50e9,
        flops: 300e9,
        link_bytes_per_sec: 1e9,
    };
    for (name, cpu, gpu) in [
        ("h100 vs big cpu", big_cpu, h100),
        ("small gpu vs laptop", laptop_cpu, small_gpu),
        ("slow gpu vs big cpu", big_cpu, slow_gpu),
    ] {
        for seed in [1, 2] {
            let result = oracle(cpu, gpu, seed);
            assert_within_10_percent(name, &result);
        }
    }
}

#[test]
fn a_stale_verdict_is_re_measured_and_overturned() {
    let policy = DispatchPolicy::default();
    let tracker = PerformanceTracker::new(TrackerConfig::default()).unwrap();
    let shape = Shape {
        queries: 64,
        rows: 100_000,
        dim: 768,
    };
    let rates = Rates {
        flops: 1e12,
        bytes_per_sec: 1e11,
        overhead: Duration::ZERO,
    };
    let cpu_ms = 10.0;
    let busy_gpu_ms = 20.0; // twice as slow as the CPU
    let free_gpu_ms = 2.0; // five times faster
    let run = |gpu_ms: f64| {
        let d = policy.decide(&tracker, Op::TopK, shape, rates, Some(rates));
        let ms = match d.backend {
            BackendKind::Cpu => cpu_ms,
            BackendKind::Gpu => gpu_ms,
        };
        tracker.record_success(
            Op::TopK,
            shape,
            d.backend,
            Duration::from_secs_f64(ms * 1e-3),
        );
        d
    };
    let first: Vec<_> = (0..300).map(|_| run(busy_gpu_ms)).collect();
    let on_gpu =
        |ds: &[hybridvec::Decision]| ds.iter().filter(|d| d.backend == BackendKind::Gpu).count();
    // Past exploration the CPU serves; the GPU gets about 2% of the time back.
    let settled = &first[20..];
    assert_eq!(settled.last().unwrap().reason, Reason::MeasuredSlower);
    let remeasured = on_gpu(settled);
    assert!(
        (1..=settled.len() / 50).contains(&remeasured),
        "{remeasured} GPU calls of {}",
        settled.len()
    );
    // The GPU frees up: a re-measurement finds out.
    let after: Vec<_> = (0..400).map(|_| run(free_gpu_ms)).collect();
    let switched = after
        .iter()
        .position(|d| d.reason == Reason::MeasuredFaster)
        .expect("the stale verdict was never overturned");
    assert!(switched <= 250, "took {switched} calls");
    assert!(
        after[switched..]
            .iter()
            .filter(|d| d.backend == BackendKind::Cpu)
            .count()
            <= (400 - switched) / 50 + 1,
        "once overturned, the GPU keeps serving"
    );
}

#[test]
fn each_metric_is_measured_in_buckets_of_its_own() {
    use hybridvec::{
        data, Corpus, DevicePolicy, ExecutorConfig, Filter, HybridExecutor, MatrixRef, Metric,
        SearchOptions,
    };
    let (q, n, d) = (3usize, 500usize, 16usize);
    let corpus = Corpus::new(data::random_matrix(n, d, 1), d).unwrap();
    let queries = data::random_matrix(q, d, 2);
    let qm = MatrixRef::new(&queries, q, d).unwrap();
    let shape = Shape {
        queries: q,
        rows: n,
        dim: d,
    };
    for metric in Metric::ALL {
        let exec = HybridExecutor::new(ExecutorConfig {
            device: DevicePolicy::Cpu,
            ..Default::default()
        })
        .unwrap();
        let samples = |op: Op| exec.tracker().snapshot(op, shape).cpu.samples;
        exec.search(qm, &corpus, 5, &SearchOptions::new(metric))
            .unwrap();
        // A sparse filter (gathered) is measured as a top-k over the rows it allows.
        let fifth: Vec<usize> = (0..n).step_by(5).collect();
        let filtered = SearchOptions::new(metric).with_filter(Filter::Rows(fifth));
        exec.search(qm, &corpus, 5, &filtered).unwrap();
        let fifth_shape = Shape {
            rows: n / 5,
            ..shape
        };
        for op in Op::ALL {
            let mine = op == Op::top_k(metric);
            assert_eq!(samples(op), u64::from(mine), "{metric}: {op:?}");
            let fifth = exec.tracker().snapshot(op, fifth_shape).cpu.samples;
            assert_eq!(fifth, u64::from(mine), "{metric}: {op:?} filtered");
        }
        // The score matrix: cosine's own, and the inner-product one for IP and L2.
        exec.similarity(qm, &corpus, metric).unwrap();
        let scores = match metric {
            Metric::Cosine => Op::Cosine,
            _ => Op::InnerProduct,
        };
        assert_eq!(samples(scores), 1, "{metric}: {scores:?}");
    }
}
