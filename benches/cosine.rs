//! `cosine_similarity` (the full Q × N score matrix back on the host) on every executor
//! present, one criterion group per device and precision, named
//! `{device}_cosine_{precision}` (see `common` for the rule):
//!
//! - `cpu_cosine_f32` (always): `single` 1×100000×768, `small-batch` 64×100000×768 and
//!   `large-batch` 1024×100000×768; query seed 8; 10 samples, 1 s warm-up, 4 s
//!   measurement.
//! - `cuda_cosine_f32`, `cuda_cosine_tf32`, `cuda_cosine_f16` (with a usable GPU;
//!   otherwise one SKIP line): `small-batch` 64×100000×768; query seed 9; 20 samples, 3 s
//!   warm-up, 5 s measurement (criterion's defaults, which `cuda_cosine_f32` ran under
//!   before they were spelled out).
//!
//! Corpus seed 7, flat sampling. The device word of a group name comes from the policy
//! the executor was built with (`DevicePolicy::Cpu` or `DevicePolicy::Cuda`, never
//! `Auto`), and before the first timed iteration of each workload one untimed
//! `cosine_similarity_with_report` call must report that backend, or the bench panics: a
//! `cpu_` group never times the GPU, nor a `cuda_` group the CPU.
//!
//! Throughput is `2·Q·N·D` elements per iteration, so criterion's "elem/s" is FLOP/s.
//! The corpus is built on first use (so `--list` and filtered runs do not pay for it) and
//! never inside the timed loop. A CUDA call returns only after its stream has
//! synchronised and the scores are on the host, so each timed iteration includes the
//! device sync and the copy back; the untimed call makes the corpus resident.
//!
//! `cargo bench --bench cosine -- cpu_` (or `cuda_`) runs one device's groups.

mod common;

use common::{Plan, Target};
use criterion::{criterion_group, criterion_main, Criterion};
use hybridvec::DevicePolicy;
use std::time::Duration;

fn plan(target: &Target) -> Plan {
    match target.exec.policy() {
        DevicePolicy::Cpu => Plan {
            workloads: &[("single", 1), ("small-batch", 64), ("large-batch", 1024)],
            n: 100_000,
            query_seed: 8,
            sample_size: 10,
            warm_up: Duration::from_secs(1),
            measurement: Duration::from_secs(4),
        },
        DevicePolicy::Cuda => Plan {
            workloads: &[("small-batch", 64)],
            n: 100_000,
            query_seed: 9,
            sample_size: 20,
            warm_up: Duration::from_secs(3),
            measurement: Duration::from_secs(5),
        },
        DevicePolicy::Auto => unreachable!("bench executors force a device"),
    }
}

fn bench(c: &mut Criterion) {
    common::bench_op(
        c,
        "cosine",
        plan,
        |exec, view, corpus| {
            exec.cosine_similarity_with_report(view, corpus)
                .expect("scores")
        },
        |exec, view, corpus| exec.cosine_similarity(view, corpus).expect("scores"),
    );
}

criterion_group!(benches, bench);
criterion_main!(benches);
