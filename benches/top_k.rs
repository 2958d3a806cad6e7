//! `top_k` (k = 10) on every executor present, one criterion group per device and
//! precision, named `{device}_topk_{precision}` (see `common` for the rule):
//!
//! - `cpu_topk_f32` (always): `single` 1×100000×768, `small-batch` 64×100000×768 and
//!   `large-batch` 1024×100000×768; 10 samples, 1 s warm-up, 4 s measurement.
//! - `cuda_topk_f32`, `cuda_topk_tf32`, `cuda_topk_f16` (with a usable GPU; otherwise one
//!   SKIP line): `single` 1×1000000×768 and `gpu-large` 1024×1000000×768; 20 samples,
//!   2 s warm-up, 5 s measurement.
//!
//! Corpus seed 7, query seed 8, flat sampling. The device word of a group name comes from
//! the policy the executor was built with (`DevicePolicy::Cpu` or `DevicePolicy::Cuda`,
//! never `Auto`), and before the first timed iteration of each workload one untimed
//! `top_k_with_report` call must report that backend, or the bench panics: a `cpu_` group
//! never times the GPU, nor a `cuda_` group the CPU.
//!
//! Throughput is `2·Q·N·D` elements per iteration, so criterion's "elem/s" is FLOP/s.
//! Corpora are built on first use (so `--list` and filtered runs do not pay for them; the
//! 1M-row one is 3 GB) and never inside the timed loop. A CUDA call returns only after its
//! stream has synchronised and the hits are on the host, so each timed iteration includes
//! the device sync; the untimed call makes the corpus resident, so iterations time the
//! queries, kernels and result copies, not the upload.
//!
//! - `cpu_topk_stored_f16`, `cpu_topk_stored_bf16`: the CPU workloads above over the same
//!   corpus stored as 16-bit values (`Corpus::with_element_type`), the stored type in the
//!   name's last word (the others name the compute precision).
//!
//! `cargo bench --bench top_k -- cpu_` (or `cuda_`) runs one device's groups.

mod common;

use common::{Plan, Target};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hybridvec::{
    data, BackendKind, Corpus, DevicePolicy, ElementType, ExecutorConfig, HybridExecutor, MatrixRef,
};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

const K: usize = 10;

fn plan(target: &Target) -> Plan {
    match target.exec.policy() {
        DevicePolicy::Cuda => Plan {
            workloads: &[("single", 1), ("gpu-large", 1024)],
            n: 1_000_000,
            query_seed: 8,
            sample_size: 20,
            warm_up: Duration::from_secs(2),
            measurement: Duration::from_secs(5),
        },
        DevicePolicy::Cpu => cpu_plan(),
        DevicePolicy::Auto => unreachable!("bench executors force a device"),
    }
}

fn cpu_plan() -> Plan {
    Plan {
        workloads: &[("single", 1), ("small-batch", 64), ("large-batch", 1024)],
        n: 100_000,
        query_seed: 8,
        sample_size: 10,
        warm_up: Duration::from_secs(1),
        measurement: Duration::from_secs(4),
    }
}

fn bench(c: &mut Criterion) {
    common::bench_op(
        c,
        "topk",
        plan,
        |exec, view, corpus| exec.top_k_with_report(view, corpus, K).expect("hits"),
        |exec, view, corpus| exec.top_k(view, corpus, K).expect("hits"),
    );
}

/// The CPU workloads over 16-bit copies of the 100k-row corpus, each built on first use.
fn bench_stored(c: &mut Criterion) {
    let exec = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .expect("cpu executor");
    let plan = cpu_plan();
    let cells: [(ElementType, OnceLock<Corpus>); 2] = [
        (ElementType::F16, OnceLock::new()),
        (ElementType::Bf16, OnceLock::new()),
    ];
    for (element, cell) in &cells {
        let mut group = c.benchmark_group(format!("cpu_topk_stored_{element}"));
        plan.configure(&mut group);
        for &(name, q) in plan.workloads {
            group.throughput(Throughput::Elements((2 * q * plan.n * common::D) as u64));
            let queries = data::random_matrix(q, common::D, plan.query_seed);
            let view = MatrixRef::new(&queries, q, common::D).expect("valid queries");
            group.bench_function(name, |b| {
                let corpus = cell.get_or_init(|| {
                    let rows = data::random_matrix(plan.n, common::D, 7);
                    Corpus::with_element_type(rows, common::D, *element).expect("valid corpus")
                });
                let (_, report) = exec.top_k_with_report(view, corpus, K).expect("hits");
                assert_eq!(report.backend, BackendKind::Cpu, "{element}/{name}");
                b.iter(|| black_box(exec.top_k(black_box(view), corpus, K).expect("hits")));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench, bench_stored);
criterion_main!(benches);
