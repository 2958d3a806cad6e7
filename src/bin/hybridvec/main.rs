//! The `hybridvec` command line: `info`, `bench`, `demo`, `query`.

use clap::{Parser, Subcommand, ValueEnum};
use hybridvec::{
    data, input, BackendKind, Corpus, CudaConfig, CudaStatus, DevicePolicy, ElementType, Error,
    ExecutionReport, ExecutorConfig, GemmPath, Hit, HybridExecutor, MatrixRef, Metric, Precision,
    SearchOptions,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::{Path, PathBuf};

mod out;
mod signals;
mod store;
use out::outln;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser)]
#[command(
    name = "hybridvec",
    version,
    about = "Cosine similarity and exact top-k on CPU or GPU"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum Backend {
    Auto,
    Cpu,
    Cuda,
}

impl From<Backend> for DevicePolicy {
    fn from(b: Backend) -> Self {
        match b {
            Backend::Auto => DevicePolicy::Auto,
            Backend::Cpu => DevicePolicy::Cpu,
            Backend::Cuda => DevicePolicy::Cuda,
        }
    }
}

/// What to rank by (`--metric`): cosine, inner product, or squared L2 distance (smallest
/// first).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum MetricArg {
    Cos,
    Ip,
    L2,
}

impl From<MetricArg> for Metric {
    fn from(m: MetricArg) -> Self {
        match m {
            MetricArg::Cos => Metric::Cosine,
            MetricArg::Ip => Metric::InnerProduct,
            MetricArg::L2 => Metric::L2,
        }
    }
}

/// How a filtered search reads the corpus (`--filter-plan`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum FilterPlanArg {
    Auto,
    Gather,
    Mask,
}

impl From<FilterPlanArg> for hybridvec::FilterPlan {
    fn from(p: FilterPlanArg) -> Self {
        match p {
            FilterPlanArg::Auto => hybridvec::FilterPlan::Auto,
            FilterPlanArg::Gather => hybridvec::FilterPlan::Gather,
            FilterPlanArg::Mask => hybridvec::FilterPlan::Mask,
        }
    }
}

/// Arithmetic of the GPU's compute-bound kernels (`--precision`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum PrecisionArg {
    /// Exact FP32 (the default).
    Fp32,
    /// TF32 tensor cores (scores within 2e-3).
    Tf32,
    /// An FP16 copy of the corpus, FP16 tensor cores (scores within 2e-3).
    Fp16,
    /// A BF16 copy of the corpus, BF16 tensor cores (scores within 1e-2).
    Bf16,
}

/// How `bench` holds the corpus (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum DtypeArg {
    /// f32 rows, scanned in full.
    F32,
    /// f16 rows (rounded from the f32 data), scanned in full: half the bytes.
    F16,
    /// bf16 rows (rounded from the f32 data), scanned in full: half the bytes.
    Bf16,
    /// f32 rows and an int8 scan tier: top-k on the CPU scans the tier and re-scores
    /// only the rows it cannot rule out (the answer is the f32 scan's, exactly). Batches
    /// of every size with AVX-512 VNNI, up to 24 queries with AVX2, else up to 4; larger
    /// batches scan in full.
    Int8,
}

/// How `ingest` stores vectors (`--dtype`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum StoreDtypeArg {
    /// 32-bit floats, as given.
    F32,
    /// 16-bit IEEE floats (values up to ±65 504).
    F16,
    /// bfloat16 (8 significant bits, f32's range).
    Bf16,
}

impl From<StoreDtypeArg> for ElementType {
    fn from(d: StoreDtypeArg) -> Self {
        match d {
            StoreDtypeArg::F32 => ElementType::F32,
            StoreDtypeArg::F16 => ElementType::F16,
            StoreDtypeArg::Bf16 => ElementType::Bf16,
        }
    }
}

/// How the GPU scores batches of more than 8 queries (`--gemm`).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum GemmArg {
    /// cuBLAS or the own kernels, whichever the device measures faster.
    Measured,
    /// Always cuBLAS (when it is found).
    Cublas,
    /// Never cuBLAS.
    Own,
}

impl From<GemmArg> for GemmPath {
    fn from(g: GemmArg) -> Self {
        match g {
            GemmArg::Measured => GemmPath::Measured,
            GemmArg::Cublas => GemmPath::Cublas,
            GemmArg::Own => GemmPath::OwnKernels,
        }
    }
}

