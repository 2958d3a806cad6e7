//! The whole CUDA backend (probe, context, modules, allocation, streams, events, pinned
//! uploads, the chunk planner, the OOM and fault paths) on the emulated driver of
//! `kernels/emu/driver.cpp`, against the f64 reference. What this proves and what only a
//! GPU can is in the README's CUDA section.
//!
//! The emulator runs every CUDA thread as a fiber, so shapes are small. Every test holds
//! the driver (`exclusive`): its memory, faults and sticky error are one per process.
//! Streams, threads and driver calls: `cuda_emulated_streams.rs`; the cuBLAS path:
//! `cuda_emulated_gemm.rs`; search (metrics, filters): `cuda_emulated_search.rs`.

mod common;

use common::cuda_checks::{check_top_k, check_top_k_within, device_executor as executor};
use common::emulated_driver::{driver as emulated, Driver, Exclusive};
use common::reference::reference_scores;
use hybridvec::{
    data, BackendKind, Corpus, CudaConfig, DevicePolicy, Error, ExecutorConfig, FallbackAction,
    HybridExecutor, MatrixRef, Precision, StoreConfig, WarmStore,
};

#[test]
fn top_k_matches_the_f64_reference_on_every_path() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    // Up to 8 queries: the memory-bound kernels; more: the tiles. k = 1 and k = 1024, and
    // dimensions that are not multiples of a vector.
    for (q, n, d, k) in [
        (1, 1_500, 64, 10),
        (3, 700, 17, 7),
        (8, 900, 40, 1),
        (20, 600, 33, 10),
        (2, 1_200, 16, 1024),
        (40, 1_100, 24, 1024),
        (1, 50, 8, 1024),
    ] {
        check_top_k(&ex, q, n, d, k, q as u64 * 31 + n as u64);
    }
}

#[test]
fn tf32_fp16_and_bf16_stay_within_their_tolerance() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    for precision in [Precision::Tf32, Precision::Fp16, Precision::Bf16] {
        let ex = executor(
            DevicePolicy::Cuda,
            CudaConfig {
                precision,
                ..Default::default()
            },
        );
        for (q, n, d, k) in [(20, 600, 33, 10), (40, 500, 64, 100), (3, 700, 64, 10)] {
            check_top_k_within(&ex, q, n, d, k, 11 + q as u64, precision);
        }
    }
}

#[test]
fn the_cosine_matrix_matches_the_reference() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    for (q, n, d) in [(5, 300, 30), (20, 200, 40)] {
        let cv = data::random_matrix(n, d, 8 + q as u64);
        let qv = data::random_matrix(q, d, 9 + q as u64);
        let corpus = Corpus::new(cv.clone(), d).unwrap();
        let (s, report) = ex
            .cosine_similarity_with_report(MatrixRef::new(&qv, q, d).unwrap(), &corpus)
            .unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        let want = reference_scores(&qv, &cv, d);
        for (i, row) in want.iter().enumerate() {
            for (j, &w) in row.iter().enumerate() {
                let got = s.get(i, j) as f64;
                assert!(
                    (got - w).abs() <= 1e-5 * w.abs().max(1e-3) + 1e-6,
                    "{q}x{n}x{d} {i},{j}: {got} vs {w}"
                );
            }
        }
    }
}

