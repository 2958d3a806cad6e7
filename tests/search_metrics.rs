//! Inner product and L2 through the public API, against an f64 reference. Every CPU
//! level this CPU has is checked, both on the streaming path (Q = 1, 7) and on the score
//! tiles (Q = 300). The data is fresh random rows of unequal norms, clustered rows with
//! exact duplicates and zero rows, and near-duplicates `1e-4` apart. Results must equal
//! the reference rank by rank. The only exception is two rows whose f64 reference scores
//! differ by less than f64 rounding, which is a tie.
//! Store searches, the score matrix and bad input are checked too.

mod common;

use common::reference::{metric64 as reference, spread_rows};
use common::search_checks::{clustered_rows_with, store_with_deletes, Clusters};

use common::api::executors;
use common::TempDir;
use hybridvec::{
    data, Corpus, Error, ExecutorConfig, Hit, HybridExecutor, MatrixRef, Metric, SearchOptions,
};

/// Indices best first under `metric` (ties: lower index), `k` of them, with their scores.
fn reference_top_k(metric: Metric, q: &[f32], rows: &[&[f32]], k: usize) -> Vec<(usize, f64)> {
    let mut all: Vec<(usize, f64)> = rows
        .iter()
        .enumerate()
        .map(|(i, c)| (i, reference(metric, q, c)))
        .collect();
    all.sort_by(|a, b| {
        let by = if metric.higher_is_better() {
            b.1.total_cmp(&a.1)
        } else {
            a.1.total_cmp(&b.1)
        };
        by.then(a.0.cmp(&b.0))
    });
    all.truncate(k);
    all
}

/// `hits` equal the reference rank by rank (a swap only between scores within f64
/// rounding), with each score the reference's rounded to f32.
fn check(what: &str, metric: Metric, q: &[f32], rows: &[&[f32]], k: usize, hits: &[Hit]) {
    let want = reference_top_k(metric, q, rows, k);
    assert_eq!(hits.len(), want.len(), "{what}: hit count");
    let qn: f64 = q.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    for (rank, (h, &(wi, ws))) in hits.iter().zip(&want).enumerate() {
        let own = reference(metric, q, rows[h.index]);
        let cn: f64 = rows[h.index]
            .iter()
            .map(|&x| (x as f64).powi(2))
            .sum::<f64>()
            .sqrt();
        // f64 rounding of the sums, in whatever order they were taken.
        let tie = 1e-12 * (qn + cn).powi(2) + 1e-300;
        assert!(
            h.index == wi || (own - ws).abs() <= tie,
            "{what}: rank {rank}: got row {} ({own:e}), reference row {wi} ({ws:e})",
            h.index
        );
        assert!(
            (h.score as f64 - own).abs() <= own.abs() * 1e-6 + tie,
            "{what}: rank {rank}: row {} scored {}, reference {own:e}",
            h.index,
            h.score
        );
    }
}

/// Clustered rows: eight centres with small noise, every fifth row an exact copy of the
/// one before it (exact ties), and a few zero rows.
fn clustered_rows(n: usize, d: usize, seed: u64) -> Vec<f32> {
    let shape = Clusters {
        centres: 8,
        noise: 0.01,
        copy: (5, 4),
        zero: Some((97, 13)),
    };
    clustered_rows_with(n, d, seed, shape)
}

fn run_case(what: &str, rows: &[f32], d: usize, queries: &[f32], k: usize) {
    let n = rows.len() / d;
    let q = queries.len() / d;
    let corpus = Corpus::new(rows.to_vec(), d).unwrap();
    let row_refs: Vec<&[f32]> = rows.chunks_exact(d).collect();
    let qm = MatrixRef::new(queries, q, d).unwrap();
    for metric in Metric::ALL {
        for (name, exec) in executors() {
            let (hits, report) = exec
                .search_with_report(qm, &corpus, k, &SearchOptions::new(metric))
                .unwrap_or_else(|e| panic!("{what} {metric} {name}: {e}"));
            assert_eq!(hits.len(), q, "{what} {metric} {name}: one list per query");
            if metric == Metric::Cosine {
                // Cosine keeps its f32 ranking, checked by tests/api.rs: the same as top_k
                // on the same backend. (`Auto` may explore the other one on the next call,
                // whose f32 sums round differently.)
                let (want, top_k_report) = exec.top_k_with_report(qm, &corpus, k).unwrap();
                if report.backend == top_k_report.backend {
                    assert_eq!(hits, want, "{what} {name}: search and top_k");
                } else {
                    // Rank by rank the same row, or rows whose f32 cosines are within
                    // rounding of each other.
                    for (i, (h, w)) in hits.iter().zip(&want).enumerate() {
                        assert_eq!(h.len(), w.len(), "{what} {name} query {i}");
                        for (a, b) in h.iter().zip(w) {
                            assert!(
                                a.index == b.index || (a.score - b.score).abs() <= 2e-5,
                                "{what} {name} query {i}: {a:?} where top_k has {b:?}"
                            );
                        }
                    }
                }
                continue;
            }
            for (i, hs) in hits.iter().enumerate() {
                let label = format!("{what} {metric} {name} Q={q} N={n} D={d} k={k} query {i}");
                check(&label, metric, qm.row(i), &row_refs, k.min(n), hs);
            }
        }
    }
}