impl From<PrecisionArg> for Precision {
    fn from(p: PrecisionArg) -> Self {
        match p {
            PrecisionArg::Fp32 => Precision::Fp32,
            PrecisionArg::Tf32 => Precision::Tf32,
            PrecisionArg::Fp16 => Precision::Fp16,
            PrecisionArg::Bf16 => Precision::Bf16,
        }
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// CPU features, threads, CUDA status (with the reason when unavailable).
    Info {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Time top-k (or, with --k 0, the full cosine matrix) on seeded random data.
    Bench(BenchArgs),
    /// The main job on built-in seeded data: the public workloads, scaled to run in under a
    /// minute, with the backend that served and its speed.
    Demo,
    /// Top-k of queries against a store (--store) or a corpus file (--corpus).
    #[command(group(clap::ArgGroup::new("source").required(true).args(["store", "corpus"])))]
    #[command(group(clap::ArgGroup::new("queries").required(true).args(["random", "input"])))]
    Query {
        /// A store directory (see `ingest`).
        #[arg(long)]
        store: Option<PathBuf>,
        /// Corpus vectors (.npy f32 2-D, or .fvecs).
        #[arg(long)]
        corpus: Option<PathBuf>,
        /// This many seeded random queries.
        #[arg(long)]
        random: Option<usize>,
        /// Seed for --random.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Queries from a file (.npy or .fvecs).
        #[arg(long)]
        input: Option<PathBuf>,
        /// Hits per query.
        #[arg(long)]
        k: usize,
        /// Which backend serves.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// What to rank by: cosine, inner product, or squared L2 distance (smallest first;
        /// the score printed is the squared distance).
        #[arg(long, value_enum, default_value_t = MetricArg::Cos)]
        metric: MetricArg,
        /// Only return records whose id is listed in FILE (one id per line; blank lines
        /// are skipped). An id not in the store is an error. Needs --store.
        #[arg(
            long,
            value_name = "FILE",
            requires = "store",
            conflicts_with = "filter_rows"
        )]
        filter_ids: Option<PathBuf>,
        /// Only return the rows listed in FILE (one row index per line, from 0; blank
        /// lines are skipped). A row past the corpus is an error.
        #[arg(long, value_name = "FILE")]
        filter_rows: Option<PathBuf>,
        /// One JSON line per query.
        #[arg(long)]
        json: bool,
    },
    /// Add records to a store (created when missing). Record i gets the id `rec-{i}`.
    Ingest {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// Vector dimension.
        #[arg(long)]
        dim: usize,
        /// This many seeded random records (see `verify --expect-seed`).
        #[arg(long, required_unless_present = "input", conflicts_with = "input")]
        random: Option<u64>,
        /// Seed for --random.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// Vectors from a file (.npy or .fvecs); row i becomes `rec-{i}`.
        #[arg(long)]
        input: Option<PathBuf>,
        /// Flush every M records and print `flushed <count>` after each durable flush.
        #[arg(long)]
        flush_every: Option<u64>,
        /// How a new store keeps its vectors: f32, or f16 or bf16 (half the bytes; each
        /// value rounded to nearest). Default: an existing store's type, else f32.
        #[arg(long, value_enum)]
        dtype: Option<StoreDtypeArg>,
        /// Build the store's int8 scan tier (kept from then on): queries (any metric;
        /// batches of every size with AVX-512 VNNI, up to 24 with AVX2, else up to 4)
        /// scan int8 codes first and re-score only the rows that can be in the top-k,
        /// with the same exact answers.
        #[arg(long)]
        int8_tier: bool,
    },
    /// Print the record stored under an id.
    Get {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// The record id.
        #[arg(long)]
        id: String,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
    /// Check every record's checksum, and with --expect-seed its exact contents.
    Verify {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// The seed `ingest --random` used.
        #[arg(long)]
        expect_seed: Option<u64>,
        /// `{"ok": bool, "records": n, "errors": [...], "repair_would_drop": n, ...}`.
        #[arg(long)]
        json: bool,
    },
    /// Quarantine damaged records (listed with their row, id and reason) and keep the rest.
    Repair {
        /// The store directory.
        #[arg(long)]
        store: PathBuf,
        /// One JSON object.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    // SIGPIPE stays ignored (Rust's default): a write to a closed pipe is an EPIPE error
    // that `out` reports, with exit status 2, like a full disk.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Info { json } => info(json),
        Cmd::Bench(args) => bench(&args),
        Cmd::Demo => demo(),
        Cmd::Query {
            store,
            corpus,
            random,
            seed,
            input,
            k,
            backend,
            metric,
            filter_ids,
            filter_rows,
            json,
        } => read_filter(filter_ids.as_deref(), filter_rows.as_deref()).and_then(|filter| {
            let options = SearchOptions::new(metric.into());
            let options = match filter {
                Some(f) => options.with_filter(f),
                None => options,
            };
            query(
                store.as_deref(),
                corpus.as_deref(),
                random,
                seed,
                input,
                k,
                backend,
                &options,
                json,
            )
            .map_err(|e| name_filter_file(e, filter_ids.as_deref(), filter_rows.as_deref()))
        }),
        Cmd::Ingest {
            store: dir,
            dim,
            random,
            seed,
            input,
            flush_every,
            dtype,
            int8_tier,
        } => {
            let source = match (random, input) {
                (Some(count), None) => store::Source::Random { count, seed },
                (None, Some(p)) => store::Source::File(p),
                _ => unreachable!("clap requires exactly one source"),
            };
            let shape = (dim, dtype.map(ElementType::from));
            let options = store::IngestOptions {
                flush_every,
                int8_tier,
                quiet: false,
            };
            return finish(store::ingest(&dir, shape, source, options).map(|()| true));
        }
        Cmd::Get {
            store: dir,
            id,
            json,
        } => return finish(store::get(&dir, &id, json)),
        Cmd::Verify {
            store: dir,
            expect_seed,
            json,
        } => return finish(store::verify(&dir, expect_seed, json)),
        Cmd::Repair { store: dir, json } => return finish(store::repair(&dir, json)),
    };
    finish(result.map(|()| true))
}

/// Exit status: 0 on success, 1 when a command ran but found a problem (no such record,
/// verification failed), 2 on an error.
fn finish(result: Result<bool, Error>) -> ExitCode {
    match result.and_then(|ok| out::flush().map(|()| ok)) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            // Not eprintln!: it panics when standard error is closed or full.
            let mut err = std::io::stderr();
            let _ = writeln!(err, "error: {e}");
            if let Error::CorruptStore { file, .. } = &e {
                if let Some(dir) = file.parent() {
                    let _ = writeln!(
                        err,
                        "hint: `hybridvec verify --store {0}` lists the damage; `hybridvec repair --store {0}` quarantines it and keeps the rest",
                        dir.display()
                    );
                }
            }
            ExitCode::from(2)
        }
    }
}

