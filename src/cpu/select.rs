//! Exact top-k selection on integer keys.
//!
//! A hit is kept as one integer [`Key`] whose ascending order is the result order (higher
//! score first, then lower index): the score's bits mapped to an order-preserving unsigned
//! integer and complemented, above the row index. Selecting and sorting then compare
//! plain integers instead of a float-then-index comparison chain, which is what made large
//! `k` expensive: at `k = 1000` the selection's quickselects and the final sort were most
//! of the time spent beyond the score tiles. `u64` keys hold indices below 2³²; larger
//! corpora use `u128` keys.
//!
//! Small `k` keeps a bounded heap whose root is the worst hit kept so far. Large `k`
//! appends every candidate at or above a floor to a buffer and, when the buffer is full
//! (half as many again as it keeps), keeps its best `k` by one quickselect: amortised O(1)
//! per candidate on sequential memory, where a heap of a thousand hits costs a dozen
//! scattered swaps each.
//!
//! A buffer may also *speculate*: its caller passes a `rank` below `k` (how many of the
//! hits seen so far are likely to stay in the final top-k, with a wide margin, see
//! `cpu::topk::spec_rank`), and a compaction then keeps only that many, raising the floor far
//! sooner than the `k`-th best hit would. A floor set that way is a guess; the selection
//! remembers the worst key it kept under a guess, and [`TopKs::into_sorted`] accepts the
//! result only when the final `k`-th best key is no worse than it: every hit dropped
//! under the guess is then worse than `k` hits kept, so the result is exact. Otherwise it
//! reports a miss, and the caller selects that query again without guessing.

use super::kernel;
use super::SimdLevel;
use crate::hit::Hit;
use rayon::prelude::*;

/// Largest `k` kept in a heap; above it, a buffer.
pub(super) const HEAP_MAX_K: usize = 64;

/// A hit as an integer whose ascending order is the result order (see the module docs).
pub(crate) trait Key: Copy + Ord + Send + Sync + std::fmt::Debug + 'static {
    /// Zero, the filler of unused slots.
    const ZERO: Self;
    /// Whether every row index below `rows` fits in this key.
    fn fits(rows: usize) -> bool;
    /// The key of row `index` with `score` (not NaN; `-0` is keyed as `+0`).
    fn new(index: usize, score: f32) -> Self;
    /// The score back (`-0` comes back as `+0`).
    fn score(self) -> f32;
    /// The row index back.
    fn index(self) -> usize;
    /// The hit back.
    #[inline]
    fn hit(self) -> Hit {
        Hit {
            index: self.index(),
            score: self.score(),
        }
    }
}

/// `score`'s bits as an unsigned integer in the order of the scores, complemented so that
/// a higher score is a smaller integer. `-0` and `+0` (equal scores) map to one value.
#[inline]
fn score_bits(score: f32) -> u32 {
    // Adding +0 turns -0 into +0 and leaves every other value as it is.
    let b = (score + 0.0).to_bits();
    let ordered = if b >> 31 == 1 { !b } else { b | 1 << 31 };
    !ordered
}

/// The inverse of [`score_bits`].
#[inline]
fn bits_score(bits: u32) -> f32 {
    let ordered = !bits;
    f32::from_bits(if ordered >> 31 == 1 {
        ordered & !(1 << 31)
    } else {
        !ordered
    })
}

impl Key for u64 {
    const ZERO: Self = 0;
    #[inline]
    fn fits(rows: usize) -> bool {
        rows as u64 <= 1 << 32
    }
    #[inline]
    fn new(index: usize, score: f32) -> Self {
        u64::from(score_bits(score)) << 32 | index as u64 & 0xFFFF_FFFF
    }
    #[inline]
    fn score(self) -> f32 {
        bits_score((self >> 32) as u32)
    }
    #[inline]
    fn index(self) -> usize {
        (self & 0xFFFF_FFFF) as usize
    }
}

