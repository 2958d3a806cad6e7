//! Public API tests: every result is checked against an f64 reference, on the default
//! executor and on one executor per instruction-set level this CPU has (scalar, and
//! AVX2+FMA and AVX-512F on x86-64 or NEON on aarch64: each level's streaming kernels and
//! score tiles), over random shapes on the streaming path (Q < 16) and from there up to
//! Q = 300, where the tiled path takes over (at Q >= 16, or 24 on AVX-512). A level the CPU
//! lacks is reported as skipped, with the reason. `.ci/run` also runs this file and
//! `api_misuse.rs` for aarch64 under qemu, with fewer proptest cases (`PROPTEST_CASES`).

mod common;

use common::api::*;
use common::reference::{reference_scores, reference_top_k};
use hybridvec::{data, Corpus, Hit, MatrixRef, SimdLevel};
use proptest::prelude::*;

// ---------------------------------------------------------------------------------------
// Shapes.
// ---------------------------------------------------------------------------------------

/// Dimensions 1..2000, with the awkward ones around SIMD widths and unroll factors
/// drawn more often than a uniform draw would.
fn dim() -> impl Strategy<Value = usize> {
    prop_oneof![
        3 => 1usize..2000,
        1 => prop::sample::select(vec![
            1usize, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 65, 127, 255, 257, 767, 768, 769,
            1023, 1025, 1999,
        ]),
    ]
}

/// `(Q, N, D, k, seed)` with `Q` in `queries`, `N` in 1..5000 (small `N` often, so `k > N`
/// happens), `D` in 1..2000, `k` in 1..50 and `Q × N × D <= MAX_WORK`.
fn shape(
    queries: std::ops::Range<usize>,
) -> impl Strategy<Value = (usize, usize, usize, usize, u64)> {
    // Small k keeps a heap per query, k above 64 a buffer: both are drawn.
    let k = prop_oneof![3 => 1usize..50, 1 => 50usize..1500];
    (queries, dim(), k, any::<u64>()).prop_flat_map(|(q, d, k, seed)| {
        let max_n = (MAX_WORK / (q * d)).clamp(1, 4999);
        let n = prop_oneof![1 => 1usize..=max_n.min(64), 3 => 1usize..=max_n];
        (Just(q), n, Just(d), Just(k), Just(seed))
    })
}

/// Fresh standard normal queries and corpus for one case.
fn inputs(q: usize, n: usize, d: usize, seed: u64) -> (Vec<f32>, Corpus, Vec<Vec<f64>>) {
    let corpus_data = data::random_matrix(n, d, seed);
    let queries = data::random_matrix(q, d, seed.wrapping_add(0x9E37_79B9_7F4A_7C15));
    let reference = reference_scores(&queries, &corpus_data, d);
    (queries, Corpus::new(corpus_data, d).unwrap(), reference)
}