fn executor(backend: Backend) -> Result<HybridExecutor, Error> {
    executor_with(backend, Precision::Fp32, GemmPath::Measured)
}

fn executor_with(
    backend: Backend,
    precision: Precision,
    gemm: GemmPath,
) -> Result<HybridExecutor, Error> {
    HybridExecutor::new(ExecutorConfig {
        device: backend.into(),
        cuda: CudaConfig {
            precision,
            gemm,
            ..Default::default()
        },
        ..Default::default()
    })
}

fn info(json: bool) -> Result<(), Error> {
    let caps = executor(Backend::Auto)?.capabilities();
    let (cuda, reason) = match &caps.cuda {
        CudaStatus::Available {
            device,
            total_memory,
            kernels,
            call_overhead,
            gemm,
            ..
        } => (
            format!(
                "available: {device}, {:.1} GiB, kernels: {kernels}{}; GEMM: {gemm}",
                *total_memory as f64 / (1u64 << 30) as f64,
                call_overhead.map_or_else(String::new, |t| format!(
                    ", call overhead {:.1} µs (measured)",
                    t.as_secs_f64() * 1e6
                ))
            ),
            None,
        ),
        CudaStatus::Unavailable { reason } => ("unavailable".to_string(), Some(reason.clone())),
    };
    if json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cpu": caps.cpu_model, "simd": caps.simd.name(), "kernels": caps.simd.kernels(),
            "cpu_features": caps.cpu_features.names(), "threads": caps.threads,
            "cuda": cuda, "cuda_reason": reason,
        });
        outln!("{v}");
    } else {
        outln!("hybridvec {}", env!("CARGO_PKG_VERSION"));
        outln!("cpu:     {}", caps.cpu_model);
        outln!("simd:    {}", caps.simd.name());
        outln!("kernels: {}", caps.simd.kernels());
        outln!("cpu features: {}", caps.cpu_features.names().join(" "));
        outln!("threads: {}", caps.threads);
        match reason {
            Some(r) => outln!("cuda:    unavailable: {r}"),
            None => outln!("cuda:    {cuda}"),
        }
    }
    Ok(())
}

/// Flags of `bench`.
#[derive(clap::Args)]
struct BenchArgs {
    /// Query vectors per call (at least 1).
    #[arg(long, default_value_t = 64, value_parser = at_least_one)]
    queries: usize,
    /// Corpus vectors (at least 1).
    #[arg(long, default_value_t = 100_000, value_parser = at_least_one)]
    corpus: usize,
    /// Vector dimension (at least 1).
    #[arg(long, default_value_t = 768, value_parser = at_least_one)]
    dim: usize,
    /// Hits per query; 0 times the full Q×N score matrix instead.
    #[arg(long, default_value_t = 10)]
    k: usize,
    /// What to rank by: cosine, inner product, or squared L2 distance.
    #[arg(long, value_enum, default_value_t = MetricArg::Cos)]
    metric: MetricArg,
    /// Allow only this fraction of the corpus rows (a seeded random subset), above 0 and
    /// at most 1.
    #[arg(long, value_name = "FRACTION", value_parser = fraction)]
    filter: Option<f64>,
    /// With --filter: each query gets its own random subset of that fraction.
    #[arg(long, requires = "filter")]
    filter_per_query: bool,
    /// With --filter: how it is searched (auto chooses by the fraction).
    #[arg(long, value_enum, default_value_t = FilterPlanArg::Auto, requires = "filter")]
    filter_plan: FilterPlanArg,
    /// Time range search instead of top-k: the threshold is query 0's score of its
    /// ROWS-th best row among those its filter allows (so about ROWS rows per query
    /// pass; every row when ROWS is past them), with no limit.
    #[arg(long, value_name = "ROWS", value_parser = at_least_one)]
    range_rows: Option<usize>,
    /// Which backend serves.
    #[arg(long, value_enum, default_value_t = Backend::Auto)]
    backend: Backend,
    /// Arithmetic of the GPU kernels: tf32 for batches above 8 queries, fp16 for all
    /// (an FP16 copy of the corpus); the CPU is always FP32.
    #[arg(long, value_enum, default_value_t = PrecisionArg::Fp32)]
    precision: PrecisionArg,
    /// How the GPU scores batches of more than 8 queries: measured (cuBLAS or the own
    /// kernels, the faster), cublas (always, when found), own (never cuBLAS).
    #[arg(long, value_enum, default_value_t = GemmArg::Measured)]
    gemm: GemmArg,
    /// How the corpus is held: f32, f16 or bf16 rows, or int8 (f32 rows with a certified
    /// int8 scan tier).
    #[arg(long, value_enum, default_value_t = DtypeArg::F32)]
    dtype: DtypeArg,
    /// Timed runs (after one warm-up run), 1 to 100 000; the median is reported.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    repeat: u32,
    /// Seed of the random data.
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// One JSON object per configuration, no progress bars.
    #[arg(long)]
    json: bool,
}