#[test]
fn store_deletes_and_appends_reach_the_device() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let dir = common::TempDir::new("cuda-emulated-store");
    let d = 16;
    let store = WarmStore::create(dir.path("store"), StoreConfig::new(d)).unwrap();
    let vecs = data::random_matrix(600, d, 3);
    for (i, v) in vecs.chunks(d).enumerate() {
        store.put(&format!("rec-{i}"), v, b"").unwrap();
    }
    let q = &vecs[..d]; // rec-0's own vector: its best hit while it lives
    let qm = MatrixRef::new(q, 1, d).unwrap();
    assert_eq!(ex.top_k_store(qm, &store, 1).unwrap()[0][0].id, "rec-0");
    store.delete("rec-0").unwrap();
    let hits = ex.top_k_store(qm, &store, 5).unwrap();
    assert!(hits[0].iter().all(|h| h.id != "rec-0"), "{hits:?}");
    store.put("new", q, b"").unwrap();
    assert_eq!(ex.top_k_store(qm, &store, 1).unwrap()[0][0].id, "new");
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    let qs = data::random_matrix(12, d, 4);
    let qm = MatrixRef::new(&qs, 12, d).unwrap();
    let ids = |h: &[hybridvec::StoreHit]| h.iter().map(|h| h.id.clone()).collect::<Vec<_>>();
    for k in [1, 20, 1024] {
        let (g, c) = (
            ex.top_k_store(qm, &store, k).unwrap(),
            cpu.top_k_store(qm, &store, k).unwrap(),
        );
        for (g, c) in g.iter().zip(&c) {
            assert_eq!(ids(g), ids(c), "k = {k}");
        }
    }
}

#[test]
fn auto_answers_exactly_wherever_it_runs() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let ex = executor(DevicePolicy::Auto, CudaConfig::default());
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    let (n, d) = (800, 24);
    let corpus = Corpus::new(data::random_matrix(n, d, 5), d).unwrap();
    let mut on_gpu = 0;
    for (i, (q, k)) in [(1, 10), (4, 1), (30, 10), (12, 64)]
        .into_iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let qv = data::random_matrix(q, d, 100 + i as u64);
        let m = MatrixRef::new(&qv, q, d).unwrap();
        let (got, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
        on_gpu += usize::from(report.backend == BackendKind::Gpu);
        let want = cpu.top_k(m, &corpus, k).unwrap();
        let idx = |h: &[hybridvec::Hit]| h.iter().map(|h| h.index).collect::<Vec<_>>();
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(idx(g), idx(w), "Q={q} k={k} on {:?}", report.backend);
        }
    }
    println!("auto: {on_gpu} of 12 calls on the emulated device");
}

/// Device memory that holds the corpus but not the scores of every row at once: the
/// plan passes over the corpus in several chunks, and the answer stays exact.
#[test]
fn too_little_device_memory_gives_exact_chunks() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    // Row chunks are whole segments of 4 096 rows: three of them.
    let (q, n, d) = (3, 9_000, 4);
    let cv = data::random_matrix(n, d, 41);
    let qv = data::random_matrix(q, d, 42);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let (_, report) = ex.cosine_similarity_with_report(m, &corpus).unwrap();
    assert_eq!(report.corpus_passes, 1, "{report:?}");
    // The corpus is resident (and the scratch kept for the next call freed); leave room
    // for the scores of one segment, not of all rows.
    ex.release_cached_memory();
    let resident = drv.counters().live_bytes;
    held.set_total_memory(resident + (q * 4096 * 4 * 3 / 2) as u64);
    let (s, report) = ex.cosine_similarity_with_report(m, &corpus).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert!(report.corpus_passes > 1, "one pass fitted: {report:?}");
    let want = reference_scores(&qv, &cv, d);
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = s.get(i, j) as f64;
            assert!(
                (got - w).abs() <= 1e-5 * w.abs().max(1e-3) + 1e-6,
                "{i},{j}: {got} vs {w}"
            );
        }
    }
    println!("cosine in {} passes over the corpus", report.corpus_passes);
    // Top-k under the same memory: exact on the device (the fused kernels keep candidates,
    // not scores); k = 1 024 needs a segment's scores, more than is free: `Cuda` says so
    // with a typed error, and `Auto` answers from the CPU.
    let check = |hits: &[Vec<hybridvec::Hit>], k: usize| {
        for (h, w) in hits.iter().zip(&want) {
            let order = common::reference::reference_top_k(w, n);
            let got: Vec<usize> = h.iter().map(|h| h.index).collect();
            assert_eq!(got, order[..k].to_vec(), "k = {k}");
        }
    };
    let (hits, report) = ex.top_k_with_report(m, &corpus, 10).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    check(&hits, 10);
    match ex.top_k(m, &corpus, 1024) {
        Err(Error::DeviceOutOfMemory { requested, .. }) => assert!(requested > 0),
        other => panic!("expected DeviceOutOfMemory, got {other:?}"),
    }
    let auto = executor(DevicePolicy::Auto, CudaConfig::default());
    let (hits, report) = auto.top_k_with_report(m, &corpus, 1024).unwrap();
    assert_eq!(report.backend, BackendKind::Cpu, "{report:?}");
    check(&hits, 1024);
}

