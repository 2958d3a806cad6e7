//! Exact top-k on the CPU: score blocks of corpus rows against every query (score tiles for
//! large batches, the streaming kernels for small ones) and fold each block straight into
//! one selection per query, never holding the `Q × N` score matrix.
//!
//! * **One selection per query, shared by all threads.** The queries are split into
//!   chunks, each behind its own lock, so two threads fold different chunks of their
//!   blocks at the same time. A selection per piece of the corpus, merged at the end, made
//!   every piece start from an empty selection that lets every score in until it holds `k`
//!   hits: with `k = 1000` most of the time went there, and `Q × k` hits per piece were
//!   held at once.
//! * **Blocks in bit-reversed order** (for large `k`; small `k` reads them in order,
//!   which streams memory fastest). Whatever prefix of the order has been folded is
//!   spread evenly over the corpus, so the hits seen so far are a fair sample of it.
//! * **Speculative floors for large `k`.** From that sample, a query that has seen `t` of
//!   `N` rows expects about `μ = k·t/N` of them in its final top-k; its selection keeps
//!   only the best `μ + 6√μ + 16` ([`spec_rank`]), and scores below the worst of those
//!   are not offered. The floor thus tracks the final `k`-th best score from the first
//!   blocks on instead of the `k`-th best of the rows seen, which lets about `k·ln(N/k)`
//!   extra candidates in. The guess is checked at the end (see `select`): a query whose
//!   final `k`-th best hit is worse than a kept guess is selected again without guessing,
//!   so the result is exact whatever the data; on data like the tests' and benchmarks' it
//!   never happens.

use super::select::{selection_bytes, Key, TopKs, HEAP_MAX_K};
use super::{tile_scores, CpuBackend, SimdLevel, KERNEL_ROWS, STREAM_ROWS};
use crate::corpus::CorpusView;
use crate::hit::Hit;
use crate::matrix::MatrixRef;
use parking_lot::Mutex;
use rayon::prelude::*;
use std::ops::Range;

/// Corpus rows per block in the streaming path for `q` queries over `n` rows on `threads`
/// threads: [`STREAM_ROWS`], or fewer
/// * where the corpus would make fewer than [`STREAM_BLOCKS_PER_THREAD`] blocks per thread
///   (down to [`STREAM_MIN_ROWS`]): a few large blocks leave a thread idle at the end, and
///   with a large `k` their folds queue for the same selections;
/// * where the block's scores would pass 1 MiB (many queries on the scalar level), which
///   bounds the scratch memory per thread.
fn stream_rows(q: usize, n: usize, threads: usize) -> usize {
    let balanced = n
        .div_ceil(STREAM_BLOCKS_PER_THREAD * threads.max(1))
        .clamp(STREAM_MIN_ROWS, STREAM_ROWS);
    ((1 << 18) / q.max(1)).clamp(16, balanced)
}

/// See [`stream_rows`]. 15 × 10k × 64 with `k = 1024` took 0.55 ms in blocks of 2048 rows
/// and 0.48 in blocks of 1024 (2 threads); 15 × 200k × 384 took 13 % longer in blocks of
/// 1024 than of 2048 (each block's call to the kernels has a fixed cost).
const STREAM_BLOCKS_PER_THREAD: usize = 8;
/// The fewest rows per block [`stream_rows`] balances down to.
const STREAM_MIN_ROWS: usize = 1024;

/// The most bytes of selections one pass over the corpus holds (see [`queries_per_pass`]).
const PASS_SELECTION_BYTES: usize = 16 << 20;

/// The most bytes of queries one pass scores (see [`queries_per_pass`]).
const PASS_QUERY_BYTES: usize = 4 << 20;

/// The fewest queries a pass takes, however large `k` or the dimension is: fewer would
/// read the corpus once for every few queries.
const MIN_PASS_QUERIES: usize = 64;

