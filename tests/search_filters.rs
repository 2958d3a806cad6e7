//! Filtered search through the public API, against an f64 reference over the allowed
//! rows. The grid is every metric × Q = 1, 7, 300 × {one filter for the batch, one per
//! query} × {gather, mask, auto}, on random rows and on clustered rows with ties, at every
//! CPU level. Also checked:
//! * the rules (an empty allow-list, `k` past the allowed set, rows past the corpus);
//! * store filters by id, with deleted rows and unknown ids;
//! * per-query lists searched again (L2 near-duplicates) keep their own lists;
//! * a proptest that gather and mask give identical answers at every selectivity.

mod common;

use common::reference::spread_rows;
use common::search_checks::{
    allow, check_top_k_among as check, clustered_rows, row_hits, store_with_deletes,
};

use common::api::executors;
use common::TempDir;
use hybridvec::{
    Corpus, Error, ExecutorConfig, Filter, FilterPlan, Hit, HybridExecutor, MatrixRef, Metric,
    SearchOptions,
};
use proptest::prelude::*;

fn bitmap(rows: &[usize], n: usize) -> Vec<u64> {
    let mut words = vec![0u64; n.div_ceil(64)];
    for &r in rows {
        words[r / 64] |= 1 << (r % 64);
    }
    words
}

