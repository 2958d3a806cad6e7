//! The global merge of a sharded search: [`ShardHit`] and [`merge_top_k`].
//!
//! A corpus too big for one process (or one GPU) is cut into shards of consecutive rows.
//! Each shard searches on its own ([`HybridExecutor::search_shard`]) and numbers its hits
//! in the whole corpus: the shard's first row plus the row within it. The merge then keeps
//! the `k` best of every shard's lists per query.
//!
//! The answer is the one a single search of the concatenated corpus gives, because the
//! merge orders by what that search orders by:
//! * **cosine** by the f32 score (the backends' ranking);
//! * **inner product** and **L2** by the exact f64 value that the executor's re-score
//!   computes and certifies (see [`Metric`]), carried as [`ShardHit::key`]: two hits whose
//!   f32 scores round alike keep their exact order across shards too;
//! * ties on the key go to the lower global row, as on one machine.
//!
//! It holds when every shard scores its rows with the same arithmetic as the single
//! search would: the same backend kind and the same batch of queries (on one CPU build, or
//! one GPU model, it does). A cosine shard that runs on a GPU while the whole search would
//! run on the CPU may round a score differently in its last bit, and so order two rows
//! that tie to within a rounding differently.
//!
//! **Nothing missing passes as complete**: every shard must answer for every query (a
//! shard with fewer query lists is [`Error::ChunkResultMismatch`]), and the caller must
//! give every shard. The merge cannot know about a shard it was not handed; the Python
//! package's Ray fan-out checks that every shard answered before it merges.
//!
//! [`HybridExecutor::search_shard`]: crate::HybridExecutor::search_shard

use crate::error::{Error, Result};
use crate::metric::Metric;
use std::cmp::Ordering;

/// One hit of a shard's search, numbered in the whole (concatenated) corpus.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ShardHit {
    /// The row in the concatenated corpus: the shard's first row plus the row in the
    /// shard.
    pub row: u64,
    /// The score as one search reports it: cosine, inner product or squared L2 distance.
    pub score: f32,
    /// What ranks it: the score itself for cosine; the exact f64 inner product or squared
    /// L2 distance for the other metrics (what one search's exact re-score orders by).
    pub key: f64,
}

/// Whether `a` ranks before `b` under `metric`: the better key, then the lower row.
fn order(metric: Metric, a: &ShardHit, b: &ShardHit) -> Ordering {
    let by_key = match metric {
        Metric::L2 => a.key.total_cmp(&b.key),
        _ => b.key.total_cmp(&a.key),
    };
    by_key.then(a.row.cmp(&b.row))
}

