//! Checks of search results against the f64 reference, shared by the search tests on
//! the CPU and on the emulated CUDA backend: top-k among allowed rows, and range search.

use super::reference::metric64 as reference;
use hybridvec::{data, Hit, Metric, RangeResult, StoreConfig, StoreHit, WarmStore};
use std::path::Path;

/// `hits` against the reference top-k among `allowed` rows: the same rows rank by rank,
/// up to near-ties (f32 rounding for cosine, f64 rounding for the exact metrics), and
/// scores within rounding.
#[allow(clippy::too_many_arguments)]
pub fn check_top_k_among(
    what: &str,
    metric: Metric,
    q: &[f32],
    rows: &[f32],
    d: usize,
    allowed: &[usize],
    k: usize,
    hits: &[Hit],
) {
    let score = |i: usize| reference(metric, q, &rows[i * d..(i + 1) * d]);
    let mut want: Vec<(usize, f64)> = allowed.iter().map(|&i| (i, score(i))).collect();
    want.sort_by(|a, b| {
        let by = if metric.higher_is_better() {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        };
        by.then(a.0.cmp(&b.0))
    });
    want.truncate(k);
    assert_eq!(hits.len(), want.len(), "{what}: hit count");
    let qn: f64 = q.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    for (rank, (h, &(wi, ws))) in hits.iter().zip(&want).enumerate() {
        assert!(
            allowed.binary_search(&h.index).is_ok(),
            "{what}: row {} not allowed",
            h.index
        );
        let own = score(h.index);
        let cn: f64 = rows[h.index * d..(h.index + 1) * d]
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        let (tie, tol) = match metric {
            Metric::Cosine => (2e-5, 1e-5),
            _ => (
                1e-12 * (qn + cn).powi(2) + 1e-300,
                1e-6 * own.abs() + 1e-12 * (qn + cn).powi(2),
            ),
        };
        assert!(
            h.index == wi || (own - ws).abs() <= tie,
            "{what}: rank {rank}: got row {} ({own:e}), reference row {wi} ({ws:e})",
            h.index
        );
        assert!(
            (h.score as f64 - own).abs() <= tol,
            "{what}: rank {rank}: row {} scored {}, reference {own:e}",
            h.index,
            h.score
        );
    }
}

/// `a` better than `b` under `metric`.
pub fn better(metric: Metric, a: f64, b: f64) -> bool {
    if metric.higher_is_better() {
        a > b
    } else {
        a < b
    }
}

/// How far from the threshold a row's reference score may be and still fall either way
/// (the scores are compared as reported in f32; cosine is f32 throughout).
pub fn slack(metric: Metric, t: f64) -> f64 {
    match metric {
        Metric::Cosine => 1e-5,
        _ => 1e-6 * t.abs() + 1e-30,
    }
}

/// One query's range result against the reference over the `allowed` rows.
#[allow(clippy::too_many_arguments)]
pub fn check_range(
    what: &str,
    metric: Metric,
    q: &[f32],
    rows: &[&[f32]],
    allowed: &[usize],
    t: f32,
    limit: usize,
    got: &RangeResult,
) {
    let t64 = t as f64;
    let s = slack(metric, t64);
    let score = |i: usize| reference(metric, q, rows[i]);
    let mut inside: Vec<(usize, f64)> = allowed
        .iter()
        .map(|&i| (i, score(i)))
        .filter(|&(_, v)| better(metric, v, t64) || (v - t64).abs() <= s)
        .collect();
    inside.sort_by(|a, b| {
        let o = a.1.total_cmp(&b.1);
        if metric.higher_is_better() {
            o.reverse()
        } else {
            o
        }
        .then(a.0.cmp(&b.0))
    });
    let clear = inside.iter().filter(|&&(_, v)| (v - t64).abs() > s).count();
    for (rank, h) in got.hits.iter().enumerate() {
        assert!(
            inside.iter().any(|&(i, _)| i == h.index),
            "{what}: row {} ({:e}) is outside threshold {t} or not allowed",
            h.index,
            score(h.index)
        );
        assert!(
            if metric.higher_is_better() {
                h.score >= t
            } else {
                h.score <= t
            },
            "{what}: reported score {} is outside {t}",
            h.score
        );
        if rank > 0 {
            let p = got.hits[rank - 1];
            // Exact metrics order by the f64 value, so two rows whose f32 scores are
            // equal may come in either index order.
            let ordered = match metric {
                Metric::Cosine => metric.ranks_before(&p, h),
                Metric::InnerProduct => p.score >= h.score,
                Metric::L2 => p.score <= h.score,
            };
            assert!(ordered, "{what}: not best first: {p:?} then {h:?}");
        }
    }
    assert!(
        got.hits.len() <= limit,
        "{what}: {} hits past limit {limit}",
        got.hits.len()
    );
    if inside.len() <= limit {
        assert!(
            !got.truncated,
            "{what}: truncated with {} inside, limit {limit}",
            inside.len()
        );
        assert!(
            got.hits.len() >= clear,
            "{what}: {} hits, {clear} clearly inside",
            got.hits.len()
        );
    }
    if clear > limit {
        assert!(
            got.truncated,
            "{what}: not truncated with {clear} inside, limit {limit}"
        );
        assert_eq!(got.hits.len(), limit, "{what}");
        // The best `limit`: rank by rank the reference's, up to near-ties.
        let tie = if metric == Metric::Cosine {
            2e-5
        } else {
            1e-9 * t64.abs() + 1e-30
        };
        for (h, &(wi, wv)) in got.hits.iter().zip(&inside) {
            assert!(
                h.index == wi || (score(h.index) - wv).abs() <= tie,
                "{what}: got {} want {wi}",
                h.index
            );
        }
    }
}

