//! The CUDA backend's streams and per-stream scratch on the emulated device: threads
//! calling at once on one and on several corpora (exact answers, no memory left behind),
//! device memory given back after many calls, and the driver calls a top-k on a resident
//! corpus costs.

mod common;

use common::cuda_checks::device_executor as executor;
use common::emulated_driver::driver as emulated;
use common::reference::reference_scores;
use common::search_checks::check_top_k_among;
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, DevicePolicy, Filter, GemmPath, MatrixRef, Metric,
    SearchOptions,
};

/// Four threads searching three corpora at once, so the resident copy is replaced while
/// other calls' streams may still read the one before: every answer must still be exact
/// (the streams are ordered by the backend, not by cudarc's events; see
/// `src/cuda/streams.rs`), and no device memory may be left behind.
#[test]
fn threads_on_different_corpora_get_exact_answers() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (n, d, k) = (300, 16, 10);
    let data: Vec<Vec<f32>> = (0..3).map(|c| data::random_matrix(n, d, 81 + c)).collect();
    let corpora: Vec<Corpus> = data
        .iter()
        .map(|cv| Corpus::new(cv.clone(), d).unwrap())
        .collect();
    // Without the scratch of the round trips timed when the backend opened.
    ex.release_cached_memory();
    let before = drv.counters();
    std::thread::scope(|s| {
        for t in 0..4u64 {
            let (ex, corpora, data) = (&ex, &corpora, &data);
            s.spawn(move || {
                for call in 0..3u64 {
                    let c = ((t + call) % 3) as usize;
                    let q = 1 + ((t + call) % 2) as usize * 8;
                    let qv = data::random_matrix(q, d, 2000 + t * 10 + call);
                    let (hits, report) = ex
                        .top_k_with_report(MatrixRef::new(&qv, q, d).unwrap(), &corpora[c], k)
                        .unwrap();
                    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
                    let want = reference_scores(&qv, &data[c], d);
                    for (h, w) in hits.iter().zip(&want) {
                        let order = common::reference::reference_top_k(w, n);
                        let got: Vec<usize> = h.iter().map(|h| h.index).collect();
                        assert_eq!(
                            got,
                            order[..k].to_vec(),
                            "thread {t} call {call} corpus {c}"
                        );
                    }
                }
            });
        }
    });
    // The idle streams keep their scratch (an arena and a pinned buffer each, one per
    // thread at most); once that is freed, one corpus copy stays resident, nothing else.
    let after = drv.counters();
    assert!(
        after.live_host_allocations <= before.live_host_allocations + 4,
        "{before:?} -> {after:?}"
    );
    ex.release_cached_memory();
    let after = drv.counters();
    assert!(
        after.live_allocations <= before.live_allocations + 2,
        "{before:?} -> {after:?}"
    );
    assert_eq!(
        after.live_host_allocations, before.live_host_allocations,
        "{before:?} -> {after:?}"
    );
}

#[test]
fn eight_threads_at_once_get_exact_answers() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (n, d, k) = (600, 16, 10);
    let cv = data::random_matrix(n, d, 71);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    std::thread::scope(|s| {
        for t in 0..8u64 {
            let (ex, corpus, cv) = (&ex, &corpus, &cv);
            s.spawn(move || {
                for call in 0..2u64 {
                    // 1 or 9 queries: the memory-bound kernels and the tiles.
                    let q = 1 + ((t + call) % 2) as usize * 8;
                    let qv = data::random_matrix(q, d, 1000 + t * 10 + call);
                    let (hits, report) = ex
                        .top_k_with_report(MatrixRef::new(&qv, q, d).unwrap(), corpus, k)
                        .unwrap();
                    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
                    let want = reference_scores(&qv, cv, d);
                    for (h, w) in hits.iter().zip(&want) {
                        let order = common::reference::reference_top_k(w, n);
                        let got: Vec<usize> = h.iter().map(|h| h.index).collect();
                        assert_eq!(got, order[..k].to_vec(), "thread {t} call {call}");
                    }
                }
            });
        }
    });
}

