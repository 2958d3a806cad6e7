//! One shard's part of a sharded search: hits numbered in the whole corpus and keyed for
//! [`merge_top_k`](crate::merge_top_k) (see [`crate::merge`], the module).

use super::exact::{dot64, l2_64};
use super::{store_view, ExecutionReport, HybridExecutor, SearchOptions};
use crate::corpus::CorpusView;
use crate::error::{Error, Result};
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use crate::merge::ShardHit;
use crate::metric::Metric;
use crate::warm::WarmStore;

impl HybridExecutor {
    /// [`search`](Self::search) of one shard, whose first row is row `first_row` of the
    /// whole corpus: the hits carry global rows and the keys that
    /// [`merge_top_k`](crate::merge_top_k) orders by, so that merging every shard's
    /// answer gives the answer of one search over the concatenated corpus.
    ///
    /// ```
    /// use hybridvec::{merge_top_k, Corpus, ExecutorConfig, HybridExecutor, MatrixRef, Metric, SearchOptions};
    ///
    /// let rows = [1.0, 0.0,  0.0, 1.0,  3.0, 4.0,  1.0, 1.0];
    /// let exec = HybridExecutor::new(ExecutorConfig::default())?;
    /// let options = SearchOptions::new(Metric::L2);
    /// let q = [1.0, 0.5];
    /// let q = MatrixRef::new(&q, 1, 2)?;
    /// // Two shards of two rows each; the second starts at global row 2.
    /// let a = exec.search_shard(q, &Corpus::new(rows[..4].to_vec(), 2)?, 2, &options, 0)?;
    /// let b = exec.search_shard(q, &Corpus::new(rows[4..].to_vec(), 2)?, 2, &options, 2)?;
    /// let merged = merge_top_k(Metric::L2, 2, &[a, b])?;
    /// let whole = exec.search(q, &Corpus::new(rows.to_vec(), 2)?, 2, &options)?;
    /// let rows: Vec<usize> = merged[0].iter().map(|h| h.row as usize).collect();
    /// assert_eq!(rows, whole[0].iter().map(|h| h.index).collect::<Vec<_>>());
    /// # Ok::<(), hybridvec::Error>(())
    /// ```
    ///
    /// Errors: those of `search`, and [`Error::InvalidConfig`] when a global row would
    /// pass `u64::MAX`.
    pub fn search_shard<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
        options: &SearchOptions,
        first_row: u64,
    ) -> Result<Vec<Vec<ShardHit>>> {
        self.search_shard_with_report(queries, corpus, k, options, first_row)
            .map(|(h, _)| h)
    }

    /// [`search_shard`](Self::search_shard), with the [`ExecutionReport`].
    pub fn search_shard_with_report<'c>(
        &self,
        queries: MatrixRef<'_>,
        corpus: impl Into<CorpusView<'c>>,
        k: usize,
        options: &SearchOptions,
        first_row: u64,
    ) -> Result<(Vec<Vec<ShardHit>>, ExecutionReport)> {
        let corpus = corpus.into();
        let (hits, report) = self.search_with_report(queries, corpus, k, options)?;
        Ok((
            keyed(queries, corpus, options.metric, hits, first_row)?,
            report,
        ))
    }

    /// [`search_shard`](Self::search_shard) over a [`WarmStore`]'s visible rows, as
    /// [`search_store`](Self::search_store) searches them: a hit's global row is
    /// `first_row` plus its row in the store (so shards of stores concatenate their rows,
    /// deleted ones included, in shard order); [`WarmStore::id_of`] of `row − first_row`
    /// names its record.
    ///
    /// Errors: those of `search_store`, and as `search_shard`.
    pub fn search_store_shard_with_report(
        &self,
        queries: MatrixRef<'_>,
        store: &WarmStore,
        k: usize,
        options: &SearchOptions,
        first_row: u64,
    ) -> Result<(Vec<Vec<ShardHit>>, ExecutionReport)> {
        let corpus = store.corpus();
        let (view, options) = store_view(store, &corpus, options)?;
        let (hits, report) = self.search_with_report(queries, view, k, &options)?;
        Ok((
            keyed(queries, view, options.metric, hits, first_row)?,
            report,
        ))
    }
}

/// `hits` numbered from `first_row`, with their merge keys: the score for cosine, else the
/// exact f64 value the executor's re-score orders by.
fn keyed(
    queries: MatrixRef<'_>,
    corpus: CorpusView<'_>,
    metric: Metric,
    hits: Vec<Vec<Hit>>,
    first_row: u64,
) -> Result<Vec<Vec<ShardHit>>> {
    let mut wide = Vec::new();
    hits.into_iter()
        .enumerate()
        .map(|(q, hs)| {
            hs.into_iter()
                .map(|h| {
                    let row = first_row.checked_add(h.index as u64).ok_or_else(|| {
                        Error::InvalidConfig(format!(
                            "first row {first_row} + row {} passes u64::MAX",
                            h.index
                        ))
                    })?;
                    let key = match metric {
                        Metric::Cosine => h.score as f64,
                        Metric::InnerProduct => dot64(
                            queries.row(q),
                            corpus.rows_f32(h.index..h.index + 1, &mut wide),
                        ),
                        Metric::L2 => l2_64(
                            queries.row(q),
                            corpus.rows_f32(h.index..h.index + 1, &mut wide),
                        ),
                    };
                    Ok(ShardHit {
                        row,
                        score: h.score,
                        key,
                    })
                })
                .collect()
        })
        .collect()
}