impl Key for u128 {
    const ZERO: Self = 0;
    #[inline]
    fn fits(_rows: usize) -> bool {
        true
    }
    #[inline]
    fn new(index: usize, score: f32) -> Self {
        u128::from(score_bits(score)) << 64 | index as u128
    }
    #[inline]
    fn score(self) -> f32 {
        bits_score((self >> 64) as u32)
    }
    #[inline]
    fn index(self) -> usize {
        // The key was made from a usize, so the low 64 bits hold it whole.
        (self as u64) as usize
    }
}

/// The best `k` hits seen so far (see [`Hit::is_better_than`] for the order) of each of a
/// set of queries, in one slab: query `i` holds keys `i * stride .. i * stride + lens[i]`.
///
/// One slab with a fixed stride, instead of a `Vec` per query, makes an offer a store at
/// an address computed from two hot arrays (`lens`, the thresholds): with a `Vec` per
/// query, its header was one more cache line to load before the store, and one that the
/// score tiles had usually evicted since the query's last offer.
pub(crate) struct TopKs<K> {
    k: usize,
    /// A heap per query (`k ≤ HEAP_MAX_K`): a max-heap on keys (the root is the worst
    /// kept), exactly the best `k` so far. A buffer (larger `k`): the best `k` so far (or
    /// the best `rank`, see the module docs) and candidates since, unordered.
    heap: bool,
    stride: usize,
    keys: Vec<K>,
    lens: Vec<usize>,
    /// Scores strictly below `floors[i]` cannot enter query `i`'s selection: the worst
    /// kept score once a heap is full, the worst score a buffer's last compaction kept;
    /// `-inf` before that.
    floors: Vec<f32>,
    /// Buffer only: the worst key kept by a compaction that kept fewer than `k` (the
    /// smallest such key, when there were several), `None` while every floor was exact.
    guesses: Vec<Option<K>>,
    /// Scratch of [`kernel::scan_row`]: the queries of one row, or the rows of one
    /// query's column, that pass their floors.
    lanes: Vec<u32>,
    /// Scratch of [`fold_block`](Self::fold_block) with few queries: one query's scores
    /// of a block, and its floor as many times.
    column: Vec<f32>,
    floor_run: Vec<f32>,
    /// Whether more than one score in [`DENSE`] reached its floor in the last block folded
    /// by the few-queries path, which then scans per query (see `fold_block`).
    dense: bool,
}

/// See [`TopKs::dense`]: below one score in 8 passing, the plain loop is faster (1 × 1M ×
/// 64, k = 1024); above, the per-query scan (15 × 10k × 64, k = 1024: 0.73 → 0.54 ms).
const DENSE: usize = 8;

impl<K: Key> TopKs<K> {
    /// Selections of the best `k` (at least 1) for `queries` (at most `u32::MAX`) queries,
    /// each offered at most `rows` hits (which bounds the slab).
    pub(crate) fn new(queries: usize, k: usize, rows: usize) -> Self {
        let k = k.max(1);
        let heap = k <= HEAP_MAX_K;
        // A buffer holds up to `growth(k)` keys; never more than the rows it can be
        // offered.
        let stride = if heap { k } else { growth(k) }.min(rows).max(1);
        Self {
            k,
            heap,
            stride,
            // Zeroed memory comes from the OS untouched: only slots that fill cost pages.
            keys: vec![K::ZERO; queries.saturating_mul(stride)],
            lens: vec![0; queries],
            floors: vec![f32::NEG_INFINITY; queries],
            guesses: vec![None; queries],
            lanes: vec![0; queries + kernel::SCAN_SLACK],
            column: Vec::new(),
            floor_run: Vec::new(),
            dense: true,
        }
    }

    /// Queries selected for.
    pub(crate) fn queries(&self) -> usize {
        self.lens.len()
    }

    /// Scans one row of scores: offers `row[i] * w` to query `i` (as corpus row `index`)
    /// for every `i < self.lens.len()` whose score reaches its floor. A buffer that
    /// reaches [`growth`]`(rank)` keys (`rank` at most `k`, at least 1) compacts to its
    /// best `rank`: `rank = k` is exact, a smaller one speculates (see the module docs).
    /// Heaps ignore `rank`.
    pub(crate) fn fold_row(
        &mut self,
        level: SimdLevel,
        row: &[f32],
        w: f32,
        index: usize,
        rank: usize,
    ) {
        let (mut slots, floors, lanes) = self.split();
        let count = kernel::scan_row(level, row, w, floors, lanes);
        for &i in &lanes[..count] {
            let i = i as usize;
            floors[i] = slots.offer(i, K::new(index, row[i] * w), rank, floors[i]);
        }
    }

