//! Range search through the public API, against an f64 reference. The grid is every
//! metric × Q = 1, 7, 300 × {unfiltered, one filter for the batch, one per query} ×
//! {a limit that cuts, one that does not}, on random and on clustered rows, at every CPU
//! level. Store range search and bad arguments are checked too.

mod common;

use common::reference::spread_rows;
use common::search_checks::{
    check_range as check, clustered_rows_with, row_hits, store_with_deletes, threshold_for,
    Clusters,
};

use common::api::executors;
use common::TempDir;
use hybridvec::{
    Corpus, Error, ExecutorConfig, Filter, HybridExecutor, MatrixRef, Metric, RangeResult,
    SearchOptions,
};

/// Clustered rows: four centres with noise, every third row a copy of the one before.
fn clustered_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let shape = Clusters {
        centres: 4,
        noise: 0.02,
        copy: (3, 2),
        zero: None,
    };
    clustered_rows_with(n, d, seed, shape)
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
    let rows = spread_rows(n, d, 7);
    let (store, live) = store_with_deletes(dir.dir(), &rows, d, |i| i % 2 == 0);
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
                hits: row_hits(&r.hits),
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
