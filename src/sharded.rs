//! Several devices as one backend: [`ShardedBackend`] gives each device a share of the
//! corpus's rows and merges their answers.
//!
//! Every call splits the corpus into contiguous row ranges, one per device, of about
//! equal size and each starting on a multiple of 32 rows (so a share's live bits are
//! whole words). It runs on every device at once, each device on its own thread and
//! against its own share ([`CorpusView::rows_range`]), which the device keeps resident
//! apart from the whole corpus. Nothing crosses between devices.
//!
//! **Why the merge is exact.** A device's `k` best hold every row of its share that can
//! be among the global `k` best, so the `k` best of all the devices' hits, by score and
//! then lower row, are the answer one device would give over the whole corpus: cosine
//! scores are the same FP32 values whichever device computes them. For inner product
//! and L2 the hits are candidates, which the executor above re-scores in f64 and
//! certifies as it does for one device: every row left out scored at most the worst
//! merged candidate's approximate score, because it scored at most its own device's
//! worst, and the merged worst is at least every device's worst.
//!
//! **Failures.** A device that fails fails the call with its error (the first device's,
//! in device order, when several fail), after every device has returned; nothing
//! partial comes back, and the executor retries in smaller chunks or on the CPU as it
//! does for one device.
//!
//! **When it does not pay.** A call's fixed cost (a thread per extra device, the merge)
//! is tens of microseconds; on corpora of a few thousand rows one device is as fast.
//! Each device reads only its share, so a memory-bound call speeds up with the device
//! count, and a corpus too large for one device fits across several.
//!
//! The backends it combines are any [`Backend`]s; the CUDA backend builds one over its
//! devices when the driver reports more than one.

use crate::backend::{Backend, BackendError, BackendKind, Rates};
use crate::corpus::CorpusView;
use crate::hit::Hit;
use crate::matrix::{Matrix, MatrixRef, Scores};
use crate::metric::Metric;
use std::cell::Cell;
use std::cmp::Ordering;
use std::ops::Range;
use std::sync::Arc;

