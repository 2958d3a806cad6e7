//! Compressed representations of rows for the scan tiers (issue 19): today the int8 rows
//! with certified bounds of [`int8`], and the tier of a whole matrix ([`tier`]), which a
//! certified search scans to find the rows that can be in the top-k before it re-scores
//! them with the f32 kernels.

pub(crate) mod int8;
pub(crate) mod tier;

use std::cell::Cell;

/// The most queries a certified search takes: up to this many, the CPU's streaming
/// kernels score each row against the call's queries in one step whatever rows are
/// beside it, so re-scoring the candidates in place gives the full scan's bits. Larger
/// batches (other kernel steps, the score tiles) scan in full.
pub const CERTIFIED_MAX_QUERIES: usize = 4;

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
