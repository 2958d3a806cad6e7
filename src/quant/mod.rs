//! Compressed representations of rows for the scan tiers (issue 19): today the int8 rows
//! with certified bounds of [`int8`], and the tier of a whole matrix ([`tier`]), which a
//! certified search scans to find the rows that can be in the top-k before it re-scores
//! them with the f32 kernels. With AVX-512 VNNI, up to 24 queries stream the row-major
//! codes in groups of eight (`few`) and more go through packed panels (`batch`);
//! elsewhere each row is scored for each query in turn (`tier`).

#[cfg(target_arch = "x86_64")]
mod batch;
#[cfg(target_arch = "x86_64")]
mod few;
pub(crate) mod int8;
mod sieve;
pub(crate) mod tier;

use std::cell::Cell;

/// The most queries a certified search takes on a CPU without the VNNI scans (AVX-512
/// VNNI), which serve batches of every size. The per-query scan computes each row's int8
/// dot product and bounds once per query, so it is compute-bound past one query: at 1M ×
/// 768 on 2 AVX-512 cores it beat the f32 scan 3.4× at Q = 1, 1.5× at 4, 1.1× at 8 and
/// lost at 16 (0.6×). Larger batches scan in full there. (The CPU's streaming kernels,
/// which serve batches up to 15 or 23 queries, score each row the same way whatever rows
/// are beside it, so re-scoring the candidates in place gives the full scan's bits; the
/// score tiles likewise score each pair alone, so larger batches re-score gathered
/// candidates.)
pub const CERTIFIED_MAX_QUERIES: usize = 4;

/// Whether this CPU scans an int8 tier for many queries at once (AVX-512 VNNI), for rows
/// of `dim` values: certified searches then serve batches of every size.
pub(crate) fn batched_scan(dim: usize) -> bool {
    #[cfg(target_arch = "x86_64")]
    return batch::available(dim);
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = dim;
        false
    }
}

/// The most queries the few-query scans (AVX2, AVX-512 VNNI) serve in one pass.
pub(crate) const FEW_MAX_QUERIES: usize = 24;

/// The largest dimension the SIMD int8 scans take: their i32 lanes hold `255·127·D`
/// exactly up to here. Past it only the portable scan (i64 sums) runs.
pub(crate) const MAX_SCAN_DIM: usize = 1 << 16;

/// The int8 scan kernels a certified search may run: the CPU backend's SIMD level decides
/// (so `HYBRIDVEC_SIMD` caps it), and each holds only where the CPU has its features.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ScanLevel {
    /// The portable per-query scan.
    Portable,
    /// The few-query scan by AVX2 (`vpmaddubsw`, `vpmaddwd`), up to 24 queries.
    Avx2,
    /// The few-query and batched scans by AVX-512 VNNI (`vpdpbusd`).
    Avx512Vnni,
}

thread_local! {
    static RESCORED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Records that a certified search on this thread re-scored `rows` rows.
pub(crate) fn note_rescored(rows: usize) {
    RESCORED.with(|c| c.set(Some(c.get().unwrap_or(0) + rows)));
}

/// The rows re-scored by certified searches on this thread since the last call (`None`
/// when none ran).
pub(crate) fn take_rescored() -> Option<usize> {
    RESCORED.with(Cell::take)
}
