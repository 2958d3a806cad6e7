//! Dispatch, fallback and the breaker, proven with a fault-injecting accelerator: a real
//! [`Backend`] that computes on the CPU (so results are checkable) and whose speed,
//! failures, out-of-memory limit and result counts the test controls.

use hybridvec::{
    data, Backend, BackendError, BackendKind, Corpus, CorpusView, DevicePolicy, DispatchPolicy,
    Error, ExecutionReport, ExecutorConfig, FallbackAction, Hit, HybridExecutor, MatrixRef, Rates,
    Reason, Scores,
};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The stand-in GPU. It answers through a CPU-only executor, then sleeps so that its time
/// is `work / rate_per_sec` (or `slow_below_work` rules), unless told to fail.
#[derive(Debug)]
struct FakeGpu {
    cpu: HybridExecutor,
    /// Work per second when `work >= fast_from_work`, and below it.
    fast_rate: f64,
    slow_rate: f64,
    fast_from_work: u64,
    failing: AtomicBool,
    /// Largest query chunk that fits; larger ones get OutOfMemory.
    max_queries: AtomicUsize,
    /// Answer every call with CorpusTooLarge.
    corpus_too_large: AtomicBool,
    /// Drop one result per call (a buggy kernel).
    wrong_count: AtomicBool,
    calls: AtomicU64,
    /// Answers already computed, by query bits and k: a repeated call costs only its
    /// injected time, so the stand-in can be faster than the CPU it computes with.
    memo: Mutex<HashMap<Vec<u32>, Vec<Vec<Hit>>>>,
}

impl FakeGpu {
    fn new(fast_rate: f64, slow_rate: f64, fast_from_work: u64) -> Arc<Self> {
        Arc::new(Self {
            cpu: HybridExecutor::new(ExecutorConfig {
                device: DevicePolicy::Cpu,
                ..Default::default()
            })
            .unwrap(),
            fast_rate,
            slow_rate,
            fast_from_work,
            failing: AtomicBool::new(false),
            max_queries: AtomicUsize::new(usize::MAX),
            corpus_too_large: AtomicBool::new(false),
            wrong_count: AtomicBool::new(false),
            calls: AtomicU64::new(0),
            memo: Mutex::new(HashMap::new()),
        })
    }

    fn pace(&self, queries: MatrixRef<'_>, corpus: CorpusView<'_>) -> Result<(), BackendError> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        if self.failing.load(Ordering::Relaxed) {
            return Err(BackendError::LaunchFailed {
                reason: "injected".into(),
            });
        }
        if self.corpus_too_large.load(Ordering::Relaxed) {
            return Err(BackendError::CorpusTooLarge {
                requested: (corpus.rows() * corpus.dim() * 4) as u64,
            });
        }
        if queries.rows() > self.max_queries.load(Ordering::Relaxed) {
            return Err(BackendError::OutOfMemory {
                requested: (queries.rows() * corpus.rows() * 4) as u64,
            });
        }
        let work = (queries.rows() * corpus.rows() * corpus.dim()) as f64;
        let rate = if work as u64 >= self.fast_from_work {
            self.fast_rate
        } else {
            self.slow_rate
        };
        // Spin rather than sleep: a short sleep can last a whole timer tick on a VM.
        let until = Instant::now() + Duration::from_secs_f64(work / rate);
        while Instant::now() < until {
            std::hint::spin_loop();
        }
        Ok(())
    }
}

impl Backend for FakeGpu {
    fn name(&self) -> &str {
        "fake-gpu"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn rates(&self) -> Rates {
        Rates {
            flops: 2.0 * self.fast_rate,
            bytes_per_sec: 1e12,
            overhead: Duration::ZERO,
        }
    }
    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> Result<Scores, BackendError> {
        self.pace(queries, corpus)?;
        self.cpu
            .cosine_similarity(queries, corpus)
            .map_err(BackendError::Fatal)
    }
    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        self.pace(queries, corpus)?;
        let mut key: Vec<u32> = queries.as_slice().iter().map(|x| x.to_bits()).collect();
        key.push(k as u32);
        let cached = self.memo.lock().unwrap().get(&key).cloned();
        let mut hits = match cached {
            Some(h) => h,
            None => {
                let h = self
                    .cpu
                    .top_k(queries, corpus, k)
                    .map_err(BackendError::Fatal)?;
                self.memo.lock().unwrap().insert(key, h.clone());
                h
            }
        };
        if self.wrong_count.load(Ordering::Relaxed) {
            hits.pop();
        }
        Ok(hits)
    }
}