#[test]
fn an_injected_oom_halves_the_chunk_and_then_falls_back() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    let (q, n, d, k) = (32, 700, 16, 10);
    let cv = data::random_matrix(n, d, 51);
    let qv = data::random_matrix(q, d, 52);
    let corpus = Corpus::new(cv, d).unwrap();
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    let want = cpu.top_k(m, &corpus, k).unwrap();
    let idx = |h: &[Vec<hybridvec::Hit>]| {
        h.iter()
            .map(|h| h.iter().map(|h| h.index).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };

    // The corpus is resident after the first call; the next call's first allocation (its
    // scratch, once the kept one is freed) fails.
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    ex.top_k(m, &corpus, k).unwrap();
    ex.release_cached_memory();
    held.fail_allocation(1);
    let (got, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert_eq!(report.fallbacks.len(), 1, "{report:?}");
    assert_eq!(report.fallbacks[0].action, FallbackAction::ShrinkChunks);
    assert_eq!(report.fallbacks[0].chunk_queries, q);
    assert_eq!(idx(&got), idx(&want));

    // Room for the corpus and nothing more: every chunk's first allocation fails, the
    // chunk halves down to one query, then `Auto` re-runs the call on the CPU, and the
    // report lists every step.
    let (n2, q2) = (16_000, 4);
    let big_rows = Corpus::new(data::random_matrix(n2, d, 54), d).unwrap();
    let q2v = data::random_matrix(q2, d, 55);
    let m2 = MatrixRef::new(&q2v, q2, d).unwrap();
    // The emulated device is slow: measured, it would lose every call, so this `Auto`
    // takes the device whenever it has been measured at all (after one call on each).
    let auto = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Auto,
        dispatch: hybridvec::DispatchPolicy {
            min_speedup: 1e-9,
            explore_samples: 1,
            remeasure_budget: 0.0,
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap();
    let placed: Vec<_> = (0..2)
        .map(|_| auto.top_k_with_report(m2, &big_rows, k).unwrap().1.backend)
        .collect();
    // Each side once (which first is the roofline estimate's call, from the overhead
    // measured when the backend opened).
    assert!(
        placed.contains(&BackendKind::Gpu) && placed.contains(&BackendKind::Cpu),
        "{placed:?}"
    );
    auto.release_cached_memory();
    held.set_total_memory(drv.counters().live_bytes + 64);
    let (got, report) = auto.top_k_with_report(m2, &big_rows, k).unwrap();
    assert_eq!(report.backend, BackendKind::Cpu, "{report:?}");
    let steps: Vec<_> = report
        .fallbacks
        .iter()
        .map(|s| (s.chunk_queries, s.action))
        .collect();
    assert_eq!(
        steps,
        [
            (4, FallbackAction::ShrinkChunks),
            (2, FallbackAction::ShrinkChunks),
            (1, FallbackAction::RerunOnCpu)
        ],
        "{report:?}"
    );
    assert!(report
        .fallbacks
        .iter()
        .all(|s| s.error.contains("out of device memory")));
    assert_eq!(idx(&got), idx(&cpu.top_k(m2, &big_rows, k).unwrap()));
    held.set_total_memory(common::emulated_driver::DEFAULT_TOTAL);

    // A corpus that cannot fit: `Auto` answers from the CPU with the reason, `Cuda` is a
    // typed error.
    held.set_total_memory(16 << 10);
    let auto = executor(DevicePolicy::Auto, CudaConfig::default());
    let big = Corpus::new(data::random_matrix(4 * n, d, 53), d).unwrap();
    let (got, report) = auto.top_k_with_report(m, &big, k).unwrap();
    assert_eq!(report.backend, BackendKind::Cpu, "{report:?}");
    if let Some(step) = report.fallbacks.first() {
        assert_eq!(step.action, FallbackAction::RerunOnCpu, "{report:?}");
    }
    assert_eq!(idx(&got), idx(&cpu.top_k(m, &big, k).unwrap()));
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    match ex.top_k(m, &big, k) {
        Err(Error::DeviceOutOfMemory { .. }) => {}
        other => panic!("expected DeviceOutOfMemory, got {other:?}"),
    }
}

/// A sticky error retires the device for the whole process, so each case runs in a
/// process of its own: the test binary again, for `sticky_error_in_this_process`, with
/// the error code to inject.
fn sticky_error_in_a_child(code: &str) {
    let Some(_) = emulated() else { return };
    let out = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "sticky_error_in_this_process",
            "--include-ignored",
        ])
        .args(["--nocapture", "--test-threads", "1"])
        .env("HYBRIDVEC_EMULATED_STICKY_CHILD", code)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("sticky error: every step held"),
        "{}\n{}",
        text,
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_sticky_error_retires_the_device_without_retries() {
    sticky_error_in_a_child("700");
}

/// A code the bindings lack (cudarc's `CUresult` is an enum: such a value would be
/// undefined behaviour) reaches the backend as `CUDA_ERROR_UNKNOWN` through the driver
/// guard, named in the error with its raw value, and retires the device like any
/// sticky error.
#[test]
fn an_error_code_newer_than_the_bindings_is_unknown_and_sticky() {
    sticky_error_in_a_child("1234");
}

#[test]
#[ignore = "run in its own process by sticky_error_in_a_child"]
fn sticky_error_in_this_process() {
    let Some(code) = std::env::var("HYBRIDVEC_EMULATED_STICKY_CHILD")
        .ok()
        .and_then(|c| c.parse::<i32>().ok())
    else {
        return;
    };
    let drv = emulated().expect("the parent built the driver");
    let held = drv.exclusive();
    let (q, n, d, k) = (4, 500, 16, 10);
    let corpus = Corpus::new(data::random_matrix(n, d, 61), d).unwrap();
    let qv = data::random_matrix(q, d, 62);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    ex.top_k(m, &corpus, k).unwrap();
    held.fail_launch(1, code);
    let expected = match code {
        700 => "ILLEGAL_ADDRESS".to_string(),
        _ => format!("CUDA_ERROR_UNKNOWN\") (the driver returned code {code},"),
    };
    match ex.top_k(m, &corpus, k) {
        Err(Error::BackendFailed { reason, .. }) => {
            assert!(reason.contains(&expected), "{reason}");
            assert!(reason.contains("sticky"), "{reason}");
        }
        other => panic!("expected BackendFailed, got {other:?}"),
    }
    // From now on nothing touches the driver: not the same executor, not a new one's
    // probe, not `Auto`, which answers from the CPU with the reason.
    let calls = drv.counters().calls;
    match ex.top_k(m, &corpus, k) {
        Err(Error::CudaUnavailable { reason }) => assert!(reason.contains("sticky"), "{reason}"),
        other => panic!("expected CudaUnavailable, got {other:?}"),
    }
    match HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        ..Default::default()
    }) {
        Err(Error::CudaUnavailable { reason }) => assert!(reason.contains("sticky"), "{reason}"),
        other => panic!("expected CudaUnavailable, got {:?}", other.map(|_| ())),
    }
    let auto = executor(DevicePolicy::Auto, CudaConfig::default());
    let (hits, report) = auto.top_k_with_report(m, &corpus, k).unwrap();
    assert_eq!(report.backend, BackendKind::Cpu, "{report:?}");
    assert_eq!(hits.len(), q);
    let cuda = auto.capabilities().cuda;
    assert!(!cuda.is_available(), "{cuda:?}");
    assert_eq!(
        drv.counters().calls,
        calls,
        "the lost device was called again"
    );
    println!("sticky error: every step held");
}