    /// Folds a block of rows: row `r` of `inv.len()` holds the scores of corpus row
    /// `first + r` at `scores[r * ld + col..][..self.queries()]`, to be multiplied by
    /// `inv[r]`; see [`fold_row`](Self::fold_row).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn fold_block(
        &mut self,
        level: SimdLevel,
        scores: &[f32],
        ld: usize,
        col: usize,
        inv: &[f32],
        first: usize,
        rank: usize,
    ) {
        let q = self.queries();
        if q >= 16 {
            for (r, &w) in inv.iter().enumerate() {
                self.fold_row(level, &scores[r * ld + col..][..q], w, first + r, rank);
            }
            return;
        }
        if self.heap || !self.dense {
            // Fewer queries than an AVX-512 vector has lanes (the streaming path takes up
            // to 15) and few scores reaching their floors: a plain loop, without a call
            // per row, whose branch is mostly predicted.
            let (mut slots, floors, _) = self.split();
            let mut passed = 0;
            for (r, &w) in inv.iter().enumerate() {
                for (i, &x) in scores[r * ld + col..][..q].iter().enumerate() {
                    let s = x * w;
                    if s >= floors[i] {
                        passed += 1;
                        floors[i] = slots.offer(i, K::new(first + r, s), rank, floors[i]);
                    }
                }
            }
            self.dense = !self.heap && passed * DENSE > inv.len() * q;
            return;
        }
        // Few queries and a large share of the scores reaching their floors (the first
        // blocks of a large k): per query, its scores of the block in one run, scanned
        // against its floor at the start of the block without a branch per score; the rows
        // that pass are offered in order, each checked again against the floor as it
        // rises.
        let rows = inv.len();
        let mut passed = 0;
        for i in 0..q {
            let mut column = std::mem::take(&mut self.column);
            let mut floor_run = std::mem::take(&mut self.floor_run);
            column.clear();
            column.extend(
                inv.iter()
                    .enumerate()
                    .map(|(r, &w)| scores[r * ld + col + i] * w),
            );
            floor_run.clear();
            floor_run.resize(rows, self.floors[i]);
            self.lanes
                .resize(self.lanes.len().max(rows + kernel::SCAN_SLACK), 0);
            let (mut slots, floors, lanes) = self.split();
            let count = kernel::scan_row(level, &column, 1.0, &floor_run, lanes);
            passed += count;
            for &r in &lanes[..count] {
                let s = column[r as usize];
                if s >= floors[i] {
                    let key = K::new(first + r as usize, s);
                    floors[i] = slots.offer(i, key, rank, floors[i]);
                }
            }
            self.column = column;
            self.floor_run = floor_run;
        }
        self.dense = passed * DENSE > rows * q;
    }

    /// Folds a block of `rows` corpus rows scored query-major: query `i`'s cosines with
    /// corpus rows `first..first + rows` at `scores[(col + i) * rows..][..rows]`; see
    /// [`fold_row`](Self::fold_row) for `rank`.
    ///
    /// Each query's run is compared with its floor at the start of the run, a vector of
    /// scores at a time; the rows that pass are offered in order, each checked again
    /// against the floor as it rises.
    pub(crate) fn fold_columns(
        &mut self,
        level: SimdLevel,
        scores: &[f32],
        rows: usize,
        col: usize,
        first: usize,
        rank: usize,
    ) {
        for i in 0..self.queries() {
            let column = &scores[(col + i) * rows..][..rows];
            let mut floor_run = std::mem::take(&mut self.floor_run);
            floor_run.clear();
            floor_run.resize(rows, self.floors[i]);
            self.lanes
                .resize(self.lanes.len().max(rows + kernel::SCAN_SLACK), 0);
            let (mut slots, floors, lanes) = self.split();
            let count = kernel::scan_row(level, column, 1.0, &floor_run, lanes);
            for &r in &lanes[..count] {
                let s = column[r as usize];
                if s >= floors[i] {
                    floors[i] = slots.offer(i, K::new(first + r as usize, s), rank, floors[i]);
                }
            }
            self.floor_run = floor_run;
        }
    }

    /// Offers every score of `scores` (for corpus rows `first..`) to query `i`, skipping
    /// NaN.
    #[cfg(test)]
    pub(crate) fn offer_all(&mut self, i: usize, first: usize, scores: &[f32], rank: usize) {
        let (mut slots, floors, _) = self.split();
        for (j, &s) in scores.iter().enumerate() {
            if s >= floors[i] {
                floors[i] = slots.offer(i, K::new(first + j, s), rank, floors[i]);
            }
        }
    }

    /// The slots and, apart, the floors and the scan's scratch.
    fn split(&mut self) -> (Slots<'_, K>, &mut [f32], &mut [u32]) {
        let Self {
            k,
            heap,
            stride,
            keys,
            lens,
            floors,
            guesses,
            lanes,
            ..
        } = self;
        let slots = Slots {
            k: *k,
            heap: *heap,
            stride: *stride,
            keys,
            lens,
            guesses,
        };
        (slots, floors, lanes)
    }

    /// Every query's best `k` hits, best first, in query order, sorted on all threads of
    /// the current rayon pool; `None` for a query whose speculative compaction may have
    /// dropped one of them (see the module docs).
    pub(crate) fn into_sorted(self) -> Vec<Option<Vec<Hit>>> {
        let (k, stride) = (self.k, self.stride);
        let mut keys = self.keys;
        keys.par_chunks_mut(stride)
            .zip(self.lens.par_iter())
            .zip(self.guesses.par_iter())
            .map(|((slot, &len), guess)| {
                let slot = &mut slot[..len.min(stride)];
                if slot.len() > k {
                    slot.select_nth_unstable(k - 1);
                }
                let kept = &mut slot[..len.min(k)];
                kept.sort_unstable();
                if let Some(guess) = *guess {
                    if kept.len() < k || kept[k - 1] > guess {
                        return None;
                    }
                }
                Some(kept.iter().map(|&key| key.hit()).collect())
            })
            .collect()
    }
}