#[test]
fn device_memory_returns_after_a_thousand_calls() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (n, d) = (64, 8);
    let corpus = Corpus::new(data::random_matrix(n, d, 81), d).unwrap();
    let qv = data::random_matrix(16, d, 82);
    // Every call allocates, uploads, launches and frees (the emulator takes about 60 ms
    // a call, so the shapes are the smallest).
    let shapes = [(1, 1), (1, 10), (2, 64)];
    let call = |i: usize| {
        let (q, k) = shapes[i % shapes.len()];
        let m = MatrixRef::new(&qv[..q * d], q, d).unwrap();
        let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        assert_eq!(hits.len(), q);
    };
    (0..shapes.len()).for_each(call);
    let before = drv.counters();
    (0..1000).for_each(call);
    let after = drv.counters();
    println!("emulated device: {before:?} before 1000 calls, {after:?} after");
    assert_eq!(after.live_allocations, before.live_allocations);
    assert_eq!(after.live_bytes, before.live_bytes);
    assert_eq!(after.live_host_allocations, before.live_host_allocations);
}

/// Driver calls per top-k on a corpus already resident, counted by the emulated driver.
/// Issue 18 asks for at most 10; with cudarc's per-buffer event tracking it was 171, with
/// the backend ordering its pooled streams itself (`src/cuda/streams.rs`) it is 46–49: the
/// rest are cudarc's context checks before each call (about 22), the call's scratch
/// allocations and frees (10), and the timing events. The bound guards what is done.
#[test]
fn driver_calls_per_top_k_on_a_resident_corpus() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    // The own kernels' path (cuBLAS's: tests/cuda_emulated_gemm.rs).
    let ex = executor(
        DevicePolicy::Cuda,
        CudaConfig {
            gemm: GemmPath::OwnKernels,
            ..Default::default()
        },
    );
    let (n, d) = (300, 16);
    let rows = data::random_matrix(n, d, 5);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let kept: Vec<usize> = (0..n).filter(|r| r % 3 != 1).collect();
    let cases = [
        (1, 10, Metric::Cosine, false),
        (40, 10, Metric::Cosine, false),
        (40, 100, Metric::Cosine, false),
        (8, 10, Metric::L2, false),
        (8, 10, Metric::InnerProduct, true),
        (1, 1, Metric::Cosine, true),
    ];
    for (q, k, metric, filtered) in cases {
        let qv = data::random_matrix(q, d, 6 + q as u64);
        let m = MatrixRef::new(&qv, q, d).unwrap();
        let mut options = SearchOptions::new(metric);
        if filtered {
            options = options.with_filter(Filter::Rows(kept.clone()));
        }
        // The first call uploads the corpus (and L2's biases).
        ex.search(m, &corpus, k, &options).unwrap();
        let before = drv.counters();
        let (hits, report) = ex.search_with_report(m, &corpus, k, &options).unwrap();
        let after = drv.counters();
        let (calls, launches) = (after.calls - before.calls, after.launches - before.launches);
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        let among: &[usize] = if filtered {
            &kept
        } else {
            &(0..n).collect::<Vec<_>>()
        };
        for (i, hs) in hits.iter().enumerate() {
            let what = format!("{metric} q = {q} k = {k} query {i}");
            check_top_k_among(&what, metric, m.row(i), &rows, d, among, k, hs);
        }
        println!("q = {q}, k = {k}, {metric}, filtered {filtered}: {calls} driver calls");
        // One context check, two timing marks, one upload, the launches, one read-back,
        // one wait, one elapsed time: nothing per buffer.
        assert!(
            calls <= 7 + launches && calls <= 10,
            "q = {q}, k = {k}, {metric}, filtered {filtered}: {calls} driver calls for \
             {launches} launches"
        );
    }
}