/// How many of `q` queries of dimension `d` one pass over the corpus scores and selects
/// for at once (at least [`MIN_PASS_QUERIES`], or all `q` when fewer):
/// * **selections within [`PASS_SELECTION_BYTES`]**: a large `k` otherwise holds every
///   query's selection (half as many keys again as `k`) until the end, beside the hits
///   sorted out of it: 48 MiB of keys for 4096 queries with `k = 1024`;
/// * **queries within [`PASS_QUERY_BYTES`]**: every block of corpus rows is scored against
///   all of a pass's queries, which past a few MiB are read from memory rather than
///   cache. 4096 queries of 768 dimensions in one pass ran at 425 GFLOP/s, in passes of
///   1365 at 460 (2 cores, AVX-512).
///
/// Each further pass reads the corpus once more: at least 64 queries' score tiles of
/// work per read, small beside them.
pub(crate) fn queries_per_pass(q: usize, d: usize, k: usize, rows: usize) -> usize {
    let per_query = selection_bytes(1, k, rows).unwrap_or(usize::MAX);
    let by_selection = PASS_SELECTION_BYTES / per_query.max(1);
    let by_queries = PASS_QUERY_BYTES / d.saturating_mul(4).max(1);
    by_selection
        .min(by_queries)
        .max(MIN_PASS_QUERIES)
        .min(q.max(1))
}

/// Margin of [`spec_rank`], in standard deviations of the count it bounds.
const SPEC_SIGMAS: f64 = 6.0;
/// Constant margin of [`spec_rank`], for the first blocks, where the count is small.
const SPEC_SLACK: f64 = 16.0;

/// How many of the best hits among `seen` of `rows` corpus rows a query with a top-`k`
/// keeps when speculating (at most `k`).
///
/// The number of the query's final top-`k` among the rows seen is about hypergeometric,
/// with mean `μ = k·seen/rows` and a standard deviation below `√μ`, when the rows seen are
/// spread evenly over the corpus (the bit-reversed block order makes them so). The
/// `μ + 6√μ + 16` best then hold all of them but with a probability of the order of 10⁻⁹
/// per compaction (six standard deviations), and when they do not, the final check
/// catches it.
pub(super) fn spec_rank(k: usize, seen: usize, rows: usize) -> usize {
    let mu = k as f64 * seen.min(rows) as f64 / rows.max(1) as f64;
    let r = mu + SPEC_SIGMAS * mu.sqrt() + SPEC_SLACK;
    if r >= k as f64 {
        k
    } else {
        // `1 <= r < k`: the cast is exact enough and in range.
        r.ceil() as usize
    }
}

/// The block numbers `0..blocks` in bit-reversed order (of the next power of two): every
/// prefix of it, and every contiguous piece that rayon hands a thread, is spread evenly
/// over the corpus.
fn bit_reversed(blocks: usize) -> Vec<usize> {
    let bits = blocks.next_power_of_two().trailing_zeros();
    if bits == 0 {
        return (0..blocks).collect();
    }
    (0..blocks.next_power_of_two())
        .map(|i| i.reverse_bits() >> (usize::BITS - bits))
        .filter(|&b| b < blocks)
        .collect()
}

impl CpuBackend {
    /// Exact top-k of unit-norm `queries` against `corpus`, best first; with `gather`,
    /// against only those rows of it (ascending), read by index.
    pub(crate) fn top_k(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        gather: Option<&[usize]>,
    ) -> Vec<Vec<Hit>> {
        let (q, d) = (queries.rows(), queries.cols());
        let n = gather.map_or(corpus.rows(), <[usize]>::len);
        let passes = q.div_ceil(queries_per_pass(q, d, k, n)).max(1);
        let per_pass = q.div_ceil(passes).max(1);
        let mut hits = Vec::with_capacity(q);
        for first in (0..q).step_by(per_pass) {
            let part = queries.row_range(first..(first + per_pass).min(q));
            hits.extend(if <u64 as Key>::fits(n) {
                self.top_k_keyed::<u64>(part, corpus, k, gather)
            } else {
                self.top_k_keyed::<u128>(part, corpus, k, gather)
            });
        }
        // Positions in the gathered rows to corpus rows: both ascending, so ties keep
        // the lower index first.
        if let Some(rows) = gather {
            hits.iter_mut()
                .flatten()
                .for_each(|h| h.index = rows[h.index]);
        }
        hits
    }

