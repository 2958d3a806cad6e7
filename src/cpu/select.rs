//! Exact top-k selection: a bounded heap whose root is the worst hit kept so far.

use crate::hit::Hit;

/// Keeps the best `k` hits seen (see [`Hit::is_better_than`] for the order).
///
/// Callers filter with [`TopK::threshold`] first: a score below it can never enter, which
/// makes the common case one comparison per candidate.
#[derive(Clone, Debug)]
pub(crate) struct TopK {
    k: usize,
    heap: Vec<Hit>,
}

impl TopK {
    pub(crate) fn new(k: usize) -> Self {
        debug_assert!(k > 0);
        Self {
            k,
            heap: Vec::with_capacity(k.min(1 << 16)),
        }
    }

    /// Scores strictly below this cannot enter.
    #[inline]
    pub(crate) fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap[0].score
        }
    }

    #[inline]
    pub(crate) fn offer(&mut self, index: usize, score: f32) {
        let hit = Hit { index, score };
        if self.heap.len() < self.k {
            self.heap.push(hit);
            self.sift_up(self.heap.len() - 1);
        } else if hit.is_better_than(&self.heap[0]) {
            self.heap[0] = hit;
            self.sift_down(0);
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
        for h in other.heap {
            if h.score >= self.threshold() {
                self.offer(h.index, h.score);
            }
        }
    }

    /// Best first.
    pub(crate) fn into_sorted(mut self) -> Vec<Hit> {
        self.heap.sort_unstable_by(|a, b| {
            if a.is_better_than(b) {
                std::cmp::Ordering::Less
            } else {
                std::cmp::Ordering::Greater
            }
        });
        self.heap
    }

    // Min-heap on "better": a parent is never better than its children.
    fn sift_up(&mut self, mut i: usize) {
        while i > 0 {
            let p = (i - 1) / 2;
            if self.heap[p].is_better_than(&self.heap[i]) {
                self.heap.swap(p, i);
                i = p;
            } else {
                break;
            }
        }
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                break;
            }
            let r = l + 1;
            let worst = if r < n && self.heap[l].is_better_than(&self.heap[r]) {
                r
            } else {
                l
            };
            if self.heap[i].is_better_than(&self.heap[worst]) {
                self.heap.swap(i, worst);
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
        for trial in 0..200 {
            let n = 1 + rng.below(300) as usize;
            let k = 1 + rng.below(40) as usize;
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
        let mut t = TopK::new(10);
        t.offer_all(0, &[0.5, -1.0, 0.25]);
        let got: Vec<usize> = t.into_sorted().iter().map(|h| h.index).collect();
        assert_eq!(got, vec![0, 2, 1]);
    }
}