/// A count flag's value: a whole number of at least 1 (clap names the flag in the error).
fn at_least_one(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(0) => Err("must be at least 1".into()),
        Ok(n) => Ok(n),
        Err(e) => Err(e.to_string()),
    }
}

/// A `--filter` value: a fraction above 0 and at most 1.
fn fraction(s: &str) -> Result<f64, String> {
    match s.parse::<f64>() {
        Ok(f) if f > 0.0 && f <= 1.0 => Ok(f),
        Ok(_) => Err("must be above 0 and at most 1".into()),
        Err(e) => Err(e.to_string()),
    }
}

/// A seeded random subset of about `fraction` of `n` rows, ascending (at least one row).
fn random_rows(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut rng = data::Rng::new(seed, 0x4649_4c54);
    let rows: Vec<usize> = (0..n).filter(|_| rng.next_f64() < fraction).collect();
    if rows.is_empty() {
        vec![rng.below(n as u64) as usize]
    } else {
        rows
    }
}

/// Query vectors come from a stream of their own so they never equal corpus rows.
const QUERY_STREAM: u64 = 0x5155_4552_5953;

fn random_queries(q: usize, dim: usize, seed: u64) -> Result<Vec<f32>, Error> {
    data::try_random_matrix(q, dim, seed ^ QUERY_STREAM)
}