thread_local! {
    /// The most passes over its share any device made in the last call on this thread.
    static LAST_PASSES: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Shares start on multiples of this many rows: one word of live bits.
const SHARE_ALIGN: usize = 32;

/// One backend over several devices, each serving a share of the corpus's rows (see the
/// module docs).
#[derive(Debug)]
pub(crate) struct ShardedBackend {
    name: String,
    devices: Vec<Arc<dyn Backend>>,
    rates: Rates,
}

/// What one device returned, with the thread-local notes of its call.
struct DeviceAnswer<T> {
    value: T,
    passes: Option<usize>,
    rescored: Option<usize>,
}

impl ShardedBackend {
    /// One backend over `devices` (at least one), in device order.
    pub(crate) fn new(devices: Vec<Arc<dyn Backend>>) -> Self {
        assert!(!devices.is_empty(), "a sharded backend needs a device");
        let first = devices[0].name();
        let name = if devices.iter().all(|d| d.name() == first) {
            format!("{} × {first}", devices.len())
        } else {
            devices
                .iter()
                .map(|d| d.name())
                .collect::<Vec<_>>()
                .join(" + ")
        };
        let rates = devices.iter().fold(
            Rates {
                flops: 0.0,
                bytes_per_sec: 0.0,
                overhead: std::time::Duration::ZERO,
            },
            |acc, d| {
                let r = d.rates();
                Rates {
                    flops: acc.flops + r.flops,
                    bytes_per_sec: acc.bytes_per_sec + r.bytes_per_sec,
                    overhead: acc.overhead.max(r.overhead),
                }
            },
        );
        Self {
            name,
            devices,
            rates,
        }
    }

    /// The row ranges of an `n`-row corpus, one per device in order (fewer when `n` has
    /// fewer than one aligned block of rows per device), none empty.
    pub(crate) fn shares(&self, n: usize) -> Vec<Range<usize>> {
        shares(n, self.devices.len())
    }

    /// Runs `call` for every share on its device, the first on this thread and the others
    /// on threads of their own, and returns the answers in share order, or the first
    /// share's error. Passes and re-scored rows noted on the devices' threads are noted
    /// on this one, added to what it had noted before.
    fn each_share<T: Send>(
        &self,
        shares: &[(usize, Range<usize>)],
        call: impl Fn(&dyn Backend, Range<usize>) -> Result<T, BackendError> + Sync,
    ) -> Result<Vec<T>, BackendError> {
        // Taken first: the first share's count is taken on this thread after its call.
        let earlier = crate::quant::take_rescored();
        let run = |(device, range): &(usize, Range<usize>)| {
            let value = call(self.devices[*device].as_ref(), range.clone());
            let passes = self.devices[*device].take_corpus_passes();
            let rescored = crate::quant::take_rescored();
            value.map(|value| DeviceAnswer {
                value,
                passes,
                rescored,
            })
        };
        let answers: Vec<Result<DeviceAnswer<T>, BackendError>> = match shares {
            [] => Vec::new(),
            [only] => vec![run(only)],
            [first, rest @ ..] => std::thread::scope(|scope| {
                let handles: Vec<_> = rest
                    .iter()
                    .map(|share| scope.spawn(move || run(share)))
                    .collect();
                let mut out = vec![run(first)];
                for h in handles {
                    match h.join() {
                        Ok(answer) => out.push(answer),
                        Err(panic) => std::panic::resume_unwind(panic),
                    }
                }
                out
            }),
        };
        let mut passes = None;
        let mut rescored = earlier;
        let mut values = Vec::with_capacity(answers.len());
        let mut failed = None;
        for answer in answers {
            match answer {
                Ok(a) => {
                    passes = passes.max(a.passes);
                    if let Some(r) = a.rescored {
                        rescored = Some(rescored.unwrap_or(0) + r);
                    }
                    values.push(a.value);
                }
                Err(e) => {
                    failed.get_or_insert(e);
                }
            }
        }
        LAST_PASSES.with(|c| c.set(passes));
        if let Some(r) = rescored {
            crate::quant::note_rescored(r);
        }
        match failed {
            Some(e) => Err(e),
            None => Ok(values),
        }
    }
}

/// The row ranges of an `n`-row corpus over `devices` devices (see
/// [`ShardedBackend::shares`]).
fn shares(n: usize, devices: usize) -> Vec<Range<usize>> {
    let per = n
        .div_ceil(devices.max(1))
        .div_ceil(SHARE_ALIGN)
        .max(1)
        .saturating_mul(SHARE_ALIGN);
    (0..n)
        .step_by(per)
        .map(|start| start..(start + per).min(n))
        .collect()
}

/// The `k` best of `parts`' hits (each already numbered in the whole corpus), by score
/// and then lower row.
fn merge_hits(parts: impl IntoIterator<Item = Vec<Hit>>, k: usize) -> Vec<Hit> {
    let mut all: Vec<Hit> = parts.into_iter().flatten().collect();
    all.sort_unstable_by(|a, b| {
        b.score
            .partial_cmp(&a.score)
            .unwrap_or(Ordering::Equal)
            .then(a.index.cmp(&b.index))
    });
    all.truncate(k);
    all
}

/// Merges per-share answers (one list of hits per query, numbered in the share) into one
/// list per query, numbered in the whole corpus.
fn merge_shares(
    answers: Vec<(usize, Vec<Vec<Hit>>)>,
    queries: usize,
    k: usize,
) -> Result<Vec<Vec<Hit>>, BackendError> {
    let mut per_query: Vec<Vec<Vec<Hit>>> = (0..queries).map(|_| Vec::new()).collect();
    for (start, hits) in answers {
        if hits.len() != queries {
            return Err(BackendError::LaunchFailed {
                reason: format!("a device answered {} of {queries} queries", hits.len()),
            });
        }
        for (q, mut list) in hits.into_iter().enumerate() {
            list.iter_mut().for_each(|h| h.index += start);
            per_query[q].push(list);
        }
    }
    Ok(per_query
        .into_iter()
        .map(|parts| merge_hits(parts, k))
        .collect())
}

/// The rows of `rows` (ascending) inside `range`, numbered from its start.
fn rows_in(rows: &[usize], range: &Range<usize>) -> Vec<usize> {
    let from = rows.partition_point(|&r| r < range.start);
    let to = rows.partition_point(|&r| r < range.end);
    rows[from..to].iter().map(|&r| r - range.start).collect()
}

impl Backend for ShardedBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }

    fn rates(&self) -> Rates {
        self.rates
    }

    fn cosine(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
    ) -> Result<Scores, BackendError> {
        let shares: Vec<_> = self.shares(corpus.rows()).into_iter().enumerate().collect();
        let parts = self.each_share(&shares, |dev, range| {
            dev.cosine(queries, corpus.rows_range(range))
        })?;
        let (q, n) = (queries.rows(), corpus.rows());
        let mut out = Matrix::zeros(q, n);
        for ((_, range), part) in shares.iter().zip(&parts) {
            if part.rows() != q || part.cols() != range.len() {
                return Err(BackendError::LaunchFailed {
                    reason: format!(
                        "a device scored {} × {} for {q} × {}",
                        part.rows(),
                        part.cols(),
                        range.len()
                    ),
                });
            }
            for i in 0..q {
                out.as_mut_slice()[i * n + range.start..i * n + range.end]
                    .copy_from_slice(part.row(i));
            }
        }
        Ok(out)
    }

    fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let shares: Vec<_> = self.shares(corpus.rows()).into_iter().enumerate().collect();
        let answers = self.each_share(&shares, |dev, range| {
            let start = range.start;
            let k = k.min(range.len());
            dev.top_k(queries, corpus.rows_range(range), k)
                .map(|hits| (start, hits))
        })?;
        merge_shares(answers, queries.rows(), k)
    }

    fn top_k_rows(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: &[usize],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let shares: Vec<_> = self
            .shares(corpus.rows())
            .into_iter()
            .enumerate()
            .filter(|(_, range)| !rows_in(rows, range).is_empty())
            .collect();
        let answers = self.each_share(&shares, |dev, range| {
            let local = rows_in(rows, &range);
            let start = range.start;
            let k = k.min(local.len());
            dev.top_k_rows(queries, corpus.rows_range(range), &local, k)
                .map(|hits| (start, hits))
        })?;
        merge_shares(answers, queries.rows(), k)
    }

    fn top_k_rows_per_query(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        lists: &[&[usize]],
        k: usize,
    ) -> Result<Vec<Vec<Hit>>, BackendError> {
        let (nq, d) = (queries.rows(), queries.cols());
        let shares: Vec<_> = self.shares(corpus.rows()).into_iter().enumerate().collect();
        let answers = self.each_share(&shares, |dev, range| {
            // Only the queries with rows in this share go to its device.
            let locals: Vec<Vec<usize>> = lists.iter().map(|l| rows_in(l, &range)).collect();
            let asked: Vec<usize> = (0..nq).filter(|&i| !locals[i].is_empty()).collect();
            let mut out: Vec<Vec<Hit>> = vec![Vec::new(); nq];
            if asked.is_empty() {
                return Ok((range.start, out));
            }
            let mut rows = Vec::with_capacity(asked.len() * d);
            asked
                .iter()
                .for_each(|&i| rows.extend_from_slice(queries.row(i)));
            let sub = MatrixRef::new(&rows, asked.len(), d).map_err(BackendError::Fatal)?;
            let sub_lists: Vec<&[usize]> = asked.iter().map(|&i| &locals[i][..]).collect();
            let hits =
                dev.top_k_rows_per_query(sub, corpus.rows_range(range.clone()), &sub_lists, k)?;
            if hits.len() != asked.len() {
                return Err(BackendError::LaunchFailed {
                    reason: format!(
                        "a device answered {} of {} queries",
                        hits.len(),
                        asked.len()
                    ),
                });
            }
            for (&i, h) in asked.iter().zip(hits) {
                out[i] = h;
            }
            Ok((range.start, out))
        })?;
        merge_shares(answers, nq, k)
    }

    fn supports_metric(&self, metric: Metric) -> bool {
        self.devices.iter().all(|d| d.supports_metric(metric))
    }

    fn serves_filters(&self) -> bool {
        self.devices.iter().all(|d| d.serves_filters())
    }

    fn max_k(&self) -> Option<usize> {
        self.devices.iter().filter_map(|d| d.max_k()).min()
    }

    fn take_corpus_passes(&self) -> Option<usize> {
        LAST_PASSES.with(Cell::take)
    }

    fn release_cached_memory(&self) {
        self.devices.iter().for_each(|d| d.release_cached_memory());
    }

    fn gemm_description(&self) -> Option<String> {
        self.devices[0].gemm_description()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_cover_the_rows_once_aligned_and_none_empty() {
        for devices in 1..=5 {
            for n in [1, 2, 31, 32, 33, 64, 65, 100, 1000, 4097] {
                let s = shares(n, devices);
                assert!(
                    !s.is_empty() && s.len() <= devices,
                    "{n} rows, {devices}: {s:?}"
                );
                assert_eq!(s[0].start, 0);
                assert_eq!(s.last().unwrap().end, n);
                for w in s.windows(2) {
                    assert_eq!(w[0].end, w[1].start);
                }
                for r in &s {
                    assert!(!r.is_empty() && r.start % SHARE_ALIGN == 0, "{s:?}");
                }
            }
        }
        assert_eq!(shares(1000, 2), vec![0..512, 512..1000]);
        assert_eq!(shares(40, 2), vec![0..32, 32..40]);
    }

    #[test]
    fn merging_keeps_the_best_and_breaks_ties_by_the_lower_row() {
        let h = |index, score| Hit { index, score };
        let merged = merge_shares(
            vec![
                (0, vec![vec![h(3, 0.9), h(1, 0.5)]]),
                (32, vec![vec![h(0, 0.9), h(2, 0.7)]]),
            ],
            1,
            3,
        )
        .unwrap();
        assert_eq!(merged, vec![vec![h(3, 0.9), h(32, 0.9), h(34, 0.7)]]);
        // A device that answers the wrong number of queries fails the call.
        assert!(merge_shares(vec![(0, vec![])], 1, 3).is_err());
    }
}
