//! Exact top-k selection. Small `k` keeps a bounded heap whose root is the worst hit kept
//! so far. Large `k` appends every candidate at or above a floor to a buffer and, when the
//! buffer is full, keeps its best `k` by one quickselect: amortised O(1) per candidate on
//! sequential memory, where a heap of a thousand hits costs a dozen scattered swaps each.

use crate::hit::Hit;
use std::cmp::Ordering;

/// Largest `k` kept in a heap; above it, a buffer.
const HEAP_MAX_K: usize = 64;

/// Keeps the best `k` hits seen (see [`Hit::is_better_than`] for the order).
///
/// Callers filter with [`TopK::threshold`] first: a score below it can never enter, which
/// makes the common case one comparison per candidate.
#[derive(Clone, Debug)]
pub(crate) struct TopK {
    k: usize,
    /// A heap (`k ≤ HEAP_MAX_K`): a min-heap on "better", exactly the best `k` so far.
    /// A buffer (larger `k`): the best `k` so far and candidates since, unordered.
    hits: Vec<Hit>,
    heap: bool,
    /// Buffer only: the `k`-th best score at the last compaction (`-inf` before one).
    floor: f32,
}

/// Best first: the order of [`Hit::is_better_than`] (higher score, then lower index; `-0`
/// and `+0` are equal scores), as one comparison chain. Scores are never NaN here.
#[inline]
fn best_first(a: &Hit, b: &Hit) -> Ordering {
    b.score
        .partial_cmp(&a.score)
        .unwrap_or(Ordering::Equal)
        .then(a.index.cmp(&b.index))
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        debug_assert!(k > 0);
        let heap = k <= HEAP_MAX_K;
        Self {
            k,
            // A buffer grows as candidates come: most selections of a large k over a
            // piece of the corpus never fill it.
            hits: Vec::with_capacity(if heap { k } else { 0 }),
            heap,
            floor: f32::NEG_INFINITY,
        }
    }

    /// Buffer capacity before a compaction: twice `k`, so each compaction's linear
    /// quickselect is paid by `k` appends.
    fn capacity(&self) -> usize {
        2 * self.k
    }

    /// Scores strictly below this cannot enter.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if !self.heap {
            self.floor
        } else if self.hits.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.hits[0].score
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, index: usize, score: f32) {
        let hit = Hit { index, score };
        if !self.heap {
            self.hits.push(hit);
            if self.hits.len() >= self.capacity() {
                self.compact();
            }
        } else if self.hits.len() < self.k {
            self.hits.push(hit);
            self.sift_up(self.hits.len() - 1);
        } else if hit.is_better_than(&self.hits[0]) {
            self.hits[0] = hit;
            self.sift_down(0);
        }
    }

    /// Buffer only: keeps the best `k` and raises the floor to the worst of them.
    fn compact(&mut self) {
        if self.hits.len() > self.k {
            self.hits.select_nth_unstable_by(self.k - 1, best_first);
            self.hits.truncate(self.k);
        }
        if self.hits.len() == self.k {
            self.floor = self
                .hits
                .iter()
                .map(|h| h.score)
                .fold(f32::INFINITY, f32::min);
        }
    }

    /// Offers every score of `scores` (for corpus rows `first..`), skipping NaN.
    #[inline]
    #[cfg(test)]
    pub(crate) fn offer_all(&mut self, first: usize, scores: &[f32]) {
        let mut thr = self.threshold();
        for (j, &s) in scores.iter().enumerate() {
            if s >= thr {
                self.offer(first + j, s);
                thr = self.threshold();
            }
        }
    }

    pub(crate) fn merge(&mut self, other: TopK) {
        for h in other.hits {
            if h.score >= self.threshold() {
                self.offer(h.index, h.score);
            }
        }
    }

    /// Best first.
    pub(crate) fn into_sorted(mut self) -> Vec<Hit> {
        if !self.heap {
            self.compact();
        }
        self.hits.sort_unstable_by(best_first);
        self.hits
    }

    // Min-heap on "better": a parent is never better than its children.
    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.hits[p].is_better_than(&self.hits[i]) {
                self.hits.swap(p, i);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.hits.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let worst = if r < n && self.hits[l].is_better_than(&self.hits[r]) {
                r
            } else {
                l
            };
            if self.hits[i].is_better_than(&self.hits[worst]) {
                self.hits.swap(i, worst);
                i = worst;
            } else {
                break;
            }
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
            .map(|(index, &score)| Hit { index, score })
            .collect();
        all.sort_by(|a, b| b.score.total_cmp(&a.score).then(a.index.cmp(&b.index)));
        all.truncate(k);
        all
    }

    #[test]
    fn matches_sorting_including_ties_and_merges() {
        let mut rng = Rng::new(3, 0);
        for trial in 0..400 {
            // Half the trials keep a heap, half a buffer (k above HEAP_MAX_K).
            let (n, k) = if trial % 4 < 2 {
                (1 + rng.below(300) as usize, 1 + rng.below(40) as usize)
            } else {
                let k = HEAP_MAX_K + 1 + rng.below(300) as usize;
                (1 + rng.below(3000) as usize, k)
            };
            // Few distinct values, so ties are everywhere.
            let scores: Vec<f32> = (0..n).map(|_| rng.below(7) as f32 - 3.0).collect();
            let split = rng.below(n as u64 + 1) as usize;
            let mut a = TopK::new(k);
            a.offer_all(0, &scores[..split]);
            let mut b = TopK::new(k);
            b.offer_all(split, &scores[split..]);
            // Merge in both directions: the result must not depend on which side is larger.
            let (mut x, y) = if trial % 2 == 0 { (a, b) } else { (b, a) };
            x.merge(y);
            assert_eq!(x.into_sorted(), brute(&scores, k), "trial {trial}");
        }
    }

    #[test]
    fn k_larger_than_input_returns_everything() {
        for k in [10, HEAP_MAX_K + 1, 1000] {
            let mut t = TopK::new(k);
            t.offer_all(0, &[0.5, -1.0, 0.25]);
            let got: Vec<usize> = t.into_sorted().iter().map(|h| h.index).collect();
            assert_eq!(got, vec![0, 2, 1], "k = {k}");
        }
    }
}