/// The most bytes the selections of `queries` queries take for the best `k` of `rows`
/// rows, with their per-query bookkeeping: what a top-k call holds besides its hits.
/// `None` when that overflows.
pub(crate) fn selection_bytes(queries: usize, k: usize, rows: usize) -> Option<usize> {
    let k = k.max(1);
    let stride = if k <= HEAP_MAX_K { k } else { growth(k) }.min(rows).max(1);
    let key = if <u64 as Key>::fits(rows) { 8 } else { 16 };
    // Lengths, floors, guesses and scan lanes: a few words per query, and the lanes' slack.
    stride
        .checked_mul(key)?
        .checked_add(64)?
        .checked_mul(queries)?
        .checked_add(4 * kernel::SCAN_SLACK)
}

/// The size at which a buffer that keeps `rank` keys compacts: half as many again (plus
/// a few), so each compaction's linear quickselect is paid by `rank / 2` appends, and the
/// floor lags the best `rank` seen by at most that many. (Growing to `2 · rank` measured
/// no faster, and holds a third more memory.)
fn growth(rank: usize) -> usize {
    rank.saturating_add(rank / 2 + 8)
}

/// The parts of [`TopKs`] that an offer changes, besides the floors (which the scan holds).
struct Slots<'a, K> {
    k: usize,
    heap: bool,
    stride: usize,
    keys: &'a mut [K],
    lens: &'a mut [usize],
    guesses: &'a mut [Option<K>],
}

