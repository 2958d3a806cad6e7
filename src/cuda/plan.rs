//! Device memory planning: how many corpus rows a call scores per chunk so that
//! everything it allocates fits in the free memory, and the count check on every chunk.
//! Pure arithmetic, tested without a GPU.

use super::program::SEGMENT;
use crate::error::{Error, Result};

/// What a call will allocate, chunk by chunk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ChunkPlan {
    /// Corpus rows scored per chunk (a multiple of [`SEGMENT`], or all rows).
    pub rows_per_chunk: usize,
    /// Number of chunks.
    pub chunks: usize,
    /// Device bytes the call holds at its peak.
    pub bytes: u64,
}

/// The largest chunk of rows (all `n`, or a multiple of [`SEGMENT`]) whose call fits in
/// `free · margin` bytes, where `bytes_at(rows)` is everything the call allocates with
/// that chunk size (its launch program's [`device_bytes`]); or `Err(bytes needed at the
/// smallest chunk)`.
///
/// [`device_bytes`]: super::program::Program::device_bytes
pub(crate) fn plan(
    free: u64,
    margin: f64,
    n: usize,
    bytes_at: impl Fn(usize) -> u64,
) -> std::result::Result<ChunkPlan, u64> {
    let budget = (free as f64 * margin) as u64;
    let mut r = n.div_ceil(SEGMENT) * SEGMENT;
    loop {
        let rows = r.clamp(1, n.max(1));
        let bytes = bytes_at(rows);
        if bytes <= budget {
            return Ok(ChunkPlan {
                rows_per_chunk: rows,
                chunks: n.div_ceil(rows).max(1),
                bytes,
            });
        }
        if r <= SEGMENT {
            return Err(bytes);
        }
        r = (r / 2).div_ceil(SEGMENT) * SEGMENT;
    }
}

/// Runs `f` on each `chunk`-sized range of `0..total` and checks that chunk `i` returns
/// exactly `per_item` values per item of its range: a wrong count is
/// [`Error::ChunkResultMismatch`], never silently joined.
pub(crate) fn process_in_chunks<T>(
    total: usize,
    chunk: usize,
    per_item: usize,
    mut f: impl FnMut(std::ops::Range<usize>) -> Result<Vec<T>>,
) -> Result<Vec<Vec<T>>> {
    let chunk = chunk.max(1);
    let mut out = Vec::with_capacity(total.div_ceil(chunk));
    for (i, start) in (0..total).step_by(chunk).enumerate() {
        let range = start..(start + chunk).min(total);
        let expected = range.len() * per_item;
        let part = f(range)?;
        if part.len() != expected {
            return Err(Error::ChunkResultMismatch {
                chunk: i,
                expected,
                got: part.len(),
            });
        }
        out.push(part);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::cuda::program::{self, Shape};
    use crate::cuda::Precision;

    fn top_k_bytes(q: usize, n: usize, dim: usize, k: usize) -> impl Fn(usize) -> u64 {
        let s = Shape {
            nq: q,
            n,
            dim,
            masked: true,
            precision: Precision::Fp32,
            stored: None,
            metric: crate::metric::Metric::Cosine,
            sms: 132,
            gemm: false,
            occupancy: Default::default(),
        };
        move |r| program::top_k_chunked(&s, k, r).device_bytes()
    }

    #[test]
    fn a_plan_fits_its_budget_and_is_the_largest_that_does() {
        // The chunked path: each chunk's scores live in device memory.
        let (q, n, dim, k) = (1024, 1_000_000, 768, 100);
        let bytes = top_k_bytes(q, n, dim, k);
        for free in [1u64 << 30, 2 << 30, 4 << 30, 80 << 30] {
            let p = plan(free, 0.8, n, &bytes).unwrap();
            assert!(p.bytes <= (free as f64 * 0.8) as u64, "{p:?}");
            assert_eq!(p.bytes, bytes(p.rows_per_chunk));
            assert_eq!(p.chunks, n.div_ceil(p.rows_per_chunk));
            assert!(p.rows_per_chunk.is_multiple_of(SEGMENT) || p.rows_per_chunk == n);
            // The next larger chunk would not fit (or this is already the whole corpus).
            let bigger = (p.rows_per_chunk * 2).min(n);
            assert!(
                p.rows_per_chunk == n || bytes(bigger) > (free as f64 * 0.8) as u64,
                "{p:?} could have been larger"
            );
        }
        // 1024 queries' scores for all 1M rows are 4 GB: 2 GiB free forces chunks.
        assert!(plan(2 << 30, 0.8, n, &bytes).unwrap().chunks > 1);
        // Plenty of memory: one chunk.
        assert_eq!(plan(80 << 30, 0.8, n, &bytes).unwrap().chunks, 1);
    }

    #[test]
    fn no_plan_when_even_the_smallest_chunk_does_not_fit() {
        let bytes = top_k_bytes(4096, 1_000_000, 768, 1024);
        let need = plan(1 << 20, 0.8, 1_000_000, &bytes).unwrap_err();
        assert_eq!(need, bytes(SEGMENT));
        assert!(need > 1 << 20);
    }

    #[test]
    fn small_corpora_are_one_chunk_of_their_own_size() {
        let p = plan(1 << 30, 0.8, 100, top_k_bytes(3, 100, 16, 50)).unwrap();
        assert_eq!((p.rows_per_chunk, p.chunks), (100, 1));
    }

    #[test]
    fn every_chunk_count_is_checked() {
        let ok = process_in_chunks(10, 4, 3, |r| Ok(vec![0u8; r.len() * 3])).unwrap();
        assert_eq!(ok.iter().map(Vec::len).collect::<Vec<_>>(), [12, 12, 6]);
        let bad = process_in_chunks(10, 4, 3, |r| {
            let short = usize::from(r.start == 4);
            Ok(vec![0u8; r.len() * 3 - short])
        });
        assert!(matches!(
            bad,
            Err(Error::ChunkResultMismatch {
                chunk: 1,
                expected: 12,
                got: 11
            })
        ));
    }
}