fn bench(a: &BenchArgs) -> Result<(), Error> {
    let exec = executor_with(a.backend, a.precision.into(), a.gemm.into())?;
    let spinner = progress(!a.json, "generating data");
    let element = match a.dtype {
        DtypeArg::F16 => ElementType::F16,
        DtypeArg::Bf16 => ElementType::Bf16,
        DtypeArg::F32 | DtypeArg::Int8 => ElementType::F32,
    };
    let mut corpus = Corpus::with_element_type(
        data::try_random_matrix(a.corpus, a.dim, a.seed)?,
        a.dim,
        element,
    )?;
    let mut tier_secs = None;
    if a.dtype == DtypeArg::Int8 {
        spinner.set_message("building the int8 tier");
        let t = Instant::now();
        corpus = corpus.with_int8_tier();
        tier_secs = Some(t.elapsed().as_secs_f64());
    }
    let qdata = random_queries(a.queries, a.dim, a.seed)?;
    let queries = MatrixRef::new(&qdata, a.queries, a.dim)?;
    let metric = Metric::from(a.metric);
    let mut options = SearchOptions::new(metric);
    if let Some(f) = a.filter {
        if a.k == 0 {
            return Err(Error::InvalidConfig(
                "--filter needs --k of at least 1 (the score matrix is not filtered)".into(),
            ));
        }
        options = options
            .with_filter(if a.filter_per_query {
                hybridvec::Filter::PerQuery(
                    (0..a.queries)
                        .map(|i| {
                            hybridvec::Filter::Rows(random_rows(a.corpus, f, a.seed + i as u64))
                        })
                        .collect(),
                )
            } else {
                hybridvec::Filter::Rows(random_rows(a.corpus, f, a.seed))
            })
            .with_filter_plan(a.filter_plan.into());
    }
    // Range search: the threshold of query 0's `rows`-th best hit.
    let threshold = match a.range_rows {
        Some(rows) => {
            let first = MatrixRef::new(&qdata[..a.dim], 1, a.dim)?;
            // Query 0 alone: under per-query filters, with its own list.
            let mut alone = options.clone();
            if let Some(hybridvec::Filter::PerQuery(fs)) = &options.filter {
                alone.filter = Some(hybridvec::Filter::PerQuery(fs[..1].to_vec()));
            }
            let hits = exec.search(first, &corpus, rows, &alone)?;
            Some(hits[0].last().map_or(0.0, |h| h.score))
        }
        None => None,
    };
    spinner.finish_and_clear();
    let run = || -> Result<ExecutionReport, Error> {
        Ok(match threshold {
            Some(t) => {
                let r = exec.range_with_report(queries, &corpus, t, usize::MAX, &options)?;
                std::hint::black_box(r).1
            }
            None if a.k == 0 => {
                std::hint::black_box(exec.similarity_with_report(queries, &corpus, metric)?).1
            }
            None => {
                std::hint::black_box(exec.search_with_report(queries, &corpus, a.k, &options)?).1
            }
        })
    };
    run()?; // warm-up: page faults, thread start, caches
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(a.repeat as u64)
    };
    let mut times = Vec::with_capacity(a.repeat as usize);
    let mut reports = Vec::with_capacity(a.repeat as usize);
    let mut device_times = Vec::new();
    hybridvec::cuda::take_device_time();
    for _ in 0..a.repeat {
        let t = Instant::now();
        reports.push(run()?);
        times.push(t.elapsed().as_secs_f64());
        // CUDA events around the device work, when the GPU served.
        device_times.extend(hybridvec::cuda::take_device_time().map(|d| d.as_secs_f64()));
        bar.inc(1);
    }
    device_times.sort_by(f64::total_cmp);
    let device_median = device_times.get(device_times.len() / 2).copied();
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flops = 2.0 * a.queries as f64 * a.corpus as f64 * a.dim as f64;
    let gflops = flops / median / 1e9;
    let gbps = corpus.bytes() as f64 / median / 1e9;
    let caps = exec.capabilities();
    // The last timed run's backend and reason; `runs_on` counts every timed run, since
    // `auto` may explore or re-measure the other backend in some of them.
    let last = reports.last().expect("repeat ≥ 1");
    let backend = match last.backend {
        BackendKind::Cpu => format!("cpu-{}", caps.simd.name()),
        BackendKind::Gpu => caps.accelerator.clone().unwrap_or_else(|| "gpu".into()),
    };
    let reason = last.reason.as_str();
    let runs_on = |kind| reports.iter().filter(|r| r.backend == kind).count();
    if a.json {
        let v = serde_json::json!({
            "backend": backend, "reason": reason,
            "runs_on": {"cpu": runs_on(BackendKind::Cpu), "gpu": runs_on(BackendKind::Gpu)},
            "fallbacks": reports.iter().map(|r| r.fallbacks.len()).sum::<usize>(),
            "queries": a.queries, "precision": format!("{:?}", a.precision).to_lowercase(),
            "gemm": format!("{:?}", a.gemm).to_lowercase(),
            "corpus": a.corpus, "dim": a.dim, "k": a.k, "metric": metric.as_str(),
            "filter": a.filter, "filter_per_query": a.filter_per_query,
            "filter_plan": format!("{:?}", a.filter_plan).to_lowercase(), "range_rows": a.range_rows,
            "repeat": a.repeat, "threads": caps.threads,
            "median_secs": median, "device_median_secs": device_median, "min_secs": times[0], "max_secs": times[times.len() - 1],
            "gflops": gflops, "gbps": gbps, "peak_rss_bytes": peak_rss_bytes(),
            "corpus_bytes": corpus.bytes(),
            "dtype": format!("{:?}", a.dtype).to_lowercase(), "rescored": last.rescored,
            "tier_bytes": corpus.int8_tier_bytes(), "tier_build_secs": tier_secs,
        });
        outln!("{v}");
    } else {
        // What else shaped the call; the rates count the whole corpus either way.
        let mut variant = String::new();
        if let Some(f) = a.filter {
            let per = if a.filter_per_query { " per query" } else { "" };
            variant += &format!(" filter={f}{per}");
        }
        if let Some(rows) = a.range_rows {
            variant += &format!(" range-rows={rows}");
        }
        if matches!(a.dtype, DtypeArg::F16 | DtypeArg::Bf16) {
            variant += &format!(" dtype={}", element);
        }
        if a.dtype == DtypeArg::Int8 {
            variant += &format!(
                " dtype=int8 (tier built in {:.0} ms) rescored={}",
                tier_secs.unwrap_or(0.0) * 1e3,
                last.rescored
                    .map_or("none (full scan)".into(), |r| r.to_string())
            );
        }
        outln!(
            "{backend} ({reason}): Q={} N={} D={} k={} metric={}{}  median {:.3} ms over {} runs  {:.1} GFLOP/s  {:.1} GB/s",
            a.queries, a.corpus, a.dim, a.k, metric, variant, median * 1e3, a.repeat, gflops, gbps
        );
    }
    Ok(())
}

/// Peak resident set size of this process (Linux), for memory-budget checks.
fn peak_rss_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

fn progress(show: bool, msg: &'static str) -> ProgressBar {
    if !show {
        return ProgressBar::hidden();
    }
    let p = ProgressBar::new_spinner().with_message(msg);
    p.set_style(ProgressStyle::with_template("{spinner} {msg} {elapsed}").expect("valid template"));
    p.enable_steady_tick(Duration::from_millis(120));
    p
}