fn executor(gpu: &Arc<FakeGpu>, device: DevicePolicy, dispatch: DispatchPolicy) -> HybridExecutor {
    HybridExecutor::with_accelerator(
        ExecutorConfig {
            device,
            dispatch,
            ..Default::default()
        },
        gpu.clone(),
    )
    .unwrap()
}

/// The default dispatch, with no work floor below which calls stay on the CPU.
fn any_size_to_gpu() -> DispatchPolicy {
    DispatchPolicy {
        min_gpu_work: 0,
        ..Default::default()
    }
}

/// The answer of a CPU-only executor, to compare with.
fn cpu_top_k(queries: MatrixRef<'_>, corpus: &Corpus, k: usize) -> Vec<Vec<Hit>> {
    HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap()
    .top_k(queries, corpus, k)
    .unwrap()
}

/// Runs `queries` once on the stand-in through a forced executor, so its answer is
/// memoised and later timed calls cost only their injected time.
fn warm_memo(gpu: &Arc<FakeGpu>, queries: MatrixRef<'_>, corpus: &Corpus, k: usize) {
    executor(gpu, DevicePolicy::Cuda, DispatchPolicy::default())
        .top_k(queries, corpus, k)
        .unwrap();
}

/// A report's fallback steps as (chunk rows, action).
fn fallback_steps(report: &ExecutionReport) -> Vec<(usize, FallbackAction)> {
    report
        .fallbacks
        .iter()
        .map(|f| (f.chunk_queries, f.action))
        .collect()
}

fn corpus(n: usize, dim: usize) -> Corpus {
    Corpus::new(data::random_matrix(n, dim, 11), dim).unwrap()
}

/// Same rows in the same order, scores equal to f32 rounding (chunking re-normalises the
/// already-unit queries, which moves the last bit).
fn assert_same_hits(got: &[Vec<Hit>], want: &[Vec<Hit>]) {
    assert_eq!(got.len(), want.len());
    for (g, w) in got.iter().zip(want) {
        let idx = |h: &[Hit]| h.iter().map(|h| h.index).collect::<Vec<_>>();
        assert_eq!(idx(g), idx(w));
        for (a, b) in g.iter().zip(w) {
            assert!((a.score - b.score).abs() <= 1e-6, "{a:?} vs {b:?}");
        }
    }
}

#[test]
fn a_failing_gpu_is_shut_out_then_probed_back_after_the_cool_down() {
    let gpu = FakeGpu::new(1e12, 1e12, 0);
    let policy = DispatchPolicy {
        min_gpu_work: 0,
        breaker_cooldown: Duration::from_millis(100),
        ..Default::default()
    };
    let ex = executor(&gpu, DevicePolicy::Auto, policy);
    let c = corpus(2000, 32);
    let q = data::random_matrix(8, 32, 12);
    let q = MatrixRef::new(&q, 8, 32).unwrap();
    warm_memo(&gpu, q, &c, 5);
    let want = ex.top_k(q, &c, 5).unwrap(); // measured on the healthy GPU or the CPU
    gpu.failing.store(true, Ordering::Relaxed);
    let mut gpu_attempts = Vec::new();
    for i in 0..10 {
        let before = gpu.calls.load(Ordering::Relaxed);
        let (hits, report) = ex.top_k_with_report(q, &c, 5).unwrap();
        assert_eq!(
            hits, want,
            "call {i}: a fallback must still answer correctly"
        );
        assert_eq!(report.backend, BackendKind::Cpu, "call {i}");
        gpu_attempts.push(gpu.calls.load(Ordering::Relaxed) - before);
    }
    let tried: u64 = gpu_attempts.iter().sum();
    assert!(
        (1..=3).contains(&tried),
        "the GPU must be abandoned within a few calls: {gpu_attempts:?}"
    );
    let (_, report) = ex.top_k_with_report(q, &c, 5).unwrap();
    assert!(
        matches!(report.reason, Reason::BreakerOpen | Reason::Unreliable),
        "{report:?}"
    );
    // Recovered, and the cool-down passes: one probe, then the GPU serves again.
    gpu.failing.store(false, Ordering::Relaxed);
    std::thread::sleep(Duration::from_millis(150));
    let (hits, report) = ex.top_k_with_report(q, &c, 5).unwrap();
    assert_same_hits(&hits, &want);
    assert_eq!(
        (report.backend, report.reason),
        (BackendKind::Gpu, Reason::BreakerProbe)
    );
    let (_, report) = ex.top_k_with_report(q, &c, 5).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    let stats = ex.stats();
    assert!(
        stats.gpu.fallbacks >= 1 && stats.gpu.calls >= 2,
        "{stats:?}"
    );
}

