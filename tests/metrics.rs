//! The `metrics` feature: calls, fallbacks and latencies reach the recorder the
//! application installed (here a thread-local one; the library installs none).
#![cfg(feature = "metrics")]

use hybridvec::{
    data, Backend, BackendError, BackendKind, Corpus, CorpusView, DevicePolicy, DispatchPolicy,
    ExecutorConfig, Hit, HybridExecutor, MatrixRef, Rates, Reason, Scores,
};
use metrics::{
    Counter, CounterFn, Gauge, Histogram, HistogramFn, Key, KeyName, Metadata, Recorder,
    SharedString, Unit,
};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Every counter's total and every histogram's samples, by `name{label=value,...}`.
#[derive(Default)]
struct Collect {
    counters: Mutex<BTreeMap<String, Arc<Cell>>>,
}

#[derive(Default)]
struct Cell {
    total: Mutex<u64>,
    samples: Mutex<Vec<f64>>,
}

impl CounterFn for Cell {
    fn increment(&self, n: u64) {
        *self.total.lock().unwrap() += n;
    }
    fn absolute(&self, n: u64) {
        *self.total.lock().unwrap() = n;
    }
}

impl HistogramFn for Cell {
    fn record(&self, v: f64) {
        self.samples.lock().unwrap().push(v);
    }
}

impl Collect {
    fn cell(&self, key: &Key) -> Arc<Cell> {
        let labels: Vec<String> = key
            .labels()
            .map(|l| format!("{}={}", l.key(), l.value()))
            .collect();
        let name = format!("{}{{{}}}", key.name(), labels.join(","));
        Arc::clone(self.counters.lock().unwrap().entry(name).or_default())
    }
    fn total(&self, name: &str) -> u64 {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(0, |c| *c.total.lock().unwrap())
    }
    fn samples(&self, name: &str) -> Vec<f64> {
        self.counters
            .lock()
            .unwrap()
            .get(name)
            .map_or(Vec::new(), |c| c.samples.lock().unwrap().clone())
    }
}

impl Recorder for Collect {
    fn describe_counter(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_gauge(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn describe_histogram(&self, _: KeyName, _: Option<Unit>, _: SharedString) {}
    fn register_counter(&self, key: &Key, _: &Metadata<'_>) -> Counter {
        Counter::from_arc(self.cell(key))
    }
    fn register_gauge(&self, _: &Key, _: &Metadata<'_>) -> Gauge {
        Gauge::noop()
    }
    fn register_histogram(&self, key: &Key, _: &Metadata<'_>) -> Histogram {
        Histogram::from_arc(self.cell(key))
    }
}

/// An accelerator that advertises great rates and fails every launch.
#[derive(Debug)]
struct Broken;

impl Backend for Broken {
    fn name(&self) -> &str {
        "broken"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn rates(&self) -> Rates {
        Rates {
            flops: 1e15,
            bytes_per_sec: 1e13,
            overhead: Duration::ZERO,
        }
    }
    fn cosine(&self, _: MatrixRef<'_>, _: CorpusView<'_>) -> Result<Scores, BackendError> {
        Err(BackendError::LaunchFailed {
            reason: "injected".into(),
        })
    }
    fn top_k(
        &self,
        _: MatrixRef<'_>,
        _: CorpusView<'_>,
        _: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        Err(BackendError::LaunchFailed {
            reason: "injected".into(),
        })
    }
}

#[test]
fn calls_fallbacks_and_latency_reach_the_recorder() {
    let corpus = Corpus::new(data::random_matrix(500, 16, 1), 16).unwrap();
    let qv = data::random_matrix(4, 16, 2);
    let q = MatrixRef::new(&qv, 4, 16).unwrap();
    let auto = HybridExecutor::with_accelerator(
        ExecutorConfig {
            dispatch: DispatchPolicy {
                min_gpu_work: 0,
                ..Default::default()
            },
            ..Default::default()
        },
        Arc::new(Broken),
    )
    .unwrap();
    let cpu = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap();
    let rec = Collect::default();
    let report = metrics::with_local_recorder(&rec, || {
        let (_, report) = auto.top_k_with_report(q, &corpus, 3).unwrap();
        cpu.cosine_similarity(q, &corpus).unwrap();
        cpu.cosine_similarity(q, &corpus).unwrap();
        report
    });
    // Never measured and the stand-in advertises great rates: the roofline picks it, it
    // fails, the CPU answers.
    assert_eq!(
        (report.backend, report.reason),
        (BackendKind::Cpu, Reason::Roofline)
    );
    assert_eq!(
        rec.total("hybridvec_calls_total{op=top_k,backend=cpu,reason=roofline}"),
        1
    );
    assert_eq!(
        rec.total("hybridvec_fallbacks_total{op=top_k,from=gpu,action=rerun_on_cpu}"),
        1
    );
    assert_eq!(
        rec.total("hybridvec_calls_total{op=cosine,backend=cpu,reason=forced}"),
        2
    );
    let secs = rec.samples("hybridvec_call_seconds{op=cosine,backend=cpu}");
    assert_eq!(secs.len(), 2);
    assert!(secs.iter().all(|s| s.is_finite() && *s > 0.0), "{secs:?}");
    // Outside the closure no recorder is installed: nothing more is counted.
    cpu.cosine_similarity(q, &corpus).unwrap();
    assert_eq!(
        rec.total("hybridvec_calls_total{op=cosine,backend=cpu,reason=forced}"),
        2
    );
}
