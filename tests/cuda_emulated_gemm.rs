//! The cuBLAS path on the emulated device: the emulated driver with its emulated cuBLAS
//! (`kernels/emu/cublas.cpp`, a host GEMM queued on the driver's streams, loaded under
//! CUDA 13's soname, which the backend's search finds first). Every precision against the
//! f64 reference, the selection's fused row factors (cosine norms, L2 biases, masks),
//! chunking and out-of-memory halving, the measured choice, the driver-call count, and
//! what `info` says with and without cuBLAS.

mod common;

use common::cuda_checks::{check_top_k_within, device_executor};
use common::emulated_driver::driver as emulated;
use common::reference::reference_scores;
use common::search_checks::check_top_k_among;
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, CudaStatus, DevicePolicy, ExecutorConfig,
    FallbackAction, Filter, GemmPath, HybridExecutor, MatrixRef, Metric, Precision, SearchOptions,
};

fn executor(cuda: CudaConfig) -> HybridExecutor {
    device_executor(DevicePolicy::Cuda, cuda)
}

fn cublas(precision: Precision) -> CudaConfig {
    CudaConfig {
        precision,
        gemm: GemmPath::Cublas,
        ..Default::default()
    }
}

fn gemm_text(ex: &HybridExecutor) -> String {
    match ex.capabilities().cuda {
        CudaStatus::Available { gemm, .. } => gemm,
        other => panic!("{other:?}"),
    }
}

#[test]
fn cublas_top_k_matches_the_reference_at_every_precision() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    for precision in [
        Precision::Fp32,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
    ] {
        let ex = executor(cublas(precision));
        assert!(
            gemm_text(&ex).contains("cuBLAS (libcublas.so.13), always"),
            "{}",
            gemm_text(&ex)
        );
        // Several segments (k = 100 over 9 000 rows), one (k = 10), and k = 1; D not a
        // multiple of anything.
        for (q, n, d, k) in [(40, 3000, 24, 10), (20, 9000, 33, 100), (9, 700, 16, 1)] {
            let (before, lent) = (drv.cublas_gemms(), drv.cublas_gemms_with_workspace());
            check_top_k_within(&ex, q, n, d, k, 300 + q as u64, precision);
            assert!(
                drv.cublas_gemms() > before,
                "{precision:?} Q={q}: no GEMM ran"
            );
            // Every GEMM ran in a workspace of the program's arena (scribbled over by
            // the emulated cuBLAS, so one overlapping another buffer fails the check).
            assert_eq!(
                drv.cublas_gemms_with_workspace() - lent,
                drv.cublas_gemms() - before,
                "{precision:?} Q={q}: a GEMM without a lent workspace"
            );
        }
    }
}

#[test]
fn cublas_scores_inner_product_l2_and_filters_exactly() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(cublas(Precision::Fp32));
    let (q, n, d) = (12, 5000, 20);
    let rows = data::random_matrix(n, d, 401);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let qv = data::random_matrix(q, d, 402);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let kept: Vec<usize> = (0..n).filter(|r| r % 5 != 2).collect();
    let all: Vec<usize> = (0..n).collect();
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        for (k, filtered) in [(10, false), (10, true), (200, true)] {
            let mut options = SearchOptions::new(metric);
            if filtered {
                options = options.with_filter(Filter::Rows(kept.clone()));
            }
            let before = drv.cublas_gemms();
            let (hits, report) = ex.search_with_report(m, &corpus, k, &options).unwrap();
            assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
            assert!(drv.cublas_gemms() > before, "{metric} k = {k}: no GEMM ran");
            let among = if filtered { &kept } else { &all };
            for (i, hs) in hits.iter().enumerate() {
                let what = format!("{metric} k = {k} filtered {filtered} query {i}");
                check_top_k_among(&what, metric, m.row(i), &rows, d, among, k, hs);
            }
        }
    }
}