#[test]
fn the_cli_runs_on_the_emulated_device() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let out = common::cli()
        .arg("info")
        .env("LD_PRELOAD", drv.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(text.contains("hybridvec emulated CUDA device"), "{text}");
    assert!(text.contains("kernels: sm_90 cubin"), "{text}");
    let out = common::cli()
        .args(["bench", "--backend", "cuda", "--json", "--repeat", "2"])
        .args([
            "--queries",
            "3",
            "--corpus",
            "500",
            "--dim",
            "16",
            "--k",
            "5",
        ])
        .env("LD_PRELOAD", drv.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{out:?}");
    assert!(
        text.contains("\"backend\":\"hybridvec emulated CUDA device (CPU)\""),
        "{text}"
    );
    assert!(text.contains("\"gpu\":2"), "{text}");
}

/// Rows with norms of 1e-25 and 1e25 (their f32 sums of squares underflow and overflow)
/// score on the device as on the CPU: the device uses the host's f64 norms.
#[test]
fn extreme_row_norms_score_as_on_the_cpu() {
    let Some(drv) = emulated() else { return };
    let _held = drv.exclusive();
    let (n, d) = (300, 16);
    let mut cv = data::random_matrix(n, d, 91);
    for (row, norm) in [(5, 1e-25f64), (7, 1e25), (11, 1e-20), (13, 1e20)] {
        let r = &mut cv[row * d..(row + 1) * d];
        let now = r.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
        r.iter_mut()
            .for_each(|x| *x = (*x as f64 * norm / now) as f32);
    }
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    // Each extreme row's own direction, and one random query.
    let mut qv: Vec<f32> = [5, 7, 11, 13]
        .iter()
        .flat_map(|&r| cv[r * d..(r + 1) * d].to_vec())
        .collect();
    qv.extend(data::random_matrix(1, d, 92));
    let q = qv.len() / d;
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    for precision in [Precision::Fp32, Precision::Fp16, Precision::Bf16] {
        let ex = executor(
            DevicePolicy::Cuda,
            CudaConfig {
                precision,
                ..Default::default()
            },
        );
        let (got, report) = ex.top_k_with_report(m, &corpus, n).unwrap();
        assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
        let want = cpu.top_k(m, &corpus, n).unwrap();
        let tol = precision.score_tolerance().max(1e-5);
        for (qi, (g, w)) in got.iter().zip(&want).enumerate() {
            let score = |h: &[hybridvec::Hit], row: usize| {
                h.iter().find(|h| h.index == row).map(|h| h.score)
            };
            for row in [5, 7, 11, 13] {
                let (g, w) = (score(g, row).unwrap(), score(w, row).unwrap());
                assert!(
                    (g - w).abs() <= tol,
                    "{precision:?} query {qi} row {row}: device {g}, CPU {w}"
                );
            }
            if qi < 4 {
                assert_eq!(
                    g[0].index,
                    [5, 7, 11, 13][qi],
                    "{precision:?} {:?}",
                    &g[..3]
                );
            }
        }
        let (s, _) = ex.cosine_similarity_with_report(m, &corpus).unwrap();
        let c = cpu.cosine_similarity(m, &corpus).unwrap();
        for qi in 0..q {
            for row in [5, 7, 11, 13] {
                let (g, w) = (s.get(qi, row), c.get(qi, row));
                assert!(
                    (g - w).abs() <= tol,
                    "{precision:?} cosine {qi},{row}: {g} vs {w}"
                );
            }
        }
    }
}

/// A copy that fails halfway through the corpus upload, with the earlier copies out of
/// the pinned staging buffers still queued: the call is a typed error, every buffer comes
/// back (the staging buffers only once the queued copies ran: freed earlier, the copies
/// read unmapped memory and the process faults), and the next call uploads again and
/// answers exactly.
#[test]
fn a_copy_failing_mid_upload_returns_an_error_and_every_buffer() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    // 1.3 MB of rows: the upload cycles its two staging buffers over four rounds.
    let (q, n, d, k) = (2, 20_000, 16, 10);
    let corpus = Corpus::new(data::random_matrix(n, d, 91), d).unwrap();
    let qv = data::random_matrix(q, d, 92);
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
    let before = drv.counters();
    // The third copy of the upload fails (CUDA_ERROR_INVALID_VALUE, not sticky).
    held.fail_copy(3, 1);
    match ex.top_k(m, &corpus, k) {
        Err(Error::BackendFailed { reason, .. }) => {
            assert!(reason.contains("CUDA_ERROR_INVALID_VALUE"), "{reason}")
        }
        other => panic!("expected BackendFailed, got {other:?}"),
    }
    let after = drv.counters();
    assert_eq!(after.live_allocations, before.live_allocations, "{after:?}");
    assert_eq!(after.live_bytes, before.live_bytes, "{after:?}");
    assert_eq!(after.live_host_allocations, before.live_host_allocations);
    let (hits, report) = ex.top_k_with_report(m, &corpus, k).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    let cpu = executor(DevicePolicy::Cpu, CudaConfig::default());
    let idx = |h: &[Vec<hybridvec::Hit>]| {
        h.iter()
            .map(|h| h.iter().map(|h| h.index).collect::<Vec<_>>())
            .collect::<Vec<_>>()
    };
    assert_eq!(idx(&hits), idx(&cpu.top_k(m, &corpus, k).unwrap()));
}

