//! What the per-operation benches (`top_k`, `cosine`) share: the executors a group runs
//! on, the rule that names a group, the check that a workload really ran on the device
//! its group is named after, and the corpora, built lazily.
//!
//! A group is named `{device}_{op}_{precision}`: `device` is `cpu` or `cuda`, from
//! [`HybridExecutor::policy`] (the policy the executor was built with, never `Auto`);
//! `precision` is `f32`, `tf32`, `f16` or `bf16`, from the [`Precision`] set in the executor's
//! [`CudaConfig`] (always `f32` on the CPU, which computes in FP32 whatever that field
//! says).

use criterion::measurement::WallTime;
use criterion::{BenchmarkGroup, Criterion, SamplingMode, Throughput};
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, DevicePolicy, ExecutionReport, ExecutorConfig,
    HybridExecutor, MatrixRef, Precision,
};
use std::hint::black_box;
use std::sync::OnceLock;
use std::time::Duration;

/// Every workload has D = 768.
pub const D: usize = 768;

/// One executor the benches time, with the precision it was built with.
pub struct Target {
    pub exec: HybridExecutor,
    precision: Precision,
}

impl Target {
    fn new(device: DevicePolicy, precision: Precision) -> hybridvec::Result<Self> {
        let exec = HybridExecutor::new(ExecutorConfig {
            device,
            cuda: CudaConfig {
                precision,
                ..Default::default()
            },
            ..Default::default()
        })?;
        Ok(Self { exec, precision })
    }

    /// `cpu` or `cuda`, from the policy the executor was built with.
    pub fn device(&self) -> &'static str {
        match self.exec.policy() {
            DevicePolicy::Cpu => "cpu",
            DevicePolicy::Cuda => "cuda",
            DevicePolicy::Auto => panic!("an Auto executor has no device to name a group after"),
        }
    }

    /// `{device}_{op}_{precision}`.
    pub fn group_name(&self, op: &str) -> String {
        let precision = match (self.exec.policy(), self.precision) {
            (DevicePolicy::Cpu, _) | (_, Precision::Fp32) => "f32",
            (_, Precision::Tf32) => "tf32",
            (_, Precision::Fp16) => "f16",
            (_, Precision::Bf16) => "bf16",
        };
        format!("{}_{op}_{precision}", self.device())
    }

    /// Panics unless `report` says the call ran on the backend the policy forces, so a
    /// group never times the other device.
    pub fn check(&self, id: &str, report: &ExecutionReport) {
        let expected = match self.exec.policy() {
            DevicePolicy::Cpu => BackendKind::Cpu,
            DevicePolicy::Cuda => BackendKind::Gpu,
            DevicePolicy::Auto => panic!("an Auto executor has no device to check against"),
        };
        assert_eq!(
            report.backend, expected,
            "{id}: the untimed warm-up call ran on the {} backend, not the {expected} one \
             its group is named after (fallbacks: {:?}); refusing to time it",
            report.backend, report.fallbacks
        );
    }
}

/// Calls `bench` with each executor present, one at a time (each is dropped before the
/// next is built, so at most one holds a resident corpus on the device): the CPU always,
/// then CUDA at FP32, TF32, FP16 and BF16. Without a usable GPU, prints one SKIP line for cuda
/// and returns.
pub fn for_each_target(mut bench: impl FnMut(&Target)) {
    bench(&Target::new(DevicePolicy::Cpu, Precision::Fp32).expect("the CPU executor"));
    for precision in [
        Precision::Fp32,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
    ] {
        match Target::new(DevicePolicy::Cuda, precision) {
            Ok(target) => bench(&target),
            Err(e) if precision == Precision::Fp32 => {
                eprintln!("SKIP cuda benches (no usable CUDA device): {e}");
                return;
            }
            Err(e) => eprintln!("SKIP cuda {precision:?} benches (the executor failed): {e}"),
        }
    }
}

/// The corpus of `n` rows (100 000 or 1 000 000; seed 7), built on first use, so `--list`
/// and runs that filter out its groups never build it.
pub fn corpus(n: usize) -> &'static Corpus {
    static SMALL: OnceLock<Corpus> = OnceLock::new();
    static LARGE: OnceLock<Corpus> = OnceLock::new();
    let cell = match n {
        100_000 => &SMALL,
        1_000_000 => &LARGE,
        _ => panic!("no bench corpus of {n} rows"),
    };
    cell.get_or_init(|| Corpus::new(data::random_matrix(n, D, 7), D).expect("valid corpus"))
}

/// What one group times on one device, and how long.
pub struct Plan {
    /// `(benchmark id, Q)`.
    pub workloads: &'static [(&'static str, usize)],
    /// Corpus rows ([`corpus`]).
    pub n: usize,
    /// Seed of the query matrices.
    pub query_seed: u64,
    pub sample_size: usize,
    pub warm_up: Duration,
    pub measurement: Duration,
}

impl Plan {
    /// Applies the sample settings; every group samples flat (an iteration of the large
    /// workloads takes up to seconds: the same iteration count per sample).
    pub fn configure(&self, group: &mut BenchmarkGroup<'_, WallTime>) {
        group
            .sample_size(self.sample_size)
            .warm_up_time(self.warm_up)
            .measurement_time(self.measurement)
            .sampling_mode(SamplingMode::Flat);
    }
}

/// One operation on every target: a group `{device}_{op}_{precision}` per target, laid
/// out by `plan`, one benchmark per workload. Before a workload's first timed iteration,
/// `with_report` runs it once untimed and its report must name the group's device
/// ([`Target::check`]); then `call` is timed.
pub fn bench_op<T>(
    c: &mut Criterion,
    op: &str,
    plan: impl Fn(&Target) -> Plan,
    with_report: impl Fn(&HybridExecutor, MatrixRef<'_>, &Corpus) -> (T, ExecutionReport),
    call: impl Fn(&HybridExecutor, MatrixRef<'_>, &Corpus) -> T,
) {
    for_each_target(|target| {
        let plan = plan(target);
        let group_name = target.group_name(op);
        let mut group = c.benchmark_group(&group_name);
        plan.configure(&mut group);
        for &(name, q) in plan.workloads {
            group.throughput(Throughput::Elements((2 * q * plan.n * D) as u64));
            let queries = data::random_matrix(q, D, plan.query_seed);
            let view = MatrixRef::new(&queries, q, D).expect("valid queries");
            let mut checked = false;
            group.bench_function(name, |b| {
                let corpus = corpus(plan.n);
                if !checked {
                    let (_, report) = with_report(&target.exec, view, corpus);
                    target.check(&format!("{group_name}/{name}"), &report);
                    checked = true;
                }
                b.iter(|| black_box(call(&target.exec, black_box(view), corpus)));
            });
        }
        group.finish();
    });
}