#[test]
fn cublas_cosine_similarity_matches_the_reference() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let (q, n, d) = (17, 2500, 24);
    let cv = data::random_matrix(n, d, 411);
    let qv = data::random_matrix(q, d, 412);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let want = reference_scores(&qv, &cv, d);
    for precision in [
        Precision::Fp32,
        Precision::Tf32,
        Precision::Fp16,
        Precision::Bf16,
    ] {
        let ex = executor(cublas(precision));
        let (before, lent) = (drv.cublas_gemms(), drv.cublas_gemms_with_workspace());
        let s = ex.cosine_similarity(m, &corpus).unwrap();
        assert!(drv.cublas_gemms() > before, "{precision:?}: no GEMM ran");
        assert_eq!(
            drv.cublas_gemms_with_workspace() - lent,
            drv.cublas_gemms() - before,
            "{precision:?}: a GEMM without a lent workspace"
        );
        let tol = match precision {
            Precision::Fp32 => 1e-5,
            _ => precision.score_tolerance() as f64,
        };
        for (i, row) in want.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let got = s.get(i, j) as f64;
                assert!(
                    (got - w).abs() <= tol * w.abs().max(1.0),
                    "{precision:?} {i},{j}: {got} vs {w}"
                );
            }
        }
    }
}

/// With too little device memory for every row's scores at once, the GEMM path scores
/// in chunks; an out-of-memory error halves the batch; both stay exact.
#[test]
fn cublas_chunks_and_halves_under_memory_pressure() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    let (q, n, d, k) = (24, 12_000, 16, 10);
    let cv = data::random_matrix(n, d, 421);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    let qv = data::random_matrix(q, d, 422);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let cpu = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        ..Default::default()
    })
    .unwrap();
    let want: Vec<Vec<usize>> = cpu
        .top_k(m, &corpus, k)
        .unwrap()
        .iter()
        .map(|h| h.iter().map(|h| h.index).collect())
        .collect();
    let idx = |h: &[Vec<hybridvec::Hit>]| -> Vec<Vec<usize>> {
        h.iter()
            .map(|h| h.iter().map(|h| h.index).collect())
            .collect()
    };
    // Room for the scores of about one segment (4 096 rows) of the 24 queries at a time,
    // beside cuBLAS's workspace (1 MiB at these sizes).
    let ex = executor(CudaConfig {
        memory_budget: Some((q * 4096 * 4 * 2 + (1 << 20) + (64 << 10)) as u64),
        ..cublas(Precision::Fp32)
    });
    let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert!(report.corpus_passes > 1, "one pass fitted: {report:?}");
    assert_eq!(idx(&hits), want);

    let ex = executor(cublas(Precision::Fp32));
    ex.top_k(m, &corpus, k).unwrap();
    ex.release_cached_memory();
    held.fail_allocation(1);
    let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert_eq!(report.fallbacks.len(), 1, "{report:?}");
    assert_eq!(report.fallbacks[0].action, FallbackAction::ShrinkChunks);
    assert_eq!(idx(&hits), want);
}

/// `GemmPath::Measured`: the first call of a batch size runs both ways and answers with
/// the faster; every later call takes that way, so the same call gives the same bits.
#[test]
fn the_measured_choice_measures_once_and_keeps_its_answer() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(CudaConfig::default());
    assert!(
        gemm_text(&ex).contains("or the own kernels where measured faster"),
        "{}",
        gemm_text(&ex)
    );
    let (q, n, d, k) = (40, 2000, 16, 10);
    let cv = data::random_matrix(n, d, 431);
    let corpus = Corpus::new(cv, d).unwrap();
    let qv = data::random_matrix(q, d, 432);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let before = drv.cublas_gemms();
    let first = ex.top_k(m, &corpus, k).unwrap();
    assert_eq!(
        drv.cublas_gemms(),
        before + 1,
        "the first call runs the GEMM too"
    );
    let mut took_gemm = Vec::new();
    for _ in 0..6 {
        let before = drv.cublas_gemms();
        assert_eq!(
            ex.top_k(m, &corpus, k).unwrap(),
            first,
            "the same bits every call"
        );
        took_gemm.push(drv.cublas_gemms() > before);
    }
    assert!(
        took_gemm.iter().all(|&g| g == took_gemm[0]),
        "{took_gemm:?}"
    );
    // Up to 8 queries: never cuBLAS.
    let small = MatrixRef::new(&qv[..8 * d], 8, d).unwrap();
    let before = drv.cublas_gemms();
    for _ in 0..3 {
        ex.top_k(small, &corpus, k).unwrap();
    }
    assert_eq!(drv.cublas_gemms(), before);
}