#[test]
fn every_metric_and_plan_matches_the_reference_with_batch_and_per_query_filters() {
    for (data_name, rows) in [
        ("random", spread_rows(2000, 40, 3)),
        ("clustered", clustered_rows(2000, 40, 4)),
    ] {
        let (n, d, k) = (2000usize, 40usize, 12usize);
        let corpus = Corpus::new(rows.clone(), d).unwrap();
        for q in [1usize, 7, 300] {
            let queries = spread_rows(q, d, 5 + q as u64);
            let qm = MatrixRef::new(&queries, q, d).unwrap();
            let batch = allow(n, 0.05, 6);
            let per: Vec<Vec<usize>> = (0..q)
                .map(|i| allow(n, [0.002, 0.03, 0.4, 0.9][i % 4], 100 + i as u64))
                .collect();
            for metric in Metric::ALL {
                for plan in [FilterPlan::Auto, FilterPlan::Gather, FilterPlan::Mask] {
                    for (name, exec) in executors() {
                        let label = format!("{data_name} {metric} {plan:?} {name} Q={q}");
                        // One filter for the batch, as a bitmap.
                        let o = SearchOptions::new(metric)
                            .with_filter(Filter::Bitmap(bitmap(&batch, n)))
                            .with_filter_plan(plan);
                        let hits = exec.search(qm, &corpus, k, &o).unwrap();
                        assert_eq!(hits.len(), q);
                        for (i, hs) in hits.iter().enumerate() {
                            check(
                                &format!("{label} batch query {i}"),
                                metric,
                                qm.row(i),
                                &rows,
                                d,
                                &batch,
                                k,
                                hs,
                            );
                        }
                        // One filter per query, as row lists (reversed: any order works).
                        let o = SearchOptions::new(metric)
                            .with_filter(Filter::PerQuery(
                                per.iter()
                                    .map(|a| Filter::Rows(a.iter().rev().copied().collect()))
                                    .collect(),
                            ))
                            .with_filter_plan(plan);
                        let hits = exec.search(qm, &corpus, k, &o).unwrap();
                        assert_eq!(hits.len(), q);
                        for (i, hs) in hits.iter().enumerate() {
                            check(
                                &format!("{label} per-query {i}"),
                                metric,
                                qm.row(i),
                                &rows,
                                d,
                                &per[i],
                                k,
                                hs,
                            );
                        }
                        if q == 300 {
                            break; // the levels differ in the tiles, checked above once each
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn a_query_searched_again_keeps_its_own_list() {
    // 60 rows 1e-4 apart around `base` among random rows. Query 1 is `base` and allows
    // every row: its L2 candidates cannot be certified in the first round (f32's error
    // is far larger than their distances), so it alone is searched again, and that round
    // must take its own list, not the first query's. Queries 0 and 2 are random, with
    // lists of their own, and certify at once.
    let (n, d, k) = (4000usize, 64usize, 10usize);
    let base: Vec<f32> = hybridvec::data::random_vec(d, 15, 0)
        .iter()
        .map(|x| x * 3.0)
        .collect();
    let dir = hybridvec::data::random_vec(d, 15, 1);
    let dn = dir.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let mut rows = spread_rows(n, d, 16);
    for j in 0..60 {
        let at = (j * 61 + 17) % n;
        let step = 1e-4 * (j + 1) as f64 / dn;
        for t in 0..d {
            rows[at * d + t] = (base[t] as f64 + step * dir[t] as f64) as f32;
        }
    }
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let mut queries = spread_rows(3, d, 17);
    queries[d..2 * d].copy_from_slice(&base);
    let qm = MatrixRef::new(&queries, 3, d).unwrap();
    let lists: [Vec<usize>; 3] = [(0..500).collect(), (0..n).collect(), (2000..2600).collect()];
    for plan in [FilterPlan::Auto, FilterPlan::Gather, FilterPlan::Mask] {
        for (name, exec) in executors() {
            let options = SearchOptions::new(Metric::L2)
                .with_filter(Filter::PerQuery(
                    lists.iter().map(|l| Filter::Rows(l.clone())).collect(),
                ))
                .with_filter_plan(plan);
            let (hits, report) = exec.search_with_report(qm, &corpus, k, &options).unwrap();
            let label = format!("{plan:?} {name}");
            assert!(report.corpus_passes > 1, "{label}: one round: {report:?}");
            for (i, hs) in hits.iter().enumerate() {
                let what = format!("{label} query {i}");
                check(&what, Metric::L2, qm.row(i), &rows, d, &lists[i], k, hs);
            }
        }
    }
}

#[test]
fn empty_lists_k_past_the_allowed_set_and_bad_rows() {
    let (n, d) = (500usize, 8usize);
    let rows = spread_rows(n, d, 9);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let queries = spread_rows(3, d, 10);
    let qm = MatrixRef::new(&queries, 3, d).unwrap();
    for metric in Metric::ALL {
        let with = |f: Filter| SearchOptions::new(metric).with_filter(f);
        // An empty allow-list: empty results, not an error (for the batch, or one query).
        let hits = exec
            .search(qm, &corpus, 5, &with(Filter::Rows(vec![])))
            .unwrap();
        assert_eq!(hits, vec![Vec::<Hit>::new(); 3]);
        let hits = exec
            .search(qm, &corpus, 5, &with(Filter::Bitmap(vec![])))
            .unwrap();
        assert_eq!(hits, vec![Vec::<Hit>::new(); 3]);
        let per = Filter::PerQuery(vec![
            Filter::Rows(vec![3]),
            Filter::Rows(vec![]),
            Filter::Rows(vec![4, 4, 2]),
        ]);
        let hits = exec.search(qm, &corpus, 5, &with(per)).unwrap();
        assert_eq!(hits[0].iter().map(|h| h.index).collect::<Vec<_>>(), [3]);
        assert!(hits[1].is_empty());
        let mut two: Vec<usize> = hits[2].iter().map(|h| h.index).collect();
        two.sort();
        assert_eq!(two, [2, 4], "duplicates count once");
        // k past the allowed set: every allowed row.
        let allowed = vec![7usize, 99, 250, 499];
        let hits = exec
            .search(qm, &corpus, 100, &with(Filter::Rows(allowed.clone())))
            .unwrap();
        for (i, hs) in hits.iter().enumerate() {
            check(
                &format!("{metric} k>allowed {i}"),
                metric,
                qm.row(i),
                &rows,
                d,
                &allowed,
                100,
                hs,
            );
        }
        // Rows past the corpus are typed errors naming the row.
        let e = exec
            .search(qm, &corpus, 5, &with(Filter::Rows(vec![1, 500])))
            .unwrap_err();
        assert!(
            matches!(
                e,
                Error::FilterOutOfRange {
                    index: 500,
                    rows: 500
                }
            ),
            "{e}"
        );
        let mut words = bitmap(&[1], n);
        words.push(1); // row 512
        let e = exec
            .search(qm, &corpus, 5, &with(Filter::Bitmap(words)))
            .unwrap_err();
        assert!(
            matches!(e, Error::FilterOutOfRange { index: 512, .. }),
            "{e}"
        );
        // Ids need a store; per-query lists must match the queries and not nest.
        let e = exec
            .search(qm, &corpus, 5, &with(Filter::Ids(vec!["a".into()])))
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        let e = exec
            .search(
                qm,
                &corpus,
                5,
                &with(Filter::PerQuery(vec![Filter::Rows(vec![1])])),
            )
            .unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
        let nested = Filter::PerQuery(vec![
            Filter::PerQuery(vec![]),
            Filter::Rows(vec![]),
            Filter::Rows(vec![]),
        ]);
        let e = exec.search(qm, &corpus, 5, &with(nested)).unwrap_err();
        assert!(matches!(e, Error::InvalidConfig(_)), "{e}");
    }
}

#[test]
fn store_filters_by_id_never_return_deleted_rows_and_reject_unknown_ids() {
    let (n, d) = (1200usize, 16usize);
    let dir = TempDir::new("search-filters-store");
    let rows = spread_rows(n, d, 12);
    let (store, _) = store_with_deletes(dir.dir(), &rows, d, |i| i % 4 == 0);
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let queries = spread_rows(7, d, 13);
    let qm = MatrixRef::new(&queries, 7, d).unwrap();
    // Allowed: every third row that is still live.
    let allowed: Vec<usize> = (0..n).filter(|i| i % 3 == 0 && i % 4 != 0).collect();
    for metric in Metric::ALL {
        for plan in [FilterPlan::Gather, FilterPlan::Mask] {
            let ids = Filter::Ids(allowed.iter().map(|i| format!("r{i}")).collect());
            let o = SearchOptions::new(metric)
                .with_filter(ids)
                .with_filter_plan(plan);
            let hits = exec.search_store(qm, &store, 10, &o).unwrap();
            for (i, hs) in hits.iter().enumerate() {
                check(
                    &format!("store ids {metric} {plan:?} {i}"),
                    metric,
                    qm.row(i),
                    &rows,
                    d,
                    &allowed,
                    10,
                    &row_hits(hs),
                );
            }
            // Rows (store rows = put order here) that include deleted ones: never returned.
            let with_dead: Vec<usize> = (0..n).filter(|i| i % 2 == 0).collect();
            let o = SearchOptions::new(metric)
                .with_filter(Filter::Rows(with_dead.clone()))
                .with_filter_plan(plan);
            let hits = exec.search_store(qm, &store, 2000, &o).unwrap();
            let live: Vec<usize> = with_dead.iter().copied().filter(|i| i % 4 != 0).collect();
            for hs in &hits {
                assert_eq!(
                    hs.len(),
                    live.len(),
                    "{metric} {plan:?}: every allowed live row, no deleted one"
                );
                assert!(hs.iter().all(|h| h.row % 4 != 0));
            }
        }
        // An unknown id, or a deleted one, is a typed error naming it.
        for bad in ["nope", "r0"] {
            let o =
                SearchOptions::new(metric).with_filter(Filter::Ids(vec!["r3".into(), bad.into()]));
            let e = exec.search_store(qm, &store, 5, &o).unwrap_err();
            assert!(matches!(&e, Error::UnknownId { id } if id == bad), "{e}");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Gather and mask return the same hits (rows and scores) at every selectivity, for
    /// every metric.
    #[test]
    fn gather_and_mask_agree_at_every_selectivity(
        n in 1usize..3000,
        d in 1usize..80,
        q in 1usize..40,
        k in 1usize..60,
        fraction in 0.0f64..1.0,
        seed in any::<u64>(),
    ) {
        let rows = spread_rows(n, d, seed);
        let corpus = Corpus::new(rows, d).unwrap();
        let queries = spread_rows(q, d, seed ^ 1);
        let qm = MatrixRef::new(&queries, q, d).unwrap();
        let allowed = allow(n, fraction, seed ^ 2);
        let exec = &*common::api::DEFAULT;
        for metric in Metric::ALL {
            let base = SearchOptions::new(metric).with_filter(Filter::Rows(allowed.clone()));
            let gather = exec.search(qm, &corpus, k, &base.clone().with_filter_plan(FilterPlan::Gather)).unwrap();
            let mask = exec.search(qm, &corpus, k, &base.with_filter_plan(FilterPlan::Mask)).unwrap();
            if metric == Metric::Cosine {
                // f32 ranking: the same rows up to near-ties, scores within rounding.
                for (g, m) in gather.iter().zip(&mask) {
                    prop_assert_eq!(g.len(), m.len());
                    for (a, b) in g.iter().zip(m) {
                        prop_assert!(a.index == b.index || (a.score - b.score).abs() <= 2e-6, "{:?} {:?}", a, b);
                    }
                }
            } else {
                prop_assert_eq!(&gather, &mask, "{}", metric);
            }
        }
    }
}