    /// [`top_k`](Self::top_k) with hits kept as keys of type `K`, which must hold every
    /// row index of `corpus`: one pass with speculative floors, then the queries whose
    /// guess missed again without.
    pub(super) fn top_k_keyed<K: Key>(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        gather: Option<&[usize]>,
    ) -> Vec<Vec<Hit>> {
        let first = self.select::<K>(queries, corpus, k, true, gather);
        let missed: Vec<usize> = (0..first.len()).filter(|&i| first[i].is_none()).collect();
        let mut again = if missed.is_empty() {
            Vec::new()
        } else {
            tracing::debug!(
                queries = missed.len(),
                k,
                "top-k speculative floor missed; selecting again"
            );
            let sub: Vec<f32> = missed
                .iter()
                .flat_map(|&i| queries.row(i).iter().copied())
                .collect();
            match MatrixRef::new(&sub, missed.len(), queries.cols()) {
                Ok(sub) => self.select::<K>(sub, corpus, k, false, gather),
                // Not reached (the shape is valid); every query again is exact too.
                Err(_) => {
                    return self
                        .select::<K>(queries, corpus, k, false, gather)
                        .into_iter()
                        .map(Option::unwrap_or_default)
                        .collect()
                }
            }
        }
        .into_iter();
        // Without speculation every query has its hits.
        first
            .into_iter()
            .map(|hits| hits.unwrap_or_else(|| again.next().flatten().unwrap_or_default()))
            .collect()
    }

    /// One pass over the corpus: every query's top `k`, best first, or `None` where a
    /// speculative floor (only with `speculate`) missed.
    pub(super) fn select<K: Key>(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        k: usize,
        speculate: bool,
        gather: Option<&[usize]>,
    ) -> Vec<Option<Vec<Hit>>> {
        let q = queries.rows();
        let n = gather.map_or(corpus.rows(), <[usize]>::len);
        if q == 0 || n == 0 || k == 0 {
            return vec![Some(Vec::new()); q];
        }
        let packed = self.pack(queries);
        let block = if packed.is_some() {
            KERNEL_ROWS
        } else if gather.is_some() {
            // Rows read by index wait on memory one row at a time: smaller blocks spread
            // them over every thread (1 000 gathered rows made one block, on one thread).
            n.div_ceil(STREAM_BLOCKS_PER_THREAD * self.threads().max(1))
                .clamp(64, stream_rows(q, n, self.threads()).max(64))
        } else {
            stream_rows(q, n, self.threads())
        };
        // Heaps never speculate; they read the corpus in order, which streams it fastest.
        let speculate = speculate && k > HEAP_MAX_K;
        let selection = Selection::<K>::new(q, k, n, speculate, self.threads());
        let blocks = n.div_ceil(block);
        let order = if speculate {
            bit_reversed(blocks)
        } else {
            (0..blocks).collect()
        };
        self.pool.install(|| {
            order
                .into_par_iter()
                .for_each_init(Scratch::default, |scratch, b| {
                    let positions = b * block..((b + 1) * block).min(n);
                    // The block's rows: a range of the corpus, or gathered by index into
                    // this thread's buffers (which stay in cache).
                    let (corpus, rows) = match gather {
                        None => (corpus, positions.clone()),
                        Some(all) => {
                            let view = scratch.gathered.fill(corpus, &all[positions.clone()]);
                            (view, 0..positions.len())
                        }
                    };
                    let layout = match &packed {
                        Some(p) => {
                            let ld = tile_scores(p, corpus, rows.clone(), &mut scratch.fold.scores);
                            match corpus.row_bias() {
                                Some(bias) => {
                                    let (inv, bias) =
                                        (&corpus.inv_norms()[rows.clone()], &bias[rows.clone()]);
                                    scale_and_bias_tile(&mut scratch.fold.scores, ld, q, inv, bias);
                                    Layout::Scored { ld }
                                }
                                None => Layout::Rows { ld },
                            }
                        }
                        None => {
                            self.stream_scores(
                                queries,
                                corpus,
                                rows.clone(),
                                &mut scratch.fold.scores,
                            );
                            Layout::Columns
                        }
                    };
                    let inv = &corpus.inv_norms()[rows];
                    selection.fold(
                        self.level,
                        &mut scratch.fold,
                        layout,
                        inv,
                        positions.start,
                        b,
                    );
                });
            // Sorting q × k hits is work too (a million at Q = 1024, k = 1024): on all
            // cores.
            selection.into_sorted()
        })
    }

