//! Checks of the CUDA backend's answers against the f64 reference, shared by the tests on a
//! real device (`tests/cuda.rs`) and on the emulated driver (`tests/cuda_emulated.rs`).

use super::reference::{reference_scores, reference_top_k};
use hybridvec::{
    data, Corpus, CudaConfig, DevicePolicy, ExecutorConfig, HybridExecutor, MatrixRef, Precision,
};

/// Top-k equal to the reference except where the k-th score ties (within f32 rounding).
pub fn check_top_k(ex: &HybridExecutor, q: usize, n: usize, d: usize, k: usize, seed: u64) {
    check_top_k_within(ex, q, n, d, k, seed, Precision::Fp32);
}

/// FP32: top-k equal to the reference except where the k-th score ties. Otherwise:
/// scores within the precision's tolerance, best first, and nothing left out that beats
/// the last hit by more than twice the tolerance.
pub fn check_top_k_within(
    ex: &HybridExecutor,
    q: usize,
    n: usize,
    d: usize,
    k: usize,
    seed: u64,
    precision: Precision,
) {
    let cv = data::random_matrix(n, d, seed);
    let qv = data::random_matrix(q, d, seed + 1);
    let corpus = Corpus::new(cv.clone(), d).unwrap();
    let (hits, report) = ex
        .top_k_with_report(MatrixRef::new(&qv, q, d).unwrap(), &corpus, k)
        .unwrap();
    assert_eq!(report.backend, hybridvec::BackendKind::Gpu, "{report:?}");
    let want = reference_scores(&qv, &cv, d);
    let tol = precision.score_tolerance() as f64;
    for (qi, (h, w)) in hits.iter().zip(&want).enumerate() {
        assert_eq!(h.len(), k.min(n));
        if precision != Precision::Fp32 {
            let mut seen = vec![false; n];
            for hit in h {
                assert!(
                    (hit.score as f64 - w[hit.index]).abs() <= tol,
                    "Q={q} N={n} k={k} query {qi}: row {} scored {} vs {}",
                    hit.index,
                    hit.score,
                    w[hit.index]
                );
                seen[hit.index] = true;
            }
            assert!(h.windows(2).all(|p| p[0].score >= p[1].score));
            let last = w[h.last().unwrap().index];
            let missed = (0..n).find(|&r| !seen[r] && w[r] > last + 2.0 * tol);
            assert!(missed.is_none(), "query {qi}: row {missed:?} left out");
            continue;
        }
        let order = reference_top_k(w, n);
        let kth = w[order[k.min(n) - 1]];
        for (j, hit) in h.iter().enumerate() {
            let exact = w[hit.index];
            assert!(
                (hit.score as f64 - exact).abs() <= 1e-5 * exact.abs().max(1e-3) + 1e-6,
                "Q={q} N={n} D={d} k={k} query {qi} rank {j}: {} vs {exact}",
                hit.score
            );
            if hit.index != order[j] {
                assert!(
                    (exact - w[order[j]]).abs() < 1e-6 || (exact - kth).abs() < 1e-6,
                    "query {qi} rank {j}: row {} ({exact}) where the reference has row {} ({})",
                    hit.index,
                    order[j],
                    w[order[j]]
                );
            }
        }
    }
}

/// An executor under `device` with `cuda`'s settings, on the (emulated) device, which must
/// serve.
pub fn device_executor(device: DevicePolicy, cuda: CudaConfig) -> HybridExecutor {
    HybridExecutor::new(ExecutorConfig {
        device,
        cuda,
        ..Default::default()
    })
    .unwrap_or_else(|e| panic!("the emulated device must serve: {e}"))
}
