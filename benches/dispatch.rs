//! What `DevicePolicy::Auto` costs.
//!
//! - `dispatch_decision`: one snapshot plus the decision, for a measured bucket with an
//!   accelerator present (the longest path through the policy), alone and while two
//!   threads record into the same bucket without pause. The contended case also prints the
//!   percentiles of every decision's latency (timer included), which criterion's mean
//!   does not show.
//! - `dispatch_overhead`: the `single` workload (1 × 100 000 × 768, k = 10) under `Auto`
//!   and under `DevicePolicy::Cpu`, plus an interleaved median ratio of the two (this
//!   machine's noise drifts more between criterion groups than 2%).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode};
use hybridvec::{
    data, Backend, BackendError, BackendKind, Corpus, CorpusView, DevicePolicy, ExecutorConfig,
    Hit, HybridExecutor, MatrixRef, Op, Rates, Scores, Shape,
};
use std::hint::black_box;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// An accelerator that is present and advertises rates, and is never called: the bench
/// times the decision only.
#[derive(Debug)]
struct Idle;

impl Backend for Idle {
    fn name(&self) -> &str {
        "idle"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn rates(&self) -> Rates {
        Rates {
            flops: 50e12,
            bytes_per_sec: 3e12,
            overhead: Duration::from_micros(30),
        }
    }
    fn cosine(&self, _: MatrixRef<'_>, _: CorpusView<'_>) -> Result<Scores, BackendError> {
        Err(BackendError::Unavailable {
            reason: "bench stand-in".into(),
        })
    }
    fn top_k(
        &self,
        _: MatrixRef<'_>,
        _: CorpusView<'_>,
        _: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        Err(BackendError::Unavailable {
            reason: "bench stand-in".into(),
        })
    }
}

const SHAPE: Shape = Shape {
    queries: 64,
    rows: 100_000,
    dim: 768,
};

/// An `Auto` executor whose bucket for [`SHAPE`] is past exploration.
fn measured_executor() -> HybridExecutor {
    let ex = HybridExecutor::with_accelerator(ExecutorConfig::default(), Arc::new(Idle))
        .expect("executor");
    for _ in 0..4 {
        let t = ex.tracker();
        t.record_success(Op::TopK, SHAPE, BackendKind::Cpu, Duration::from_millis(80));
        t.record_success(Op::TopK, SHAPE, BackendKind::Gpu, Duration::from_millis(1));
    }
    ex
}

/// Two threads recording into the bucket the decision reads, until dropped.
struct Recorders {
    stop: Arc<AtomicBool>,
    count: Arc<AtomicU64>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Recorders {
    fn start(ex: &Arc<HybridExecutor>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let count = Arc::new(AtomicU64::new(0));
        let threads = (0..2)
            .map(|i| {
                let (ex, stop, count) = (Arc::clone(ex), Arc::clone(&stop), Arc::clone(&count));
                std::thread::spawn(move || {
                    let kind = [BackendKind::Cpu, BackendKind::Gpu][i];
                    let ms = if kind == BackendKind::Cpu { 80 } else { 1 };
                    while !stop.load(Ordering::Relaxed) {
                        ex.tracker().record_success(
                            Op::TopK,
                            SHAPE,
                            kind,
                            Duration::from_millis(ms),
                        );
                        count.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        Self {
            stop,
            count,
            threads,
        }
    }

    fn recorded(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// Stops them; returns how many calls they recorded in all.
    fn stop(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads {
            t.join().unwrap();
        }
        self.count.load(Ordering::Relaxed)
    }
}

fn dispatch_decision(c: &mut Criterion) {
    let ex = Arc::new(measured_executor());
    let mut g = c.benchmark_group("dispatch_decision");
    g.bench_function("idle", |b| {
        b.iter(|| black_box(ex.decide(Op::TopK, black_box(SHAPE))))
    });
    let recorders = Recorders::start(&ex);
    g.bench_function("2_threads_recording", |b| {
        b.iter(|| black_box(ex.decide(Op::TopK, black_box(SHAPE))))
    });
    g.finish();

    let recorded_before = recorders.recorded();
    // Every decision timed on its own, timer cost included.
    let n = 2_000_000;
    let mut lat = Vec::with_capacity(n);
    let started = Instant::now();
    for _ in 0..n {
        let t = Instant::now();
        black_box(ex.decide(Op::TopK, black_box(SHAPE)));
        lat.push(t.elapsed().as_nanos() as u64);
    }
    let secs = started.elapsed().as_secs_f64();
    let recorded = recorders.stop() - recorded_before;
    let timer = (0..100_000)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos() as u64
        })
        .min()
        .unwrap_or(0);
    lat.sort_unstable();
    let p = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    println!(
        "dispatch_decision/2_threads_recording percentiles over {n} decisions: \
         p50 {} ns, p99 {} ns, p99.9 {} ns, max {} ns (timer alone ≥ {timer} ns; \
         {:.1} M records/s alongside)",
        p(0.5),
        p(0.99),
        p(0.999),
        lat[lat.len() - 1],
        recorded as f64 / secs / 1e6
    );
}

fn dispatch_overhead(c: &mut Criterion) {
    const N: usize = 100_000;
    const D: usize = 768;
    let corpus = Corpus::new(data::random_matrix(N, D, 7), D).expect("corpus");
    let qv = data::random_matrix(1, D, 8);
    let q = MatrixRef::new(&qv, 1, D).expect("query");
    let exec = |device| {
        HybridExecutor::new(ExecutorConfig {
            device,
            ..Default::default()
        })
        .expect("executor")
    };
    let (auto, cpu) = (exec(DevicePolicy::Auto), exec(DevicePolicy::Cpu));
    let mut g = c.benchmark_group("dispatch_overhead");
    g.sample_size(30)
        .measurement_time(Duration::from_secs(5))
        .sampling_mode(SamplingMode::Flat);
    for (name, ex) in [("single_auto", &auto), ("single_cpu", &cpu)] {
        g.bench_function(name, |b| {
            b.iter(|| black_box(ex.top_k(black_box(q), &corpus, 10).expect("hits")))
        });
    }
    g.finish();

    // Alternate the two so drift hits both alike; compare medians.
    let (mut ta, mut tc) = (Vec::new(), Vec::new());
    for _ in 0..300 {
        for (ex, out) in [(&auto, &mut ta), (&cpu, &mut tc)] {
            let t = Instant::now();
            black_box(ex.top_k(q, &corpus, 10).expect("hits"));
            out.push(t.elapsed().as_secs_f64());
        }
    }
    ta.sort_by(f64::total_cmp);
    tc.sort_by(f64::total_cmp);
    let (ma, mc) = (ta[ta.len() / 2], tc[tc.len() / 2]);
    println!(
        "dispatch_overhead/interleaved single: auto median {:.3} ms, cpu median {:.3} ms, \
         auto/cpu {:.4}",
        ma * 1e3,
        mc * 1e3,
        ma / mc
    );
}

criterion_group!(benches, dispatch_decision, dispatch_overhead);
criterion_main!(benches);