impl<K: Key> Slots<'_, K> {
    /// Offers `key` to query `i`, whose floor is `floor`; returns its new floor.
    #[inline]
    fn offer(&mut self, i: usize, key: K, rank: usize, floor: f32) -> f32 {
        let len = self.lens[i];
        let slot = &mut self.keys[i * self.stride..(i + 1) * self.stride];
        if !self.heap {
            // A query is offered each corpus row at most once, so a slot of `rows` keys
            // never overflows; one of `growth(k)` compacts at `growth(rank)` below.
            if let Some(s) = slot.get_mut(len) {
                *s = key;
                self.lens[i] = len + 1;
            }
            let trigger = growth(rank.clamp(1, self.k)).min(self.stride);
            if len + 1 >= trigger {
                return self.compact(i, rank, floor);
            }
            floor
        } else if len < self.k.min(self.stride) {
            slot[len] = key;
            sift_up(&mut slot[..=len], len);
            self.lens[i] = len + 1;
            if len + 1 == self.k {
                slot[0].score()
            } else {
                floor
            }
        } else if len > 0 && key < slot[0] {
            slot[0] = key;
            sift_down(&mut slot[..len], 0);
            slot[0].score()
        } else {
            floor
        }
    }

    /// Buffer only: keeps query `i`'s best `rank` (at most `k`) keys; returns its floor,
    /// raised to the worst score kept.
    fn compact(&mut self, i: usize, rank: usize, floor: f32) -> f32 {
        let keep = rank.clamp(1, self.k);
        let len = self.lens[i];
        if len <= keep {
            return floor;
        }
        let slot = &mut self.keys[i * self.stride..i * self.stride + len];
        slot.select_nth_unstable(keep - 1);
        // The `keep`-th smallest key, now at `keep - 1`, has the lowest score kept.
        let worst = slot[keep - 1];
        self.lens[i] = keep;
        if keep < self.k {
            let g = &mut self.guesses[i];
            *g = Some(g.map_or(worst, |g| g.min(worst)));
        }
        floor.max(worst.score())
    }
}

// Max-heap on keys: a parent is never better (smaller) than its children.
fn sift_up<K: Key>(h: &mut [K], mut i: usize) {
    while i > 0 {
        let p = (i - 1) / 2;
        if h[p] < h[i] {
            h.swap(p, i);
            i = p;
        } else {
            break;
        }
    }
}

