//! The certified int8 scan on the CUDA backend, run on the emulated driver
//! (`tests/common/emulated_driver.rs`): a corpus with an int8 tier keeps it resident on
//! the device, which proves the candidates and re-scores only those with the FP32 kernels,
//! so every answer is the full device scan's, bit for bit, with `rescored` in the report.
//! f32 and 16-bit rows, every metric, fused and filtered top-k, a store with deletes;
//! batches past eight queries scan in full.

mod common;

use common::cuda_checks::device_executor as executor;
use common::emulated_driver::driver;
use common::search_checks::clustered_rows;
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, DevicePolicy, ElementType, Hit, MatrixRef, Metric,
    SearchOptions,
};

fn bits(hits: &[Vec<Hit>]) -> Vec<Vec<(usize, u32)>> {
    hits.iter()
        .map(|h| h.iter().map(|h| (h.index, h.score.to_bits())).collect())
        .collect()
}

#[test]
fn the_device_re_scores_only_certified_candidates_and_answers_as_the_full_scan() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (n, d) = (3_000, 48);
    for element in [ElementType::F32, ElementType::F16] {
        for clustered in [false, true] {
            let rows = if clustered {
                clustered_rows(n, d, 21)
            } else {
                data::random_matrix(n, d, 21)
            };
            let plain = Corpus::with_element_type(rows, d, element).unwrap();
            let tiered = plain.clone().with_int8_tier();
            for (q, k) in [(1, 10), (3, 1), (8, 100)] {
                let qv = data::random_matrix(q, d, 22 + q as u64);
                let qm = MatrixRef::new(&qv, q, d).unwrap();
                for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
                    let options = SearchOptions::new(metric);
                    let (full, r0) = ex.search_with_report(qm, &plain, k, &options).unwrap();
                    let (cert, r1) = ex.search_with_report(qm, &tiered, k, &options).unwrap();
                    let what = format!("{element} clustered {clustered} {metric} Q={q} k={k}");
                    assert_eq!(
                        (r0.backend, r1.backend),
                        (BackendKind::Gpu, BackendKind::Gpu),
                        "{what}"
                    );
                    assert_eq!(r0.rescored, None, "{what}: no tier, no certificate");
                    let rescored = r1.rescored.unwrap_or_else(|| panic!("{what}: {r1:?}"));
                    assert!(rescored >= k && rescored <= n, "{what}: {rescored}");
                    if !clustered && k <= 10 {
                        assert!(rescored < n / 4, "{what}: {rescored} of {n} re-scored");
                    }
                    assert_eq!(bits(&cert), bits(&full), "{what}");
                }
            }
        }
    }
}

#[test]
fn more_queries_than_the_certificate_takes_scan_in_full() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (n, d) = (1_000, 16);
    let tiered = Corpus::new(data::random_matrix(n, d, 5), d)
        .unwrap()
        .with_int8_tier();
    let qv = data::random_matrix(9, d, 6);
    let (hits, report) = ex
        .top_k_with_report(MatrixRef::new(&qv, 9, d).unwrap(), &tiered, 10)
        .unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert_eq!(report.rescored, None, "{report:?}");
    assert_eq!(hits.len(), 9);
}