    /// Scores `rows` against every query with the streaming kernels into `scores`,
    /// query-major and already divided by the row norms:
    /// `scores[i * rows.len() + r] = cos(rows[r], query i)`.
    fn stream_scores(
        &self,
        queries: MatrixRef<'_>,
        corpus: CorpusView<'_>,
        rows: Range<usize>,
        scores: &mut Vec<f32>,
    ) {
        let q = queries.rows();
        scores.resize(rows.len() * q, 0.0);
        let inv = &corpus.inv_norms()[rows.clone()];
        corpus.scaled_dots(self.level, rows.clone(), queries.as_slice(), inv, scores);
        if let Some(bias) = corpus.row_bias() {
            add_bias_columns(scores, &bias[rows]);
        }
    }
}

/// `scores[i * n + r] += bias[r]` for every query `i` of a query-major block of
/// `n = bias.len()` rows.
pub(super) fn add_bias_columns(scores: &mut [f32], bias: &[f32]) {
    for column in scores.chunks_exact_mut(bias.len()) {
        column.iter_mut().zip(bias).for_each(|(s, &b)| *s += b);
    }
}

/// `tile[r * ld + i] = tile[r * ld + i] * scale[r] + bias[r]` for the first `q` queries
/// of every row `r` of a score tile.
pub(super) fn scale_and_bias_tile(
    tile: &mut [f32],
    ld: usize,
    q: usize,
    scale: &[f32],
    bias: &[f32],
) {
    for (r, (&w, &b)) in scale.iter().zip(bias).enumerate() {
        tile[r * ld..][..q].iter_mut().for_each(|s| *s = *s * w + b);
    }
}

/// Factors of 1, for a score tile already scaled.
static ONES: [f32; KERNEL_ROWS] = [1.0; KERNEL_ROWS];

/// How a block's scores lie in [`Scratch::scores`].
#[derive(Clone, Copy)]
enum Layout {
    /// Score tiles: row `r` at `[r * ld..]`, query `i` at `+ i`, not yet divided by the
    /// row's norm.
    Rows { ld: usize },
    /// Score tiles already scaled and biased (for L2): as `Rows`, final scores.
    Scored { ld: usize },
    /// The streaming kernels: query `i`'s run of the block's scores at `[i * rows..]`,
    /// already cosines.
    Columns,
}

/// One thread's buffers, reused from block to block.
#[derive(Default)]
struct Scratch {
    fold: FoldScratch,
    gathered: Gathered,
}

/// The scores of a block and the chunks of queries not yet folded for it.
#[derive(Default)]
struct FoldScratch {
    scores: Vec<f32>,
    /// Chunks of queries not yet folded for the current block.
    pending: Vec<usize>,
}

/// A block of rows gathered by index, with their factors.
#[derive(Default)]
struct Gathered {
    rows: Vec<f32>,
    scale: Vec<f32>,
    bias: Vec<f32>,
}

impl Gathered {
    /// Copies rows `rows` of `corpus` (with their factors and biases) into these
    /// buffers, and returns them as a view of `rows.len()` rows.
    fn fill<'g>(&'g mut self, corpus: CorpusView<'_>, rows: &[usize]) -> CorpusView<'g> {
        self.rows.clear();
        self.scale.clear();
        self.bias.clear();
        for &r in rows {
            corpus.push_row_f32(r, &mut self.rows);
            self.scale.push(corpus.inv_norms()[r]);
        }
        if let Some(bias) = corpus.row_bias() {
            self.bias.extend(rows.iter().map(|&r| bias[r]));
        }
        let bias = corpus.row_bias().map(|_| &self.bias[..]);
        corpus.gathered(&self.rows, &self.scale, bias)
    }
}

/// Every query's running top-k, shared by all tasks (see the module docs).
struct Selection<K> {
    chunks: Vec<Mutex<Chunk<K>>>,
    k: usize,
    rows: usize,
    speculate: bool,
}

/// The selections of queries `first..first + sel.lens.len()`.
struct Chunk<K> {
    first: usize,
    sel: TopKs<K>,
    /// Corpus rows folded so far.
    seen: usize,
}

impl<K: Key> Selection<K> {
    fn new(q: usize, k: usize, rows: usize, speculate: bool, threads: usize) -> Self {
        // About four chunks per thread, so threads seldom wait for one; in whole 16-lane
        // vectors of queries (and few enough for `u32` lanes). Splitting small batches
        // finer (down to one query per chunk) measured faster for 16 to 128 queries with
        // k = 1024 on an idle machine, but up to 40 % slower with another process on a
        // core: more locks per block, each a chance to wait for a descheduled holder.
        let chunk = (q.div_ceil(4 * threads.max(1)).div_ceil(16).max(1) * 16).min(1 << 16);
        let chunks = (0..q)
            .step_by(chunk)
            .map(|first| {
                Mutex::new(Chunk {
                    first,
                    sel: TopKs::new(chunk.min(q - first), k, rows),
                    seen: 0,
                })
            })
            .collect();
        Self {
            chunks,
            k,
            rows,
            speculate,
        }
    }

