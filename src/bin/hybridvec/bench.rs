//! `hybridvec bench`: times the executor on seeded random data, one configuration per run,
//! with the median, the rates and the peak memory (as text or one JSON object).

use crate::args::{
    at_least_one, fraction, Backend, DtypeArg, FilterPlanArg, GemmArg, MetricArg, PrecisionArg,
};
use crate::out::outln;
use crate::{executor_with, progress, random_queries};
use hybridvec::{
    data, BackendKind, Corpus, ElementType, Error, ExecutionReport, MatrixRef, Metric,
    SearchOptions,
};
use indicatif::ProgressBar;
use std::time::Instant;

/// Flags of `bench`.
#[derive(clap::Args)]
pub(crate) struct BenchArgs {
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

pub(crate) fn bench(a: &BenchArgs) -> Result<(), Error> {
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
