//! Public API misuse: mismatched dimensions, non-finite values, `k = 0`, empty and
//! misshapen inputs, and configurations the machine cannot serve, each a typed error on
//! every executor (the default one and one per instruction-set level this CPU has); and
//! the checks the API tests rely on, tried on wrong answers.

mod common;

use common::api::*;
use common::reference::{cosine64, reference_scores, reference_top_k};
use hybridvec::{
    data, Corpus, CpuConfig, DevicePolicy, Error, ExecutorConfig, Hit, HybridExecutor, MatrixRef,
};

// ---------------------------------------------------------------------------------------
// Bad input.
// ---------------------------------------------------------------------------------------

fn small_corpus() -> Corpus {
    Corpus::new(data::random_matrix(10, 4, 61), 4).unwrap()
}

#[test]
fn dimension_mismatch() {
    let corpus = small_corpus();
    let queries = data::random_matrix(2, 5, 62);
    let view = MatrixRef::new(&queries, 2, 5).unwrap();
    for (name, exec) in executors() {
        match exec.cosine_similarity(view, &corpus) {
            Err(Error::DimensionMismatch {
                expected: 4,
                got: 5,
            }) => {}
            other => panic!("{name}: expected DimensionMismatch {{ 4, 5 }}, got {other:?}"),
        }
        match exec.top_k(view, &corpus, 3) {
            Err(Error::DimensionMismatch {
                expected: 4,
                got: 5,
            }) => {}
            other => panic!("{name}: expected DimensionMismatch {{ 4, 5 }}, got {other:?}"),
        }
    }
}

#[test]
fn non_finite_queries_are_rejected_with_position() {
    let corpus = small_corpus();
    for (bad, what) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "+inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        for q in [3, GEMM_MIN_QUERIES] {
            let mut queries = data::random_matrix(q, 4, 63);
            queries[2 * 4 + 1] = bad; // row 2, column 1
            queries[(q - 1) * 4 + 3] = bad; // a later one must not win
            let view = MatrixRef::new(&queries, q, 4).unwrap();
            for (name, exec) in executors() {
                match exec.cosine_similarity(view, &corpus) {
                    Err(Error::NonFinite { row: 2, col: 1 }) => {}
                    other => panic!("{name} {what}: expected NonFinite {{ 2, 1 }}, got {other:?}"),
                }
                match exec.top_k(view, &corpus, 2) {
                    Err(Error::NonFinite { row: 2, col: 1 }) => {}
                    other => panic!("{name} {what}: expected NonFinite {{ 2, 1 }}, got {other:?}"),
                }
            }
        }
    }
}

#[test]
fn non_finite_corpus_is_rejected_with_position() {
    for (bad, what) in [
        (f32::NAN, "NaN"),
        (f32::INFINITY, "+inf"),
        (f32::NEG_INFINITY, "-inf"),
    ] {
        let d = 6;
        // 9000 rows: more than one of the chunks the check scans in parallel.
        let mut v = data::random_matrix(9000, d, 64);
        v[7000 * d + 5] = bad;
        v[8999 * d] = bad;
        match Corpus::new(v.clone(), d) {
            Err(Error::NonFinite { row: 7000, col: 5 }) => {}
            other => panic!("{what}: expected NonFinite {{ 7000, 5 }}, got {other:?}"),
        }
        v[3] = bad;
        match Corpus::new(v, d) {
            Err(Error::NonFinite { row: 0, col: 3 }) => {}
            other => panic!("{what}: expected NonFinite {{ 0, 3 }}, got {other:?}"),
        }
    }
}

#[test]
fn k_zero_is_invalid() {
    let corpus = small_corpus();
    let queries = data::random_matrix(2, 4, 65);
    for (name, exec) in executors() {
        match exec.top_k(MatrixRef::new(&queries, 2, 4).unwrap(), &corpus, 0) {
            Err(Error::InvalidK { k: 0, rows: 10 }) => {}
            other => panic!("{name}: expected InvalidK {{ 0, 10 }}, got {other:?}"),
        }
    }
}