#[test]
fn inner_product_and_l2_match_the_reference_on_random_rows() {
    for (q, n, d, k) in [
        (1usize, 3000usize, 96usize, 10usize),
        (7, 2000, 33, 25),
        (300, 1500, 64, 10),
        (1, 50, 7, 100),
        (7, 1200, 200, 300),
    ] {
        let rows = spread_rows(n, d, 11 + q as u64);
        let queries = spread_rows(q, d, 99 + d as u64);
        run_case("random", &rows, d, &queries, k);
    }
}

#[test]
fn random_rows_are_certified_in_one_pass_on_every_path() {
    // A backend that scored wrongly (say, without L2's row terms) would still be made
    // exact by searching again: the pass count is what shows it scored right.
    let (n, d) = (3000usize, 64usize);
    let corpus = Corpus::new(spread_rows(n, d, 61), d).unwrap();
    for q in [1usize, 7, 300] {
        let queries = spread_rows(q, d, 62);
        let qm = MatrixRef::new(&queries, q, d).unwrap();
        for metric in [Metric::InnerProduct, Metric::L2] {
            for (name, exec) in executors() {
                for k in [1usize, 10, 100] {
                    let (_, report) = exec
                        .search_with_report(qm, &corpus, k, &SearchOptions::new(metric))
                        .unwrap();
                    assert_eq!(report.corpus_passes, 1, "{metric} {name} Q={q} k={k}");
                }
            }
        }
    }
}

#[test]
fn inner_product_and_l2_match_the_reference_on_clustered_rows_with_ties() {
    for (q, n, d, k) in [
        (1usize, 2000usize, 48usize, 10usize),
        (7, 1500, 17, 40),
        (300, 1000, 32, 5),
    ] {
        let rows = clustered_rows(n, d, 21);
        // Queries near the centres, one exactly a row (a zero distance), one zero.
        let mut queries = clustered_rows(q.max(2), d, 23);
        queries.truncate(q * d);
        queries[..d].copy_from_slice(&rows[5 * d..6 * d]);
        if q > 1 {
            queries[d..2 * d].fill(0.0);
        }
        run_case("clustered", &rows, d, &queries, k);
    }
}

#[test]
fn l2_ranks_near_duplicates_1e_4_apart_in_their_true_order() {
    // Rows base + 1e-4·j·u (u a unit direction), shuffled, among random rows; the query is
    // the base. The expanded form's f32 error (about D·2⁻²⁴·‖c‖² ≈ 1e-3 here) is far
    // larger than the distances (1e-8·j²), so only the exact re-score orders them.
    let d = 128;
    let base: Vec<f32> = data::random_vec(d, 5, 0).iter().map(|x| x * 3.0).collect();
    let dir = data::random_vec(d, 5, 1);
    let dn = dir.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
    let n_dup = 60;
    let mut rows = data::random_matrix(4000, d, 6);
    for j in 0..n_dup {
        let at = (j * 61 + 17) % 4000;
        let step = 1e-4 * ((j * 37) % n_dup + 1) as f64 / dn;
        for t in 0..d {
            rows[at * d + t] = (base[t] as f64 + step * dir[t] as f64) as f32;
        }
    }
    for q in [1usize, 7, 300] {
        let queries: Vec<f32> = base.iter().cycle().take(q * d).copied().collect();
        for k in [1usize, 10, 59, 80] {
            let corpus = Corpus::new(rows.clone(), d).unwrap();
            let row_refs: Vec<&[f32]> = rows.chunks_exact(d).collect();
            let qm = MatrixRef::new(&queries, q, d).unwrap();
            for (name, exec) in executors() {
                let hits = exec
                    .search(qm, &corpus, k, &SearchOptions::new(Metric::L2))
                    .unwrap();
                for (i, hs) in hits.iter().enumerate() {
                    let what = format!("near-duplicates {name} Q={q} k={k} query {i}");
                    check(&what, Metric::L2, qm.row(i), &row_refs, k, hs);
                }
            }
        }
    }
}