#[test]
fn small_shapes_stay_on_the_cpu_and_large_ones_go_to_a_faster_gpu() {
    // The GPU is far slower than the CPU below 2^20 work and far faster above.
    let gpu = FakeGpu::new(1e13, 1e8, 1 << 20);
    let ex = executor(&gpu, DevicePolicy::Auto, any_size_to_gpu());
    let c = corpus(4096, 64);
    let small = data::random_matrix(1, 64, 1); // work 2^18
    let small = MatrixRef::new(&small, 1, 64).unwrap();
    let large = data::random_matrix(64, 64, 2); // work 2^24
    let large = MatrixRef::new(&large, 64, 64).unwrap();
    warm_memo(&gpu, large, &c, 3);
    warm_memo(&gpu, small, &c, 3);
    let mut last = (None, None);
    for _ in 0..14 {
        last.0 = Some(ex.top_k_with_report(small, &c, 3).unwrap().1);
        last.1 = Some(ex.top_k_with_report(large, &c, 3).unwrap().1);
    }
    let (s, l) = (last.0.unwrap(), last.1.unwrap());
    assert_eq!(
        (s.backend, s.reason),
        (BackendKind::Cpu, Reason::MeasuredSlower),
        "{s:?}"
    );
    assert_eq!(
        (l.backend, l.reason),
        (BackendKind::Gpu, Reason::MeasuredFaster),
        "{l:?}"
    );
}

#[test]
fn out_of_memory_shrinks_chunks_then_falls_back_with_every_step_reported() {
    let gpu = FakeGpu::new(1e13, 1e13, 0);
    let ex = executor(&gpu, DevicePolicy::Auto, any_size_to_gpu());
    let c = corpus(1000, 16);
    let qv = data::random_matrix(10, 16, 3);
    let q = MatrixRef::new(&qv, 10, 16).unwrap();
    let reference = cpu_top_k(q, &c, 4);
    // Fits 3 queries: 10 → 5 → 3 rows per chunk, four chunks.
    gpu.max_queries.store(3, Ordering::Relaxed);
    // The first calls may explore the CPU; find one that ran on the GPU.
    let report = (0..6)
        .map(|_| {
            let (hits, r) = ex.top_k_with_report(q, &c, 4).unwrap();
            assert_same_hits(&hits, &reference);
            r
        })
        .find(|r| r.backend == BackendKind::Gpu)
        .expect("the GPU never served");
    assert_eq!(report.chunks, 4, "{report:?}");
    let steps = fallback_steps(&report);
    assert_eq!(
        steps,
        [
            (10, FallbackAction::ShrinkChunks),
            (5, FallbackAction::ShrinkChunks)
        ]
    );
    // Nothing fits: halving down to 1 row, then the CPU.
    gpu.max_queries.store(0, Ordering::Relaxed);
    let (hits, report) = ex.top_k_with_report(q, &c, 4).unwrap();
    assert_eq!(hits, reference);
    if report.fallbacks.is_empty() {
        // Dispatch chose the CPU outright (OOM history made the GPU unreliable).
        assert_eq!(report.backend, BackendKind::Cpu);
    } else {
        let steps = fallback_steps(&report);
        assert_eq!(
            steps,
            [
                (10, FallbackAction::ShrinkChunks),
                (5, FallbackAction::ShrinkChunks),
                (3, FallbackAction::ShrinkChunks),
                (2, FallbackAction::ShrinkChunks),
                (1, FallbackAction::RerunOnCpu),
            ]
        );
        assert_eq!(report.backend, BackendKind::Cpu);
    }
    // Under DevicePolicy::Cuda the same is a typed error, never a silent fallback.
    let forced = executor(&gpu, DevicePolicy::Cuda, DispatchPolicy::default());
    assert!(matches!(
        forced.top_k(q, &c, 4),
        Err(Error::DeviceOutOfMemory { .. })
    ));
    gpu.failing.store(true, Ordering::Relaxed);
    assert!(matches!(
        forced.top_k(q, &c, 4),
        Err(Error::BackendFailed { .. })
    ));
}

