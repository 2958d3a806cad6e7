//! The `hybridvec` command line: `info`, `bench`, `demo`, `query`, and the store's
//! `ingest`, `get`, `verify` and `repair`. One module a command (`bench`, `demo`, `query`,
//! `store`); this one parses the flags, dispatches, and turns the result into an exit status.

use clap::{Parser, Subcommand};
use hybridvec::{
    data, CudaConfig, CudaStatus, ElementType, Error, ExecutorConfig, GemmPath, HybridExecutor,
    Precision, SearchOptions,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::Write;
use std::path::PathBuf;

mod args;
mod bench;
mod demo;
mod out;
mod query;
mod signals;
mod store;
use args::{Backend, MetricArg, StoreDtypeArg};
use bench::{bench, BenchArgs};
use demo::demo;
use out::outln;
use query::{name_filter_file, print_hits, query, read_filter};
use std::process::ExitCode;
use std::time::Duration;

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

/// Query vectors come from a stream of their own so they never equal corpus rows.
const QUERY_STREAM: u64 = 0x5155_4552_5953;

fn random_queries(q: usize, dim: usize, seed: u64) -> Result<Vec<f32>, Error> {
    data::try_random_matrix(q, dim, seed ^ QUERY_STREAM)
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
