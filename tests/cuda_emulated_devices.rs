//! Several GPUs in one process, on the emulated driver showing two or three devices
//! (`tests/common/emulated_driver.rs`): each device serves a share of the corpus's rows,
//! with its own context and memory, and the answers are merged. Checked against the f64
//! reference on every metric, with filters, a store with deletes that grows between
//! calls, the int8 tier, the cosine matrix, and a failing device. The emulated driver
//! fails any copy or launch on one device that touches another's memory, so a share
//! read across devices fails these tests.
//!
//! Real multi-GPU hardware has not run this: see the README's "Several GPUs".

mod common;

use common::cuda_checks::device_executor as executor;
use common::emulated_driver::driver;
use common::reference::{reference_scores, spread_rows};
use common::search_checks::{check_top_k_among, clustered_rows, row_hits, store_with_deletes};
use common::TempDir;
use hybridvec::{
    BackendKind, Corpus, CudaConfig, CudaStatus, DevicePolicy, Error, ExecutorConfig,
    FallbackAction, Filter, HybridExecutor, MatrixRef, Metric, SearchOptions,
};

/// The device count and name the executor reports.
fn devices_of(ex: &HybridExecutor) -> (usize, String) {
    match ex.capabilities().cuda {
        CudaStatus::Available {
            devices, device, ..
        } => (devices, device),
        other => panic!("no device: {other:?}"),
    }
}

#[test]
fn two_and_three_devices_answer_as_one_on_every_metric_and_filter() {
    let Some(drv) = driver() else { return };
    let held = drv.exclusive();
    let d = 12;
    for devices in [2, 3] {
        held.set_device_count(devices);
        let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
        let (count, name) = devices_of(&ex);
        assert_eq!(count, devices as usize);
        assert!(name.starts_with(&format!("{devices} × ")), "{name}");
        // Q = 1 and 5 (the memory-bound kernels), 20 (the tiles); k past a share's rows;
        // fewer rows than one share per device (one device serves).
        for (q, n, k, clustered) in [
            (1, 700, 10, false),
            (5, 700, 10, true),
            (20, 400, 10, false),
            (3, 300, 250, false),
            (2, 20, 20, false),
        ] {
            let rows = if clustered {
                clustered_rows(n, d, 5 + n as u64)
            } else {
                spread_rows(n, d, 6 + n as u64)
            };
            let corpus = Corpus::new(rows.clone(), d).unwrap();
            let queries = spread_rows(q, d, 7 + q as u64);
            let qm = MatrixRef::new(&queries, q, d).unwrap();
            let all: Vec<usize> = (0..n).collect();
            // Rows on every device, and none at all on the last one's share.
            let some: Vec<usize> = (0..n).filter(|i| i % 3 != 1).collect();
            let first_share: Vec<usize> = (0..n.min(40)).collect();
            for metric in Metric::ALL {
                for (case, filter, allowed) in [
                    ("unfiltered", None, &all),
                    ("rows", Some(Filter::Rows(some.clone())), &some),
                    (
                        "first rows",
                        Some(Filter::Rows(first_share.clone())),
                        &first_share,
                    ),
                ] {
                    let options = SearchOptions::new(metric);
                    let options = match filter {
                        Some(f) => options.with_filter(f),
                        None => options,
                    };
                    let label = format!("{devices} devices {metric} {case} Q={q} N={n} k={k}");
                    let (hits, report) = ex
                        .search_with_report(qm, &corpus, k, &options)
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                    assert_eq!(report.backend, BackendKind::Gpu, "{label}: {report:?}");
                    assert_eq!(hits.len(), q, "{label}");
                    let k = k.min(allowed.len());
                    for (i, hs) in hits.iter().enumerate() {
                        let what = format!("{label} query {i}");
                        check_top_k_among(&what, metric, qm.row(i), &rows, d, allowed, k, hs);
                    }
                }
            }
            // Every device holds memory of its own (its share, and its streams').
            for ordinal in 0..devices {
                assert!(
                    drv.device_live_bytes(ordinal) > 0,
                    "device {ordinal} holds nothing"
                );
            }
        }
        drop(ex);
    }
}