#[test]
fn a_corpus_too_large_for_the_device_goes_to_the_cpu_without_shrinking_chunks() {
    let gpu = FakeGpu::new(1e13, 1e13, 0);
    gpu.corpus_too_large.store(true, Ordering::Relaxed);
    let c = corpus(1000, 16);
    let qv = data::random_matrix(10, 16, 4);
    let q = MatrixRef::new(&qv, 10, 16).unwrap();
    let forced = executor(&gpu, DevicePolicy::Cuda, DispatchPolicy::default());
    assert!(matches!(
        forced.top_k(q, &c, 4),
        Err(Error::DeviceOutOfMemory { .. })
    ));
    let calls = gpu.calls.load(Ordering::Relaxed);
    assert_eq!(calls, 1, "no smaller chunk was tried");
    let ex = executor(&gpu, DevicePolicy::Auto, any_size_to_gpu());
    let reference = cpu_top_k(q, &c, 4);
    // The first calls may explore the CPU; find one that tried the GPU.
    let report = (0..6)
        .map(|_| {
            let (hits, r) = ex.top_k_with_report(q, &c, 4).unwrap();
            assert_eq!(hits, reference);
            assert_eq!(r.backend, BackendKind::Cpu);
            r
        })
        .find(|r| !r.fallbacks.is_empty())
        .expect("the GPU was never tried");
    assert_eq!(fallback_steps(&report), [(10, FallbackAction::RerunOnCpu)]);
}

#[test]
fn a_wrong_result_count_is_a_typed_error_not_a_retry() {
    let gpu = FakeGpu::new(1e13, 1e13, 0);
    gpu.wrong_count.store(true, Ordering::Relaxed);
    for device in [DevicePolicy::Cuda, DevicePolicy::Auto] {
        let ex = executor(
            &gpu,
            device,
            DispatchPolicy {
                min_gpu_work: 0,
                explore_samples: 0,
                ..Default::default()
            },
        );
        let c = corpus(500, 8);
        let qv = data::random_matrix(6, 8, 4);
        let q = MatrixRef::new(&qv, 6, 8).unwrap();
        let r = ex.top_k(q, &c, 2);
        assert!(
            matches!(
                r,
                Err(Error::ChunkResultMismatch {
                    chunk: 0,
                    expected: 6,
                    got: 5
                })
            ),
            "{device:?}: {r:?}"
        );
        assert_eq!(ex.stats().cpu.calls, 0, "{device:?}: no quiet CPU re-run");
    }
}

/// A call the accelerator does not serve (another metric, a filter) never reaches it:
/// under `Auto` the CPU answers with `Reason::Unsupported` and the same hits as a CPU-only
/// executor; under `Cuda` it is `BackendFailed` naming the accelerator and why.
#[test]
fn calls_the_accelerator_does_not_serve_run_on_the_cpu_or_fail_when_forced() {
    use hybridvec::{Filter, Metric, SearchOptions};
    let (n, d, q) = (3000usize, 32usize, 40usize);
    let corpus = Corpus::new(data::random_matrix(n, d, 71), d).unwrap();
    let qdata = data::random_matrix(q, d, 72);
    let qm = MatrixRef::new(&qdata, q, d).unwrap();
    let gpu = FakeGpu::new(1e15, 1e15, 0);
    let auto = executor(&gpu, DevicePolicy::Auto, any_size_to_gpu());
    let forced = executor(&gpu, DevicePolicy::Cuda, DispatchPolicy::default());
    let cpu = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap();
    let cases = [
        SearchOptions::new(Metric::InnerProduct),
        SearchOptions::new(Metric::L2),
        SearchOptions::default().with_filter(Filter::Rows((0..n).step_by(3).collect())),
        SearchOptions::default()
            .with_filter(Filter::Rows((0..n).filter(|i| i % 10 != 0).collect())),
    ];
    for options in &cases {
        let before = gpu.calls.load(Ordering::Relaxed);
        let (hits, report) = auto.search_with_report(qm, &corpus, 10, options).unwrap();
        assert_eq!(report.backend, BackendKind::Cpu, "{options:?}");
        assert_eq!(report.reason, Reason::Unsupported, "{options:?}");
        assert!(
            report.fallbacks.is_empty(),
            "{options:?}: {:?}",
            report.fallbacks
        );
        assert_eq!(
            hits,
            cpu.search(qm, &corpus, 10, options).unwrap(),
            "{options:?}"
        );
        let e = forced.search(qm, &corpus, 10, options).unwrap_err();
        assert!(
            matches!(&e, Error::BackendFailed { backend, .. } if backend == "fake-gpu"),
            "{options:?}: {e}"
        );
        assert_eq!(
            gpu.calls.load(Ordering::Relaxed),
            before,
            "{options:?}: the accelerator was called"
        );
    }
    // Plain cosine still goes to the accelerator.
    let (_, report) = auto
        .search_with_report(qm, &corpus, 10, &SearchOptions::default())
        .unwrap();
    assert_eq!(report.backend, BackendKind::Gpu);
}