/// 28 cases per property in release builds, 6 in debug builds (much slower);
/// `PROPTEST_CASES` overrides both (`.ci/run` sets it for the run under qemu).
fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(if cfg!(debug_assertions) { 6 } else { 28 });
    ProptestConfig {
        cases,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn cosine_matches_f64_streaming((q, n, d, _k, seed) in shape(1..GEMM_MIN_QUERIES)) {
        let (queries, corpus, reference) = inputs(q, n, d, seed);
        for (name, exec) in executors() {
            check_cosine(exec, name, &queries, q, &corpus, &reference, COS_TOL)?;
        }
    }

    #[test]
    fn cosine_matches_f64_gemm((q, n, d, _k, seed) in shape(GEMM_MIN_QUERIES..300)) {
        let (queries, corpus, reference) = inputs(q, n, d, seed);
        for (name, exec) in executors() {
            check_cosine(exec, name, &queries, q, &corpus, &reference, COS_TOL)?;
        }
    }

    #[test]
    fn top_k_matches_f64_streaming((q, n, d, k, seed) in shape(1..GEMM_MIN_QUERIES)) {
        let (queries, corpus, reference) = inputs(q, n, d, seed);
        for (name, exec) in executors() {
            check_top_k(exec, name, &queries, q, &corpus, k, &reference)?;
        }
    }

    #[test]
    fn top_k_matches_f64_gemm((q, n, d, k, seed) in shape(GEMM_MIN_QUERIES..300)) {
        let (queries, corpus, reference) = inputs(q, n, d, seed);
        for (name, exec) in executors() {
            check_top_k(exec, name, &queries, q, &corpus, k, &reference)?;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixed cases.
// ---------------------------------------------------------------------------------------

#[test]
fn the_best_level_of_this_cpu_is_among_those_tested() {
    let best = SimdLevel::detect();
    let names: Vec<&str> = LEVELS.iter().map(|(name, _)| *name).collect();
    assert!(
        names.contains(&best.name()),
        "{} not among {names:?}",
        best.name()
    );
    assert_eq!(
        DEFAULT.capabilities().simd,
        best,
        "the default executor's level"
    );
    // Every aarch64 CPU has NEON: there the NEON kernels, not only the scalar path, are
    // what the other tests check.
    #[cfg(target_arch = "aarch64")]
    assert_eq!(best, SimdLevel::Neon);
    println!(
        "api tests on {}: levels default ({}), {}",
        std::env::consts::ARCH,
        DEFAULT.capabilities().simd.name(),
        names.join(", ")
    );
}

#[test]
fn dimension_65536_matches_f64() {
    // f32 accumulation over 65536 terms: rounding error grows with the number of terms
    // (about eps·sqrt(D) for random data, up to eps·D in the worst case), so the bound here
    // is 1e-4 instead of 1e-5. As above, it is relative to ‖q‖‖c‖ because |cos| <= 1.
    let d = 65536;
    let n = 12;
    let corpus_data = data::random_matrix(n, d, 11);
    let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
    // 3 queries take the streaming path, 16 the GEMM path.
    for q in [3, GEMM_MIN_QUERIES] {
        let queries = data::random_matrix(q, d, 12);
        let reference = reference_scores(&queries, &corpus_data, d);
        for (name, exec) in executors() {
            ok(check_cosine(
                exec, name, &queries, q, &corpus, &reference, 1e-4,
            ));
            let hits = exec
                .top_k(MatrixRef::new(&queries, q, d).unwrap(), &corpus, 5)
                .unwrap();
            for (i, (hs, r)) in hits.iter().zip(&reference).enumerate() {
                ok(check_hits(name, i, hs, r, 5, 1e-4, 2e-4));
            }
        }
    }
}

#[test]
fn zero_query_and_zero_row_score_exactly_zero() {
    let (n, d) = (600, 37);
    let mut corpus_data = data::random_matrix(n, d, 21);
    let zero_row = 300;
    corpus_data[zero_row * d..(zero_row + 1) * d].fill(0.0);
    let corpus = Corpus::new(corpus_data, d).unwrap();
    // Query 1 is zero; the batch sizes cover the streaming and the GEMM path.
    for q in [3, GEMM_MIN_QUERIES + 4] {
        let mut queries = data::random_matrix(q, d, 22);
        queries[d..2 * d].fill(0.0);
        for (name, exec) in executors() {
            let view = MatrixRef::new(&queries, q, d).unwrap();
            let s = exec.cosine_similarity(view, &corpus).unwrap();
            assert!(
                s.row(1).iter().all(|&x| x == 0.0),
                "{name} Q={q}: zero query"
            );
            for i in 0..q {
                assert_eq!(s.get(i, zero_row), 0.0, "{name} Q={q}: zero row, query {i}");
            }
            // Every score of the zero query ties at 0, so its hits are rows 0, 1, 2, ...
            let hits = exec.top_k(view, &corpus, 7).unwrap();
            let want: Vec<Hit> = (0..7).map(|index| Hit { index, score: 0.0 }).collect();
            assert_eq!(hits[1], want, "{name} Q={q}: zero query hits");
            for (i, hs) in hits.iter().enumerate() {
                assert!(
                    hs.iter().all(|h| h.index != zero_row || h.score == 0.0),
                    "{name} Q={q}: query {i}"
                );
            }
        }
    }
}

#[test]
fn k_larger_than_corpus_returns_every_row() {
    let (n, d) = (9, 21);
    let corpus_data = data::random_matrix(n, d, 31);
    let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
    for q in [2, GEMM_MIN_QUERIES] {
        let queries = data::random_matrix(q, d, 32);
        let reference = reference_scores(&queries, &corpus_data, d);
        for (name, exec) in executors() {
            for k in [n + 1, 50, usize::MAX] {
                let hits = exec
                    .top_k(MatrixRef::new(&queries, q, d).unwrap(), &corpus, k)
                    .unwrap();
                for (i, (hs, r)) in hits.iter().zip(&reference).enumerate() {
                    assert_eq!(hs.len(), n, "{name} Q={q} k={k}");
                    let mut idx: Vec<usize> = hs.iter().map(|h| h.index).collect();
                    idx.sort_unstable();
                    assert_eq!(idx, (0..n).collect::<Vec<_>>(), "{name} Q={q} k={k}");
                    ok(check_hits(name, i, hs, r, k, COS_TOL, TIE_TOL));
                }
            }
        }
    }
}

#[test]
fn exact_ties_come_out_lower_index_first() {
    // Copies of one row spread over different streaming blocks (2048 rows) and GEMM tiles
    // (256 rows), so the tie is resolved across tasks and heap merges too.
    let (n, d) = (5000, 45);
    let mut corpus_data = data::random_matrix(n, d, 41);
    let src = 4321;
    let copies = [7usize, 250, 256, 2047, 2048, 3000, src];
    let row = corpus_data[src * d..(src + 1) * d].to_vec();
    for &c in &copies {
        corpus_data[c * d..(c + 1) * d].copy_from_slice(&row);
    }
    let corpus = Corpus::new(corpus_data, d).unwrap();
    let mut want: Vec<usize> = copies.to_vec();
    want.sort_unstable();
    for q in [1, 5, GEMM_MIN_QUERIES, 40] {
        // Every query is a scaled copy of the duplicated row (so the copies are its best
        // hits) except query 0, which is random: for it the copies tie somewhere else.
        let mut queries = data::random_matrix(q, d, 42);
        for i in 1..q {
            for (x, &r) in queries[i * d..(i + 1) * d].iter_mut().zip(&row) {
                *x = r * (i as f32 + 0.5);
            }
        }
        for (name, exec) in executors() {
            let view = MatrixRef::new(&queries, q, d).unwrap();
            let all = exec.top_k(view, &corpus, n).unwrap();
            for (i, hs) in all.iter().enumerate() {
                let pos: Vec<usize> = hs
                    .iter()
                    .enumerate()
                    .filter(|(_, h)| copies.contains(&h.index))
                    .map(|(p, _)| p)
                    .collect();
                let got: Vec<usize> = pos.iter().map(|&p| hs[p].index).collect();
                assert_eq!(
                    got, want,
                    "{name} Q={q} query {i}: copies out of index order"
                );
                let score = hs[pos[0]].score;
                assert!(
                    pos.iter().all(|&p| hs[p].score == score),
                    "{name} Q={q} query {i}: copies of one row scored differently: {:?}",
                    pos.iter().map(|&p| hs[p]).collect::<Vec<_>>()
                );
                assert!(
                    pos.windows(2).all(|w| w[1] == w[0] + 1),
                    "{name} Q={q} query {i}: copies not adjacent: {pos:?}"
                );
                if i > 0 {
                    assert_eq!(pos[0], 0, "{name} Q={q} query {i}: copies are not the best");
                }
            }
            let top = exec.top_k(view, &corpus, 3).unwrap();
            for hs in &top[1..] {
                let idx: Vec<usize> = hs.iter().map(|h| h.index).collect();
                assert_eq!(idx, want[..3], "{name} Q={q}: top-3 of a tie");
            }
        }
    }
}

/// Large `k` (buffers, speculative floors, and the exact pass after a missed guess) with
/// `k` a fraction of `N`, just below, at and past it, on the streaming and the tiled path
/// of every level.
#[test]
fn large_k_near_and_past_the_corpus_size_matches_f64() {
    for (n, d) in [(700, 33), (3000, 20)] {
        let corpus_data = data::random_matrix(n, d, 91);
        let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
        for q in [3, 40] {
            let queries = data::random_matrix(q, d, 92);
            let reference = reference_scores(&queries, &corpus_data, d);
            for (name, exec) in executors() {
                for k in [65, n / 10, n / 2, n - 1, n, n + 1, 3 * n] {
                    let name = format!("{name} N={n} k={k}");
                    ok(check_top_k(
                        exec, &name, &queries, q, &corpus, k, &reference,
                    ));
                }
            }
        }
    }
}

/// A corpus of four distinct rows, repeated: every score ties with a quarter of the corpus,
/// so every floor, speculative or exact, falls inside a tie, and the hits must come out in
/// index order within each tie. One query is zero: all of its scores tie at 0.
#[test]
fn large_k_with_ties_everywhere_keeps_the_lower_rows() {
    let (n, d) = (3000, 19);
    let base = data::random_matrix(4, d, 93);
    let corpus_data: Vec<f32> = (0..n)
        .flat_map(|i| base[(i % 4) * d..(i % 4 + 1) * d].iter().copied())
        .collect();
    let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
    for q in [3, 40] {
        let mut queries = data::random_matrix(q, d, 94);
        queries[..d].fill(0.0);
        let reference = reference_scores(&queries, &corpus_data, d);
        for (name, exec) in executors() {
            for k in [65, 100, 749, 750, 751, 1000, n - 1] {
                let hits = exec
                    .top_k(MatrixRef::new(&queries, q, d).unwrap(), &corpus, k)
                    .unwrap();
                for (i, (hs, r)) in hits.iter().zip(&reference).enumerate() {
                    let got: Vec<usize> = hs.iter().map(|h| h.index).collect();
                    assert_eq!(
                        got,
                        reference_top_k(r, k),
                        "{name} Q={q} k={k} query {i}: not the lowest rows of each tie"
                    );
                    for h in hs {
                        let first = hs.iter().find(|g| g.index % 4 == h.index % 4).unwrap();
                        assert_eq!(h.score, first.score, "{name}: copies score alike");
                    }
                }
            }
        }
    }
}

/// Queries near one direction, and a corpus whose first 2048 rows are near it too while
/// the rest is random. Depending on the path and the order blocks are folded in, the rows
/// seen first can make the speculative floor far too high; whatever happens, the hits are
/// exact.
#[test]
fn large_k_with_the_best_rows_bunched_matches_f64() {
    let (n, d, near) = (6000, 24, 2048);
    let dir = data::random_matrix(1, d, 95);
    let noisy = |seed: u64, rows: usize| -> Vec<f32> {
        data::random_matrix(rows, d, seed)
            .chunks_exact(d)
            .flat_map(|r| r.iter().zip(&dir).map(|(e, x)| x + 0.05 * e))
            .collect()
    };
    let mut corpus_data = noisy(96, near);
    corpus_data.extend(data::random_matrix(n - near, d, 97));
    let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
    for q in [3, 40] {
        let queries = noisy(98, q);
        let reference = reference_scores(&queries, &corpus_data, d);
        for (name, exec) in executors() {
            for k in [100, 200, 500, 3000] {
                let name = format!("{name} k={k}");
                ok(check_top_k(
                    exec, &name, &queries, q, &corpus, k, &reference,
                ));
            }
        }
    }
}

/// Batches the CPU splits into several passes over the corpus, to bound the selections
/// (many queries with a large `k`) or the queries scored at once (a large dimension): the
/// hits of every pass, in query order, match f64.
#[test]
fn batches_in_several_passes_match_f64() {
    // 800 queries with k = 2000 hold about 19 MiB of selections: two passes. 150 queries
    // of 17 000 dimensions are 10 MiB: three passes.
    for (q, n, d, ks) in [
        (800, 3000, 8, &[2000, 2999][..]),
        (150, 200, 17_000, &[7][..]),
    ] {
        let corpus_data = data::random_matrix(n, d, 99);
        let corpus = Corpus::new(corpus_data.clone(), d).unwrap();
        let queries = data::random_matrix(q, d, 100);
        let reference = reference_scores(&queries, &corpus_data, d);
        for (name, exec) in executors() {
            for &k in ks {
                let name = format!("{name} Q={q} D={d} k={k}");
                ok(check_top_k(
                    exec, &name, &queries, q, &corpus, k, &reference,
                ));
            }
        }
    }
}

#[test]
fn repeated_calls_are_identical() {
    let (n, d) = (3000, 100);
    let corpus = Corpus::new(data::random_matrix(n, d, 51), d).unwrap();
    for q in [5, 40] {
        let queries = data::random_matrix(q, d, 52);
        let view = MatrixRef::new(&queries, q, d).unwrap();
        for (name, exec) in executors() {
            let (s0, r0) = exec.cosine_similarity_with_report(view, &corpus).unwrap();
            let (h0, t0) = exec.top_k_with_report(view, &corpus, 10).unwrap();
            for _ in 0..3 {
                // The same backend gives the same bits; `Auto` on a GPU machine may move a
                // call between the sides, whose FP32 sums differ in the last bits.
                let (s, r) = exec.cosine_similarity_with_report(view, &corpus).unwrap();
                if r.backend == r0.backend {
                    assert_eq!(s, s0, "{name} Q={q}");
                } else {
                    let close = (0..q).all(|i| {
                        let (a, b) = (s.row(i), s0.row(i));
                        a.iter().zip(b).all(|(x, y)| (x - y).abs() <= 1e-5)
                    });
                    assert!(
                        close,
                        "{name} Q={q}: {:?} and {:?} disagree",
                        r.backend, r0.backend
                    );
                }
                let (h, t) = exec.top_k_with_report(view, &corpus, 10).unwrap();
                if t.backend == t0.backend {
                    assert_eq!(h, h0, "{name} Q={q}");
                } else {
                    let idx = |h: &[Vec<hybridvec::Hit>]| {
                        h.iter()
                            .map(|r| r.iter().map(|h| h.index).collect::<Vec<_>>())
                            .collect::<Vec<_>>()
                    };
                    assert_eq!(idx(&h), idx(&h0), "{name} Q={q}");
                }
            }
        }
    }
}