/// Under FP16 (and BF16) the first call also makes the corpus's 16-bit copy: its plan
/// must count that copy, or the chunk it picks no longer fits once the copy is made, and
/// the call runs out of memory and falls back instead of planning passes that fit.
#[test]
fn the_memory_plan_counts_the_16_bit_copy() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    for precision in [Precision::Fp16, Precision::Bf16] {
        plan_counts_the_16_bit_copy(drv, &held, precision);
    }
}

fn plan_counts_the_16_bit_copy(drv: &Driver, held: &Exclusive<'_>, precision: Precision) {
    held.set_total_memory(common::emulated_driver::DEFAULT_TOTAL);
    let (q, n, d) = (3, 9_000, 64);
    let cv = data::random_matrix(n, d, 95);
    let qv = data::random_matrix(q, d, 96);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    let m = MatrixRef::new(&qv, q, d).unwrap();
    let fp16 = CudaConfig {
        precision,
        ..Default::default()
    };
    // The bytes of the resident corpus with its 16-bit copy.
    let base = drv.counters().live_bytes;
    let resident = {
        let ex = executor(DevicePolicy::Cuda, fp16);
        ex.cosine_similarity(m, &corpus).unwrap();
        ex.release_cached_memory();
        drv.counters().live_bytes - base
    };
    assert_eq!(drv.counters().live_bytes, base);
    // Room beside them for about one and a half segments' scores (4 096 rows each) at the
    // plan's margin of 0.8: all rows' scores would not fit.
    let segment_scores = (q * 4096 * 4) as u64;
    held.set_total_memory(base + resident + segment_scores * 3 / 2 * 5 / 4);
    let ex = executor(DevicePolicy::Cuda, fp16);
    let (s, report) = ex.cosine_similarity_with_report(m, &corpus).unwrap();
    assert_eq!(report.backend, BackendKind::Gpu, "{report:?}");
    assert!(
        report.fallbacks.is_empty(),
        "{precision:?}: the plan did not fit: {report:?}"
    );
    assert!(report.corpus_passes > 1, "{report:?}");
    let want = reference_scores(&qv, &cv, d);
    let tol = precision.score_tolerance() as f64;
    for (i, row) in want.iter().enumerate() {
        for (j, &w) in row.iter().enumerate() {
            let got = s.get(i, j) as f64;
            assert!(
                (got - w).abs() <= tol,
                "{precision:?} {i},{j}: {got} vs {w}"
            );
        }
    }
}

