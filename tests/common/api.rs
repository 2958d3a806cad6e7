//! What the API test crates share: one executor per instruction-set level this CPU has
//! (and the default one), and the checks of scores and hits against the f64 reference.

use super::reference::reference_top_k;
use hybridvec::{
    Corpus, CpuConfig, DevicePolicy, ExecutorConfig, Hit, HybridExecutor, MatrixRef, SimdLevel,
};
use proptest::prelude::*;
use std::sync::LazyLock;

/// Cosine is bounded by 1 in magnitude, so an absolute error bound on it is the error of
/// the dot product relative to `‖q‖‖c‖`.
pub const COS_TOL: f64 = 1e-5;
/// Two reference scores closer than this are a near-tie: f32 rounding (within `COS_TOL` per
/// score) may legitimately swap them.
pub const TIE_TOL: f64 = 2e-5;
/// Bound on `Q × N × D` per generated case, so the f64 reference stays cheap.
pub const MAX_WORK: usize = 200_000_000;
/// The lowest query count at which an executor's default crossover takes the GEMM path
/// (AVX2+FMA and NEON 16, AVX-512 24): below it every level streams.
pub const GEMM_MIN_QUERIES: usize = 16;

/// The executor a user gets with the default configuration.
pub static DEFAULT: LazyLock<HybridExecutor> =
    LazyLock::new(|| HybridExecutor::new(ExecutorConfig::default()).expect("default executor"));

/// One CPU executor per level this CPU runs, named by the level.
pub static LEVELS: LazyLock<Vec<(&'static str, HybridExecutor)>> = LazyLock::new(|| {
    SimdLevel::ALL
        .into_iter()
        .filter(|level| {
            let ok = level.is_supported();
            if !ok {
                eprintln!(
                    "skip level {}: this CPU lacks it ({})",
                    level.name(),
                    std::env::consts::ARCH
                );
            }
            ok
        })
        .map(|level| {
            let exec = HybridExecutor::new(ExecutorConfig {
                device: DevicePolicy::Cpu,
                cpu: CpuConfig {
                    simd: Some(level),
                    ..Default::default()
                },
                ..Default::default()
            })
            .expect("an executor at a supported level");
            assert_eq!(exec.capabilities().simd, level, "the level asked for");
            (level.name(), exec)
        })
        .collect()
});

pub fn executors() -> Vec<(&'static str, &'static HybridExecutor)> {
    let mut all = vec![("default", &*DEFAULT)];
    all.extend(LEVELS.iter().map(|(name, exec)| (*name, exec)));
    all
}

/// Every element of `cosine_similarity` within `tol` of the reference.
pub fn check_cosine(
    exec: &HybridExecutor,
    name: &str,
    queries: &[f32],
    q: usize,
    corpus: &Corpus,
    reference: &[Vec<f64>],
    tol: f64,
) -> Result<(), TestCaseError> {
    let d = corpus.dim();
    let n = corpus.rows();
    let scores = exec
        .cosine_similarity(MatrixRef::new(queries, q, d).unwrap(), corpus)
        .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    prop_assert_eq!((scores.rows(), scores.cols()), (q, n), "{}: shape", name);
    for (i, want_row) in reference.iter().enumerate() {
        let got_row = scores.row(i);
        for (j, (&got, &want)) in got_row.iter().zip(want_row).enumerate() {
            prop_assert!(
                (got as f64 - want).abs() <= tol,
                "{}: Q={} N={} D={}: score[{}][{}] = {}, reference {} (diff {:e})",
                name,
                q,
                n,
                d,
                i,
                j,
                got,
                want,
                (got as f64 - want).abs()
            );
        }
    }
    Ok(())
}

/// Checks one query's hits against its reference scores:
/// * length `min(k, N)`, distinct in-range indices, sorted best first (ties: lower index);
/// * each hit's score within `tol` of the reference score of that same index;
/// * rank by rank, the hit is the reference's, or the reference scores of the two differ
///   by at most `tie_tol` (a near-tie that f32 rounding may reorder).
pub fn check_hits(
    name: &str,
    query: usize,
    hits: &[Hit],
    reference: &[f64],
    k: usize,
    tol: f64,
    tie_tol: f64,
) -> Result<(), TestCaseError> {
    let n = reference.len();
    let want = reference_top_k(reference, k);
    prop_assert_eq!(hits.len(), k.min(n), "{}: query {}: hit count", name, query);
    let mut seen = vec![false; n];
    for (rank, h) in hits.iter().enumerate() {
        prop_assert!(
            h.index < n,
            "{}: query {}: index {} >= N = {}",
            name,
            query,
            h.index,
            n
        );
        prop_assert!(
            !seen[h.index],
            "{}: query {}: index {} returned twice",
            name,
            query,
            h.index
        );
        seen[h.index] = true;
        let own = reference[h.index];
        prop_assert!(
            (h.score as f64 - own).abs() <= tol,
            "{}: query {}: rank {}: index {} scored {}, reference {}",
            name,
            query,
            rank,
            h.index,
            h.score,
            own
        );
        let at_rank = reference[want[rank]];
        prop_assert!(
            h.index == want[rank] || (own - at_rank).abs() <= tie_tol,
            "{}: query {}: rank {}: got index {} (reference score {}), reference has index {} \
             (score {})",
            name,
            query,
            rank,
            h.index,
            own,
            want[rank],
            at_rank
        );
        if rank > 0 {
            let prev = hits[rank - 1];
            prop_assert!(
                prev.score > h.score || (prev.score == h.score && prev.index < h.index),
                "{}: query {}: not sorted at rank {}: {:?} then {:?}",
                name,
                query,
                rank,
                prev,
                h
            );
        }
    }
    Ok(())
}

pub fn check_top_k(
    exec: &HybridExecutor,
    name: &str,
    queries: &[f32],
    q: usize,
    corpus: &Corpus,
    k: usize,
    reference: &[Vec<f64>],
) -> Result<(), TestCaseError> {
    let hits = exec
        .top_k(MatrixRef::new(queries, q, corpus.dim()).unwrap(), corpus, k)
        .map_err(|e| TestCaseError::fail(format!("{name}: {e}")))?;
    prop_assert_eq!(hits.len(), q, "{}: one hit list per query", name);
    for (i, (hs, r)) in hits.iter().zip(reference).enumerate() {
        check_hits(name, i, hs, r, k, COS_TOL, TIE_TOL)?;
    }
    Ok(())
}

/// Unwraps a `TestCaseError` result outside `proptest!`.
pub fn ok(r: Result<(), TestCaseError>) {
    if let Err(e) = r {
        panic!("{e}");
    }
}