#[test]
fn empty_inputs_are_rejected() {
    match Corpus::new(Vec::new(), 8) {
        Err(Error::EmptyInput { what }) => assert!(!what.is_empty()),
        other => panic!("expected EmptyInput, got {other:?}"),
    }
    match MatrixRef::new(&[], 0, 8) {
        Err(Error::EmptyInput { what }) => assert!(!what.is_empty()),
        other => panic!("expected EmptyInput, got {other:?}"),
    }
    match MatrixRef::new(&[], 3, 0) {
        Err(Error::EmptyInput { .. }) => {}
        other => panic!("expected EmptyInput, got {other:?}"),
    }
    match Corpus::new(vec![1.0; 4], 0) {
        Err(Error::EmptyInput { .. }) => {}
        other => panic!("expected EmptyInput, got {other:?}"),
    }
}

#[test]
fn wrong_buffer_length_is_invalid_shape() {
    let v = [1.0f32; 7];
    match MatrixRef::new(&v, 2, 4) {
        Err(Error::InvalidShape {
            rows: 2,
            cols: 4,
            len: 7,
        }) => {}
        other => panic!("expected InvalidShape {{ 2, 4, 7 }}, got {other:?}"),
    }
    match MatrixRef::new(&v, 3, 3) {
        Err(Error::InvalidShape {
            rows: 3,
            cols: 3,
            len: 7,
        }) => {}
        other => panic!("expected InvalidShape {{ 3, 3, 7 }}, got {other:?}"),
    }
    match Corpus::new(v.to_vec(), 2) {
        Err(Error::InvalidShape {
            cols: 2, len: 7, ..
        }) => {}
        other => panic!("expected InvalidShape, got {other:?}"),
    }
}