/// A module the driver cannot load (here the emulated JIT refuses it) leaves CUDA
/// unavailable with the JIT's own log in the reason, not just an error code; `Auto`
/// serves from the CPU.
#[test]
fn a_module_that_fails_to_load_names_the_jit_log() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    held.fail_module_load(1);
    let cuda = HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        ..Default::default()
    });
    match cuda {
        Err(Error::CudaUnavailable { reason }) => {
            assert!(reason.contains("CUDA_ERROR_INVALID_PTX"), "{reason}");
            assert!(
                reason.contains("JIT log: ptxas fatal : emulated JIT failure"),
                "{reason}"
            );
        }
        other => panic!("expected CudaUnavailable, got {other:?}"),
    }
    let auto = executor(DevicePolicy::Auto, CudaConfig::default());
    let (q, n, d) = (2, 300, 8);
    let corpus = Corpus::new(data::random_matrix(n, d, 97), d).unwrap();
    let qv = data::random_matrix(q, d, 98);
    let (_, report) = auto
        .top_k_with_report(MatrixRef::new(&qv, q, d).unwrap(), &corpus, 5)
        .unwrap();
    assert_eq!(report.backend, BackendKind::Cpu, "{report:?}");
}

/// Each device loads the machine code it runs, else the PTX: the emulated device refuses
/// a cubin of another architecture (CUDA_ERROR_NO_BINARY_FOR_GPU), as a GPU does, so a
/// wrong pick fails here before it could fail on a GPU.
#[test]
fn each_device_loads_the_kernel_image_it_runs() {
    let Some(drv) = emulated() else { return };
    let held = drv.exclusive();
    for (major, minor, want) in [
        (9, 0, "sm_90 cubin"),
        (8, 0, "sm_80 cubin"),
        (8, 6, "sm_80 cubin"),
        (12, 0, "PTX (JIT)"),
    ] {
        held.set_compute_capability(major, minor);
        let ex = executor(DevicePolicy::Cuda, CudaConfig::default());
        match ex.capabilities().cuda {
            hybridvec::CudaStatus::Available {
                kernels,
                call_overhead,
                ..
            } => {
                assert_eq!(kernels, want, "compute capability {major}.{minor}");
                // Measured: the emulated driver's streams delay every operation, so a
                // round trip takes longer than the 30 µs assumed when it cannot be.
                let t = call_overhead.expect("measured when the backend opened");
                assert!(
                    t > std::time::Duration::from_micros(30)
                        && t < std::time::Duration::from_secs(2),
                    "{t:?}"
                );
            }
            other => panic!("{major}.{minor}: {other:?}"),
        }
        check_top_k(&ex, 3, 700, 16, 5, 60 + major as u64 * 10 + minor as u64);
    }
    // Older than the kernels' sm_80: refused with the reason.
    held.set_compute_capability(7, 5);
    match HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        ..Default::default()
    }) {
        Err(Error::CudaUnavailable { reason }) => {
            assert!(reason.contains("compute capability 7.5"), "{reason}")
        }
        other => panic!("expected CudaUnavailable, got {other:?}"),
    }
}