    /// Folds the scores of corpus rows `rows` (`scratch.scores[r * ld + i]` for row
    /// `rows.start + r` and query `i`, before dividing by the row's norm) into every
    /// query's selection. `b` (the block's number) staggers where threads start.
    fn fold(
        &self,
        level: SimdLevel,
        scratch: &mut FoldScratch,
        layout: Layout,
        inv: &[f32],
        first: usize,
        b: usize,
    ) {
        let scores = &scratch.scores;
        let pending = &mut scratch.pending;
        let nc = self.chunks.len();
        pending.clear();
        pending.extend((0..nc).map(|c| (c + b) % nc));
        let fold_chunk = |c: &mut Chunk<K>| {
            // Counting this whole block as seen errs towards keeping more.
            c.seen += inv.len();
            let rank = if self.speculate {
                spec_rank(self.k, c.seen, self.rows)
            } else {
                self.k
            };
            match layout {
                Layout::Rows { ld } => c
                    .sel
                    .fold_block(level, scores, ld, c.first, inv, first, rank),
                Layout::Scored { ld } => {
                    c.sel
                        .fold_block(level, scores, ld, c.first, &ONES[..inv.len()], first, rank)
                }
                Layout::Columns => {
                    c.sel
                        .fold_columns(level, scores, inv.len(), c.first, first, rank)
                }
            }
        };
        // Fold the chunks that are free first; wait only when all left are busy.
        while !pending.is_empty() {
            let before = pending.len();
            pending.retain(|&c| match self.chunks[c].try_lock() {
                Some(mut guard) => {
                    fold_chunk(&mut guard);
                    false
                }
                None => true,
            });
            if pending.len() == before {
                let c = pending.remove(0);
                fold_chunk(&mut self.chunks[c].lock());
            }
        }
    }