/// A threshold that admits about `want` rows for `q`: between its `want`-th and
/// `want + 1`-th best reference scores.
pub fn threshold_for(metric: Metric, q: &[f32], rows: &[&[f32]], want: usize) -> f32 {
    let mut s: Vec<f64> = rows.iter().map(|c| reference(metric, q, c)).collect();
    s.sort_by(|a, b| {
        if metric.higher_is_better() {
            b.total_cmp(a)
        } else {
            a.total_cmp(b)
        }
    });
    let i = want.min(s.len() - 1);
    ((s[i - 1] + s[i]) / 2.0) as f32
}

/// The shape of [`clustered_rows_with`]'s data.
#[derive(Clone, Copy)]
pub struct Clusters {
    /// Centres, taken in turn by the rows.
    pub centres: usize,
    /// Scale of the noise around each centre.
    pub noise: f32,
    /// Row `i` copies row `i − 1` (an exact tie) where `i % copy.0 == copy.1`.
    pub copy: (usize, usize),
    /// Row `i` is zero where `i % zero.0 == zero.1`; `None`: no zero rows.
    pub zero: Option<(usize, usize)>,
}

/// Clustered rows: four centres with small noise, every third row a copy of the one
/// before (exact ties), and a few zero rows.
pub fn clustered_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let shape = Clusters {
        centres: 4,
        noise: 0.01,
        copy: (3, 2),
        zero: Some((89, 7)),
    };
    clustered_rows_with(n, d, seed, shape)
}

/// `n` clustered rows of width `d` shaped by `c`.
pub fn clustered_rows_with(n: usize, d: usize, seed: u64, c: Clusters) -> Vec<f32> {
    let centres = data::random_matrix(c.centres, d, seed);
    let noise = data::random_matrix(n, d, seed + 1);
    let mut rows = vec![0.0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            rows[i * d + j] = centres[(i % c.centres) * d + j] + c.noise * noise[i * d + j];
        }
        if i > 0 && i % c.copy.0 == c.copy.1 {
            let (done, row) = rows.split_at_mut(i * d);
            row[..d].copy_from_slice(&done[(i - 1) * d..]);
        }
        if c.zero.is_some_and(|(every, at)| i % every == at) {
            rows[i * d..(i + 1) * d].fill(0.0);
        }
    }
    rows
}

/// A pseudo-random allow-list of about `fraction` of `n` rows, ascending.
pub fn allow(n: usize, fraction: f64, seed: u64) -> Vec<usize> {
    let mut rng = data::Rng::new(seed, 3);
    (0..n).filter(|_| rng.next_f64() < fraction).collect()
}

/// A store in `dir` (small chunks, so that it spans several) holding `rows` of width `d`
/// as ids `r0, r1, …` in order, then with the rows `deleted` picks deleted. Returns it and
/// the live rows, ascending.
pub fn store_with_deletes(
    dir: &Path,
    rows: &[f32],
    d: usize,
    deleted: impl Fn(usize) -> bool,
) -> (WarmStore, Vec<usize>) {
    let config = StoreConfig {
        dim: d,
        first_chunk_bytes: 4096,
        max_chunk_bytes: 65536,
    };
    let store = WarmStore::create(dir, config).unwrap();
    let n = rows.len() / d;
    for (i, row) in rows.chunks_exact(d).enumerate() {
        store.put(&format!("r{i}"), row, b"").unwrap();
    }
    let mut live = Vec::new();
    for i in 0..n {
        if deleted(i) {
            store.delete(&format!("r{i}")).unwrap();
        } else {
            live.push(i);
        }
    }
    (store, live)
}

/// Hits of a [`store_with_deletes`] store as hits on the rows it was built from.
pub fn row_hits(hits: &[StoreHit]) -> Vec<Hit> {
    hits.iter()
        .map(|h| Hit {
            index: h.id[1..].parse().unwrap(),
            score: h.score,
        })
        .collect()
}
