//! Metrics, filters and range search on the CUDA backend, run on the emulated driver
//! (`tests/common/emulated_driver.rs`) against the f64 reference: every metric × {no
//! filter, one filter for the batch, one per query} × {top-k, range} × {Q = 1, 7, 300}, on
//! fresh random rows and on clustered rows with exact ties and zero rows. The CPU runs the
//! same cells in the same test, and each report must name the backend the call was sent
//! to, so that a device call quietly served by the CPU fails. Stores with deletes are
//! filtered by id and by row with both plans.
//!
//! TF32 and FP16 serve cosine only: inner product and L2 under them run on the CPU (or
//! fail when the device is forced), which is checked too.

mod common;

use common::emulated_driver::driver;
use common::reference::spread_rows;
use common::search_checks::{
    allow, check_range, check_top_k_among, clustered_rows, row_hits, store_with_deletes,
    threshold_for,
};
use common::TempDir;
use hybridvec::{
    BackendKind, Corpus, CudaConfig, DevicePolicy, Error, ExecutorConfig, Filter, FilterPlan,
    HybridExecutor, MatrixRef, Metric, Precision, SearchOptions,
};

fn executor(device: DevicePolicy, precision: Precision) -> HybridExecutor {
    HybridExecutor::new(ExecutorConfig {
        device,
        cuda: CudaConfig {
            precision,
            ..CudaConfig::default()
        },
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("{device:?}: {e}"))
}

/// One cell group of the grid: which data, batch size, metrics and filter cases.
struct Cells {
    clustered: bool,
    q: usize,
    /// Corpus rows.
    n: usize,
    /// Per-query filters: every this many queries has a non-empty list, the others an
    /// empty one.
    listed_every: usize,
    metrics: &'static [Metric],
    /// Of "unfiltered", "batch filter", "per-query filters".
    cases: &'static [&'static str],
}

