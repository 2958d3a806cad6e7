//! The CUDA backend on the public GPU workloads: `cuda_topk_f32`, `cuda_topk_tf32` and
//! `cuda_topk_f16` (single 1×1M×768 and gpu-large 1024×1M×768, k = 10) and `cuda_cosine_f32`
//! (64×100000×768, the full score matrix back on the host).
//!
//! Every call returns only after its stream has synchronised and the results are on the
//! host, so each timed iteration includes the device sync (and the clock never stops on
//! queued work). The corpus is made resident by the warm-up, so iterations time the
//! queries, kernels and result copies, not the upload. Without a usable device the bench
//! prints a skip line and registers nothing.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use hybridvec::{
    data, Corpus, CudaConfig, DevicePolicy, ExecutorConfig, HybridExecutor, MatrixRef, Precision,
};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

const N: usize = 1_000_000;
const D: usize = 768;
const K: usize = 10;

fn corpus(n: usize) -> &'static Corpus {
    static BIG: OnceLock<Corpus> = OnceLock::new();
    static SMALL: OnceLock<Corpus> = OnceLock::new();
    let cell = if n == N { &BIG } else { &SMALL };
    cell.get_or_init(|| Corpus::new(data::random_matrix(n, D, 7), D).expect("valid corpus"))
}

fn executor(precision: Precision) -> Option<HybridExecutor> {
    match HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        cuda: CudaConfig {
            precision,
            ..Default::default()
        },
        ..Default::default()
    }) {
        Ok(e) => Some(e),
        Err(e) => {
            eprintln!("SKIP cuda benches (no usable CUDA device): {e}");
            None
        }
    }
}

fn bench(c: &mut Criterion) {
    for (group_name, precision) in [
        ("cuda_topk_f32", Precision::Fp32),
        ("cuda_topk_tf32", Precision::Tf32),
        ("cuda_topk_f16", Precision::Fp16),
    ] {
        let Some(exec) = executor(precision) else {
            return;
        };
        let mut group = c.benchmark_group(group_name);
        group
            .sample_size(20)
            .warm_up_time(Duration::from_secs(2))
            .measurement_time(Duration::from_secs(5))
            .sampling_mode(SamplingMode::Flat);
        for (name, q) in [("single", 1), ("gpu-large", 1024)] {
            group.throughput(Throughput::Elements((2 * q * N * D) as u64));
            let queries = data::random_matrix(q, D, 8);
            let view = MatrixRef::new(&queries, q, D).expect("valid queries");
            group.bench_function(name, |b| {
                let corpus = corpus(N);
                b.iter(|| black_box(exec.top_k(black_box(view), corpus, K).expect("hits")));
            });
        }
        group.finish();
    }
    let Some(exec) = executor(Precision::Fp32) else {
        return;
    };
    let mut group = c.benchmark_group("cuda_cosine_f32");
    group.sample_size(20).sampling_mode(SamplingMode::Flat);
    let (q, n) = (64, 100_000);
    group.throughput(Throughput::Elements((2 * q * n * D) as u64));
    let queries = data::random_matrix(q, D, 9);
    let view = MatrixRef::new(&queries, q, D).expect("valid queries");
    group.bench_function("small-batch", |b| {
        let corpus = corpus(n);
        b.iter(|| {
            black_box(
                exec.cosine_similarity(black_box(view), corpus)
                    .expect("scores"),
            )
        });
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