fn demo() -> Result<(), Error> {
    use hybridvec::{StoreConfig, WarmStore};
    use rayon::prelude::*;
    let dir = std::env::temp_dir().join(format!("{DEMO_PREFIX}{}", std::process::id()));
    // Before any thread starts, so every thread inherits the blocked signals.
    let removed = dir.clone();
    signals::on_interrupt(move || {
        signals::remove_dir_retrying(&removed);
        Some(format!("removed {}", removed.display()))
    });
    remove_stale_demo_stores();
    let exec = executor(Backend::Auto)?;
    let caps = exec.capabilities();
    outln!(
        "hybridvec demo: {} ({} threads, {})",
        caps.cpu_model,
        caps.threads,
        caps.simd.name()
    );
    if let CudaStatus::Unavailable { reason } = &caps.cuda {
        outln!("CUDA unavailable: {reason}; the CPU serves every call.");
    }
    let (seed, d) = (7u64, 768usize);
    let _ = std::fs::remove_dir_all(&dir);
    let _cleanup = RemoveOnDrop(dir.clone());
    // The store is filled in two steps (100k rows, then 150k more), so the same store
    // serves the 100k workloads and then the scaled gpu-large one after growing.
    let ingest = |from: u64, to: u64| -> Result<f64, Error> {
        let store = if from == 0 {
            WarmStore::create(&dir, StoreConfig::new(d))?
        } else {
            WarmStore::open(&dir)?
        };
        let t = Instant::now();
        let p = progress(true, "ingesting into the warm store");
        (from..to).into_par_iter().try_for_each(|i| {
            let (id, emb, content) = data::random_record(seed, i, d);
            store.put(&id, &emb, &content).map(|_| ())
        })?;
        store.flush()?;
        p.finish_and_clear();
        Ok(t.elapsed().as_secs_f64())
    };
    // The public workloads; gpu-large is scaled from 1M to 250k corpus rows so the demo
    // finishes in well under a minute on two cores.
    let workloads = [
        ("single", 1, 100_000u64, 10),
        ("small-batch", 64, 100_000, 10),
        ("large-batch", 1024, 100_000, 10),
        ("gpu-large (N scaled 1M→250k)", 1024, 250_000, 10),
    ];
    let mut stored = 0u64;
    let mut header_printed = false;
    for (name, q, n, k) in workloads {
        if stored < n {
            let secs = ingest(stored, n)?;
            outln!(
                "warm store {}: put and flushed rows {stored}..{n} in {:.2} s ({:.2} GB/s of vectors)",
                dir.display(),
                secs,
                ((n - stored) as f64 * d as f64 * 4.0) / secs / 1e9
            );
            stored = n;
            header_printed = false;
        }
        // Reopened read-only each time: what is searched is what was made durable.
        let store = WarmStore::open_read_only(&dir)?;
        if !header_printed {
            outln!(
                "{:<30} {:>16} {:>8} {:>11} {:>9}",
                "workload",
                "Q×N×D",
                "backend",
                "median ms",
                "GFLOP/s"
            );
            header_printed = true;
        }
        let qdata = random_queries(q, d, seed)?;
        let queries = MatrixRef::new(&qdata, q, d)?;
        let (mut hits, _) = exec.top_k_store_with_report(queries, &store, k)?; // warm-up
        let reps = if q as u64 * n >= 100_000_000 { 3 } else { 9 };
        let mut times = Vec::new();
        let mut served = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            let (h, report) = exec.top_k_store_with_report(queries, &store, k)?;
            times.push(t.elapsed().as_secs_f64());
            hits = h;
            served.push(report.backend);
        }
        // The backend that served the timed runs ("mixed" when `auto` explored both).
        let backend = match served[..] {
            [first, ..] if served.iter().all(|&b| b == first) => match first {
                BackendKind::Cpu => "cpu",
                BackendKind::Gpu => "gpu",
            },
            _ => "mixed",
        };
        times.sort_by(f64::total_cmp);
        let med = times[reps / 2];
        outln!(
            "{:<30} {:>16} {:>8} {:>11.2} {:>9.1}",
            name,
            format!("{q}×{n}×{d}"),
            backend,
            med * 1e3,
            2.0 * (q as f64 * n as f64 * d as f64) / med / 1e9
        );
        if name == "small-batch" {
            let corpus = store.corpus();
            let view = corpus.view().ok_or(Error::EmptyInput {
                what: "store has no records",
            })?;
            let as_hits: Vec<Hit> = hits[0]
                .iter()
                .map(|h| Hit {
                    index: h.row as usize,
                    score: h.score,
                })
                .collect();
            check_against_f64(&qdata[..d], view.matrix(), &as_hits, k, Metric::Cosine)?;
            let top: Vec<String> = hits[0]
                .iter()
                .take(3)
                .map(|h| format!("{} {:.4}", h.id, h.score))
                .collect();
            outln!(
                "{:<30} query 0 top-3: {} (matches an f64 reference)",
                "",
                top.join(", ")
            );
            // The same workload under the other metrics (the store records no metric).
            for metric in [Metric::InnerProduct, Metric::L2] {
                let options = SearchOptions::new(metric);
                let mut times = Vec::new();
                let mut hits = Vec::new();
                let mut served = BackendKind::Cpu;
                for _ in 0..4 {
                    let t = Instant::now();
                    let report;
                    (hits, report) = exec.search_store_with_report(queries, &store, k, &options)?;
                    times.push(t.elapsed().as_secs_f64());
                    served = report.backend;
                }
                // The first run is the warm-up.
                times.remove(0);
                times.sort_by(f64::total_cmp);
                let med = times[times.len() / 2];
                let as_hits: Vec<Hit> = hits[0]
                    .iter()
                    .map(|h| Hit {
                        index: h.row as usize,
                        score: h.score,
                    })
                    .collect();
                check_against_f64(&qdata[..d], view.matrix(), &as_hits, k, metric)?;
                outln!(
                    "{:<30} {:>16} {:>8} {:>11.2} {:>9.1}   top-1 {} {} {:.4} (matches an f64 reference)",
                    format!("  --metric {metric}"),
                    format!("{q}×{n}×{d}"),
                    served.as_str(),
                    med * 1e3,
                    2.0 * (q as f64 * n as f64 * d as f64) / med / 1e9,
                    hits[0][0].id,
                    if metric == Metric::L2 { "distance²" } else { "score" },
                    hits[0][0].score
                );
            }
        }
    }
    Ok(())
}