#[test]
fn every_metric_filter_and_range_matches_the_reference_on_the_emulated_device() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let cuda = executor(DevicePolicy::Cuda, Precision::Fp32);
    let cpu = executor(DevicePolicy::Cpu, Precision::Fp32);
    let (d, k) = (8usize, 10usize);
    const ALL_CASES: &[&str] = &["unfiltered", "batch filter", "per-query filters"];
    // The emulator takes ~0.05 s a device call at Q = 1 and more with Q × N, so Q = 300
    // runs over 70 rows: still two row tiles and five query tiles of the tiled kernels,
    // and more rows than k. The device takes per-query filters one query at a time (a
    // call each), so at Q = 300 only every 5th query has a non-empty list: the batch's
    // bookkeeping is that of 300 queries, its device calls those of 60.
    let grid = [
        Cells {
            clustered: false,
            q: 1,
            n: 300,
            listed_every: 1,
            metrics: &Metric::ALL,
            cases: ALL_CASES,
        },
        Cells {
            clustered: true,
            q: 1,
            n: 300,
            listed_every: 1,
            metrics: &Metric::ALL,
            cases: ALL_CASES,
        },
        Cells {
            clustered: true,
            q: 7,
            n: 300,
            listed_every: 1,
            metrics: &Metric::ALL,
            cases: ALL_CASES,
        },
        Cells {
            clustered: false,
            q: 300,
            n: 70,
            listed_every: 5,
            metrics: &Metric::ALL,
            cases: ALL_CASES,
        },
    ];
    for cells in grid {
        let (q, n) = (cells.q, cells.n);
        let (data_name, rows) = if cells.clustered {
            ("clustered", clustered_rows(n, d, 8))
        } else {
            ("random", spread_rows(n, d, 7))
        };
        let corpus = Corpus::new(rows.clone(), d).unwrap();
        let row_refs: Vec<&[f32]> = rows.chunks_exact(d).collect();
        let all: Vec<usize> = (0..n).collect();
        // Most rows: the mask plan.
        let batch: Vec<usize> = (0..n).filter(|i| i % 5 != 1).collect();
        let queries = spread_rows(q, d, 9 + q as u64);
        let qm = MatrixRef::new(&queries, q, d).unwrap();
        // Sparse (gathered) and dense (masked) allow-lists, and an empty one.
        let per: Vec<Vec<usize>> = (0..q)
            .map(|i| match i % 4 {
                _ if i % cells.listed_every != 0 => Vec::new(),
                3 if i < 8 => Vec::new(),
                r => allow(n, [0.05, 0.3, 0.9, 0.5][r], 100 + i as u64),
            })
            .collect();
        for &metric in cells.metrics {
            let t = threshold_for(metric, qm.row(0), &row_refs, 10);
            for (name, exec, backend) in [
                ("cpu", &cpu, BackendKind::Cpu),
                ("emulated cuda", &cuda, BackendKind::Gpu),
            ] {
                for &case in cells.cases {
                    let options = SearchOptions::new(metric);
                    let options = match case {
                        "unfiltered" => options,
                        "batch filter" => options.with_filter(Filter::Rows(batch.clone())),
                        _ => options.with_filter(Filter::PerQuery(
                            per.iter().map(|p| Filter::Rows(p.clone())).collect(),
                        )),
                    };
                    let allowed = |i: usize| -> &[usize] {
                        match case {
                            "unfiltered" => &all,
                            "batch filter" => &batch,
                            _ => &per[i],
                        }
                    };
                    let label = format!("{data_name} {metric} {name} {case} Q={q}");
                    let (hits, report) = exec
                        .search_with_report(qm, &corpus, k, &options)
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                    assert_eq!(report.backend, backend, "{label}: {report:?}");
                    assert_eq!(hits.len(), q, "{label}");
                    // Searching again would make wrong device scores exact in the end:
                    // random rows certify in one pass when the scores are right.
                    if !cells.clustered && case != "per-query filters" {
                        assert_eq!(report.corpus_passes, 1, "{label}: {report:?}");
                    }
                    for (i, hs) in hits.iter().enumerate() {
                        let what = format!("{label} top-k query {i}");
                        check_top_k_among(&what, metric, qm.row(i), &rows, d, allowed(i), k, hs);
                    }
                    // A limit that cuts; at Q = 1 also one that does not (more rounds).
                    let limits: &[usize] = if q == 1 { &[4, 1000] } else { &[4] };
                    for &limit in limits {
                        let (got, report) = exec
                            .range_with_report(qm, &corpus, t, limit, &options)
                            .unwrap_or_else(|e| panic!("{label} range: {e}"));
                        assert_eq!(report.backend, backend, "{label} range: {report:?}");
                        assert_eq!(got.len(), q, "{label} range");
                        for (i, r) in got.iter().enumerate() {
                            let what = format!("{label} range limit {limit} query {i}");
                            let a = allowed(i);
                            check_range(&what, metric, qm.row(i), &row_refs, a, t, limit, r);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_store_with_deletes_is_filtered_on_the_emulated_device_with_either_plan() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let cuda = executor(DevicePolicy::Cuda, Precision::Fp32);
    let (n, d, k) = (400usize, 8usize, 6usize);
    let dir = TempDir::new("cuda-emulated-search-store");
    let rows = clustered_rows(n, d, 31);
    let (store, _) = store_with_deletes(dir.dir(), &rows, d, |i| i % 4 == 0);
    let queries = spread_rows(3, d, 32);
    let qm = MatrixRef::new(&queries, 3, d).unwrap();
    // By id: every third live row. By row: every other row, deleted ones included,
    // which must never come back.
    let by_id: Vec<usize> = (0..n).filter(|i| i % 3 == 0 && i % 4 != 0).collect();
    let with_dead: Vec<usize> = (0..n).step_by(2).collect();
    let live_of_those: Vec<usize> = with_dead.iter().copied().filter(|i| i % 4 != 0).collect();
    for metric in Metric::ALL {
        for plan in [FilterPlan::Gather, FilterPlan::Mask] {
            let cases = [
                (
                    "ids",
                    Filter::Ids(by_id.iter().map(|i| format!("r{i}")).collect()),
                    &by_id,
                ),
                (
                    "rows with deleted ones",
                    Filter::Rows(with_dead.clone()),
                    &live_of_those,
                ),
            ];
            for (kind, filter, allowed) in cases {
                let label = format!("store {metric} {plan:?} by {kind}");
                let options = SearchOptions::new(metric)
                    .with_filter(filter)
                    .with_filter_plan(plan);
                let (hits, report) = cuda
                    .search_store_with_report(qm, &store, k, &options)
                    .unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(report.backend, BackendKind::Gpu, "{label}");
                for (i, hs) in hits.iter().enumerate() {
                    let what = format!("{label} query {i}");
                    let hits = row_hits(hs);
                    check_top_k_among(&what, metric, qm.row(i), &rows, d, allowed, k, &hits);
                }
            }
        }
        // A deleted id is an unknown id.
        let bad = SearchOptions::new(metric).with_filter(Filter::Ids(vec!["r0".into()]));
        assert!(matches!(
            cuda.search_store(qm, &store, k, &bad),
            Err(Error::UnknownId { .. })
        ));
    }
}

#[test]
fn reduced_precision_serves_cosine_and_leaves_the_exact_metrics_to_the_cpu() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let (n, d) = (300usize, 8usize);
    let rows = spread_rows(n, d, 41);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let queries = spread_rows(2, d, 42);
    let qm = MatrixRef::new(&queries, 2, d).unwrap();
    for precision in [Precision::Tf32, Precision::Fp16, Precision::Bf16] {
        let auto = executor(DevicePolicy::Auto, precision);
        let forced = executor(DevicePolicy::Cuda, precision);
        let (_, report) = forced
            .search_with_report(qm, &corpus, 5, &SearchOptions::new(Metric::Cosine))
            .unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{precision:?} cosine");
        for metric in [Metric::InnerProduct, Metric::L2] {
            let options = SearchOptions::new(metric);
            let (hits, report) = auto.search_with_report(qm, &corpus, 5, &options).unwrap();
            assert_eq!(report.backend, BackendKind::Cpu, "{precision:?} {metric}");
            for (i, hs) in hits.iter().enumerate() {
                let all: Vec<usize> = (0..n).collect();
                let what = format!("{precision:?} {metric} query {i}");
                check_top_k_among(&what, metric, qm.row(i), &rows, d, &all, 5, hs);
            }
            assert!(
                matches!(
                    forced.search(qm, &corpus, 5, &options),
                    Err(Error::BackendFailed { .. })
                ),
                "{precision:?} {metric}: forced onto a device that does not serve it"
            );
        }
    }
}

/// Inner product and L2 with `k` past 807 are served on a forced device, exactly: the
/// first round asks at most the 1024 candidates the device selects, never fewer than `k`
/// (it asked `k + 16 + k/4` and failed). A call that needs more candidates than that to
/// certify (`k` = 1024 itself, as the certificate needs one candidate past the k-th, or
/// ties) fails under the forced policy with an error that says so, and is answered
/// exactly under `Auto`.
#[test]
fn the_exact_metrics_serve_every_k_the_device_selects() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let cuda = executor(DevicePolicy::Cuda, Precision::Fp32);
    let auto = executor(DevicePolicy::Auto, Precision::Fp32);
    let (n, d) = (1300usize, 8usize);
    let rows = spread_rows(n, d, 51);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let queries = spread_rows(2, d, 52);
    let qm = MatrixRef::new(&queries, 2, d).unwrap();
    let all: Vec<usize> = (0..n).collect();
    for metric in [Metric::InnerProduct, Metric::L2] {
        for k in [810, 1000] {
            let label = format!("{metric} k = {k}");
            let (hits, report) = cuda
                .search_with_report(qm, &corpus, k, &SearchOptions::new(metric))
                .unwrap_or_else(|e| panic!("{label}: {e}"));
            assert_eq!(report.backend, BackendKind::Gpu, "{label}");
            for (i, hs) in hits.iter().enumerate() {
                let what = format!("{label} query {i}");
                check_top_k_among(&what, metric, qm.row(i), &rows, d, &all, k, hs);
            }
        }
    }
    for metric in [Metric::InnerProduct, Metric::L2] {
        let options = SearchOptions::new(metric);
        match cuda.search(qm, &corpus, 1024, &options) {
            Err(Error::BackendFailed { reason, .. }) => {
                assert!(reason.contains("past the k-th"), "{metric}: {reason}")
            }
            other => panic!("{metric} k = 1024: forced past the device's limit: {other:?}"),
        }
        let hits = auto.search(qm, &corpus, 1024, &options).unwrap();
        for (i, hs) in hits.iter().enumerate() {
            let what = format!("{metric} k = 1024 auto query {i}");
            check_top_k_among(&what, metric, qm.row(i), &rows, d, &all, 1024, hs);
        }
    }
    // 1100 copies of one row, the best for the query (the query itself for L2, 1000 times
    // it for inner product): the k-th score is tied with every copy, so only all of them
    // (past 1024) certify.
    let best = queries[..d].to_vec();
    let one = MatrixRef::new(&best, 1, d).unwrap();
    for metric in [Metric::InnerProduct, Metric::L2] {
        let copy: Vec<f32> = match metric {
            Metric::L2 => best.clone(),
            _ => best.iter().map(|v| 1e3 * v).collect(),
        };
        let mut tied = rows.clone();
        for r in 0..1100 {
            tied[r * d..(r + 1) * d].copy_from_slice(&copy);
        }
        let corpus = Corpus::new(tied.clone(), d).unwrap();
        let options = SearchOptions::new(metric);
        match cuda.search(one, &corpus, 10, &options) {
            Err(Error::BackendFailed { reason, .. }) => {
                assert!(reason.contains("ties"), "{metric}: {reason}")
            }
            other => panic!("{metric}: forced past the device's limit: {other:?}"),
        }
        let hits = auto.search(one, &corpus, 10, &options).unwrap();
        check_top_k_among(
            &format!("{metric} ties"),
            metric,
            &best,
            &tied,
            d,
            &all,
            10,
            &hits[0],
        );
    }
}