#[test]
fn cuda_policy_without_cuda_is_an_error_with_a_reason() {
    match HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cuda,
        ..Default::default()
    }) {
        Err(Error::CudaUnavailable { reason }) => {
            assert!(!reason.trim().is_empty(), "empty reason")
        }
        Ok(_) => {
            eprintln!("SKIP: a CUDA device serves here, so there is no reason to check");
            return;
        }
        other => panic!("expected CudaUnavailable, got {other:?}"),
    }
    // Auto and Cpu fall back to / use the CPU.
    for device in [DevicePolicy::Auto, DevicePolicy::Cpu] {
        let exec = HybridExecutor::new(ExecutorConfig {
            device,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(exec.policy(), device);
        assert!(!exec.capabilities().cuda.is_available());
    }
}

#[test]
fn zero_or_absurd_threads_is_invalid_config() {
    // A million threads would take minutes to start (and may exhaust the process's
    // limit): refused before any starts.
    for threads in [0, hybridvec::cpu::MAX_THREADS + 1, 1_000_000, usize::MAX] {
        match HybridExecutor::new(ExecutorConfig {
            cpu: CpuConfig {
                threads: Some(threads),
                ..Default::default()
            },
            ..Default::default()
        }) {
            Err(Error::InvalidConfig(msg)) => assert!(msg.contains("threads"), "{msg}"),
            other => panic!("threads = {threads}: expected InvalidConfig, got {other:?}"),
        }
    }
}

#[test]
fn cosine_helper_agrees_with_reference_matrix() {
    // Guards the reference itself: the per-pair and the batched forms must agree.
    let d = 13;
    let q = data::random_matrix(2, d, 71);
    let mut c = data::random_matrix(3, d, 72);
    c[d..2 * d].fill(0.0);
    let r = reference_scores(&q, &c, d);
    for i in 0..2 {
        for j in 0..3 {
            assert_eq!(
                r[i][j],
                cosine64(&q[i * d..(i + 1) * d], &c[j * d..(j + 1) * d])
            );
        }
    }
    assert_eq!(r[0][1], 0.0);
    assert!((cosine64(&[1.0, 0.0], &[2.0, 0.0]) - 1.0).abs() < 1e-15);
    assert_eq!(reference_top_k(&[0.5, 0.9, 0.5, -1.0], 3), vec![1, 0, 2]);
}

#[test]
fn hit_check_rejects_wrong_answers() {
    // The checker must be able to fail: feed it wrong hit lists for known scores.
    let r = [0.1, 0.9, 0.5, 0.500001, -0.3];
    let h = |index: usize| Hit {
        index,
        score: r[index] as f32,
    };
    let check = |hits: &[Hit], k: usize| check_hits("t", 0, hits, &r, k, COS_TOL, TIE_TOL);
    assert!(check(&[h(1), h(3), h(2)], 3).is_ok());
    // Near-tie (1e-6 apart): either order of the same score is accepted by the rank check,
    // but the list must still be sorted by the scores it reports.
    assert!(check(&[h(1), h(2), h(3)], 3).is_err());
    // With equal reported scores, the lower index must come first.
    let mut tied = [h(1), h(2), h(3)];
    tied[2].score = tied[1].score;
    assert!(check(&tied, 3).is_ok());
    tied.swap(1, 2);
    assert!(check(&tied, 3).is_err(), "equal scores, higher index first");
    let mut tied = [h(1), h(2), h(3)];
    tied[2].score = tied[1].score;
    assert!(check(&tied, 3).is_ok());
    assert!(check(&[h(1), h(3)], 3).is_err(), "too short");
    assert!(
        check(&[h(1), h(3), h(0)], 3).is_err(),
        "not the reference's third"
    );
    assert!(check(&[h(3), h(1), h(2)], 3).is_err(), "not sorted");
    assert!(check(&[h(1), h(1), h(3)], 3).is_err(), "duplicate");
    let mut off = [h(1), h(3), h(2)];
    off[0].score += 2e-5;
    assert!(check(&off, 3).is_err(), "score off");
    assert!(check(&[h(1), h(3), h(2), h(0), h(4)], 9).is_ok(), "k > N");
    assert!(
        check(&[h(1), h(3), h(2), h(0)], 9).is_err(),
        "k > N, one missing"
    );
}

#[test]
fn extreme_magnitudes_are_scored_exactly_or_rejected() {
    // Queries of any finite magnitude are normalised in f64 and must score exactly.
    // Corpus rows with norms inside [MIN_NORM, MAX_NORM] must score exactly; rows outside
    // it are a typed error, never NaN or inf in the results.
    let d = 8;
    let base = data::random_matrix(4, d, 91);
    let scales = [1.0f32, 1e-28, 1e28, 0.5];
    let mut corpus_data = base.clone();
    for (row, &s) in corpus_data.chunks_exact_mut(d).zip(&scales) {
        row.iter_mut().for_each(|x| *x *= s);
    }
    let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
    let mut queries = data::random_matrix(3, d, 92);
    queries[..d].iter_mut().for_each(|x| *x *= 1e-39);
    queries[d..2 * d].iter_mut().for_each(|x| *x *= 3e37);
    let reference = reference_scores(&queries, &corpus_data, d);
    for (name, exec) in executors() {
        ok(check_cosine(
            exec, name, &queries, 3, &corpus, &reference, COS_TOL,
        ));
        ok(check_top_k(exec, name, &queries, 3, &corpus, 4, &reference));
    }
    for (s, row) in [(1e-39f32, 1usize), (3e37, 2)] {
        let mut bad = base.clone();
        bad[row * d..(row + 1) * d].iter_mut().for_each(|x| *x *= s);
        match Corpus::new(bad, d) {
            Err(Error::NormOutOfRange { row: r, norm }) => {
                assert_eq!(r, row);
                assert!(!(hybridvec::MIN_NORM..=hybridvec::MAX_NORM).contains(&norm));
            }
            other => panic!("scale {s}: expected NormOutOfRange, got {other:?}"),
        }
    }
}
