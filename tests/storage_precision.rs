//! A corpus stored as f16 or bf16 answers every search as the f64 reference does over
//! its stored (rounded) rows: cosine, inner product and L2, top-k, filters, range and
//! the score matrix, at every SIMD level and batch size (the streaming kernels that widen
//! in registers, the widened blocks, the score tiles, rows gathered by index), on random
//! and clustered data with exact ties. The int8 tier over a 16-bit corpus returns what
//! the full scan of it returns, bit for bit.

mod common;

use common::reference::{spread_rows, stored_as};
use common::search_checks::{check_range, check_top_k_among, clustered_rows};
use hybridvec::{
    bf16, data, Corpus, CpuConfig, DevicePolicy, ElementType, Error, ExecutorConfig, Filter,
    HybridExecutor, MatrixRef, Metric, SearchOptions, SimdLevel,
};

fn cpu_at(level: SimdLevel) -> HybridExecutor {
    HybridExecutor::new(ExecutorConfig {
        device: DevicePolicy::Cpu,
        cpu: CpuConfig {
            simd: Some(level),
            ..Default::default()
        },
        ..Default::default()
    })
    .unwrap()
}

fn levels() -> Vec<SimdLevel> {
    SimdLevel::ALL
        .into_iter()
        .filter(|l| l.is_supported())
        .collect()
}

#[test]
fn top_k_over_16_bit_rows_matches_the_reference_at_every_level_and_batch() {
    let n = 2500;
    for element in [ElementType::F16, ElementType::Bf16] {
        for (d, clustered) in [(3usize, false), (17, true), (64, false), (100, true)] {
            let values = if clustered {
                clustered_rows(n, d, d as u64)
            } else {
                data::random_matrix(n, d, d as u64)
            };
            let stored = stored_as(element, &values);
            let corpus = Corpus::with_element_type(values, d, element).unwrap();
            let all: Vec<usize> = (0..n).collect();
            for level in levels() {
                let ex = cpu_at(level);
                for q in [1usize, 3, 4, 5, 9, 30] {
                    let qs = data::random_matrix(q, d, 1000 + q as u64);
                    let m = MatrixRef::new(&qs, q, d).unwrap();
                    for k in [1usize, 10, n + 5] {
                        let hits = ex.top_k(m, &corpus, k).unwrap();
                        for (i, h) in hits.iter().enumerate() {
                            let what = format!("{element} d={d} {level:?} Q={q} k={k} query {i}");
                            let query = &qs[i * d..(i + 1) * d];
                            check_top_k_among(&what, Metric::Cosine, query, &stored, d, &all, k, h);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn other_metrics_filters_and_ranges_over_16_bit_rows_match_the_reference() {
    let (n, d) = (1800, 48);
    let values = spread_rows(n, d, 9);
    let allowed: Vec<usize> = (0..n).filter(|i| i % 7 == 3 || i % 11 == 0).collect();
    for element in [ElementType::F16, ElementType::Bf16] {
        let stored = stored_as(element, &values);
        let corpus = Corpus::with_element_type(values.clone(), d, element).unwrap();
        let ex = cpu_at(SimdLevel::detect());
        for q in [1usize, 6, 40] {
            let qs = spread_rows(q, d, 50 + q as u64);
            let m = MatrixRef::new(&qs, q, d).unwrap();
            for metric in Metric::ALL {
                let all: Vec<usize> = (0..n).collect();
                let plain = ex
                    .search(m, &corpus, 10, &SearchOptions::new(metric))
                    .unwrap();
                let filtered = ex
                    .search(
                        m,
                        &corpus,
                        10,
                        &SearchOptions::new(metric).with_filter(Filter::Rows(allowed.clone())),
                    )
                    .unwrap();
                for i in 0..q {
                    let query = &qs[i * d..(i + 1) * d];
                    let what = format!("{element} {metric:?} Q={q} query {i}");
                    check_top_k_among(&what, metric, query, &stored, d, &all, 10, &plain[i]);
                    let what = format!("{what} filtered");
                    check_top_k_among(&what, metric, query, &stored, d, &allowed, 10, &filtered[i]);
                }
            }
            // Range search: every row above a threshold, cosine.
            let results = ex
                .range(m, &corpus, 0.3, n, &SearchOptions::new(Metric::Cosine))
                .unwrap();
            let rows: Vec<&[f32]> = stored.chunks_exact(d).collect();
            for (i, r) in results.iter().enumerate() {
                let query = &qs[i * d..(i + 1) * d];
                let what = format!("{element} range Q={q} query {i}");
                check_range(&what, Metric::Cosine, query, &rows, &all_rows(n), 0.3, n, r);
            }
        }
        // The score matrix, through the tiles and the streaming kernels.
        for q in [2usize, 33] {
            let qs = data::random_matrix(q, d, 70 + q as u64);
            let m = MatrixRef::new(&qs, q, d).unwrap();
            let scores = ex.cosine_similarity(m, &corpus).unwrap();
            let want = data::cosine_reference(&qs, &stored, d);
            for (i, want) in want.iter().enumerate() {
                for (j, want) in want.iter().enumerate() {
                    let got = scores.get(i, j) as f64;
                    assert!((got - want).abs() < 1e-5, "{element} Q={q} ({i}, {j})");
                }
            }
        }
    }
}

fn all_rows(n: usize) -> Vec<usize> {
    (0..n).collect()
}

/// The certified int8 path over a 16-bit corpus re-scores its candidates with the same
/// kernels as the full scan, in place: the same hits, bit for bit.
#[test]
fn the_int8_tier_over_16_bit_rows_returns_the_full_scan_bit_for_bit() {
    let (n, d) = (6000, 96);
    for element in [ElementType::F16, ElementType::Bf16] {
        let values = data::random_matrix(n, d, 31);
        let plain = Corpus::with_element_type(values, d, element).unwrap();
        let tiered = plain.clone().with_int8_tier();
        for level in levels() {
            let ex = cpu_at(level);
            for q in 1..=hybridvec::CERTIFIED_MAX_QUERIES {
                let qs = data::random_matrix(q, d, 90 + q as u64);
                let m = MatrixRef::new(&qs, q, d).unwrap();
                let (got, report) = ex.top_k_with_report(m, &tiered, 10).unwrap();
                let want = ex.top_k(m, &plain, 10).unwrap();
                assert_eq!(got, want, "{element} {level:?} Q={q}");
                let rescored = report.rescored.expect("the tier was used");
                assert!(rescored < n / 4, "{element} Q={q}: {rescored} re-scored");
            }
        }
    }
}

/// Values beyond f16's range are a typed error naming the place, not infinities; bf16,
/// with f32's range, holds them.
#[test]
fn values_beyond_f16_range_are_refused_with_their_place() {
    let d = 4;
    let mut values = data::random_matrix(10, d, 3);
    values[6 * d + 1] = 1.0e6;
    match Corpus::with_element_type(values.clone(), d, ElementType::F16) {
        Err(Error::NotRepresentable {
            row: 6,
            col: 1,
            element: "f16",
            value,
        }) => assert_eq!(value, 1.0e6),
        other => panic!("{other:?}"),
    }
    let c = Corpus::with_element_type(values, d, ElementType::Bf16).unwrap();
    assert_eq!(c.row_f32(6).unwrap()[1], bf16::from_f32(1.0e6).to_f32());
}