#[test]
fn the_cosine_matrix_and_the_int8_tier_are_whole_across_devices() {
    let Some(drv) = driver() else { return };
    let held = drv.exclusive();
    held.set_device_count(2);
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    assert_eq!(devices_of(&ex).0, 2);
    let (q, n, d) = (4, 650, 16);
    let rows = spread_rows(n, d, 61);
    let queries = spread_rows(q, d, 62);
    let qm = MatrixRef::new(&queries, q, d).unwrap();
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let (scores, report) = ex.cosine_similarity_with_report(qm, &corpus).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu);
    assert_eq!((scores.rows(), scores.cols()), (q, n));
    let want = reference_scores(&queries, &rows, d);
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = scores.get(i, j) as f64;
            assert!((got - w).abs() <= 1e-5, "{i},{j}: {got} vs {w}");
        }
    }
    // The certified int8 scan on each share: the full scan's answer, with the rows
    // re-scored on both devices counted.
    let tiered = corpus.clone().with_int8_tier();
    let all: Vec<usize> = (0..n).collect();
    for metric in Metric::ALL {
        let options = SearchOptions::new(metric);
        let (hits, report) = ex.search_with_report(qm, &tiered, 10, &options).unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{metric}");
        let rescored = report.rescored.expect("the tier was used");
        assert!(
            (10..n).contains(&rescored),
            "{metric}: {rescored} re-scored"
        );
        for (i, hs) in hits.iter().enumerate() {
            let what = format!("int8 tier {metric} query {i}");
            check_top_k_among(&what, metric, qm.row(i), &rows, d, &all, 10, hs);
        }
    }
}

#[test]
fn a_store_that_grows_and_deletes_is_searched_across_devices() {
    let Some(drv) = driver() else { return };
    let held = drv.exclusive();
    held.set_device_count(2);
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    assert_eq!(devices_of(&ex).0, 2);
    let (d, k) = (8, 7);
    let dir = TempDir::new("cuda-emulated-devices-store");
    let rows = clustered_rows(900, d, 71);
    // 400 rows first (shares 0..224 and 224..400), then 900 (0..480 and 480..900): the
    // second device's share moves, the first one's grows.
    let (store, mut live) = store_with_deletes(dir.dir(), &rows[..400 * d], d, |i| i % 5 == 0);
    let queries = spread_rows(3, d, 72);
    let qm = MatrixRef::new(&queries, 3, d).unwrap();
    let check = |live: &[usize], label: &str| {
        for metric in Metric::ALL {
            let options = SearchOptions::new(metric);
            let (hits, report) = ex
                .search_store_with_report(qm, &store, k, &options)
                .unwrap_or_else(|e| panic!("{label} {metric}: {e}"));
            assert_eq!(report.backend, BackendKind::Gpu, "{label} {metric}");
            for (i, hs) in hits.iter().enumerate() {
                let what = format!("{label} {metric} query {i}");
                check_top_k_among(&what, metric, qm.row(i), &rows, d, live, k, &row_hits(hs));
            }
        }
    };
    check(&live, "400 rows");
    for (i, row) in rows.chunks_exact(d).enumerate().skip(400) {
        store.put(&format!("r{i}"), row, b"").unwrap();
        live.push(i);
    }
    // Deletes on both sides of the new share border.
    for i in [470, 481, 700, 899] {
        store.delete(&format!("r{i}")).unwrap();
        live.retain(|&r| r != i);
    }
    check(&live, "900 rows");
}

#[test]
fn the_device_count_is_capped_by_the_config_and_a_failing_device_fails_the_call_whole() {
    let Some(drv) = driver() else { return };
    let held = drv.exclusive();
    held.set_device_count(2);
    let one = executor(
        DevicePolicy::Cuda,
        CudaConfig {
            devices: Some(1),
            ..Default::default()
        },
    );
    assert_eq!(devices_of(&one).0, 1);
    drop(one);
    let none = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        cuda: CudaConfig {
            devices: Some(0),
            ..Default::default()
        },
        ..Default::default()
    });
    assert!(matches!(none, Err(Error::InvalidConfig(_))), "{none:?}");
    // Out of memory on the first allocation of a call (one device's scratch): the call
    // fails whole, and the executor's retry in smaller chunks answers every query in full.
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (q, n, d, k) = (20, 500, 8, 9);
    let rows = spread_rows(n, d, 81);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let queries = spread_rows(q, d, 82);
    let qm = MatrixRef::new(&queries, q, d).unwrap();
    let all: Vec<usize> = (0..n).collect();
    let options = SearchOptions::new(Metric::Cosine);
    ex.search(qm, &corpus, k, &options).unwrap();
    ex.release_cached_memory();
    held.fail_allocation(1);
    let (hits, report) = ex.search_with_report(qm, &corpus, k, &options).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert_eq!(report.fallbacks.len(), 1, "{report:?}");
    assert_eq!(report.fallbacks[0].action, FallbackAction::ShrinkChunks);
    assert_eq!(report.fallbacks[0].chunk_queries, q);
    assert_eq!(hits.len(), q);
    for (i, hs) in hits.iter().enumerate() {
        let what = format!("after a failed allocation, query {i}");
        check_top_k_among(&what, Metric::Cosine, qm.row(i), &rows, d, &all, k, hs);
    }
}