#[test]
fn without_cublas_the_own_kernels_serve_and_info_says_why() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(CudaConfig {
        gemm: GemmPath::OwnKernels,
        ..Default::default()
    });
    assert_eq!(gemm_text(&ex), "own kernels: off (GemmPath::OwnKernels)");
    let before = drv.cublas_gemms();
    check_top_k_within(&ex, 40, 3000, 24, 10, 441, Precision::Fp32);
    assert_eq!(drv.cublas_gemms(), before, "a GEMM ran");

    // The CLI in a child process: the emulated driver preloaded, cuBLAS as
    // HYBRIDVEC_CUBLAS says.
    let info = |cublas: &std::path::Path| {
        let out = common::cli()
            .arg("info")
            .env("LD_PRELOAD", drv.path())
            .env("HYBRIDVEC_CUBLAS", cublas)
            .output()
            .unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let text = info(drv.cublas_path());
    let want = format!("GEMM: cuBLAS ({})", drv.cublas_path().display());
    assert!(text.contains(&want), "{text}");
    let missing = std::path::Path::new("/nonexistent/libcublas.so.13");
    let text = info(missing);
    assert!(
        text.contains("GEMM: own kernels: /nonexistent/libcublas.so.13:"),
        "{text}"
    );
}

/// A GEMM-scored top-k on a resident corpus costs a few driver calls too, and a cuBLAS
/// handle per stream, freed with the stream's scratch.
#[test]
fn driver_calls_and_handles_of_a_cublas_top_k() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(cublas(Precision::Fp32));
    let (q, n, d) = (40, 300, 16);
    let corpus = Corpus::new(data::random_matrix(n, d, 451), d).unwrap();
    let qv = data::random_matrix(q, d, 452);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    for metric in [Metric::Cosine, Metric::InnerProduct, Metric::L2] {
        let options = SearchOptions::new(metric);
        ex.search(m, &corpus, 10, &options).unwrap();
        let before = drv.counters();
        let gemms = drv.cublas_gemms();
        ex.search(m, &corpus, 10, &options).unwrap();
        let after = drv.counters();
        let (calls, launches) = (after.calls - before.calls, after.launches - before.launches);
        assert_eq!(drv.cublas_gemms(), gemms + 1);
        println!("{metric}: {calls} driver calls, {launches} launches (the GEMM one)");
        assert!(
            calls <= 10 && calls <= 7 + launches,
            "{metric}: {calls} calls"
        );
    }
    assert!(drv.cublas_live_handles() >= 1);
    ex.release_cached_memory();
    assert_eq!(drv.cublas_live_handles(), 0, "handles left after release");
}

/// A cuBLAS that loads but cannot make a handle (a broken install): the call is still
/// answered on the device, by the own kernels, and `info` says why from then on.
#[test]
fn a_cublas_that_cannot_make_a_handle_leaves_the_own_kernels() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    drv.cublas_fail_create(true);
    let ex = executor(cublas(Precision::Fp32));
    let before = drv.cublas_gemms();
    check_top_k_within(&ex, 40, 3000, 24, 10, 461, Precision::Fp32);
    check_top_k_within(&ex, 30, 2000, 16, 100, 462, Precision::Fp32);
    assert_eq!(drv.cublas_gemms(), before, "a GEMM ran");
    let text = gemm_text(&ex);
    assert!(
        text.starts_with("own kernels: cuBLAS failed (") && text.contains("cublasCreate"),
        "{text}"
    );
}
