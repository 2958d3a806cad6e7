//! Which way a batch is scored when cuBLAS is loaded: its GEMM, or the own kernels. The
//! crossover depends on the device, the cuBLAS version, `k` and the shape, so it is
//! measured, per batch size (powers of two above [`SMALL_Q`] queries) and per kind of
//! call (fused top-k, k ≤ 32, or not): the first call of a bucket runs both ways, timed
//! on the device, and returns the faster one's answer; every later call of the bucket
//! takes that way. The two ways round differently (a GEMM sums in another order), so the
//! choice is made once and kept: the same call always gives the same bits.
//!
//! Batches of up to [`SMALL_Q`] queries always take the own memory-bound kernels: they
//! read the corpus once for all their queries, which a GEMM into a score matrix cannot
//! beat. Full score matrices (`cosine`) always take the GEMM: they are a GEMM.

use super::program::SMALL_Q;
use parking_lot::Mutex;

/// How the CUDA backend scores batches of more than 8 queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// cuBLAS's GEMM or the own kernels, whichever the device measured faster on the
    /// first call of the batch size (the own kernels when cuBLAS is not found). The
    /// default.
    #[default]
    Measured,
    /// Always cuBLAS's GEMM when it is loaded.
    Cublas,
    /// Never cuBLAS.
    OwnKernels,
}

/// What a call of a bucket does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Choice {
    /// The own kernels.
    Own,
    /// cuBLAS's GEMM.
    Gemm,
    /// Both, timed; then [`GemmChoice::record`].
    Measure,
}

/// Buckets: ⌊log2 nq⌋ from 3 (9–15 queries) to 16, times fused or not.
const BUCKETS: usize = 14;

/// The measured choice. See the module docs.
pub(super) struct GemmChoice {
    /// Per bucket: whether the GEMM won, once measured.
    decided: Mutex<[[Option<bool>; 2]; BUCKETS]>,
}

fn bucket(nq: usize) -> usize {
    (nq.max(1).ilog2() as usize)
        .saturating_sub(3)
        .min(BUCKETS - 1)
}

impl GemmChoice {
    pub(super) fn new() -> Self {
        Self {
            decided: Mutex::new([[None; 2]; BUCKETS]),
        }
    }

    /// What a call of `nq` queries (a fused top-k when `fused`) does.
    pub(super) fn pick(&self, nq: usize, fused: bool) -> Choice {
        if nq <= SMALL_Q {
            return Choice::Own;
        }
        match self.decided.lock()[bucket(nq)][fused as usize] {
            None => Choice::Measure,
            Some(true) => Choice::Gemm,
            Some(false) => Choice::Own,
        }
    }

    /// Records a measuring call's device times and returns whether the GEMM won. A
    /// bucket decided already (by a concurrent call) keeps its decision.
    pub(super) fn record(&self, nq: usize, fused: bool, own_secs: f64, gemm_secs: f64) -> bool {
        let mut all = self.decided.lock();
        *all[bucket(nq)][fused as usize].get_or_insert(gemm_secs < own_secs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_call_of_a_bucket_measures_and_the_decision_stays() {
        let c = GemmChoice::new();
        assert_eq!(
            c.pick(8, false),
            Choice::Own,
            "small batches never take the GEMM"
        );
        assert_eq!(c.pick(100, false), Choice::Measure);
        assert!(c.record(100, false, 2e-3, 1e-3));
        for _ in 0..100 {
            assert_eq!(c.pick(100, false), Choice::Gemm);
            assert_eq!(c.pick(127, false), Choice::Gemm, "the same bucket");
        }
        // Other buckets know nothing yet.
        assert_eq!(c.pick(128, false), Choice::Measure);
        assert_eq!(c.pick(100, true), Choice::Measure);
        // A later measurement does not change a decision.
        assert!(c.record(100, false, 1e-4, 1e-3));
        assert_eq!(c.pick(100, false), Choice::Gemm);
        assert!(!c.record(100, true, 1e-4, 1e-3));
        assert_eq!(c.pick(100, true), Choice::Own);
    }
}