/// The `k` best hits per query of every shard's search, best first: the answer of one
/// search over the concatenated corpus (see the [module docs](self)).
///
/// `shards[s][q]` is shard `s`'s hit list for query `q`, in any order. Fewer than `k`
/// hits in all gives them all.
///
/// ```
/// use hybridvec::{merge_top_k, Metric, ShardHit};
///
/// let hit = |row, score: f32| ShardHit { row, score, key: score as f64 };
/// // Two shards, one query: rows 0-2 in the first, 3-5 in the second.
/// let first = vec![vec![hit(2, 0.9), hit(0, 0.5)]];
/// let second = vec![vec![hit(4, 0.9), hit(3, 0.7)]];
/// let merged = merge_top_k(Metric::Cosine, 3, &[first, second])?;
/// // 0.9 ties: the lower global row first.
/// let rows: Vec<u64> = merged[0].iter().map(|h| h.row).collect();
/// assert_eq!(rows, [2, 4, 3]);
/// # Ok::<(), hybridvec::Error>(())
/// ```
///
/// Errors:
/// * [`Error::InvalidK`] for `k = 0`, and [`Error::EmptyInput`] for no shards;
/// * [`Error::ChunkResultMismatch`] when a shard answers for another number of queries
///   than the first shard (`chunk` names the shard);
/// * [`Error::InvalidConfig`] for a NaN key, or a row that two hits of one query share
///   (shards that overlap).
pub fn merge_top_k(
    metric: Metric,
    k: usize,
    shards: &[Vec<Vec<ShardHit>>],
) -> Result<Vec<Vec<ShardHit>>> {
    if k == 0 {
        return Err(Error::InvalidK { k, rows: 0 });
    }
    let Some(first) = shards.first() else {
        return Err(Error::EmptyInput { what: "shards" });
    };
    let queries = first.len();
    if let Some((s, shard)) = shards.iter().enumerate().find(|(_, s)| s.len() != queries) {
        return Err(Error::ChunkResultMismatch {
            chunk: s,
            expected: queries,
            got: shard.len(),
        });
    }
    (0..queries)
        .map(|q| {
            let mut all: Vec<ShardHit> = shards.iter().flat_map(|s| s[q].iter().copied()).collect();
            if let Some(h) = all.iter().find(|h| h.key.is_nan()) {
                return Err(Error::InvalidConfig(format!(
                    "query {q}: the hit of row {} has a NaN key",
                    h.row
                )));
            }
            all.sort_unstable_by(|a, b| order(metric, a, b));
            let mut rows: Vec<u64> = all.iter().map(|h| h.row).collect();
            rows.sort_unstable();
            if let Some(w) = rows.windows(2).find(|w| w[0] == w[1]) {
                return Err(Error::InvalidConfig(format!(
                    "query {q}: row {} comes from two shards (do the shards overlap?)",
                    w[0]
                )));
            }
            all.truncate(k);
            Ok(all)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hit(row: u64, key: f64) -> ShardHit {
        ShardHit {
            row,
            score: key as f32,
            key,
        }
    }

    #[test]
    fn the_merge_orders_by_key_then_row_and_keeps_k() {
        let a = vec![vec![hit(5, 1.0), hit(1, 3.0)], vec![]];
        let b = vec![vec![hit(7, 3.0), hit(9, 2.0)], vec![hit(8, 0.5)]];
        let m = merge_top_k(Metric::InnerProduct, 3, &[a.clone(), b.clone()]).unwrap();
        let rows = |l: &[ShardHit]| l.iter().map(|h| h.row).collect::<Vec<_>>();
        assert_eq!(rows(&m[0]), [1, 7, 9]);
        assert_eq!(rows(&m[1]), [8]);
        let m = merge_top_k(Metric::L2, 10, &[a, b]).unwrap();
        assert_eq!(rows(&m[0]), [5, 9, 1, 7]);
    }

    #[test]
    fn keys_that_round_to_one_f32_keep_their_exact_order() {
        let near = 1.0 + f64::EPSILON * 4.0;
        assert_eq!(near as f32, 1.0f32);
        let m = merge_top_k(
            Metric::InnerProduct,
            2,
            &[vec![vec![hit(0, 1.0)]], vec![vec![hit(1, near)]]],
        )
        .unwrap();
        assert_eq!(m[0][0].row, 1);
    }

    #[test]
    fn misuse_is_a_typed_error() {
        let one = vec![vec![hit(0, 1.0)]];
        assert!(matches!(
            merge_top_k(Metric::Cosine, 0, std::slice::from_ref(&one)),
            Err(Error::InvalidK { .. })
        ));
        assert!(matches!(
            merge_top_k(Metric::Cosine, 1, &[]),
            Err(Error::EmptyInput { .. })
        ));
        assert!(matches!(
            merge_top_k(Metric::Cosine, 1, &[one.clone(), vec![]]),
            Err(Error::ChunkResultMismatch {
                chunk: 1,
                expected: 1,
                got: 0
            })
        ));
        assert!(matches!(
            merge_top_k(Metric::Cosine, 1, &[one.clone(), one.clone()]),
            Err(Error::InvalidConfig(_))
        ));
        assert!(matches!(
            merge_top_k(Metric::Cosine, 1, &[vec![vec![hit(0, f64::NAN)]]]),
            Err(Error::InvalidConfig(_))
        ));
    }
}
