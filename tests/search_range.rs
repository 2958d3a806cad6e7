//! Range search through the public API, against an f64 reference. The grid is every
//! metric × Q = 1, 7, 300 × {unfiltered, one filter for the batch, one per query} ×
//! {a limit that cuts, one that does not}, on random and on clustered rows, at every CPU
//! level. Store range search and bad arguments are checked too.

mod common;

use common::reference::{metric64 as reference, spread_rows};

use common::api::executors;
use common::TempDir;
use hybridvec::{
    data, Corpus, Error, ExecutorConfig, Filter, Hit, HybridExecutor, MatrixRef, Metric,
    RangeResult, SearchOptions, StoreConfig, WarmStore,
};

/// `a` better than `b` under `metric`.
fn better(metric: Metric, a: f64, b: f64) -> bool {
    if metric.higher_is_better() {
        a > b
    } else {
        a < b
    }
}

/// How far from the threshold a row's reference score may be and still fall either way
/// (the scores are compared as reported in f32; cosine is f32 throughout).
fn slack(metric: Metric, t: f64) -> f64 {
    match metric {
        Metric::Cosine => 1e-5,
        _ => 1e-6 * t.abs() + 1e-30,
    }
}

/// One query's range result against the reference over the `allowed` rows.
#[allow(clippy::too_many_arguments)]
fn check(
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

fn clustered_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let centres = data::random_matrix(4, d, seed);
    let noise = data::random_matrix(n, d, seed + 1);
    let mut rows = vec![0.0f32; n * d];
    for i in 0..n {
        for j in 0..d {
            rows[i * d + j] = centres[(i % 4) * d + j] + 0.02 * noise[i * d + j];
        }
        if i % 3 == 2 {
            let (done, row) = rows.split_at_mut(i * d);
            row[..d].copy_from_slice(&done[(i - 1) * d..]);
        }
    }
    rows
}

/// A threshold that admits about `want` rows for `q`: between its `want`-th and
/// `want + 1`-th best reference scores.
fn threshold_for(metric: Metric, q: &[f32], rows: &[&[f32]], want: usize) -> f32 {
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

#[test]
fn every_metric_matches_the_reference_with_and_without_filters() {
    let (n, d) = (1500usize, 24usize);
    for (name_data, rows) in [
        ("random", spread_rows(n, d, 1)),
        ("clustered", clustered_rows(n, d, 2)),
    ] {
        let corpus = Corpus::new(rows.clone(), d).unwrap();
        let row_refs: Vec<&[f32]> = rows.chunks_exact(d).collect();
        let all: Vec<usize> = (0..n).collect();
        let batch: Vec<usize> = (0..n).filter(|i| i % 5 != 1).collect();
        for q in [1usize, 7, 300] {
            let queries = spread_rows(q, d, 3 + q as u64);
            let qm = MatrixRef::new(&queries, q, d).unwrap();
            let per: Vec<Vec<usize>> = (0..q)
                .map(|i| {
                    (0..n)
                        .filter(|r| (r + i) % [2, 50, 7][i % 3] == 0)
                        .collect()
                })
                .collect();
            for metric in Metric::ALL {
                // About 10 rows for the first query, from a few to many for the others;
                // and one that admits about half the corpus (several rounds).
                for (want, limit) in [(10usize, 1000usize), (10, 4), (700, 5000), (700, 100)] {
                    let t = threshold_for(metric, qm.row(0), &row_refs, want);
                    for (name, exec) in executors() {
                        let cases = [
                            ("unfiltered", SearchOptions::new(metric)),
                            (
                                "batch filter",
                                SearchOptions::new(metric).with_filter(Filter::Rows(batch.clone())),
                            ),
                            (
                                "per-query filters",
                                SearchOptions::new(metric).with_filter(Filter::PerQuery(
                                    per.iter().map(|p| Filter::Rows(p.clone())).collect(),
                                )),
                            ),
                        ];
                        for (case, options) in &cases {
                            let got = exec.range(qm, &corpus, t, limit, options).unwrap();
                            assert_eq!(got.len(), q);
                            for (i, r) in got.iter().enumerate() {
                                let allowed: &[usize] = match *case {
                                    "unfiltered" => &all,
                                    "batch filter" => &batch,
                                    _ => &per[i],
                                };
                                let what = format!("{name_data} {metric} {name} {case} Q={q} want~{want} limit={limit} query {i}");
                                check(&what, metric, qm.row(i), &row_refs, allowed, t, limit, r);
                            }
                        }
                        if q == 300 {
                            break;
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn store_range_and_bad_arguments() {
    let (n, d) = (800usize, 12usize);
    let dir = TempDir::new("search-range-store");
    let store = WarmStore::create(
        dir.dir(),
        StoreConfig {
            dim: d,
            first_chunk_bytes: 4096,
            max_chunk_bytes: 65536,
        },
    )
    .unwrap();
    let rows = spread_rows(n, d, 7);
    for i in 0..n {
        store
            .put(&format!("r{i}"), &rows[i * d..(i + 1) * d], b"")
            .unwrap();
    }
    for i in (0..n).step_by(2) {
        store.delete(&format!("r{i}")).unwrap();
    }
    let live: Vec<usize> = (1..n).step_by(2).collect();
    let row_refs: Vec<&[f32]> = rows.chunks_exact(d).collect();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let queries = spread_rows(3, d, 8);
    let qm = MatrixRef::new(&queries, 3, d).unwrap();
    for metric in Metric::ALL {
        let t = threshold_for(metric, qm.row(0), &row_refs, 40);
        let got = exec
            .range_store(qm, &store, t, 1000, &SearchOptions::new(metric))
            .unwrap();
        for (i, r) in got.iter().enumerate() {
            let as_range = RangeResult {
                hits: r
                    .hits
                    .iter()
                    .map(|h| Hit {
                        index: h.id[1..].parse().unwrap(),
                        score: h.score,
                    })
                    .collect(),
                truncated: r.truncated,
            };
            check(
                &format!("store {metric} {i}"),
                metric,
                qm.row(i),
                &row_refs,
                &live,
                t,
                1000,
                &as_range,
            );
        }
    }
    let corpus = Corpus::new(rows, d).unwrap();
    let o = SearchOptions::default();
    assert!(matches!(
        exec.range(qm, &corpus, f32::NAN, 5, &o),
        Err(Error::InvalidConfig(_))
    ));
    assert!(matches!(
        exec.range(qm, &corpus, 0.5, 0, &o),
        Err(Error::InvalidConfig(_))
    ));
    let short = SearchOptions::default().with_filter(Filter::PerQuery(vec![Filter::Rows(vec![1])]));
    assert!(matches!(
        exec.range(qm, &corpus, 0.5, 5, &short),
        Err(Error::InvalidConfig(_))
    ));
    // Infinite thresholds: everything (up to the limit), or nothing.
    let everything = exec
        .range(qm, &corpus, f32::NEG_INFINITY, usize::MAX, &o)
        .unwrap();
    assert!(everything.iter().all(|r| r.hits.len() == n && !r.truncated));
    let nothing = exec.range(qm, &corpus, f32::INFINITY, 5, &o).unwrap();
    assert!(nothing.iter().all(|r| r.hits.is_empty() && !r.truncated));
}