    /// Every query's sorted hits (`None`: a speculative floor missed), in query order.
    fn into_sorted(self) -> Vec<Option<Vec<Hit>>> {
        self.chunks
            .into_iter()
            .flat_map(|c| c.into_inner().sel.into_sorted())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::corpus::Corpus;
    use crate::cpu::CpuConfig;

    #[test]
    fn bit_reversed_is_a_permutation_spread_over_the_range() {
        for blocks in [0usize, 1, 2, 3, 5, 8, 13, 96, 1000] {
            let order = bit_reversed(blocks);
            let mut sorted = order.clone();
            sorted.sort_unstable();
            assert_eq!(sorted, (0..blocks).collect::<Vec<_>>(), "{blocks}");
        }
        assert_eq!(bit_reversed(8), [0, 4, 2, 6, 1, 5, 3, 7]);
    }

    #[test]
    fn passes_bound_the_selections_and_the_queries() {
        for (q, d, k, rows) in [
            (4096, 768, 1024, 100_000),
            (4096, 768, 10, 100_000),
            (20, 768, 1024, 100_000),
            (1000, 100_000, 5, 1000),
            (5000, 16, 1_000_000, 10_000_000),
        ] {
            let per = queries_per_pass(q, d, k, rows);
            assert!((1..=q).contains(&per), "{q} {d} {k} {rows}: {per}");
            if per > MIN_PASS_QUERIES {
                assert!(selection_bytes(per, k, rows).unwrap() <= PASS_SELECTION_BYTES + 4096);
                assert!(per * d * 4 <= PASS_QUERY_BYTES);
            }
            assert!(per >= MIN_PASS_QUERIES.min(q));
        }
        // Small batches are never split.
        assert_eq!(queries_per_pass(20, 768, 1024, 100_000), 20);
        assert_eq!(queries_per_pass(1024, 768, 10, 100_000), 1024);
        assert_eq!(queries_per_pass(0, 768, 10, 100_000), 1);
    }

    #[test]
    fn spec_rank_keeps_a_wide_margin_and_at_most_k() {
        assert_eq!(spec_rank(1000, 0, 100_000), 16);
        assert_eq!(spec_rank(1000, 100_000, 100_000), 1000);
        assert_eq!(spec_rank(1000, 200_000, 100_000), 1000);
        assert_eq!(spec_rank(5, 10, 10), 5);
        // A tenth of the rows: μ = 100, so 100 + 60 + 16.
        assert_eq!(spec_rank(1000, 10_000, 100_000), 176);
    }

    fn unit(mut v: Vec<f32>, d: usize) -> Vec<f32> {
        for row in v.chunks_exact_mut(d) {
            crate::matrix::normalize(row);
        }
        v
    }

    /// Queries near one direction, and a corpus whose first block of rows (the first one
    /// folded) is near it too while the rest is random: the first block's best hits look
    /// like a tiny fraction of the corpus, so the guess is far too high and misses.
    fn misleading(q: usize, n: usize, d: usize, near: usize) -> (Vec<f32>, Corpus) {
        let dir = crate::data::random_vec(d, 70, 0);
        let noisy = |seed: u64, rows: usize| {
            let noise = crate::data::random_vec(rows * d, seed, 0);
            noise
                .chunks_exact(d)
                .flat_map(|r| r.iter().zip(&dir).map(|(e, x)| x + 0.05 * e))
                .collect::<Vec<f32>>()
        };
        let mut rows = noisy(71, near);
        rows.extend(crate::data::random_vec((n - near) * d, 72, 0));
        (unit(noisy(73, q), d), Corpus::new(rows, d).unwrap())
    }

    #[test]
    fn a_missed_guess_is_selected_again_and_exact_at_every_level() {
        let (n, d) = (6000, 24);
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            // One thread folds the blocks in exactly the bit-reversed order, first block
            // first.
            let cfg = CpuConfig {
                simd: Some(level),
                threads: Some(1),
                ..CpuConfig::default()
            };
            let cpu = CpuBackend::new(&cfg).unwrap();
            // Few queries stream the corpus; more take score tiles (but not on scalar).
            for q in [3, 40] {
                let block = if cpu
                    .pack(MatrixRef::new(&vec![0.0; q * d], q, d).unwrap())
                    .is_some()
                {
                    KERNEL_ROWS
                } else {
                    stream_rows(q, n, cpu.threads())
                };
                let k = if block < 1000 { 200 } else { 500 };
                let (qs, corpus) = misleading(q, n, d, block);
                let view = MatrixRef::new(&qs, q, d).unwrap();
                let guessed = cpu.select::<u64>(view, corpus.view(), k, true, None);
                assert!(
                    guessed.iter().all(Option::is_none),
                    "{level:?} Q={q}: every guess misses"
                );
                let exact: Vec<Vec<Hit>> = cpu
                    .select::<u64>(view, corpus.view(), k, false, None)
                    .into_iter()
                    .map(|h| h.expect("no guess, no miss"))
                    .collect();
                // The first block's rows are the best, then the best of the rest.
                for hits in &exact {
                    assert_eq!(hits.len(), k);
                    let near = block.min(k);
                    assert!(hits[..near].iter().all(|h| h.index < block));
                    assert!(hits[near..].iter().all(|h| h.index >= block));
                }
                assert_eq!(
                    cpu.top_k(view, corpus.view(), k, None),
                    exact,
                    "{level:?} Q={q}"
                );
                assert_eq!(
                    cpu.top_k_keyed::<u128>(view, corpus.view(), k, None),
                    exact,
                    "{level:?} Q={q}: u128 keys"
                );
            }
        }
    }

    #[test]
    fn guesses_hold_on_random_data() {
        // The speculative pass alone is exact on random data, so the second pass is rare.
        let cpu = CpuBackend::new(&CpuConfig::default()).unwrap();
        let (q, n, d) = (40, 20_000, 16);
        let corpus = Corpus::new(crate::data::random_vec(n * d, 80, 0), d).unwrap();
        let qs = unit(crate::data::random_vec(q * d, 81, 0), d);
        let view = MatrixRef::new(&qs, q, d).unwrap();
        for k in [65, 300, 2000] {
            let guessed = cpu.select::<u64>(view, corpus.view(), k, true, None);
            let exact = cpu.select::<u64>(view, corpus.view(), k, false, None);
            assert_eq!(guessed, exact, "k = {k}");
        }
    }
}