fn sift_down<K: Key>(h: &mut [K], mut i: usize) {
    let n = h.len();
    loop {
        let l = 2 * i + 1;
        if l >= n {
            break;
        }
        let r = l + 1;
        let worst = if r < n && h[r] > h[l] { r } else { l };
        if h[i] < h[worst] {
            h.swap(i, worst);
            i = worst;
        } else {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::Rng;

    fn brute(scores: &[f32], k: usize) -> Vec<Hit> {
        let mut all: Vec<Hit> = scores
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.is_nan())
            .map(|(index, &score)| Hit { index, score })
            .collect();
        all.sort_by(|a, b| {
            b.score
                .partial_cmp(&a.score)
                .expect("no NaN")
                .then(a.index.cmp(&b.index))
        });
        all.truncate(k);
        all
    }

    #[test]
    fn keys_order_like_hits_and_round_trip() {
        let scores = [
            f32::NEG_INFINITY,
            -1.0,
            -0.5,
            -f32::MIN_POSITIVE,
            -1e-45,
            -0.0,
            0.0,
            1e-45,
            f32::MIN_POSITIVE,
            0.25,
            1.0,
            f32::MAX,
            f32::INFINITY,
        ];
        let mut hits = Vec::new();
        for &s in &scores {
            for index in [0usize, 1, 7, u32::MAX as usize] {
                hits.push(Hit { index, score: s });
            }
        }
        for a in &hits {
            for b in &hits {
                let (ka, kb) = (u64::new(a.index, a.score), u64::new(b.index, b.score));
                assert_eq!(ka < kb, a.is_better_than(b), "{a:?} {b:?}");
                let (wa, wb) = (u128::new(a.index, a.score), u128::new(b.index, b.score));
                assert_eq!(wa < wb, a.is_better_than(b), "{a:?} {b:?}");
            }
            // -0 comes back as +0, an equal score; every other score bit for bit.
            let back = u64::new(a.index, a.score).hit();
            assert_eq!(back.index, a.index);
            assert_eq!(back.score, a.score);
            assert!(a.score == 0.0 || back.score.to_bits() == a.score.to_bits());
            assert_eq!(u128::new(a.index, a.score).hit(), back);
        }
        let big = usize::MAX - 3;
        assert_eq!(u128::new(big, 0.5).index(), big);
        assert!(u64::fits(1 << 32) && !u64::fits((1 << 32) + 1) && u128::fits(usize::MAX));
    }

    /// Few distinct values (ties everywhere), some `-0` and some NaN (never offered).
    fn tied_scores(rng: &mut Rng, n: usize) -> Vec<f32> {
        (0..n)
            .map(|_| match rng.below(9) {
                8 => f32::NAN,
                7 => -0.0,
                v => v as f32 - 3.0,
            })
            .collect()
    }

    fn matches_sorting<K: Key>() {
        let mut rng = Rng::new(3, 0);
        for trial in 0..300 {
            // Half the trials keep a heap, half a buffer (k above HEAP_MAX_K).
            let (n, k) = if trial % 4 < 2 {
                (1 + rng.below(300) as usize, 1 + rng.below(40) as usize)
            } else {
                let k = HEAP_MAX_K + 1 + rng.below(300) as usize;
                (1 + rng.below(3000) as usize, k)
            };
            // Three queries in one slab, offered in turns and out of index order, as
            // concurrent blocks do.
            let scores: Vec<Vec<f32>> = (0..3).map(|_| tied_scores(&mut rng, n)).collect();
            let split = rng.below(n as u64 + 1) as usize;
            let mut t = TopKs::<K>::new(3, k, n);
            for (i, s) in scores.iter().enumerate() {
                t.offer_all(i, split, &s[split..], k);
            }
            for (i, s) in scores.iter().enumerate() {
                t.offer_all(i, 0, &s[..split], k);
            }
            let want: Vec<_> = scores.iter().map(|s| Some(brute(s, k))).collect();
            assert_eq!(t.into_sorted(), want, "trial {trial}");
        }
    }

    #[test]
    fn matches_sorting_including_ties_and_any_order() {
        matches_sorting::<u64>();
        matches_sorting::<u128>();
    }

    #[test]
    fn k_larger_than_input_returns_everything() {
        for k in [10, HEAP_MAX_K + 1, 1000, usize::MAX] {
            let mut t = TopKs::<u64>::new(1, k, 3);
            t.offer_all(0, 0, &[0.5, -1.0, 0.25], k);
            let got: Vec<usize> = t.into_sorted()[0]
                .as_ref()
                .unwrap()
                .iter()
                .map(|h| h.index)
                .collect();
            assert_eq!(got, vec![0, 2, 1], "k = {k}");
        }
    }

    #[test]
    fn fold_row_offers_each_query_its_own_score() {
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            for (q, k) in [(1, 1), (17, 3), (40, HEAP_MAX_K + 5), (33, 200)] {
                let rows = 300;
                let data = crate::data::random_vec(rows * q, 9, q as u64);
                let mut t = TopKs::<u64>::new(q, k, rows);
                for r in 0..rows {
                    t.fold_row(level, &data[r * q..(r + 1) * q], 0.5, r, k);
                }
                for (i, got) in t.into_sorted().into_iter().enumerate() {
                    let col: Vec<f32> = (0..rows).map(|r| data[r * q + i] * 0.5).collect();
                    assert_eq!(got, Some(brute(&col, k)), "{level:?} q={q} k={k} query {i}");
                }
            }
        }
    }

    #[test]
    fn fold_block_offers_each_query_its_own_score_with_few_or_many_queries() {
        for level in SimdLevel::ALL.into_iter().filter(|l| l.is_supported()) {
            for (q, k) in [
                (1, 10),
                (5, 1),
                (3, 150),
                (15, HEAP_MAX_K + 9),
                (16, 7),
                (40, 100),
            ] {
                // Rows of `ld` scores of which this selection owns `col..col + q`.
                let (rows, ld, col) = (500, q + 7, 3);
                let data = crate::data::random_vec(rows * ld, 10, q as u64);
                let inv: Vec<f32> = (0..rows).map(|r| 0.5 + (r % 3) as f32).collect();
                let mut t = TopKs::<u64>::new(q, k, rows + 100);
                t.fold_block(level, &data[..200 * ld], ld, col, &inv[..200], 100, k);
                t.fold_block(level, &data[200 * ld..], ld, col, &inv[200..], 300, k);
                for (i, got) in t.into_sorted().into_iter().enumerate() {
                    let mut col_scores = vec![f32::NAN; 100];
                    col_scores.extend((0..rows).map(|r| data[r * ld + col + i] * inv[r]));
                    assert_eq!(
                        got,
                        Some(brute(&col_scores, k)),
                        "{level:?} q={q} k={k} query {i}"
                    );
                }
            }
        }
    }

    /// Speculative ranks: the result is the exact one, or `None`; never a wrong list.
    fn speculation_is_exact_or_missed<K: Key>() {
        let mut rng = Rng::new(5, 0);
        let (mut exact, mut missed) = (0, 0);
        for trial in 0..600 {
            let k = HEAP_MAX_K + 1 + rng.below(200) as usize;
            let n = 1 + rng.below(4000) as usize;
            let rank = 1 + rng.below(k as u64) as usize;
            // Few distinct values (ties at every floor), or distinct ones; some trials
            // sorted worst first, so every guess is too low, or best first, too high.
            let distinct = trial % 2 == 0;
            let mut scores: Vec<f32> = (0..n)
                .map(|_| {
                    if distinct {
                        rng.below(1 << 20) as f32 / (1 << 20) as f32
                    } else {
                        rng.below(5) as f32
                    }
                })
                .collect();
            match trial % 3 {
                0 => scores.sort_by(|a, b| a.total_cmp(b)),
                1 => scores.sort_by(|a, b| b.total_cmp(a)),
                _ => {}
            }
            let mut t = TopKs::<K>::new(1, k, n);
            t.offer_all(0, 0, &scores, rank);
            match t.into_sorted().pop().flatten() {
                Some(hits) => {
                    exact += 1;
                    assert_eq!(hits, brute(&scores, k), "trial {trial}");
                }
                None => missed += 1,
            }
        }
        // Both outcomes happen, so both branches of the check are exercised.
        assert!(exact > 50 && missed > 50, "{exact} exact, {missed} missed");
    }

    #[test]
    fn speculation_is_exact_or_reports_a_miss() {
        speculation_is_exact_or_missed::<u64>();
        speculation_is_exact_or_missed::<u128>();
    }

    #[test]
    fn a_guess_that_dropped_a_tied_hit_is_a_miss() {
        // k = 3 and rank 2: the compaction at growth(2) = 11 keys keeps rows 0 and 1,
        // dropping row 2, which ties row 1. Row 20 ties too but comes later: the final top
        // 3 would be rows 0, 1, 20, where the exact answer is 0, 1, 2.
        let mut t = TopKs::<u64>::new(1, HEAP_MAX_K + 3, 30);
        t.k = 3;
        let mut first = vec![0.9, 0.5, 0.5];
        first.resize(growth(2), 0.1);
        t.offer_all(0, 0, &first, 2);
        assert_eq!(t.lens[0], 2, "compacted to the rank");
        t.offer_all(0, 20, &[0.5], 2);
        assert_eq!(t.into_sorted(), vec![None]);
    }

    /// The executor's memory check counts at least what the selections allocate, and a
    /// size that overflows is `None`, not a wrapped small number.
    #[test]
    fn selection_bytes_cover_the_buffers() {
        for (q, k, rows) in [
            (1, 1, 1),
            (100, 10, 1000),
            (100, 1000, 1_000_000),
            (7, 64, 5),
        ] {
            let t = TopKs::<u64>::new(q, k, rows);
            let held = t.keys.len() * 8
                + t.lens.len() * 8
                + t.floors.len() * 4
                + t.guesses.len() * 16
                + t.lanes.len() * 4;
            let counted = selection_bytes(q, k, rows).expect("fits");
            assert!(
                counted >= held,
                "q={q} k={k} rows={rows}: {counted} < {held}"
            );
        }
        assert_eq!(selection_bytes(usize::MAX / 4, 1 << 20, 1 << 40), None);
    }
}
