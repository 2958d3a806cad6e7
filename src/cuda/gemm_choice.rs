//! Which way a batch is scored when cuBLAS is loaded: its GEMM, or the own kernels. The
//! crossover depends on the device, the cuBLAS version, `k` and the shape, so it is
//! measured, per batch size (powers of two above [`SMALL_Q`] queries) and per kind of
//! call (fused top-k, k ≤ 32, or not): each way's first call is timed on the device, then
//! the faster serves, and every 32nd call re-times the slower one so that a change (a
//! warmer cache, another process on the GPU) is noticed.
//!
//! Batches of up to [`SMALL_Q`] queries always take the own memory-bound kernels: they
//! read the corpus once for all their queries, which a GEMM into a score matrix cannot
//! beat.

use super::program::SMALL_Q;
use parking_lot::Mutex;

/// How the CUDA backend scores batches of more than 8 queries.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum GemmPath {
    /// cuBLAS's GEMM or the own kernels, whichever the device measured faster for the
    /// batch size (the own kernels when cuBLAS is not found). The default.
    #[default]
    Measured,
    /// Always cuBLAS's GEMM when it is loaded.
    Cublas,
    /// Never cuBLAS.
    OwnKernels,
}

/// Buckets: ⌊log2 nq⌋ from 3 (9–15 queries) to 16, times fused or not.
const BUCKETS: usize = 14;
/// Every this many calls of a bucket, the slower way is timed again.
const RETIME_EVERY: u64 = 32;
/// Weight of a new timing in a bucket's average.
const NEW_WEIGHT: f64 = 0.3;

#[derive(Clone, Copy, Default)]
struct Bucket {
    /// Device seconds per query·row·dimension of each way: own kernels, GEMM.
    own: Option<f64>,
    gemm: Option<f64>,
    calls: u64,
}

/// The measured choice. See the module docs.
pub(super) struct GemmChoice {
    buckets: Mutex<[[Bucket; 2]; BUCKETS]>,
}

fn bucket(nq: usize) -> usize {
    (nq.max(1).ilog2() as usize)
        .saturating_sub(3)
        .min(BUCKETS - 1)
}

impl GemmChoice {
    pub(super) fn new() -> Self {
        Self {
            buckets: Mutex::new([[Bucket::default(); 2]; BUCKETS]),
        }
    }

    /// Whether a call of `nq` queries (a fused top-k when `fused`) takes the GEMM.
    pub(super) fn pick(&self, nq: usize, fused: bool) -> bool {
        if nq <= SMALL_Q {
            return false;
        }
        let mut all = self.buckets.lock();
        let b = &mut all[bucket(nq)][fused as usize];
        b.calls += 1;
        match (b.own, b.gemm) {
            (None, _) => false,
            (_, None) => true,
            (Some(own), Some(gemm)) => {
                let faster_is_gemm = gemm < own;
                if b.calls.is_multiple_of(RETIME_EVERY) {
                    !faster_is_gemm
                } else {
                    faster_is_gemm
                }
            }
        }
    }

    /// Records a call's device time: `secs` for `nq` queries over `rows` rows of `dim`.
    pub(super) fn record(
        &self,
        nq: usize,
        fused: bool,
        gemm: bool,
        secs: f64,
        rows: usize,
        dim: usize,
    ) {
        if nq <= SMALL_Q {
            return;
        }
        let per = secs / (nq as f64 * rows.max(1) as f64 * dim.max(1) as f64);
        if !per.is_finite() || per <= 0.0 {
            return;
        }
        let mut all = self.buckets.lock();
        let b = &mut all[bucket(nq)][fused as usize];
        let slot = if gemm { &mut b.gemm } else { &mut b.own };
        *slot = Some(slot.map_or(per, |old| old + NEW_WEIGHT * (per - old)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_way_is_timed_then_the_faster_serves_and_the_slower_is_retimed() {
        let c = GemmChoice::new();
        assert!(!c.pick(8, false), "small batches never take the GEMM");
        // Own kernels first, then the GEMM, each until timed.
        assert!(!c.pick(100, false));
        c.record(100, false, false, 2e-3, 1000, 64);
        assert!(c.pick(100, false));
        c.record(100, false, true, 1e-3, 1000, 64);
        // Another bucket knows nothing yet.
        assert!(!c.pick(1000, false));
        assert!(!c.pick(100, true));
        // The GEMM was faster: it serves, but for one call in 32.
        let picks: Vec<bool> = (0..64).map(|_| c.pick(100, false)).collect();
        let own = picks.iter().filter(|&&g| !g).count();
        assert_eq!(own, 2, "{picks:?}");
        // The own kernels got faster: they serve from then on.
        for _ in 0..10 {
            c.record(100, false, false, 1e-4, 1000, 64);
        }
        assert!(!c.pick(100, false));
    }
}