#[test]
fn a_store_searched_with_any_metric_gives_the_reference_answer() {
    let (n, d) = (2500usize, 40usize);
    let dir = TempDir::new("search-metrics-store");
    let rows = spread_rows(n, d, 31);
    // Deleted rows never come back, whatever the metric.
    let (store, live) = store_with_deletes(dir.dir(), &rows, d, |i| i % 3 == 1);
    let live_rows: Vec<&[f32]> = live.iter().map(|&i| &rows[i * d..(i + 1) * d]).collect();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    for q in [1usize, 7, 40] {
        let queries = spread_rows(q, d, 41);
        let qm = MatrixRef::new(&queries, q, d).unwrap();
        for metric in [Metric::InnerProduct, Metric::L2] {
            for k in [1usize, 10, 2000] {
                let got = exec
                    .search_store(qm, &store, k, &SearchOptions::new(metric))
                    .unwrap();
                for (i, hs) in got.iter().enumerate() {
                    // Store rows are in put order: live row r is `live_rows[...]` by id.
                    let hits: Vec<Hit> = hs
                        .iter()
                        .map(|h| {
                            let orig: usize = h.id[1..].parse().unwrap();
                            let index = live.binary_search(&orig).unwrap_or_else(|_| {
                                panic!("{metric}: deleted row {orig} returned")
                            });
                            Hit {
                                index,
                                score: h.score,
                            }
                        })
                        .collect();
                    let what = format!("store {metric} Q={q} k={k} query {i}");
                    check(
                        &what,
                        metric,
                        qm.row(i),
                        &live_rows,
                        k.min(live.len()),
                        &hits,
                    );
                }
            }
        }
    }
}

#[test]
fn the_score_matrix_of_every_metric_is_within_f32_rounding_of_the_reference() {
    let (n, d) = (700usize, 50usize);
    let rows = spread_rows(n, d, 51);
    let corpus = Corpus::new(rows.clone(), d).unwrap();
    for q in [1usize, 7, 300] {
        let queries = spread_rows(q, d, 52);
        let qm = MatrixRef::new(&queries, q, d).unwrap();
        for metric in Metric::ALL {
            for (name, exec) in executors() {
                let s = exec.similarity(qm, &corpus, metric).unwrap();
                assert_eq!((s.rows(), s.cols()), (q, n));
                for i in 0..q {
                    let qi = qm.row(i);
                    let qn = qi.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                    for j in 0..n {
                        let c = &rows[j * d..(j + 1) * d];
                        let cn = c.iter().map(|&x| (x as f64).powi(2)).sum::<f64>().sqrt();
                        let want = reference(metric, qi, c);
                        let tol = match metric {
                            Metric::Cosine => 1e-5,
                            Metric::InnerProduct => 1e-5 * qn * cn,
                            Metric::L2 => 1e-5 * (qn + cn).powi(2),
                        };
                        let got = s.get(i, j) as f64;
                        assert!(
                            (got - want).abs() <= tol,
                            "{metric} {name} [{i}][{j}]: {got} vs {want}"
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bad_input_gets_typed_errors_for_every_metric() {
    let corpus = Corpus::new(data::random_matrix(10, 4, 1), 4).unwrap();
    let exec = HybridExecutor::new(ExecutorConfig::default()).unwrap();
    let q = [1.0f32, 2.0, 3.0, 4.0];
    let qm = MatrixRef::new(&q, 1, 4).unwrap();
    for metric in Metric::ALL {
        let o = SearchOptions::new(metric);
        assert!(matches!(
            exec.search(qm, &corpus, 0, &o),
            Err(Error::InvalidK { .. })
        ));
        let wide = [0.0f32; 5];
        assert!(matches!(
            exec.search(MatrixRef::new(&wide, 1, 5).unwrap(), &corpus, 1, &o),
            Err(Error::DimensionMismatch { .. })
        ));
        let nan = [1.0, f32::NAN, 0.0, 0.0];
        assert!(matches!(
            exec.search(MatrixRef::new(&nan, 1, 4).unwrap(), &corpus, 1, &o),
            Err(Error::NonFinite { .. })
        ));
        // k past the corpus returns every row.
        assert_eq!(exec.search(qm, &corpus, 1000, &o).unwrap()[0].len(), 10);
    }
    // L2 with norms whose squares pass f32's range is refused, not answered with inf.
    let huge = [1e30f32, 0.0, 0.0, 0.0];
    let e = exec
        .search(
            MatrixRef::new(&huge, 1, 4).unwrap(),
            &corpus,
            1,
            &SearchOptions::new(Metric::L2),
        )
        .unwrap_err();
    assert!(matches!(e, Error::ScoreOutOfRange { .. }), "{e}");
    // Inner product ranks a huge query fine (only the direction matters), and reports it
    // when the score itself passes f32's range.
    let big = Corpus::new(vec![1e20f32, 0.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0], 4).unwrap();
    let e = exec
        .search(
            MatrixRef::new(&huge, 1, 4).unwrap(),
            &big,
            1,
            &SearchOptions::new(Metric::InnerProduct),
        )
        .unwrap_err();
    assert!(matches!(e, Error::ScoreOutOfRange { .. }), "{e}");
    let fine = exec
        .search(
            MatrixRef::new(&huge, 1, 4).unwrap(),
            &corpus,
            3,
            &SearchOptions::new(Metric::InnerProduct),
        )
        .unwrap();
    assert_eq!(fine[0].len(), 3);
}