#[test]
fn where_the_rows_do_not_fit_beside_the_tier_the_candidates_are_scored_alone() {
    let Some(drv) = driver() else { return };
    let held = drv.exclusive();
    held.set_total_memory(common::emulated_driver::DEFAULT_TOTAL);
    let (n, d, q) = (20_000, 64, 2);
    for element in [ElementType::F32, ElementType::F16] {
        let rows = data::random_matrix(n, d, 31);
        let plain = Corpus::with_element_type(rows, d, element).unwrap();
        let tiered = plain.clone().with_int8_tier();
        let qv = data::random_matrix(q, d, 32);
        let qm = MatrixRef::new(&qv, q, d).unwrap();
        let full = executor(DevicePolicy::Cuda, CudaConfig::default())
            .top_k(qm, &plain, 10)
            .unwrap();
        let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
        // Room for the tier (codes, four f32 bounds and a norm a row) and the calls'
        // arenas, not for the rows as stored (with their norms).
        let tier = (n * d + 20 * n) as u64;
        let stored = (n * d * plain.element_type().bytes() + 4 * n) as u64;
        let cap = tier + 600_000;
        assert!(cap < stored, "{element}: the cap leaves room for the rows");
        held.set_total_memory(drv.counters().live_bytes + cap);
        let (hits, report) = ex.top_k_with_report(qm, &tiered, 10).unwrap();
        // The cap is real: the rows alone do not fit.
        let plain_capped = ex.top_k(qm, &plain, 10);
        held.set_total_memory(common::emulated_driver::DEFAULT_TOTAL);
        assert!(
            plain_capped.is_err(),
            "{element}: the rows fit under the cap"
        );
        assert_eq!(report.backend, BackendKind::Gpu, "{element}: {report:?}");
        assert!(report.fallbacks.is_empty(), "{element}: {report:?}");
        let rescored = report.rescored.expect("certified");
        assert!(
            (10..n / 4).contains(&rescored),
            "{element}: {rescored} of {n} re-scored"
        );
        // Scored alone by the same kernels as the full scan: the same bits.
        assert_eq!(bits(&hits), bits(&full), "{element}");
    }
}

#[test]
fn a_tiered_store_with_deletes_and_appends_answers_as_the_full_scan() {
    let Some(drv) = driver() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let plain_ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    // The host's answer, so that a fault both device paths share (the kept rows of a
    // grown copy lost, say) cannot pass as agreement.
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    let d = 32;
    let rows = data::random_matrix(2_500, d, 41);
    let dir = common::TempDir::new("cuda-emulated-int8-store");
    let (plain, _) =
        common::search_checks::store_with_deletes(&dir.path("plain"), &rows, d, |i| i % 5 == 2);
    let (mut tiered, _) =
        common::search_checks::store_with_deletes(&dir.path("tiered"), &rows, d, |i| i % 5 == 2);
    tiered.build_int8_tier().unwrap();
    let ids = |h: &[hybridvec::StoreHit]| {
        h.iter()
            .map(|h| (h.id.clone(), h.score.to_bits()))
            .collect::<Vec<_>>()
    };
    for round in 0..2 {
        for (q, k) in [(1, 10), (4, 50)] {
            let qv = data::random_matrix(q, d, 42 + q as u64);
            let qm = MatrixRef::new(&qv, q, d).unwrap();
            // Each store on its own executor, so neither evicts the other's rows.
            let sent = drv.htod_bytes();
            let full = plain_ex.top_k_store(qm, &plain, k).unwrap();
            let sent_plain = drv.htod_bytes() - sent;
            let sent = drv.htod_bytes();
            let (cert, report) = ex.top_k_store_with_report(qm, &tiered, k).unwrap();
            let sent_tiered = drv.htod_bytes() - sent;
            assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
            if round == 1 && q == 1 {
                // Both stores grew by the same 300 rows; the tiered one's tier goes up by
                // those rows alone (codes, four bounds and an inverse norm a row: 15.6 KB),
                // not whole (2 800 rows, 145.6 KB).
                let whole = 2_800 * (d as u64 + 20);
                assert!(
                    sent_tiered < sent_plain + whole / 2,
                    "{sent_tiered} bytes uploaded against {sent_plain}: the tier went up whole"
                );
            }
            let rescored = report.rescored.expect("certified");
            assert!(
                rescored < 2_500 / 4,
                "round {round} Q={q}: {rescored} re-scored"
            );
            for (c, f) in cert.iter().zip(&full) {
                assert_eq!(ids(c), ids(f), "round {round} Q={q} k={k}");
            }
            let host = cpu.top_k_store(qm, &plain, k).unwrap();
            let names =
                |h: &[hybridvec::StoreHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
            for (h, f) in host.iter().zip(&full) {
                assert_eq!(
                    names(h),
                    names(f),
                    "round {round} Q={q} k={k}: the host's top-k"
                );
            }
        }
        // Appended rows reach the device's tier (only they are uploaded).
        let extra = data::random_matrix(300, d, 43 + round);
        for (i, row) in extra.chunks(d).enumerate() {
            let id = format!("new-{round}-{i}");
            plain.put(&id, row, b"").unwrap();
            tiered.put(&id, row, b"").unwrap();
        }
    }
}