/// The demo's temporary stores are `$TMPDIR/hybridvec-demo-<pid>`.
const DEMO_PREFIX: &str = "hybridvec-demo-";

/// Removes demo stores left by demos that were killed outright (`kill -9`): those whose
/// process no longer exists.
fn remove_stale_demo_stores() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(DEMO_PREFIX)
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Removes the demo's temporary store however the demo ends.
struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Recomputes one query's top-k under `metric` in f64 and checks the engine's hits
/// against it. Cosine is ranked in f32: each score within 1e-5 of the reference score of
/// the same row, and each rank holding the reference's row unless the two rows' reference
/// scores are within 2e-5 (a near-tie that f32 rounding may order either way). Inner
/// product and L2 are exact: the reference's rows, and scores within f32 rounding.
fn check_against_f64(
    q: &[f32],
    m: MatrixRef<'_>,
    hits: &[Hit],
    k: usize,
    metric: Metric,
) -> Result<(), Error> {
    let qn: f64 = q.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let by_row: Vec<f64> = (0..m.rows())
        .map(|i| {
            let r = m.row(i);
            let dot: f64 = r.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            match metric {
                Metric::Cosine => {
                    let cn: f64 = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                    dot / (qn * cn)
                }
                Metric::InnerProduct => dot,
                Metric::L2 => -r
                    .iter()
                    .zip(q)
                    .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                    .sum::<f64>(),
            }
        })
        .collect();
    let mut ranked: Vec<usize> = (0..m.rows()).collect();
    ranked.sort_by(|&a, &b| by_row[b].total_cmp(&by_row[a]).then(a.cmp(&b)));
    if hits.len() != k.min(m.rows()) {
        return Err(Error::InvalidConfig(format!(
            "demo self-check failed: {} hits, expected {k}",
            hits.len()
        )));
    }
    let exact = metric != Metric::Cosine;
    for (h, &want) in hits.iter().zip(&ranked) {
        let own = by_row[h.index];
        let reported = if metric == Metric::L2 {
            -(h.score as f64)
        } else {
            h.score as f64
        };
        let (score_tol, tie_tol) = if exact {
            (1e-6 * own.abs() + 1e-30, 1e-12 * own.abs() + 1e-30)
        } else {
            (1e-5, 2e-5)
        };
        let score_ok = (reported - own).abs() <= score_tol;
        let rank_ok = h.index == want || (own - by_row[want]).abs() <= tie_tol;
        if !score_ok || !rank_ok {
            return Err(Error::InvalidConfig(format!(
                "demo self-check failed ({metric}): got row {} score {:.6}, reference row {} score {:.6}",
                h.index, h.score, want, by_row[want]
            )));
        }
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn query(
    store_dir: Option<&std::path::Path>,
    corpus_path: Option<&std::path::Path>,
    random: Option<usize>,
    seed: u64,
    input_path: Option<PathBuf>,
    k: usize,
    backend: Backend,
    options: &SearchOptions,
    json: bool,
) -> Result<(), Error> {
    if k == 0 {
        return Err(Error::InvalidConfig("--k must be at least 1".into()));
    }
    // The store is opened (and its records verified) once, here.
    let (store, corpus, dim) = match (store_dir, corpus_path) {
        (Some(dir), _) => {
            let s = store::open_for_reading(dir)?;
            let dim = s.dim();
            (Some(s), None, dim)
        }
        (None, Some(p)) => {
            // A float16 file stays 16-bit: half the memory, and the same values.
            let file = input::VectorFile::open(p)?;
            let element = file.element_type();
            let m = file.read_all()?;
            let dim = m.cols();
            let corpus = Corpus::with_element_type(m.into_vec(), dim, element).map_err(|e| {
                Error::BadInputFile {
                    path: p.to_path_buf(),
                    reason: e.to_string(),
                }
            })?;
            (None, Some(corpus), dim)
        }
        (None, None) => {
            return Err(Error::InvalidConfig(
                "give --store DIR or --corpus FILE".into(),
            ))
        }
    };
    let corpus_name = match (store_dir, corpus_path) {
        (Some(d), _) => format!("the store {}", d.display()),
        (_, Some(p)) => format!("the corpus {}", p.display()),
        _ => unreachable!("one source"),
    };
    let qm = match (random, input_path) {
        (Some(q), None) => hybridvec::Matrix::new(random_queries(q, dim, seed)?, q, dim)?,
        (None, Some(p)) => {
            let m = input::read_matrix(&p)?;
            if m.cols() != dim {
                return Err(Error::BadInputFile {
                    path: p,
                    reason: format!(
                        "queries have dimension {}, but {corpus_name} has dimension {dim}",
                        m.cols()
                    ),
                });
            }
            m
        }
        _ => {
            return Err(Error::InvalidConfig(
                "give exactly one of --random Q or --input FILE".into(),
            ))
        }
    };
    let exec = executor(backend)?;
    if let Some(store) = store {
        return store::query(&exec, &store, &qm, k, options, json);
    }
    let corpus = corpus.expect("store or corpus");
    let hits = exec.search(qm.view(), &corpus, k, options)?;
    print_hits(
        hits.into_iter()
            .map(|hs| hs.into_iter().map(|h| (h.index, h.score)).collect()),
        "index",
        json,
        None,
    )
}

/// The filter of `--filter-ids` or `--filter-rows`: one id or row index per line, blank
/// lines skipped. A file that cannot be read, is not UTF-8, or holds a line that is no
/// row index is an error naming the file (and the line).
fn read_filter(
    ids: Option<&Path>,
    rows: Option<&Path>,
) -> Result<Option<hybridvec::Filter>, Error> {
    let read = |path: &Path| {
        let bytes = std::fs::read(path).map_err(|source| Error::FileIo {
            path: path.to_path_buf(),
            source,
        })?;
        String::from_utf8(bytes).map_err(|_| Error::BadInputFile {
            path: path.to_path_buf(),
            reason: "not UTF-8 text (one id or row index per line)".into(),
        })
    };
    let lines = |text: &str| -> Vec<(usize, String)> {
        text.lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r').to_string()))
            .filter(|(_, l)| !l.trim().is_empty())
            .collect()
    };
    if let Some(path) = ids {
        let text = read(path)?;
        return Ok(Some(hybridvec::Filter::Ids(
            lines(&text).into_iter().map(|(_, l)| l).collect(),
        )));
    }
    if let Some(path) = rows {
        let text = read(path)?;
        let rows = lines(&text)
            .into_iter()
            .map(|(n, l)| {
                l.trim().parse::<usize>().map_err(|_| Error::BadInputFile {
                    path: path.to_path_buf(),
                    reason: format!(
                        "line {n}: {:?} is not a row index (a whole number from 0)",
                        l.trim()
                    ),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        return Ok(Some(hybridvec::Filter::Rows(rows)));
    }
    Ok(None)
}

/// A filter's error, naming the file it came from.
fn name_filter_file(e: Error, ids: Option<&Path>, rows: Option<&Path>) -> Error {
    match (&e, ids.or(rows)) {
        (Error::FilterOutOfRange { .. } | Error::UnknownId { .. }, Some(path)) => {
            Error::BadInputFile {
                path: path.to_path_buf(),
                reason: e.to_string(),
            }
        }
        _ => e,
    }
}

/// One line per query: `{"query": i, "hits": [{<key>: .., "score": ..}, ...]}` with
/// `--json`, else `query i: key:score ...`.
/// Prints each query's hits: a line of `key:score` pairs, or a JSON object per line
/// (`{"query": i, "hits": [...]}`, with `"rescored"` when `rescored` has an entry per
/// query: the rows its certified search re-scored, or null when none ran).
fn print_hits<K: std::fmt::Display + Into<serde_json::Value>>(
    hits: impl Iterator<Item = Vec<(K, f32)>>,
    key: &str,
    json: bool,
    rescored: Option<&[Option<usize>]>,
) -> Result<(), Error> {
    for (i, hs) in hits.enumerate() {
        if json {
            let hs: Vec<_> = hs
                .into_iter()
                .map(|(id, score)| {
                    let mut o = serde_json::Map::new();
                    o.insert(key.to_string(), id.into());
                    o.insert("score".to_string(), score.into());
                    serde_json::Value::Object(o)
                })
                .collect();
            let mut line = serde_json::json!({"query": i, "hits": hs});
            if let Some(r) = rescored {
                line["rescored"] = r.get(i).copied().flatten().into();
            }
            outln!("{line}");
        } else {
            let s: Vec<String> = hs
                .iter()
                .map(|(id, score)| format!("{id}:{score:.4}"))
                .collect();
            outln!("query {i}: {}", s.join(" "));
        }
    }
    Ok(())
}
