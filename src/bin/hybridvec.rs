//! The `hybridvec` command line: `info`, `bench`, `demo`, `query`.

use clap::{Parser, Subcommand, ValueEnum};
use hybridvec::{
    data, input, Corpus, CudaStatus, DevicePolicy, Error, ExecutorConfig, Hit, HybridExecutor,
    MatrixRef,
};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;
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

#[derive(Subcommand)]
enum Cmd {
    /// CPU features, threads, CUDA status (with the reason when unavailable).
    Info {
        /// One JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Time top-k (or, with --k 0, the full cosine matrix) on seeded random data.
    Bench {
        /// Query vectors per call.
        #[arg(long, default_value_t = 64)]
        queries: usize,
        /// Corpus vectors.
        #[arg(long, default_value_t = 100_000)]
        corpus: usize,
        /// Vector dimension.
        #[arg(long, default_value_t = 768)]
        dim: usize,
        /// Hits per query; 0 times the full Q×N cosine matrix instead.
        #[arg(long, default_value_t = 10)]
        k: usize,
        /// Which backend serves.
        #[arg(long, value_enum, default_value_t = Backend::Auto)]
        backend: Backend,
        /// Timed runs (after one warm-up run); the median is reported.
        #[arg(long, default_value_t = 5)]
        repeat: usize,
        /// Seed of the random data.
        #[arg(long, default_value_t = 7)]
        seed: u64,
        /// One JSON object per configuration, no progress bars.
        #[arg(long)]
        json: bool,
    },
    /// The main job on built-in seeded data: the public workloads, scaled to run in under a
    /// minute, with the backend that served and its speed.
    Demo,
    /// Top-k of queries against a corpus file (.npy or .fvecs).
    Query {
        /// Corpus vectors (.npy f32 2-D, or .fvecs).
        #[arg(long)]
        corpus: PathBuf,
        /// This many seeded random queries.
        #[arg(long, conflicts_with = "input")]
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
        /// One JSON line per query.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let cli = Cli::parse();
    let result = match cli.cmd {
        Cmd::Info { json } => info(json),
        Cmd::Bench {
            queries,
            corpus,
            dim,
            k,
            backend,
            repeat,
            seed,
            json,
        } => bench(&BenchArgs {
            queries,
            corpus,
            dim,
            k,
            backend,
            repeat,
            seed,
            json,
        }),
        Cmd::Demo => demo(),
        Cmd::Query {
            corpus,
            random,
            seed,
            input,
            k,
            backend,
            json,
        } => query(&corpus, random, seed, input, k, backend, json),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn executor(backend: Backend) -> Result<HybridExecutor, Error> {
    HybridExecutor::new(ExecutorConfig {
        device: backend.into(),
        ..Default::default()
    })
}

fn info(json: bool) -> Result<(), Error> {
    let caps = executor(Backend::Auto)?.capabilities();
    let (cuda, reason) = match &caps.cuda {
        CudaStatus::Available {
            device,
            total_memory,
        } => (
            format!(
                "available: {device}, {:.1} GiB",
                *total_memory as f64 / (1u64 << 30) as f64
            ),
            None,
        ),
        CudaStatus::Unavailable { reason } => ("unavailable".to_string(), Some(reason.clone())),
    };
    if json {
        let v = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "cpu": caps.cpu_model, "simd": caps.simd.name(), "threads": caps.threads,
            "cuda": cuda, "cuda_reason": reason,
        });
        println!("{v}");
    } else {
        println!("hybridvec {}", env!("CARGO_PKG_VERSION"));
        println!("cpu:     {}", caps.cpu_model);
        println!("simd:    {}", caps.simd.name());
        println!("threads: {}", caps.threads);
        match reason {
            Some(r) => println!("cuda:    unavailable: {r}"),
            None => println!("cuda:    {cuda}"),
        }
    }
    Ok(())
}

struct BenchArgs {
    queries: usize,
    corpus: usize,
    dim: usize,
    k: usize,
    backend: Backend,
    repeat: usize,
    seed: u64,
    json: bool,
}

/// Query vectors come from a stream of their own so they never equal corpus rows.
const QUERY_STREAM: u64 = 0x5155_4552_5953;

fn random_queries(q: usize, dim: usize, seed: u64) -> Vec<f32> {
    data::random_matrix(q, dim, seed ^ QUERY_STREAM)
}

fn bench(a: &BenchArgs) -> Result<(), Error> {
    let exec = executor(a.backend)?;
    if a.repeat == 0 {
        return Err(Error::InvalidConfig("--repeat must be at least 1".into()));
    }
    let spinner = progress(!a.json, "generating data");
    let corpus = Corpus::new(data::random_matrix(a.corpus, a.dim, a.seed), a.dim)?;
    let qdata = random_queries(a.queries, a.dim, a.seed);
    let queries = MatrixRef::new(&qdata, a.queries, a.dim)?;
    spinner.finish_and_clear();
    let run = || -> Result<(), Error> {
        if a.k == 0 {
            std::hint::black_box(exec.cosine_similarity(queries, &corpus)?);
        } else {
            std::hint::black_box(exec.top_k(queries, &corpus, a.k)?);
        }
        Ok(())
    };
    run()?; // warm-up: page faults, thread start, caches
    let bar = if a.json {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(a.repeat as u64)
    };
    let mut times = Vec::with_capacity(a.repeat);
    for _ in 0..a.repeat {
        let t = Instant::now();
        run()?;
        times.push(t.elapsed().as_secs_f64());
        bar.inc(1);
    }
    bar.finish_and_clear();
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    let flops = 2.0 * a.queries as f64 * a.corpus as f64 * a.dim as f64;
    let gflops = flops / median / 1e9;
    let gbps = corpus.bytes() as f64 / median / 1e9;
    let caps = exec.capabilities();
    let backend = format!("cpu-{}", caps.simd.name());
    if a.json {
        let v = serde_json::json!({
            "backend": backend, "reason": "cpu only in this build", "queries": a.queries,
            "corpus": a.corpus, "dim": a.dim, "k": a.k, "repeat": a.repeat, "threads": caps.threads,
            "median_secs": median, "min_secs": times[0], "max_secs": times[times.len() - 1],
            "gflops": gflops, "gbps": gbps, "peak_rss_bytes": peak_rss_bytes(),
            "corpus_bytes": corpus.bytes(),
        });
        println!("{v}");
    } else {
        println!(
            "{backend}: Q={} N={} D={} k={}  median {:.3} ms over {} runs  {:.1} GFLOP/s  {:.1} GB/s",
            a.queries, a.corpus, a.dim, a.k, median * 1e3, a.repeat, gflops, gbps
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
    let exec = executor(Backend::Auto)?;
    let caps = exec.capabilities();
    println!(
        "hybridvec demo: {} ({} threads, {})",
        caps.cpu_model,
        caps.threads,
        caps.simd.name()
    );
    if let CudaStatus::Unavailable { reason } = &caps.cuda {
        println!("CUDA unavailable: {reason}; the CPU serves every call.");
    }
    // The public workloads; gpu-large is scaled from 1M to 250k corpus rows so the demo
    // finishes in well under a minute on two cores.
    let workloads = [
        ("single", 1, 100_000, 768, 10),
        ("small-batch", 64, 100_000, 768, 10),
        ("large-batch", 1024, 100_000, 768, 10),
        ("gpu-large (N scaled 1M→250k)", 1024, 250_000, 768, 10),
    ];
    let seed = 7;
    println!(
        "{:<30} {:>16} {:>8} {:>11} {:>9}",
        "workload", "Q×N×D", "backend", "median ms", "GFLOP/s"
    );
    let mut corpus: Option<Corpus> = None;
    for (name, q, n, d, k) in workloads {
        if corpus.as_ref().map(|c| c.rows()) != Some(n) {
            drop(corpus.take()); // free the old corpus before building the next
            let p = progress(true, "generating corpus");
            corpus = Some(Corpus::new(data::random_matrix(n, d, seed), d)?);
            p.finish_and_clear();
        }
        let corpus = corpus.as_ref().expect("just built");
        let qdata = random_queries(q, d, seed);
        let queries = MatrixRef::new(&qdata, q, d)?;
        let mut hits = exec.top_k(queries, corpus, k)?; // warm-up
        let reps = if q * n >= 100_000_000 { 3 } else { 9 };
        let mut times = Vec::new();
        for _ in 0..reps {
            let t = Instant::now();
            hits = exec.top_k(queries, corpus, k)?;
            times.push(t.elapsed().as_secs_f64());
        }
        times.sort_by(f64::total_cmp);
        let med = times[reps / 2];
        println!(
            "{:<30} {:>16} {:>8} {:>11.2} {:>9.1}",
            name,
            format!("{q}×{n}×{d}"),
            "cpu",
            med * 1e3,
            2.0 * (q * n * d) as f64 / med / 1e9
        );
        if name == "small-batch" {
            check_against_f64(&qdata[..d], corpus, &hits[0], k)?;
            let top: Vec<String> = hits[0]
                .iter()
                .take(3)
                .map(|h| format!("#{} {:.4}", h.index, h.score))
                .collect();
            println!(
                "{:<30} query 0 top-3: {} (matches an f64 reference)",
                "",
                top.join(", ")
            );
        }
    }
    Ok(())
}

/// Recomputes one query's top-k in f64 and checks the engine's hits against it: every
/// score within 1e-5 of the reference score of the same row, and each rank holding the
/// reference's row unless the two rows' reference scores are within 2e-5 (a near-tie that
/// f32 rounding may order either way).
fn check_against_f64(q: &[f32], corpus: &Corpus, hits: &[Hit], k: usize) -> Result<(), Error> {
    let m = corpus.matrix();
    let qn: f64 = q.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let by_row: Vec<f64> = (0..m.rows())
        .map(|i| {
            let r = m.row(i);
            let dot: f64 = r.iter().zip(q).map(|(&a, &b)| a as f64 * b as f64).sum();
            let cn: f64 = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
            dot / (qn * cn)
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
    for (h, &want) in hits.iter().zip(&ranked) {
        let score_ok = (h.score as f64 - by_row[h.index]).abs() <= 1e-5;
        let rank_ok = h.index == want || (by_row[h.index] - by_row[want]).abs() <= 2e-5;
        if !score_ok || !rank_ok {
            return Err(Error::InvalidConfig(format!(
                "demo self-check failed: got row {} score {:.6}, reference row {} score {:.6}",
                h.index, h.score, want, by_row[want]
            )));
        }
    }
    Ok(())
}

fn query(
    corpus_path: &std::path::Path,
    random: Option<usize>,
    seed: u64,
    input_path: Option<PathBuf>,
    k: usize,
    backend: Backend,
    json: bool,
) -> Result<(), Error> {
    let exec = executor(backend)?;
    let m = input::read_matrix(corpus_path)?;
    let dim = m.cols();
    let corpus = Corpus::new(m.into_vec(), dim)?;
    let qm = match (random, input_path) {
        (Some(q), None) => hybridvec::Matrix::new(random_queries(q, dim, seed), q, dim)?,
        (None, Some(p)) => input::read_matrix(&p)?,
        _ => {
            return Err(Error::InvalidConfig(
                "give exactly one of --random Q or --input FILE".into(),
            ))
        }
    };
    let hits = exec.top_k(qm.view(), &corpus, k)?;
    for (i, hs) in hits.iter().enumerate() {
        if json {
            let hs: Vec<_> = hs
                .iter()
                .map(|h| serde_json::json!({"index": h.index, "score": h.score}))
                .collect();
            println!("{}", serde_json::json!({"query": i, "hits": hs}));
        } else {
            let s: Vec<String> = hs
                .iter()
                .map(|h| format!("{}:{:.4}", h.index, h.score))
                .collect();
            println!("query {i}: {}", s.join(" "));
        }
    }
    Ok(())
}
