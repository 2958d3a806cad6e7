//! `top_k` (k = 10) on the public CPU workloads: single (1×100000×768), small-batch
//! (64×100000×768) and large-batch (1024×100000×768).
//!
//! Throughput is `2·Q·N·D` elements per iteration, so criterion's "elem/s" is FLOP/s.
//! The corpus is built once (lazily, so `--list` and filtered runs do not pay for it) and
//! never inside the timed loop.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use hybridvec::{data, Corpus, ExecutorConfig, HybridExecutor, MatrixRef};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

/// `(name, Q)`; every workload has N = 100000 and D = 768.
const WORKLOADS: [(&str, usize); 3] = [("single", 1), ("small-batch", 64), ("large-batch", 1024)];
const N: usize = 100_000;
const D: usize = 768;
const K: usize = 10;

fn corpus() -> &'static Corpus {
    static CORPUS: OnceLock<Corpus> = OnceLock::new();
    CORPUS.get_or_init(|| Corpus::new(data::random_matrix(N, D, 7), D).expect("valid corpus"))
}

fn bench(c: &mut Criterion) {
    let exec = HybridExecutor::new(ExecutorConfig::default()).expect("executor");
    let mut group = c.benchmark_group("cpu_topk_f32");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        // One iteration of large-batch takes seconds: same iteration count per sample.
        .sampling_mode(SamplingMode::Flat);
    for (name, q) in WORKLOADS {
        group.throughput(Throughput::Elements((2 * q * N * D) as u64));
        let queries = data::random_matrix(q, D, 8);
        let view = MatrixRef::new(&queries, q, D).expect("valid queries");
        group.bench_function(name, |b| {
            let corpus = corpus();
            b.iter(|| black_box(exec.top_k(black_box(view), corpus, K).expect("hits")));
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
